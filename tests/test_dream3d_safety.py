"""An uploaded .dream3d is read under one access policy: nothing outside the file is ever opened (external raw
storage, external links, virtual datasets), links and damaged metadata are refused in one sentence, and an
array's declared size is checked before it is read."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from crafted_hdf5 import ATTACKS, OutsideFileTrap, crafted_dream3d
from slicegan_core.data import DatasetSpec, load_image, load_training_data
from slicegan_core.dream3d import dream3d_bytes, list_arrays, read_dream3d, read_spacing

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def trap(tmp_path, monkeypatch):
    # HDF5 resolves a relative external path against the working directory: work beside the upload, so that
    # "../outside/secret.h5" reaches the trap.
    (tmp_path / "upload").mkdir()
    monkeypatch.chdir(tmp_path / "upload")
    outside = tmp_path / "outside"
    outside.mkdir()
    trap = OutsideFileTrap(outside)
    yield trap
    trap.close()


@pytest.mark.parametrize("attack", ATTACKS)
def test_no_byte_outside_the_file_is_read_by_training_data_loading(attack, trap, tmp_path):
    path = crafted_dream3d(tmp_path / "upload" / "crafted.dream3d", attack, trap.path)
    trap.arm()
    with pytest.raises(ValueError, match="crafted.dream3d") as refused:
        load_training_data([DatasetSpec((str(path),))], patch_size=16)
    assert "inside the uploaded file" in str(refused.value)
    assert "\n" not in str(refused.value)
    # Listing its arrays and reading its spacing (what `train` does first) follow no link either.
    assert list_arrays(path) == ["SliceGAN/CellData/Phases"]
    assert read_spacing(path) == (1.0, 1.0, 1.0)
    assert not trap.opened


@pytest.mark.parametrize("attack", ATTACKS)
def test_the_trap_sees_a_plain_hdf5_read_of_the_outside_file(attack, trap, tmp_path):
    """The trap is live: h5py itself, without the policy, opens the outside file of each crafted upload."""
    path = crafted_dream3d(tmp_path / "upload" / "crafted.dream3d", attack, trap.path)
    trap.arm()
    with h5py.File(path, "r") as f:
        data = f["DataContainers/SliceGAN/CellData/Phases"][()]
    assert trap.opened
    if attack in ("external link", "virtual dataset"):
        assert bytes(data.ravel()[:12]) == b"SECRETSECRET"


def test_train_refuses_external_storage_with_one_sentence_and_reads_nothing(trap, tmp_path):
    path = crafted_dream3d(tmp_path / "upload" / "crafted.dream3d", "external raw storage", trap.path)
    trap.arm()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "slicegan_core", "train", "--data", str(path), "--preset", "tiny",
                             "--run-dir", str(tmp_path / "run")], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: ") and "external file" in result.stderr and "crafted.dream3d" in result.stderr
    assert not (tmp_path / "run" / "config.json").exists()
    assert not trap.opened


def _file(tmp_path, change) -> Path:
    """Our own 16^3 export, then ``change(file, cells)`` applied to it."""
    path = tmp_path / "case.dream3d"
    path.write_bytes(dream3d_bytes(np.random.default_rng(0).integers(0, 3, (16, 16, 16)).astype(np.uint8), 0.5))
    with h5py.File(path, "a") as f:
        change(f, f["DataContainers/SliceGAN/CellData"])
    return path


def _replace(name, **dataset):
    def change(f, cells):
        del cells[name]
        cells.create_dataset(name, **dataset)
    return change


def _set_spacing(value):
    def change(f, cells):
        geometry = f["DataContainers/SliceGAN/_SIMPL_GEOMETRY"]
        del geometry["SPACING"]
        if value is not None:
            geometry["SPACING"] = value
    return change


def _provenance(text, first_value=None):
    def change(f, cells):
        cells["Phases"].attrs["SliceGAN Provenance"] = text
        if first_value is not None:
            cells["Phases"][0, 0, 0, 0] = first_value
    return change


def _soft_link_cycle(f, cells):
    cells["A"] = h5py.SoftLink("/DataContainers/SliceGAN/CellData/B")
    cells["B"] = h5py.SoftLink("/DataContainers/SliceGAN/CellData/A")
    del cells["Phases"]
    cells["Phases"] = h5py.SoftLink("/DataContainers/SliceGAN/CellData/A")


def _geometry_type_text(f, cells):
    f["DataContainers/SliceGAN/_SIMPL_GEOMETRY"].attrs["GeometryType"] = "image"


DAMAGED = [
    ("declares 4000^3, stores nothing", _replace("Phases", shape=(4000, 4000, 4000, 1), dtype="i4",
                                                 chunks=(64, 64, 64, 1)), "4000 x 4000 x 4000 x 1 int32"),
    ("1600^3 of fill value", _replace("Phases", shape=(1600, 1600, 1600, 1), dtype="u1", chunks=(64, 64, 64, 1),
                                      fillvalue=1), "stores none of its values"),
    ("no SPACING", _set_spacing(None), "no voxel spacing"),
    ("SPACING 0", _set_spacing(np.float32([0, 0, 0])), "SPACING [0.0, 0.0, 0.0]"),
    ("SPACING NaN", _set_spacing(np.float32([np.nan] * 3)), "positive, finite"),
    ("SPACING with two entries", _set_spacing(np.float32([1, 1])), "SPACING [1.0, 1.0]"),
    ("SPACING as text", _set_spacing("one micron"), "SPACING"),
    ("text Phases", _replace("Phases", data=np.full((4, 4, 4), b"ab")), "holds text"),
    ("variable-length Phases", _replace("Phases", shape=(4, 4, 4), dtype=h5py.vlen_dtype(np.int32)),
     "variable-length"),
    ("compound Phases", _replace("Phases", data=np.zeros((4, 4, 4), [("a", "i4"), ("b", "f4")])), "compound"),
    ("complex Phases", _replace("Phases", data=np.ones((16, 16, 16), np.complex64)), "complex numbers"),
    ("provenance not JSON", _provenance("{not json"), "damaged 'SliceGAN Provenance'"),
    ("provenance a list", _provenance("[1, 2]"), "damaged 'SliceGAN Provenance'"),
    ("provenance with repeated values", _provenance('{"phase_values": [0, 0, 1]}'), "damaged"),
    ("one huge label", _provenance('{"phase_values": [0, 1, 2]}', 2**31 - 1), "1..2147483647"),
    ("a negative label", _provenance('{"phase_values": [0, 1, 2]}', -3), "-3..3"),
    ("a soft-link cycle", _soft_link_cycle, "soft link"),
    ("geometry type as text", _geometry_type_text, "no image-geometry data container"),
]


@pytest.mark.parametrize("change, named", [c[1:] for c in DAMAGED], ids=[c[0] for c in DAMAGED])
def test_damaged_files_get_one_sentence_naming_the_file(change, named, tmp_path):
    path = _file(tmp_path, change)
    with pytest.raises(ValueError) as refused:
        load_image(path)
    message = str(refused.value)
    assert named in message and "case.dream3d" in message and "\n" not in message, message


def test_our_own_export_still_reads_back_with_its_phase_values(tmp_path):
    volume = np.random.default_rng(1).choice([3, 7, 9], (8, 9, 10)).astype(np.uint8)
    (tmp_path / "v.dream3d").write_bytes(dream3d_bytes(volume, 0.25, phase_values=[3, 7, 9]))
    back, spacing = read_dream3d(tmp_path / "v.dream3d")
    np.testing.assert_array_equal(back, volume)
    assert spacing == (0.25, 0.25, 0.25)
