"""Exports: ImageJ TIFF with calibration, NPY round trip, VTI for ParaView, JSON provenance sidecars."""
import json

import numpy as np
import pytest
import tifffile

from slicegan_core import __version__
from slicegan_core.export import provenance, save_volume, volume_bytes


def labels(shape=(5, 6, 7), seed=0) -> np.ndarray:
    """(D, H, W) uint8 random labels 0..2, so any axis mix-up changes the data."""
    return np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.uint8)


def test_tiff_opens_with_tifffile_with_imagej_calibration(tmp_path):
    volume = labels()
    path = save_volume(tmp_path / "v.tif", volume, voxel_size_um=0.25)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert np.array_equal(tif.asarray(), volume)
        assert tif.series[0].axes == "ZYX"
        meta = tif.imagej_metadata
        assert meta["spacing"] == pytest.approx(0.25) and meta["unit"] in ("um", "micron", "\u00b5m")
        x_resolution = tif.pages[0].tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(4.0)   # pixels per micrometre
        assert len(tif.pages) == 5


def test_colour_and_float_tiffs_round_trip(tmp_path):
    colour = np.random.default_rng(1).integers(0, 255, size=(3, 8, 9, 3)).astype(np.uint8)
    with tifffile.TiffFile(save_volume(tmp_path / "c.tiff", colour, voxel_size_um=2.0)) as tif:
        assert np.array_equal(tif.asarray(), colour)
    grey = np.random.default_rng(2).random((4, 5, 6)).astype(np.float32)
    assert np.array_equal(tifffile.imread(save_volume(tmp_path / "g.tif", grey)), grey)


def test_npy_round_trips_exactly_without_pickle(tmp_path):
    for volume in (labels(), np.arange(24, dtype=np.int32).reshape(2, 3, 4) * 1000):
        path = save_volume(tmp_path / f"v{volume.dtype}.npy", volume)
        loaded = np.load(path, allow_pickle=False)
        assert loaded.dtype == volume.dtype and np.array_equal(loaded, volume)


def test_vti_opens_with_pyvista_with_dimensions_spacing_and_values(tmp_path):
    pyvista = pytest.importorskip("pyvista")
    volume = labels()
    grid = pyvista.read(save_volume(tmp_path / "v.vti", volume, voxel_size_um=0.5))
    assert tuple(grid.dimensions) == (7, 6, 5)                 # x = W, y = H, z = D
    assert tuple(grid.spacing) == pytest.approx((0.5, 0.5, 0.5))
    values = np.asarray(grid.point_data["phase"])
    assert np.array_equal(values.reshape(5, 6, 7), volume)
    # the point at (x, y, z) = (6, 1, 4) is volume[4, 1, 6]
    point = grid.find_closest_point((6 * 0.5, 1 * 0.5, 4 * 0.5))
    assert values[point] == volume[4, 1, 6]


def test_sidecar_records_provenance(tmp_path, tiny_model):
    attrs = {"alpha": 0.3}
    volume = tiny_model.generate(attrs, seed=4, shape=(16, 12, 8))
    record = provenance(tiny_model, attrs, seed=4, shape=(16, 12, 8), periodic=False)
    path = save_volume(tmp_path / "v.npy", volume, tiny_model.voxel_size_um, record)
    sidecar = json.loads((tmp_path / "v.npy.json").read_text())
    assert sidecar["file"] == "v.npy" and sidecar["shape"] == [16, 12, 8] and sidecar["dtype"] == "uint8"
    assert sidecar["voxel_size_um"] == 0.5 and sidecar["axes"] == "ZYX"
    assert sidecar["package_version"] == __version__ and sidecar["created"]
    assert sidecar["attrs"] == attrs and sidecar["seed"] == 4 and sidecar["periodic"] is False
    assert sidecar["model_name"] == "model" and sidecar["model"].endswith("model")
    assert [p["value"] for p in sidecar["phases"]] == [0, 1, 2]
    # the record is enough to make the same volume again
    again = tiny_model.generate(sidecar["attrs"], seed=sidecar["seed"], shape=sidecar["shape"],
                                periodic=sidecar["periodic"])
    assert np.array_equal(np.load(path), again)


def test_unknown_extension_and_missing_folder_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="Unknown export format '.png'; use one of .tif, .tiff, .npy, .vti"):
        save_volume(tmp_path / "v.png", labels())
    with pytest.raises(ValueError, match="Output folder .*nowhere does not exist"):
        save_volume(tmp_path / "nowhere" / "v.npy", labels())
    assert list(tmp_path.iterdir()) == []


def test_upper_case_extension_and_no_voxel_size(tmp_path):
    path = save_volume(tmp_path / "V.TIF", labels())
    with tifffile.TiffFile(path) as tif:       # no false calibration: ImageJ shows pixels
        assert "spacing" not in tif.imagej_metadata and "unit" not in tif.imagej_metadata
        assert tif.pages[0].tags["XResolution"].value == (1, 1)             # the TIFF default: 1 pixel per pixel
    assert json.loads((tmp_path / "V.TIF.json").read_text())["voxel_size_um"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["V.TIF", "V.TIF.json"]   # no temp files


def test_volume_bytes_are_deterministic():
    assert volume_bytes(labels(), ".npy") == volume_bytes(labels(), ".npy")
