"""Command line: help for every subcommand, generate/synth/train/resume/info do their job, and bad input is one
``error:`` line on stderr with exit status 2 (never a traceback)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from slicegan_core.cli import main
from slicegan_core.generate import load_model

REPO = Path(__file__).resolve().parents[1]


def run_cli(argv) -> int:
    """main() in-process; argparse's own exits (help, usage errors) become return codes."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as stop:
        return stop.code


def assert_one_error_line(stderr: str):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("command", [[], ["synth"], ["train"], ["resume"], ["generate"], ["info"]])
def test_help_of_each_subcommand_exits_0(command, capsys):
    assert run_cli([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m slicegan_core") and "--help" in out


@pytest.mark.parametrize("command", ["evaluate", "steering"])
def test_help_of_the_evaluation_subcommands_exits_0(command, capsys):
    evaluation = pytest.importorskip("slicegan_core.evaluate")
    if not hasattr(evaluation, f"{command}_main"):                # another helper is still writing it
        pytest.skip(f"slicegan_core.evaluate has no {command}_main yet")
    assert run_cli([command, "--help"]) == 0
    assert "usage" in capsys.readouterr().out


def test_generate_writes_the_volume_and_its_sidecar(trained_run, tmp_path, capsys):
    out = tmp_path / "volume.npy"
    assert run_cli(["generate", "--model", trained_run / "model", "--attr", "alpha=0.3", "--seed", 2,
                    "--shape", "24x20x16", "--device", "cpu", "--out", out]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and captured.err == ""
    volume = np.load(out)
    expected = load_model(trained_run / "model", device="cpu").generate({"alpha": 0.3}, seed=2, shape=(24, 20, 16))
    assert np.array_equal(volume, expected)
    sidecar = json.loads((tmp_path / "volume.npy.json").read_text())
    assert sidecar["seed"] == 2 and sidecar["attrs"] == {"alpha": 0.3} and sidecar["shape"] == [24, 20, 16]
    assert sidecar["voxel_size_um"] == 0.5


def test_generate_periodic_tif_and_out_of_range_warning(trained_run, tmp_path, capsys):
    out = tmp_path / "volume.tif"
    assert run_cli(["generate", "--model", trained_run / "model", "--attr", "alpha=0.9", "--shape", "32",
                    "--periodic", "--device", "cpu", "--out", out]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: alpha=0.9 is outside the trained range")
    import tifffile
    assert tifffile.imread(out).shape == (32, 32, 32)
    assert json.loads((tmp_path / "volume.tif.json").read_text())["periodic"] is True


@pytest.mark.parametrize("name, fmt", [("big.zarr", "OME-Zarr 0.4"), ("big.tif", "ImageJ TIFF"),
                                       ("big.npy", "NumPy .npy")])
def test_generate_streams_zarr_tif_and_npy_with_the_in_memory_voxels(trained_run, tmp_path, capsys, name, fmt):
    import tifffile
    import zarr

    shape = (224, 24, 20)              # beyond the statistics window: the budget below makes several tiles
    out = tmp_path / name
    assert run_cli(["generate", "--model", trained_run / "model", "--seed", 4, "--shape", "224x24x20",
                    "--max-tile-voxels", 50_000, "--device", "cpu", "--out", out]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == (f"wrote {out}: {fmt}, alpha = 0.35 (the middle of the trained range, as no "
                                    f"--attr was given), seed 4, shape {shape}, uint8")
    expected = load_model(trained_run / "model", device="cpu").generate(seed=4, shape=shape, max_tile_voxels=50_000)
    if name.endswith(".zarr"):
        root = zarr.open_group(str(out), mode="r")
        volume = root["0"][:]
        assert root.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5] * 3
    elif name.endswith(".tif"):
        with tifffile.TiffFile(out) as tif:
            volume = tif.asarray()
            assert tif.imagej_metadata["spacing"] == 0.5
    else:
        volume = np.load(out)
    assert np.array_equal(volume, expected)
    assert json.loads((tmp_path / f"{name}.json").read_text())["format"] == fmt


def test_generate_voxel_size_goes_into_the_metadata(trained_run, tmp_path, capsys):
    import zarr

    for name in ("v.zarr", "v.vti"):
        assert run_cli(["generate", "--model", trained_run / "model", "--shape", "16", "--voxel-size", "2.5",
                        "--device", "cpu", "--out", tmp_path / name]) == 0
        assert json.loads((tmp_path / f"{name}.json").read_text())["voxel_size_um"] == 2.5
    multiscale = zarr.open_group(str(tmp_path / "v.zarr"), mode="r").attrs["multiscales"][0]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.5] * 3


def test_an_in_memory_format_beyond_memory_names_the_streamed_ones(trained_run, tmp_path, capsys, monkeypatch):
    from slicegan_core import synthetic

    monkeypatch.setattr(synthetic, "available_memory", lambda: 2**30)
    for name in ("v.vti", "v.dream3d"):
        assert run_cli(["generate", "--model", trained_run / "model", "--shape", "1500", "--device", "cpu",
                        "--out", tmp_path / name]) == 2
        err = capsys.readouterr().err
        assert_one_error_line(err)
        assert "A 1500^3 volume needs" in err and "write it to .zarr, .tif or .npy, which are streamed" in err
    assert list(tmp_path.iterdir()) == []


def test_torchrun_processes_share_one_zarr(trained_run, tmp_path):
    out = tmp_path / "shared.zarr"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
               "slicegan_core", "generate", "--model", str(trained_run / "model"), "--seed", "3", "--shape",
               "224x24x20", "--max-tile-voxels", "50000", "--device", "cpu", "--out", str(out)]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("wrote") == 1                              # process 0 reports
    import zarr
    volume = zarr.open_group(str(out), mode="r")["0"][:]
    model = load_model(trained_run / "model", device="cpu")
    assert np.array_equal(volume, model.generate(seed=3, shape=(224, 24, 20), max_tile_voxels=50_000))
    tiles = model.generate_tiles(seed=3, shape=(224, 24, 20), max_tile_voxels=50_000)
    assert tiles.count >= 4                                               # both processes had tiles to write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.zarr", "shared.zarr.json"]


def test_info_prints_the_model_card(trained_run, capsys):
    assert run_cli(["info", trained_run / "model"]) == 0
    text = capsys.readouterr().out
    assert "alpha       trained at 0.2, 0.5; range 0.2 to 0.5" in text and "voxel size  0.5 um" in text
    assert "training    4 steps" in text and "verdict     Fidelity verdict at step 4" in text
    assert run_cli(["info", trained_run / "model", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["attributes"]["alpha"]["trained_values"] == [0.2, 0.5]
    assert card["patch_size"] == 32 and card["training"] == 4 and card["verdict"]["result"] == "fail"


def test_help_states_the_defaults_and_generate_says_what_it_made(trained_run, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 128)" in text and "same volume (default: 0)" in text and "trained range)" in text
    assert run_cli(["generate", "--model", trained_run / "model", "--shape", "16", "--out", tmp_path / "v.npy"]) == 0
    assert "alpha = 0.35 (the middle of the trained range, as no --attr was given), seed 0" in capsys.readouterr().out
    assert run_cli(["generate", "--model", "nosuch", "--out", tmp_path / "w.npy"]) == 2
    assert "shipped model (default)" in capsys.readouterr().err


def test_synth_writes_a_labelled_volume(tmp_path, capsys):
    out = tmp_path / "synthetic.npy"
    assert run_cli(["synth", "--shape", "16", "--median-esd", "4", "--seed", 3, "--out", out,
                    "--grain-ids", tmp_path / "ids.npy"]) == 0
    volume = np.load(out)
    assert volume.shape == (16, 16, 16) and set(np.unique(volume)) <= {0, 1, 2}
    recipe = json.loads((tmp_path / "synthetic.npy.json").read_text())["synthetic_recipe"]
    assert recipe["seed"] == 3 and recipe["shape"] == [16, 16, 16]
    assert np.load(tmp_path / "ids.npy").shape == (16, 16, 16)


def test_train_then_resume(training_volumes, tmp_path, capsys):
    run_dir = tmp_path / "run"
    argv = ["train", "--preset", "tiny", "--run-dir", run_dir, "--steps", 2, "--voxel-size", 0.7,
            "--set", "checkpoint_every=1", "--set", "lr_g=2e-4", "--set", "g_widths=16,8,8"]
    for path, alpha in training_volumes:
        argv += ["--data", path, "--attr", f"alpha={alpha}"]
    assert run_cli(argv) == 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["lr_g"] == 2e-4 and config["model"]["g_widths"] == [16, 8, 8]
    assert config["data"]["voxel_size_um"] == 0.7
    assert run_cli(["resume", run_dir, "--steps", 3, "--set", "attr_jitter=0.3"]) == 0
    assert json.loads((run_dir / "status.json").read_text()) | {"updated": 0, "pid": 0} == \
        {"state": "finished", "step": 3, "steps": 3, "updated": 0, "pid": 0}
    assert load_model(run_dir / "model", device="cpu").info["training"]["steps"] == 3
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["attr_jitter"] == 0.3
    assert config["history"] == [{"at_step": 2, "changed": {"attr_jitter": 0.3, "steps": 3}}]


@pytest.mark.parametrize("argv", [
    ["generate", "--model", "{tmp}/no_such_model", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}", "--shape", "12xq", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}", "--shape", "0", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}", "--shape", "8x8", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}", "--attr", "alpha", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}", "--attr", "alpha=wide", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}", "--attr", "beta=0.3", "--shape", "8", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}", "--shape", "20", "--periodic", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}", "--shape", "8", "--out", "{tmp}/v.png"],
    ["generate", "--model", "{model}", "--shape", "8", "--out", "{tmp}"],
    ["generate", "--model", "{model}", "--shape", "8", "--out", "{tmp}/missing_folder/v.zarr"],
    ["generate", "--model", "{model}", "--shape", "8", "--max-tile-voxels", "0", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}", "--shape", "8", "--voxel-size", "-1", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}", "--shape", "8", "--out", "{tmp}/missing_folder/v.npy"],
    ["generate", "--model", "{model}", "--seed", "one", "--out", "{tmp}/v.npy"],
    ["generate", "--model", "{model}"],
    ["info", "{tmp}/no_such_model"],
    ["resume", "{tmp}"],
    ["resume", "{run}", "--set", "g_widths=8,8,8"],
    ["train", "--data", "{tmp}/missing.npy", "--run-dir", "{tmp}/run"],
    ["train", "--data", "{data}", "--attr", "alpha=0.2", "--attr", "alpha=0.3", "--run-dir", "{tmp}/run"],
    ["train", "--data", "{data}", "--preset", "tiny", "--set", "lerning_rate=1", "--run-dir", "{tmp}/run"],
    ["train", "--data", "{data}", "--preset", "huge", "--run-dir", "{tmp}/run"],
    ["frobnicate"],
])
def test_bad_input_is_one_error_line_with_status_2(argv, trained_run, training_volumes, tmp_path, capsys):
    values = {"tmp": tmp_path, "model": trained_run / "model", "data": training_volumes[0][0], "run": trained_run}
    assert run_cli([a.format(**values) for a in argv]) == 2
    captured = capsys.readouterr()
    assert_one_error_line(captured.err)
    assert not (tmp_path / "v.npy").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv", [["generate", "--model", "no_such_model_dir", "--out", "v.npy"],
                                  ["generate", "--shape", "12xq", "--out", "v.npy"]])
def test_the_real_command_line_fails_cleanly(argv, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "slicegan_core", *argv], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert_one_error_line(result.stderr)
    assert result.stdout == ""
