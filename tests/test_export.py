"""Exports: ImageJ TIFF with calibration, NPY round trip, VTI (cell data) for ParaView, OME-Zarr, JSON provenance
sidecars, and one voxel size (or none) stated alike in every format."""
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


def test_vti_holds_the_voxels_as_cells_with_the_voxel_size_as_spacing(tmp_path):
    pyvista = pytest.importorskip("pyvista")
    volume = labels()
    grid = pyvista.read(save_volume(tmp_path / "v.vti", volume, voxel_size_um=0.5))
    assert tuple(grid.dimensions) == (8, 7, 6) and grid.n_cells == 5 * 6 * 7   # points 0..N: N cells per axis
    assert tuple(grid.spacing) == pytest.approx((0.5, 0.5, 0.5))
    assert grid.bounds[1] == pytest.approx(7 * 0.5) and not grid.point_data.keys()
    values = np.asarray(grid.cell_data["phase"])
    assert np.array_equal(values.reshape(5, 6, 7), volume)
    # the cell around (x, y, z) = voxel (6, 1, 4) is volume[4, 1, 6]
    cell = grid.find_containing_cell(((6 + 0.5) * 0.5, (1 + 0.5) * 0.5, (4 + 0.5) * 0.5))
    assert values[cell] == volume[4, 1, 6]


FORMATS = (".tif", ".npy", ".vti", ".dream3d", ".zarr")


def read_back(path, suffix) -> tuple[np.ndarray, float | None, dict]:
    """(voxels, spacing the file states, {where: unit}) of an export, read with each format's own reader."""
    import h5py
    import pyvista
    import zarr
    if suffix == ".tif":
        with tifffile.TiffFile(path) as tif:
            meta = tif.imagej_metadata
            x_resolution = tif.pages[0].tags["XResolution"].value
            units = {"imagej unit": meta.get("unit"), "imagej spacing": meta.get("spacing")}
            pixel = x_resolution[1] / x_resolution[0]
            assert meta.get("spacing", pixel) == pytest.approx(pixel)      # z spacing = x/y pixel size
            return tif.asarray(), pixel, {k: v for k, v in units.items() if v is not None}
    if suffix == ".npy":
        return np.load(path), None, {}
    if suffix == ".vti":
        grid = pyvista.read(path)
        assert grid.n_cells == np.prod(grid.dimensions - np.array(1)) and not grid.point_data.keys()
        assert len(set(grid.spacing)) == 1
        voxels = np.asarray(grid.cell_data["phase"]).reshape(tuple(d - 1 for d in grid.dimensions)[::-1])
        return voxels, grid.spacing[0], {}
    if suffix == ".dream3d":
        with h5py.File(path) as f:
            spacing = f["DataContainers/SliceGAN/_SIMPL_GEOMETRY/SPACING"][()]
            phases = f["DataContainers/SliceGAN/CellData/Phases"]
            record = json.loads(phases.attrs["SliceGAN Provenance"])
            assert list(spacing) == [spacing[0]] * 3 and record["voxel_size_um"] in (None, spacing[0])
            voxels = np.asarray(record["phase_values"])[phases[()][..., 0] - 1]
            return voxels, float(spacing[0]), {"provenance": record["voxel_size_um"]} if record["voxel_size_um"] else {}
    group = zarr.open_group(str(path), mode="r")
    multiscale = group.attrs["multiscales"][0]
    (scale,) = multiscale["datasets"][0]["coordinateTransformations"]
    assert len(set(scale["scale"])) == 1
    units = {f"axis {a['name']}": a["unit"] for a in multiscale["axes"] if "unit" in a}
    return group["0"][:], scale["scale"][0], units


@pytest.mark.parametrize("voxel_size", [None, 0.5])
def test_every_format_states_the_voxel_size_and_claims_no_unit_without_one(tmp_path, voxel_size):
    """Known: 0.5 um in every format and the sidecar. Unknown: spacing 1 (one voxel), no unit anywhere, and
    the sidecar null, so no reader shows an unknown voxel size as 1 um."""
    volume = labels()
    record = {"phases": [{"value": v, "name": f"phase {v}"} for v in range(3)], "seed": 3}
    for suffix in FORMATS:
        path = save_volume(tmp_path / f"v{suffix}", volume, voxel_size, record)
        voxels, spacing, units = read_back(path, suffix)
        assert np.array_equal(voxels, volume), suffix
        sidecar = json.loads((tmp_path / f"v{suffix}.json").read_text())
        assert sidecar["voxel_size_um"] == voxel_size and sidecar["shape"] == [5, 6, 7], suffix
        if suffix != ".npy":
            assert spacing == pytest.approx(voxel_size or 1.0), suffix
        if voxel_size is None:
            assert units == {}, suffix
        elif suffix == ".tif":
            assert units == {"imagej unit": "um", "imagej spacing": pytest.approx(0.5)}
        elif suffix == ".zarr":
            assert units == {f"axis {a}": "micrometer" for a in "zyx"}
    xdmf = (tmp_path / "v.xdmf").read_text()
    assert ("voxel size unknown: spacing 1 = one voxel, no physical unit" in xdmf) == (voxel_size is None)
    assert '<DataItem Format="XML" Dimensions="3">' + f"{voxel_size or 1.0} " * 2 in xdmf


@pytest.mark.parametrize("bad", [0, 0.0, -1.5, float("nan"), float("inf"), "0.5", True])
def test_a_bad_voxel_size_is_refused_before_anything_is_written(tmp_path, bad):
    for suffix in FORMATS:
        with pytest.raises(ValueError, match=r"voxel_size_um must be a positive, finite number of micrometres"):
            save_volume(tmp_path / f"v{suffix}", labels(), bad)
    assert list(tmp_path.iterdir()) == []


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
