"""DREAM3D 6 files: reading a genuine sample, writing ours, the .xdmf for ParaView, training from one."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from slicegan_core.cli import main
from slicegan_core.data import load_image
from slicegan_core.dream3d import list_arrays, read_dream3d
from slicegan_core.export import save_volume

SAMPLE = Path(__file__).resolve().parent / "data" / "dream3d_rotate_sample_example.dream3d"
PHASES = {"phases": [{"value": 0}, {"value": 100}, {"value": 200}]}


def run_cli(argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as stop:
        return stop.code


def test_the_sample_reads_in_zyx_order_and_its_rotated_copies_are_rotations_of_the_original():
    original, spacing = read_dream3d(SAMPLE, "Original/CellData/Data")
    assert original.shape == (30, 20, 10) and spacing == (1.0, 1.0, 1.0)   # DIMENSIONS x=10, y=20, z=30
    assert len(np.unique(original)) == 255
    # (container, array axes of the rotated plane, quarter turns): about z turns (y, x), about y (z, x), ...
    for container, axes, turns in (("Rotate_0.0_0.0_1.0_90.0", (1, 2), 3), ("Rotate_0.0_1.0_0.0_90.0", (0, 2), 1),
                                   ("Rotate_1.0_0.0_0.0_90.0", (0, 1), 3)):
        rotated, _ = read_dream3d(f"{SAMPLE}#{container}/CellData/Data")
        np.testing.assert_array_equal(rotated, np.rot90(original, turns, axes))


def test_missing_phases_or_array_is_one_sentence_listing_the_arrays(tmp_path):
    with pytest.raises(ValueError, match="no Phases array; choose one with --dream3d-array .*Original/CellData/Data"):
        read_dream3d(SAMPLE)
    with pytest.raises(ValueError, match="no cell array 'Original/CellData/Nope'; arrays: Original/CellData/Data"):
        load_image(f"{SAMPLE}#Original/CellData/Nope")
    with pytest.raises(ValueError, match="does not exist"):
        read_dream3d(tmp_path / "absent.dream3d")
    (tmp_path / "text.dream3d").write_text("not hdf5")
    with pytest.raises(ValueError, match="could not be read as HDF5"):
        read_dream3d(tmp_path / "text.dream3d")
    assert list_arrays(SAMPLE)[0] == "Original/CellData/Data"


def test_a_volume_round_trips_with_the_dream3d_layout_and_the_xdmf_opens_in_pyvista(tmp_path):
    import pyvista as pv
    volume = np.random.default_rng(0).choice([0, 100, 200], size=(6, 7, 8)).astype(np.uint8)
    path = save_volume(tmp_path / "v.dream3d", volume, 0.5, PHASES)
    with h5py.File(path) as f:
        assert f.attrs["FileVersion"] == b"7.0" and "DREAM3D Version" in f.attrs
        geometry = f["DataContainers/SliceGAN/_SIMPL_GEOMETRY"]
        assert geometry.attrs["GeometryType"][0] == 0
        assert list(geometry["DIMENSIONS"][()]) == [8, 7, 6] and list(geometry["SPACING"][()]) == [0.5] * 3
        phases = f["DataContainers/SliceGAN/CellData/Phases"]
        assert phases.dtype == np.int32 and phases.shape == (6, 7, 8, 1)
        assert phases.attrs["ObjectType"] == b"DataArray<int32_t>"
        np.testing.assert_array_equal(phases[..., 0], volume // 100 + 1)            # phase index + 1
    back, spacing = read_dream3d(path)
    np.testing.assert_array_equal(back, volume)                                     # mapped back via provenance
    assert spacing == (0.5, 0.5, 0.5)
    assert json.loads((tmp_path / "v.dream3d.json").read_text())["shape"] == [6, 7, 8]
    grid = pv.read(tmp_path / "v.xdmf")
    assert grid.dimensions == (9, 8, 7) and grid.spacing == (0.5, 0.5, 0.5)       # points = cells + 1
    np.testing.assert_array_equal(np.asarray(grid.cell_data["Phases"]).reshape(6, 7, 8), volume // 100 + 1)


def test_cell_ensemble_data_has_dream3d_phase_types_crystal_structures_and_names(tmp_path):
    volume = np.random.default_rng(1).choice([0, 100, 200], size=(4, 5, 6)).astype(np.uint8)
    named = {"phases": [{"value": 200, "name": "pore"}, {"value": 0, "name": "matrix"}, {"value": 100}]}
    path = save_volume(tmp_path / "v.dream3d", volume, None, named)
    with h5py.File(path) as f:
        ensemble = f["DataContainers/SliceGAN/CellEnsembleData"]
        assert ensemble.attrs["AttributeMatrixType"][0] == 11 and list(ensemble.attrs["TupleDimensions"]) == [4]
        assert ensemble["PhaseTypes"].dtype == np.uint32 and ensemble["CrystalStructures"].dtype == np.uint32
        assert ensemble["PhaseTypes"][:, 0].tolist() == [999, 0, 0, 0]             # index 0: DREAM3D's unknown
        assert ensemble["CrystalStructures"][:, 0].tolist() == [999, 1, 1, 1]
        assert [n.decode() for n in ensemble["PhaseName"][()]] == ["Invalid Phase", "matrix", "phase 100", "pore"]
        for name, object_type in (("PhaseTypes", b"DataArray<uint32_t>"), ("CrystalStructures", b"DataArray<uint32_t>"),
                                  ("PhaseName", b"StringDataArray")):
            attrs = ensemble[name].attrs
            assert attrs["ObjectType"] == object_type and list(attrs["TupleDimensions"]) == [4]
            assert list(attrs["ComponentDimensions"]) == [1] and attrs["DataArrayVersion"][0] == 2
        # unknown voxel size: SPACING 1 (no unit in the format) and the provenance says null
        assert list(f["DataContainers/SliceGAN/_SIMPL_GEOMETRY/SPACING"][()]) == [1.0] * 3
        record = json.loads(f["DataContainers/SliceGAN/CellData/Phases"].attrs["SliceGAN Provenance"])
        assert record["voxel_size_um"] is None and record["phase_values"] == [0, 100, 200]
    back, _ = read_dream3d(path)                                # the reader ignores the ensemble matrix
    np.testing.assert_array_equal(back, volume)
    assert list_arrays(path) == ["SliceGAN/CellData/Phases"]


def test_a_dream3d_file_with_cell_ensemble_data_of_its_own_still_reads(tmp_path):
    """A file as DREAM3D's pipelines leave it: CellEnsembleData (strings included) beside CellData."""
    import shutil
    path = tmp_path / "with_ensemble.dream3d"
    shutil.copy(SAMPLE, path)
    with h5py.File(path, "r+") as f:
        ensemble = f["DataContainers/Original"].create_group("CellEnsembleData")
        ensemble.attrs["AttributeMatrixType"] = np.uint32([11])
        ensemble["CrystalStructures"] = np.uint32([[999], [1]])
        ensemble.create_dataset("PhaseName", data=np.array(["Invalid Phase", "Ni"], dtype=object),
                                dtype=h5py.string_dtype())
    original, spacing = read_dream3d(path, "Original/CellData/Data")
    expected, _ = read_dream3d(SAMPLE, "Original/CellData/Data")
    np.testing.assert_array_equal(original, expected)
    assert spacing == (1.0, 1.0, 1.0) and "Original/CellEnsembleData/PhaseName" not in list_arrays(path)


def test_anisotropic_spacing_and_intensities_are_refused(tmp_path):
    path = save_volume(tmp_path / "v.dream3d", np.zeros((4, 4, 4), np.uint8), 1.0)
    with h5py.File(path, "r+") as f:
        f["DataContainers/SliceGAN/_SIMPL_GEOMETRY/SPACING"][...] = [1.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="anisotropic voxels"):
        load_image(path)
    with pytest.raises(ValueError, match="label volume"):
        save_volume(tmp_path / "f.dream3d", np.zeros((4, 4, 4), np.float32), 1.0)


def test_training_reads_a_dream3d_file_and_its_spacing(training_volumes, tmp_path, capsys):
    labels = np.load(training_volumes[0][0])
    data = save_volume(tmp_path / "train.dream3d", labels, 0.25, {"phases": [{"value": v} for v in range(3)]})
    run = tmp_path / "run"
    assert run_cli(["train", "--data", data, "--attr", "alpha=0.2", "--preset", "tiny", "--steps", 1,
                    "--run-dir", run, "--dream3d-array", "SliceGAN/CellData/Phases"]) == 0
    info = json.loads((run / "model" / "model.json").read_text())
    assert info["voxel_size_um"] == 0.25 and [p["value"] for p in info["phases"]] == [0, 1, 2]
    assert run_cli(["generate", "--model", run / "model", "--shape", 32, "--out", tmp_path / "g.dream3d"]) == 0
    generated, spacing = read_dream3d(tmp_path / "g.dream3d")
    assert generated.shape == (32, 32, 32) and spacing == (0.25,) * 3 and set(np.unique(generated)) <= {0, 1, 2}
    assert (tmp_path / "g.xdmf").is_file()
    assert run_cli(["train", "--data", SAMPLE, "--preset", "tiny", "--run-dir", tmp_path / "bad"]) == 2
    assert "no Phases array" in capsys.readouterr().err
