"""Bad input through the real command line (a subprocess per case): exit status 2, one line starting with
``error:``, no traceback, and nothing left behind that blocks a retry. Then the run lock under a real race:
several trainers started at the same instant on one directory, repeatedly; exactly one may run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TRAINED_STEPS

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def run_cli(argv, cwd, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slicegan_core", *map(str, argv)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_run, training_volumes):
    """Bad (and some good) input files, made once; cases only read them."""
    folder = tmp_path_factory.mktemp("bad_input")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (48, 48, 48)).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    np.save(folder / "labels_0_255.npy", (rng.integers(0, 2, (48, 48, 48)) * 255).astype(np.uint8))
    np.save(folder / "photo.npy", rng.integers(0, 256, (96, 96)).astype(np.uint8))
    np.save(folder / "two_hundred_values.npy", np.arange(200 * 200).reshape(200, 200) % 200)
    np.save(folder / "two_channels.npy", np.zeros((48, 48, 48, 2), np.uint8))
    np.save(folder / "five_d.npy", labels[None, None])
    np.save(folder / "negative.npy", labels.astype(np.int16) - 1)
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    # A header that declares 64 GB: a sparse file, so the test costs no disk, and the loader must not read it.
    np.lib.format.open_memmap(folder / "declares_64gb.npy", mode="w+", dtype=np.uint8, shape=(4000, 4000, 4000))
    (folder / "a_file").write_text("not a directory")
    (folder / "a_folder.tif").mkdir()
    # Damaged copies of the trained model's card.
    card = json.loads((trained_run / "model" / "model.json").read_text())
    damage = {"card_is_a_list": [card],
              "phases_as_ints": {**card, "phases": [0, 1, 2]},
              "negative_widths": {**card, "architecture": {**card["architecture"], "g_widths": [-8, 16, 8]}},
              "absurd_z_channels": {**card, "architecture": {**card["architecture"], "z_channels": 10 ** 9}},
              "attributes_a_string": {**card, "attributes": "alpha"}}
    for name, document in damage.items():
        shutil.copytree(trained_run / "model", folder / name)
        (folder / name / "model.json").write_text(json.dumps(document))
    return folder


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A writable copy of the trained run (TRAINED_STEPS steps), to damage or to resume."""
    return Path(shutil.copytree(trained_run, tmp_path / "run_copy"))


DATA = ["--data", "{data}", "--preset", "tiny", "--run-dir", "{tmp}/run"]

# (id, argv, what the message must name). {data}: a training volume, {files}: the files above, {tmp}: a fresh
# folder per case, {run}: a copy of the trained run, {model}: the trained run's model.
CASES = [
    # train: values that enter on the command line
    ("attr-not-a-number", ["train", *DATA, "--attr", "alpha=abc"], "alpha=abc"),
    ("attr-without-value", ["train", *DATA, "--attr", "alpha"], "alpha"),
    ("checkpoint-every-0", ["train", *DATA, "--set", "checkpoint_every=0"], "checkpoint_every"),
    ("log-every-0", ["train", *DATA, "--set", "log_every=0"], "log_every"),
    ("threads-negative", ["train", *DATA, "--set", "threads=-1"], "threads"),
    ("widths-not-numbers", ["train", *DATA, "--set", "g_widths=abc"], "g_widths"),
    ("learning-rate-text", ["train", *DATA, "--set", "lr_g=fast"], "lr_g"),
    ("seed-overflows", ["train", *DATA, "--set", "seed=99999999999999999999999"], "seed"),
    ("steps-0", ["train", *DATA, "--steps", "0"], "steps"),
    ("steps-negative", ["train", *DATA, "--steps", "-5"], "steps"),
    ("batch-size-0", ["train", *DATA, "--set", "batch_size=0"], "batch_size"),
    ("run-dir-is-a-file", ["train", "--data", "{data}", "--preset", "tiny", "--run-dir", "{files}/a_file"], "a_file"),
    # train: data files
    ("two-values-per-voxel", ["train", "--data", "{files}/two_channels.npy", "--preset", "tiny",
                              "--run-dir", "{tmp}/run"], "(48, 48, 48, 2)"),
    ("two-processes-bad-data", ["train", "--nproc", "2", "--data", "{files}/two_channels.npy", "--preset", "tiny",
                                "--run-dir", "{tmp}/run"], "(48, 48, 48, 2)"),    # caught after torchrun started
    ("two-processes-voxel-size-0", ["train", "--nproc", "2", *DATA, "--voxel-size", "0"], "--voxel-size"),
    ("negative-labels", ["train", "--data", "{files}/negative.npy", "--preset", "tiny", "--run-dir", "{tmp}/run"],
     "from -1 to 1"),
    ("five-dimensions", ["train", "--data", "{files}/five_d.npy", "--preset", "tiny", "--run-dir", "{tmp}/run"],
     "5 dimensions"),
    ("pickled-objects", ["train", "--data", "{files}/objects.npy", "--preset", "tiny", "--run-dir", "{tmp}/run"],
     "objects.npy"),
    ("declared-size-beyond-memory", ["train", "--data", "{files}/declares_64gb.npy", "--preset", "tiny",
                                     "--run-dir", "{tmp}/run"], "4000 x 4000 x 4000"),
    # resume
    ("resume-below-the-step-reached", ["resume", "{run}", "--steps", "1"], f"step {TRAINED_STEPS}"),
    ("resume-checkpoint-every-0", ["resume", "{run}", "--set", "checkpoint_every=0"], "checkpoint_every"),
    ("resume-empty-config", ["resume", "{run}"], "config.json"),
    ("resume-corrupt-config", ["resume", "{run}"], "config.json"),
    # generate / info: models and outputs
    ("card-is-a-list", ["generate", "--model", "{files}/card_is_a_list", "--out", "{tmp}/v.npy"], "model.json"),
    ("phases-as-ints", ["generate", "--model", "{files}/phases_as_ints", "--out", "{tmp}/v.npy"], "phases"),
    ("negative-widths", ["generate", "--model", "{files}/negative_widths", "--out", "{tmp}/v.npy"], "g_widths"),
    ("absurd-z-channels", ["generate", "--model", "{files}/absurd_z_channels", "--out", "{tmp}/v.npy"],
     "z_channels"),
    ("attributes-a-string", ["info", "{files}/attributes_a_string"], "attributes"),
    ("run-dir-as-model", ["generate", "--model", "{run}", "--out", "{tmp}/v.npy"], "training run"),
    ("out-is-a-directory", ["generate", "--model", "{model}", "--shape", "16", "--out", "{files}/a_folder.tif"],
     "a_folder.tif"),
    ("shape-100000", ["generate", "--model", "{model}", "--shape", "100000", "--out", "{tmp}/v.npy"], "100000"),
    ("shape-6000-vti", ["generate", "--model", "{model}", "--shape", "6000", "--out", "{tmp}/v.vti"], "6000"),
    ("seed-overflows", ["generate", "--model", "{model}", "--seed", "99999999999999999999999", "--shape", "16",
                        "--out", "{tmp}/v.npy"], "seed"),
    # synth
    ("synth-shape-100000", ["synth", "--shape", "100000", "--out", "{tmp}/v.npy"], "100000"),
    ("synth-sigma-huge", ["synth", "--sigma", "1e9", "--shape", "32", "--out", "{tmp}/v.npy"], "sigma"),
    ("synth-median-esd-huge", ["synth", "--median-esd", "1e9", "--shape", "32", "--out", "{tmp}/v.npy"],
     "median"),
    ("synth-fractions-text", ["synth", "--fractions", "abc", "--shape", "32", "--out", "{tmp}/v.npy"], "abc"),
    # evaluate
    ("evaluate-greyscale-photo", ["evaluate", "--real", "{files}/photo.npy", "--generated", "{files}/labels.npy"],
     "photo.npy"),
    ("evaluate-200-values", ["evaluate", "--real", "{files}/two_hundred_values.npy",
                             "--generated", "{files}/labels.npy"], "two_hundred_values.npy"),
    ("evaluate-phases-not-shared", ["evaluate", "--real", "{files}/labels_0_255.npy",
                                    "--generated", "{files}/labels.npy"], "[0, 255]"),
    # calibrate / match (the trained run's model has no calibration)
    ("calibrate-one-seed", ["calibrate", "{model}", "--seeds", "1"], "seeds"),
    ("calibrate-a-run-dir", ["calibrate", "{run}"], "training run"),
    ("match-uncalibrated-model", ["match", "--model", "{model}", "--image", "{files}/labels.npy"], "calibrate"),
    ("match-two-phases", ["match", "--model", "{model}", "--image", "{files}/labels_0_255.npy"], "[0, 255]"),
    ("match-greyscale-photo", ["match", "--model", "{model}", "--image", "{files}/photo.npy"], "photo.npy"),
    ("match-missing-image", ["match", "--model", "{model}", "--image", "{tmp}/nothing.png"], "nothing.png"),
]


# Cases run through a real subprocess (the rest call the CLI's entry point in this process, which is the same
# code without the ~2 s of starting Python and torch each time): one per command that reads a file, and two
# with --nproc (an error found after torchrun started the processes, and one found before it starts them).
SUBPROCESS = {"two-processes-bad-data", "two-processes-voxel-size-0", "pickled-objects", "resume-corrupt-config", "out-is-a-directory",
              "synth-fractions-text", "evaluate-greyscale-photo", "match-uncalibrated-model"}


def run_in_process(argv, cwd, capsys, monkeypatch) -> subprocess.CompletedProcess:
    from slicegan_core.cli import main
    monkeypatch.chdir(cwd)
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(argv, code, captured.out, captured.err)


@pytest.mark.parametrize("case, argv, named", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_sentence_and_status_2(case, argv, named, files, run_copy, trained_run,
                                                  training_volumes, tmp_path, capsys, monkeypatch):
    if case == "resume-empty-config":
        (run_copy / "config.json").write_text("{}")
    if case == "resume-corrupt-config":
        (run_copy / "config.json").write_text('{"model": {\n')
    config_before = (run_copy / "config.json").read_bytes()
    values = {"data": training_volumes[0][0], "files": files, "tmp": tmp_path, "run": run_copy,
              "model": trained_run / "model"}
    started = time.perf_counter()
    arguments = [a.format(**values) for a in argv]
    result = run_cli(arguments, cwd=tmp_path, timeout=60) if case in SUBPROCESS else \
        run_in_process(arguments, tmp_path, capsys, monkeypatch)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert named in lines[0], lines[0]
    assert time.perf_counter() - started < 60
    # Nothing that blocks a retry: no half-made run, the copy's config untouched, no output file.
    assert not (tmp_path / "run" / "config.json").exists()
    assert (run_copy / "config.json").read_bytes() == config_before
    assert not any(p.name.startswith("v.") for p in tmp_path.iterdir())


def test_a_failed_start_can_be_retried_in_the_same_directory(training_volumes, tmp_path, capsys, monkeypatch):
    bad = run_in_process(["train", "--data", training_volumes[0][0], "--preset", "tiny", "--run-dir",
                          tmp_path / "run", "--set", "threads=-1"], tmp_path, capsys, monkeypatch)
    assert bad.returncode == 2
    good = run_in_process(["train", "--data", training_volumes[0][0], "--preset", "tiny", "--run-dir",
                           tmp_path / "run", "--steps", "1"], tmp_path, capsys, monkeypatch)
    assert good.returncode == 0, good.stderr[-3000:]
    lines = good.stdout.strip().splitlines()        # one fidelity line per checkpoint, then the outcome
    assert lines[0].startswith("step 1: fidelity FAIL") and lines[-1].startswith("run finished at step 1")


def test_resume_removes_the_temp_files_a_kill_left(run_copy):
    for leftover in (run_copy / ".checkpoint.safetensors.abc123.tmp", run_copy / "model" / ".model.json.x.tmp"):
        leftover.write_bytes(b"half a file")
    result = run_cli(["resume", run_copy], cwd=run_copy)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(run_copy.rglob("*.tmp"))


# ---- the run lock under a real race ---------------------------------------------------------------------

RACER = """
import contextlib, os, sys, time
from slicegan_core.cli import main            # imported once, before the first start signal
folder, rounds, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for round_index in range(rounds):
    go, me = os.path.join(folder, f"go{round_index}"), f"{round_index}.{os.getpid()}"
    open(f"{go}.ready.{os.getpid()}", "w").close()
    while not os.path.exists(go):
        time.sleep(0.001)
    with open(os.path.join(folder, f"stderr{me}"), "w") as stderr, contextlib.redirect_stderr(stderr):
        try:
            code = main([a.replace("ROUND", str(round_index)) for a in argv])
        except SystemExit as stop:
            code = stop.code
    with open(os.path.join(folder, f"code{me}"), "w") as out:
        out.write(str(code))
"""


def test_trainers_started_at_the_same_instant_on_one_directory_exactly_one_runs(training_volumes, tmp_path):
    """Separate processes (each imports once, then races every round) start training on one run directory at
    the same instant, round after round."""
    rounds, racers = 4, 3
    argv = ["train", "--data", str(training_volumes[0][0]), "--preset", "tiny", "--run-dir",
            str(tmp_path / "runROUND"), "--steps", "3", "--set", "checkpoint_every=1", "--set", "fidelity_seeds=0"]
    output = tmp_path / "racers.log"          # a file, not a pipe nobody reads until the end
    with open(output, "w") as log:
        processes = [subprocess.Popen([sys.executable, "-c", RACER, str(tmp_path), str(rounds), *argv],
                                      cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT)
                     for _ in range(racers)]
    try:
        for round_index in range(rounds):
            deadline = time.monotonic() + 120      # every racer has finished the last round and waits at the line
            while len(list(tmp_path.glob(f"go{round_index}.ready.*"))) < racers and time.monotonic() < deadline:
                assert all(p.poll() is None for p in processes), output.read_text()[-3000:]
                time.sleep(0.02)
            (tmp_path / f"go{round_index}").touch()
        for process in processes:
            assert process.wait(timeout=300) == 0, output.read_text()[-3000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for round_index in range(rounds):
        outcomes = [(int(path.read_text()), path.name.replace("code", "stderr"))
                    for path in tmp_path.glob(f"code{round_index}.*")]
        codes = sorted(code for code, _ in outcomes)
        assert codes == [0] + [2] * (racers - 1), (round_index, outcomes)
        for code, stderr_name in outcomes:
            stderr = (tmp_path / stderr_name).read_text()
            if code == 2:
                assert ("is in use by process" in stderr or "already holds a run" in stderr), stderr
        run_log = (tmp_path / f"run{round_index}" / "events.jsonl").read_text().splitlines()
        assert [json.loads(line)["step"] for line in run_log] == [1, 2, 3]     # one trainer's log: no step twice
