"""Streamed export (slicegan_core.stream): the same voxels as in-memory generation in every format, the metadata
readers look for (OME-Zarr multiscales, OME-XML physical sizes, ImageJ calibration), atomic writes, refusals."""
import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import tifffile
import zarr

from slicegan_core import stream
from slicegan_core.distributed import Ranks

ALPHA = {"alpha": 0.35}
TILED = (224, 40, 36)     # beyond the statistics window along axis 0: the budget below cuts it into many tiles
BUDGET = 60_000
VOXEL_SIZE_UM = 0.5       # the tiny run's (tests/conftest.py)


@pytest.fixture(scope="module")
def expected(tiny_model) -> np.ndarray:
    return tiny_model.generate(ALPHA, seed=5, shape=TILED, max_tile_voxels=BUDGET)


def write(model, path, **kwargs):
    return stream.generate_to(model, path, ALPHA, seed=5, shape=TILED, max_tile_voxels=BUDGET, **kwargs)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name or p.name.endswith(".tmp"))


def test_zarr_holds_the_in_memory_voxels_as_ome_zarr(tiny_model, expected, tmp_path):
    out = write(tiny_model, tmp_path / "big.zarr")
    root = zarr.open_group(str(out), mode="r")
    (multiscale,) = root.attrs["multiscales"]
    assert multiscale["version"] == "0.4"
    assert [(a["name"], a["type"], a["unit"]) for a in multiscale["axes"]] == [
        (axis, "space", "micrometer") for axis in "zyx"]
    (level,) = multiscale["datasets"]
    assert level["path"] == "0"
    assert level["coordinateTransformations"] == [{"type": "scale", "scale": [VOXEL_SIZE_UM] * 3}]
    array = root["0"]
    assert array.shape == TILED and array.dtype == np.uint8
    assert np.array_equal(array[:], expected)
    core = tiny_model.generate_tiles(ALPHA, seed=5, shape=TILED, max_tile_voxels=BUDGET).core
    assert all(c % chunk == 0 for c, chunk in zip(core, array.chunks))    # tiles write whole chunks
    assert root.attrs["slicegan"]["seed"] == 5 and root.attrs["slicegan"]["attrs"] == ALPHA
    sidecar = json.loads((tmp_path / "big.zarr.json").read_text())
    assert sidecar["format"] == "OME-Zarr 0.4" and sidecar["shape"] == list(TILED)
    assert sidecar["voxel_size_um"] == VOXEL_SIZE_UM and sidecar["file"] == "big.zarr"
    assert leftovers(tmp_path) == []


def test_small_tif_is_an_imagej_hyperstack_with_the_in_memory_voxels(tiny_model, expected, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "SLAB_BYTES", 40 * 36 * 20)                 # several slabs of 16 planes
    out = write(tiny_model, tmp_path / "vol.tif")
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and not tif.is_bigtiff
        assert tif.imagej_metadata["spacing"] == VOXEL_SIZE_UM and tif.imagej_metadata["unit"] == "um"
        assert tif.series[0].shape == TILED and tif.series[0].axes == "ZYX"
        x_resolution = tif.pages[0].tags["XResolution"].value
        assert x_resolution[0] / x_resolution[1] == pytest.approx(1 / VOXEL_SIZE_UM)
        assert np.array_equal(tif.asarray(), expected)
    assert json.loads((tmp_path / "vol.tif.json").read_text())["format"] == "ImageJ TIFF"


def test_large_tif_is_bigtiff_with_ome_physical_sizes(tiny_model, expected, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "IMAGEJ_MAX_BYTES", 1000)                   # as if the volume were over 4 GiB
    monkeypatch.setattr(stream, "SLAB_BYTES", 40 * 36 * 20)
    out = write(tiny_model, tmp_path / "vol.tiff")
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff and tif.is_ome and not tif.is_imagej
        assert tif.series[0].shape == TILED and tif.series[0].axes == "ZYX"
        pixels = next(e for e in ElementTree.fromstring(tif.ome_metadata).iter() if e.tag.endswith("Pixels"))
        for axis, size in zip("ZYX", TILED):
            assert float(pixels.get(f"PhysicalSize{axis}")) == VOXEL_SIZE_UM
            assert pixels.get(f"PhysicalSize{axis}Unit") == "µm"
            assert int(pixels.get(f"Size{axis}")) == size
        assert np.array_equal(tif.asarray(), expected)
    assert json.loads((tmp_path / "vol.tiff.json").read_text())["format"] == "OME-TIFF (BigTIFF)"


def test_npy_is_written_in_slabs_with_the_in_memory_voxels(tiny_model, expected, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "SLAB_BYTES", 40 * 36 * 20)
    out = write(tiny_model, tmp_path / "vol.npy")
    assert np.array_equal(np.load(out, mmap_mode="r"), expected)
    assert json.loads((tmp_path / "vol.npy.json").read_text())["shape"] == list(TILED)


def test_without_a_voxel_size_the_scale_is_one_voxel(make_random_model, tmp_path, monkeypatch):
    model = make_random_model("tiny")                                      # no voxel size in its info
    monkeypatch.setattr(stream, "IMAGEJ_MAX_BYTES", 1000)
    stream.generate_to(model, tmp_path / "v.zarr", shape=16)
    stream.generate_to(model, tmp_path / "v.tif", shape=16)
    (level,) = zarr.open_group(str(tmp_path / "v.zarr"), mode="r").attrs["multiscales"][0]["datasets"]
    assert level["coordinateTransformations"][0]["scale"] == [1.0] * 3
    assert all("unit" not in axis for axis in zarr.open_group(str(tmp_path / "v.zarr")).attrs["multiscales"][0]["axes"])
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        assert tif.is_ome and "PhysicalSizeX" not in tif.ome_metadata
    stream.generate_to(model, tmp_path / "w.zarr", shape=16, voxel_size_um=0.25)
    (level,) = zarr.open_group(str(tmp_path / "w.zarr"), mode="r").attrs["multiscales"][0]["datasets"]
    assert level["coordinateTransformations"][0]["scale"] == [0.25] * 3
    with pytest.raises(ValueError, match="voxel_size_um must be a positive, finite number"):
        stream.generate_to(model, tmp_path / "x.zarr", shape=16, voxel_size_um=-1.0)


def test_colour_volumes_stream_too(make_random_model, tmp_path):
    model = make_random_model("tiny", image_type="colour", n_channels=3)
    expected = model.generate(seed=1, shape=(208, 20, 16), max_tile_voxels=40_000)
    for name in ("c.zarr", "c.npy", "c.tif"):
        stream.generate_to(model, tmp_path / name, seed=1, shape=(208, 20, 16), max_tile_voxels=40_000)
    root = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert [a["name"] for a in root.attrs["multiscales"][0]["axes"]] == ["c", "z", "y", "x"]
    assert np.array_equal(np.moveaxis(root["0"][:], 0, -1), expected)
    assert np.array_equal(np.load(tmp_path / "c.npy"), expected)
    assert np.array_equal(tifffile.imread(tmp_path / "c.tif"), expected)


@pytest.mark.parametrize("name", ["old.zarr", "old.tif", "old.npy"])
def test_a_failure_leaves_the_old_file_and_no_half_file(tiny_model, tmp_path, monkeypatch, name):
    write(tiny_model, tmp_path / name)
    before = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    calls = []
    original = tiny_model._to_output

    def failing(*args):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("disk on fire")
        return original(*args)

    monkeypatch.setattr(tiny_model, "_to_output", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        stream.generate_to(tiny_model, tmp_path / name, ALPHA, seed=6, shape=TILED, max_tile_voxels=BUDGET)
    after = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before and leftovers(tmp_path) == []


def test_a_failure_leaves_no_file_when_there_was_none(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_model, "_to_output", lambda *args: (_ for _ in ()).throw(RuntimeError("killed")))
    for name in ("new.zarr", "new.tif", "new.npy"):
        with pytest.raises(RuntimeError, match="killed"):
            write(tiny_model, tmp_path / name)
    assert list(tmp_path.iterdir()) == []


def test_zarr_replaces_an_old_store_but_never_another_folder(tiny_model, tmp_path):
    (tmp_path / "photos.zarr").mkdir()
    (tmp_path / "photos.zarr" / "holiday.jpg").write_bytes(b"keep me")
    with pytest.raises(ValueError, match="exists and is not a Zarr folder"):
        stream.generate_to(tiny_model, tmp_path / "photos.zarr", ALPHA, shape=16)
    assert (tmp_path / "photos.zarr" / "holiday.jpg").read_bytes() == b"keep me"
    stream.generate_to(tiny_model, tmp_path / "vol.zarr", ALPHA, seed=1, shape=16)
    (tmp_path / "vol.zarr.partial").mkdir()                                 # as a killed run leaves it
    stream.generate_to(tiny_model, tmp_path / "vol.zarr", ALPHA, seed=2, shape=16)
    assert np.array_equal(zarr.open_group(str(tmp_path / "vol.zarr"), mode="r")["0"][:],
                          tiny_model.generate(ALPHA, seed=2, shape=16))
    assert leftovers(tmp_path) == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "photos.zarr", "vol.zarr", "vol.zarr.json"]


@pytest.mark.parametrize("name, kwargs, message", [
    ("v.vti", {}, r"Streamed generation writes \.zarr, \.tif, \.tiff, \.npy files"),
    ("missing/v.zarr", {}, "Output folder .* does not exist"),
    ("v.tif", {"ranks": Ranks(0, 2)}, r"A \.tif file is written by one process, but 2 processes were started; "
                                      r"write a \.zarr to share the work"),
    ("v.npy", {"ranks": Ranks(1, 2)}, r"A \.npy file is written by one process"),
])
def test_bad_requests_are_one_sentence_value_errors(tiny_model, tmp_path, name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        stream.generate_to(tiny_model, tmp_path / name, ALPHA, shape=16, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_a_tif_that_does_not_fit_on_the_disk_is_refused_before_generating(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(stream.shutil, "disk_usage", lambda path: type("Usage", (), {"free": 10**6})())
    monkeypatch.setattr(tiny_model, "_forward", None)                      # generating anything would fail
    with pytest.raises(ValueError, match=r"takes 8\.0 GiB on disk but .* has 1\.0 MB free; choose another folder"):
        stream.generate_to(tiny_model, tmp_path / "v.tif", ALPHA, shape=2048)


def test_zarr_chunks_divide_the_tiles():
    assert stream.zarr_chunks((2048,) * 3, (256,) * 3) == (128, 128, 128)
    assert stream.zarr_chunks((224, 40, 36), (16, 40, 36)) == (16, 40, 36)   # one tile across: any chunk edge
    assert stream.zarr_chunks((1000, 1000, 90), (96, 1000, 90)) == (96, 128, 90)
