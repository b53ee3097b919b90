"""Bad models, calibrations, voxel sizes and output places, through the CLI's own entry point in this process
(fast; tests/test_bad_input.py runs the real subprocess for a representative set): exit 2, one ``error:``
sentence naming the file or value, nothing half-made left behind."""
from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from safetensors.torch import load_file, save_file

from slicegan_core import storage, stream
from slicegan_core.cli import main
from slicegan_core.data import load_image
from slicegan_core.dream3d import dream3d_bytes

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "default"


def run_cli(argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as stop:
        return stop.code


def one_error(capsys, *named) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert err.count("\n") == 0 and err.startswith("error: "), err
    for text in named:
        assert text in err, err
    return err


def changed_model(source: Path, folder: Path, change=None, weights=None) -> Path:
    target = Path(shutil.copytree(source, folder))
    card = json.loads((target / "model.json").read_text())
    if change:
        change(card)
        (target / "model.json").write_text(card if isinstance(card, str) else json.dumps(card))
    if weights:
        tensors = load_file(str(target / "model.safetensors"))
        weights(tensors)
        save_file(tensors, str(target / "model.safetensors"))
    return target


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e400"])
def test_train_refuses_a_voxel_size_that_no_model_could_carry(value, training_volumes, tmp_path, capsys):
    status = run_cli(["train", "--data", training_volumes[0][0], "--preset", "tiny", "--run-dir", tmp_path / "run",
                      "--voxel-size", value])
    assert status == 2
    one_error(capsys, "--voxel-size")
    assert not (tmp_path / "run").exists()


def test_train_refuses_a_dream3d_whose_spacing_is_zero(tmp_path, capsys):
    import h5py
    path = tmp_path / "zero.dream3d"
    path.write_bytes(dream3d_bytes(np.random.default_rng(0).integers(0, 3, (40, 40, 40)).astype(np.uint8), 1.0))
    with h5py.File(path, "a") as f:
        f["DataContainers/SliceGAN/_SIMPL_GEOMETRY/SPACING"][...] = 0
    assert run_cli(["train", "--data", path, "--preset", "tiny", "--run-dir", tmp_path / "run"]) == 2
    one_error(capsys, "zero.dream3d", "SPACING")
    assert not (tmp_path / "run").exists()


def _architecture(key, value):
    return lambda card: card["architecture"].__setitem__(key, value)


def _phase_value(value):
    def change(card):
        card["phases"][0]["value"] = value
    return change


def _deep(card):
    return "[" * 100_000 + "]" * 100_000


MODEL_CASES = [
    ("generator widths 4096", lambda card: card["architecture"].__setitem__(
        "g_widths", [4096] * len(card["architecture"]["g_widths"])), "do not match"),
    ("MLP width 4096", _architecture("mlp_width", 4096), "do not match"),
    ("code dimension 4096", _architecture("code_dim", 4096), "do not match"),
    ("a negative phase value", _phase_value(-1), "'phases'"),
    ("a phase value of 1e12", _phase_value(10**12), "'phases'"),
    ("a repeated phase value", lambda card: card["phases"][1].__setitem__("value", card["phases"][0]["value"]),
     "repeats"),
    ("training as a list", lambda card: card.__setitem__("training", [1, 2]), "'training'"),
    ("voxel size infinite", lambda card: card.__setitem__("voxel_size_um", 1e400), "voxel_size_um"),
]


@pytest.mark.parametrize("change, named", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_a_damaged_model_card_is_refused_before_any_network_is_built(change, named, trained_run, tmp_path, capsys):
    model = changed_model(trained_run / "model", tmp_path / "model", change)
    assert run_cli(["generate", "--model", model, "--shape", "16", "--out", tmp_path / "v.npy"]) == 2
    one_error(capsys, named)
    assert not (tmp_path / "v.npy").exists()


def test_a_deeply_nested_model_card_is_one_sentence(trained_run, tmp_path, capsys):
    model = changed_model(trained_run / "model", tmp_path / "model")
    (model / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    assert run_cli(["info", model]) == 2
    one_error(capsys, "model.json")


def test_nan_weights_are_refused_with_what_to_do(trained_run, tmp_path, capsys):
    def poison(tensors):
        for tensor in tensors.values():
            tensor.fill_(float("nan"))
    model = changed_model(trained_run / "model", tmp_path / "model", weights=poison)
    assert run_cli(["generate", "--model", model, "--shape", "16", "--out", tmp_path / "v.npy"]) == 2
    one_error(capsys, "NaN", "model.safetensors")


def test_a_run_that_diverged_keeps_its_last_good_checkpoint_and_model(trained_run, tmp_path, capsys):
    run_dir = Path(shutil.copytree(trained_run, tmp_path / "run"))
    tensors, meta = storage.load_tensors(run_dir / "checkpoint.safetensors")
    for name, tensor in tensors.items():
        if name.startswith("G.") and tensor.is_floating_point():
            tensor.fill_(float("nan"))
    storage.save_tensors(run_dir / "checkpoint.safetensors", tensors, meta)
    before = {name: (run_dir / name).read_bytes() for name in ("checkpoint.safetensors", "model/model.safetensors")}
    assert run_cli(["resume", run_dir, "--steps", meta["step"] + 2, "--set", "threads=1"]) == 2
    one_error(capsys, "diverged", "NaN")
    assert {name: (run_dir / name).read_bytes() for name in before} == before


def _calibration(change):
    def apply(card):
        change(card["calibration"])
    return apply


CALIBRATION_CASES = [
    ("tile 0", _calibration(lambda c: c.__setitem__("tile", 0)), "tile"),
    ("no phases", _calibration(lambda c: c.__setitem__("phases", [])), "no phases"),
    ("empty attributes", _calibration(lambda c: c.__setitem__("attributes", {})), "no attributes"),
    ("a curve cut short", _calibration(lambda c: c["attributes"]["alpha"]["curves"]["vf"]["0"]["mean"].pop()),
     "vf curve"),
]


@pytest.mark.parametrize("change, named", [c[1:] for c in CALIBRATION_CASES], ids=[c[0] for c in CALIBRATION_CASES])
def test_a_damaged_calibration_is_one_sentence_for_match(change, named, tmp_path, capsys):
    model = changed_model(DEFAULT_MODEL, tmp_path / "model", change)
    image = tmp_path / "slice.npy"
    np.save(image, np.random.default_rng(0).integers(0, 3, (128, 128)).astype(np.uint8))
    assert run_cli(["match", "--model", model, "--image", image]) == 2
    one_error(capsys, "calibration is damaged", named, "calibrate")


def test_calibrate_with_a_huge_tile_says_which_tile_fits(trained_run, tmp_path, capsys):
    model = changed_model(trained_run / "model", tmp_path / "model")
    before = (model / "model.json").read_bytes()
    assert run_cli(["calibrate", model, "--tile", "100000"]) == 2
    err = one_error(capsys, "tile 100000")
    assert ".zarr" not in err
    assert (model / "model.json").read_bytes() == before


def test_a_sidecar_that_cannot_be_written_leaves_no_volume(trained_run, tmp_path, capsys):
    for suffix in (".npy", ".vti", ".tif"):
        (tmp_path / f"v{suffix}.json").mkdir()
        assert run_cli(["generate", "--model", trained_run / "model", "--shape", "16",
                        "--out", tmp_path / f"v{suffix}"]) == 2
        one_error(capsys, f"v{suffix}.json")
        assert not (tmp_path / f"v{suffix}").exists()


def test_synth_with_a_bad_grain_ids_name_writes_nothing(tmp_path, capsys):
    assert run_cli(["synth", "--shape", "32", "--out", tmp_path / "v.npy", "--grain-ids", tmp_path / "g.png"]) == 2
    one_error(capsys, "--grain-ids", "g.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".vti", ".dream3d"])
def test_a_full_disk_is_one_sentence_and_leaves_no_temporary_file(suffix, trained_run, tmp_path, capsys, monkeypatch):
    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", no_space)
    assert run_cli(["generate", "--model", trained_run / "model", "--shape", "16",
                    "--out", tmp_path / f"v{suffix}"]) == 2
    one_error(capsys, f"v{suffix}", "disk is full")
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_zarr_writes_chunks_leaves_nothing(tmp_path, monkeypatch):
    """zarr writes chunks concurrently and stops waiting at the first failure; the writes still in flight must
    not re-create the store after it was removed (they finish here 20-200 ms after the first failure)."""
    import zarr.storage._local as local_store
    real_put, calls = local_store._put, itertools.count()

    def put(path, value, exclusive=False):
        if ".partial" in str(path) and path.name[0].isdigit():          # a chunk, not metadata
            time.sleep(0.02 * next(calls))
            path.parent.mkdir(parents=True, exist_ok=True)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_put(path, value, exclusive)
    monkeypatch.setattr(local_store, "_put", put)
    with pytest.raises(ValueError, match="disk is full"):      # 8 chunks of 128^3 written at once
        stream.save_zarr(tmp_path / "v.zarr", np.ones((256, 256, 256), np.uint8))
    time.sleep(0.5)                              # longer than any write in flight could still take
    assert next(calls) > 2                       # several chunk writes were in flight
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_checkpointing_is_one_sentence_and_the_run_resumes(training_volumes, tmp_path, capsys,
                                                                             monkeypatch):
    from slicegan_core import storage as storage_module
    real_write, failures = storage_module.atomic_write_bytes, []

    def write(path, data):
        if Path(path).name == "model.safetensors" and Path(path).is_file() and not failures:   # 2nd checkpoint
            failures.append(path)
            raise ValueError(storage.os_error_sentence(OSError(errno.ENOSPC, "No space left"), path))
        return real_write(path, data)
    monkeypatch.setattr(storage_module, "atomic_write_bytes", write)
    run_dir = tmp_path / "run"
    argv = ["train", "--data", training_volumes[0][0], "--preset", "tiny", "--run-dir", run_dir, "--steps", "6",
            "--set", "checkpoint_every=2", "--set", "fidelity_seeds=0", "--set", "threads=1"]
    assert run_cli(argv) == 2
    one_error(capsys, "model.safetensors", "disk is full")
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "crashed" and status["error"].startswith("Could not write") and "Traceback" not in \
        status["error"]
    assert run_cli(["resume", run_dir]) == 0 and json.loads((run_dir / "status.json").read_text())["step"] == 6


def test_a_read_only_folder_is_refused_before_generating(trained_run, tmp_path, capsys, monkeypatch):
    # Tests run as root, for whom chmod does not make a folder read-only; the OS's answer is what is faked.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == tmp_path
                        else real_access(path, mode, **kw))
    for suffix in (".npy", ".vti", ".zarr"):
        assert run_cli(["generate", "--model", trained_run / "model", "--shape", "16",
                        "--out", tmp_path / f"v{suffix}"]) == 2
        one_error(capsys, "read-only")
    assert list(tmp_path.iterdir()) == []


def test_temporary_files_of_a_killed_generate_go_with_the_next_write(trained_run, tmp_path, capsys):
    dead = tmp_path / ".v.npy.4194999.k1ll3d.tmp"           # a pid above Linux's largest: never running
    alive = tmp_path / f".v.npy.{os.getpid()}.wr1t1ng.tmp"   # a writer that is still at work is left alone
    dead.write_bytes(b"half a volume")
    alive.write_bytes(b"being written")
    assert run_cli(["generate", "--model", trained_run / "model", "--shape", "16", "--out", tmp_path / "w.npy"]) == 0
    assert not dead.exists() and alive.exists()


def test_a_small_volume_fits_a_nearly_full_disk(trained_run, tmp_path, capsys, monkeypatch):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(stream.shutil, "disk_usage", lambda path: usage._replace(free=30 * 10**6))
    assert run_cli(["generate", "--model", trained_run / "model", "--shape", "16", "--out", tmp_path / "v.npy"]) == 0
    monkeypatch.setattr(stream.shutil, "disk_usage", lambda path: usage._replace(free=2000))
    assert run_cli(["generate", "--model", trained_run / "model", "--shape", "16", "--out", tmp_path / "w.npy"]) == 2
    one_error(capsys, "4.1 KB", "2.0 KB free")


def test_a_large_png_is_read_without_pils_warning(tmp_path):
    path = tmp_path / "large.png"
    Image.fromarray(np.zeros((9500, 9500), np.uint8)).save(path)     # above PIL's 89 M pixel warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_image(path).shape == (9500, 9500)


def test_synth_writes_grain_ids_as_a_tiff_imagej_reads(tmp_path, capsys):
    assert run_cli(["synth", "--shape", "32", "--median-esd", "4", "--out", tmp_path / "v.npy",
                    "--grain-ids", tmp_path / "g.tif"]) == 0
    ids = tifffile.imread(tmp_path / "g.tif")
    assert ids.dtype == np.uint16 and ids.shape == (32, 32, 32) and ids.max() > 100
    from slicegan_core.export import volume_bytes
    with pytest.raises(ValueError, match="0..65535"):
        volume_bytes(np.full((2, 2, 2), 70_000, np.int32), ".tif")


def test_evaluate_refuses_phases_that_neither_volume_holds(tmp_path, capsys):
    volume = np.random.default_rng(0).integers(0, 3, (24, 24, 24)).astype(np.uint8)
    np.save(tmp_path / "a.npy", volume)
    assert run_cli(["evaluate", "--real", tmp_path / "a.npy", "--generated", tmp_path / "a.npy", "--phases", "1,7"]) == 2
    one_error(capsys, "[7]")


def test_os_errors_become_one_sentence_naming_the_path():
    error = OSError(errno.EROFS, "Read-only file system", "/data/v.npy")
    assert storage.os_error_sentence(error, "/data/v.npy") == \
        "Could not write /data/v.npy: the file system is read-only; choose a writable folder."


def test_calibrate_into_a_read_only_model_folder_is_refused_before_measuring(trained_run, tmp_path, capsys,
                                                                             monkeypatch):
    model = changed_model(trained_run / "model", tmp_path / "model")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == model
                        else real_access(path, mode, **kw))
    monkeypatch.setattr("slicegan_core.calibrate.calibrate", None)      # measuring anything would fail
    assert run_cli(["calibrate", model]) == 2
    one_error(capsys, "read-only", "model.json")
