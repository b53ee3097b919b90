"""Background training runs: launch, status from the run directory, stop (checkpoint), resume, failures."""
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slicegan_core import jobs
from slicegan_core.data import DatasetSpec
from slicegan_core.storage import load_tensors
from slicegan_core.train import lock_holder, resume


def wait_for(run_dir, condition, timeout=120.0):
    """Poll run_status until ``condition(status)`` holds; fail after ``timeout`` seconds (no hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = jobs.run_status(run_dir)
        if condition(status):
            return status
        time.sleep(0.3)
    pytest.fail(f"run never reached the expected state; last: {status}\n{jobs.log_tail(run_dir)}")


def event_steps(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture
def runs_dir(tmp_path):
    """A runs folder whose processes are killed at the end of the test, whatever happens."""
    yield tmp_path
    for run in jobs.list_runs(tmp_path):
        if run.active and run.pid:
            os.kill(run.pid, signal.SIGKILL)


def test_new_run_dir_is_exclusive_and_plain(tmp_path):
    path = jobs.new_run_dir(tmp_path, "first")
    assert path.is_dir() and path.parent == tmp_path
    with pytest.raises(ValueError, match="already exists"):
        jobs.new_run_dir(tmp_path, "first")
    for name in ("../escape", "a/b", "a\\b", ".hidden", ".", "..", "a b", "tab\tname", "ünïcode"):
        with pytest.raises(ValueError, match="plain folder name"):
            jobs.new_run_dir(tmp_path, name)
    with pytest.raises(ValueError, match="is empty"):
        jobs.new_run_dir(tmp_path, "  ")
    with pytest.raises(ValueError, match=r"^The run name is 300 characters long; shorten it to at most 100\.$"):
        jobs.new_run_dir(tmp_path, "x" * 300)        # was an OSError (file name too long)
    assert jobs.new_run_dir(tmp_path, " run-1.5_b ") == tmp_path / "run-1.5_b"
    assert jobs.validate_run_name("x" * 100) == "x" * 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "run-1.5_b"]
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="Could not create the runs folder"):
        jobs.new_run_dir(tmp_path / "a-file", "run")


def test_an_unlaunched_run_dir_is_discarded_but_a_launched_one_is_kept(tmp_path):
    unlaunched = jobs.new_run_dir(tmp_path, "unlaunched")
    (unlaunched / "data").mkdir()
    (unlaunched / "data" / "d1_scan.npy").write_bytes(b"copied")
    jobs.discard_unlaunched_run(unlaunched)
    assert not unlaunched.exists()
    assert jobs.new_run_dir(tmp_path, "unlaunched").is_dir()           # the name is free for the retry
    for record in (jobs.JOB_FILE, "config.json"):
        launched = jobs.new_run_dir(tmp_path, f"with-{record}")
        (launched / record).write_text("{}")
        jobs.discard_unlaunched_run(launched)
        assert (launched / record).is_file()


def outside_files(tmp_path, staging):
    """Every file under tmp_path that is not inside the staging folder."""
    return sorted(p for p in tmp_path.rglob("*") if p.is_file() and staging not in p.parents)


@pytest.mark.parametrize("name, staged_as", [
    ("../../x/escaped.npy", "escaped.npy"), ("/etc/passwd", "passwd"), ("..\\..\\win.npy", "win.npy"),
    ("a/../../b.npy", "b.npy"), ("C:\\Users\\me\\scan.tif", "scan.tif"), ("./.././c.npy", "c.npy"),
    ("  spaced.npy ", "spaced.npy"), ("a,b.npy", "a_b.npy"), ("é.tif", "é.tif"),
])
def test_uploads_are_staged_under_their_base_name_inside_the_staging_folder(tmp_path, name, staged_as):
    staging = tmp_path / "deep" / "staging"
    staging.mkdir(parents=True)
    path = jobs.stage_upload(staging, "id-1", name, b"data")
    assert path == staging.resolve() / "id-1" / staged_as and path.read_bytes() == b"data"
    assert outside_files(tmp_path, staging) == []


@pytest.mark.parametrize("file_id, name, message", [
    ("id", "", "has no file name"), ("id", ".", "has no file name"), ("id", "..", "has no file name"),
    ("id", "x/..", "has no file name"), ("id", "dir/", "has no file name"),
    ("id", "x\x00.npy", "control characters"), ("id", "a\nb.npy", "control characters"),
    ("id", "a.b" + "c" * 300, "too long"),
    ("..", "a.npy", "Upload id '..' has no file name"), ("../..", "a.npy", "has no file name"),
    ("", "a.npy", "has no file name"), ("id\x00", "a.npy", "control characters"),
])
def test_unusable_upload_names_are_refused_in_one_sentence(tmp_path, file_id, name, message):
    staging = tmp_path / "staging"
    staging.mkdir()
    with pytest.raises(ValueError, match=message) as refused:
        jobs.stage_upload(staging, file_id, name, b"data")
    text = str(refused.value)
    assert text.endswith(".") and "\n" not in text and len(text) < 250
    assert list(tmp_path.rglob("*")) == [staging]


def test_a_staged_path_that_resolves_outside_is_refused(tmp_path):
    staging, outside = tmp_path / "staging", tmp_path / "outside"
    staging.mkdir()
    outside.mkdir()
    (staging / "id").symlink_to(outside)            # a link planted in the staging folder
    with pytest.raises(ValueError, match="outside the staging folder"):
        jobs.stage_upload(staging, "id", "a.npy", b"data")
    assert list(outside.iterdir()) == []


def test_long_upload_names_are_cut_keeping_the_extension(tmp_path):
    for name in ("x" * 300 + ".npy", "é" * 200 + ".tif"):
        path = jobs.stage_upload(tmp_path, "id", name, b"data")
        assert path.parent == tmp_path.resolve() / "id" and path.suffix == name[-4:]
        assert len(path.name.encode()) <= jobs.MAX_UPLOAD_NAME_BYTES and path.read_bytes() == b"data"
    long_id = jobs.stage_upload(tmp_path, "i" * 400, "a.npy", b"data")
    assert long_id.parent.parent == tmp_path.resolve() and len(long_id.parent.name) <= jobs.MAX_UPLOAD_NAME_BYTES


def test_a_staged_upload_is_written_once(tmp_path):
    first = jobs.stage_upload(tmp_path, "id", "a.npy", b"first")
    assert jobs.stage_upload(tmp_path, "id", "a.npy", b"second") == first and first.read_bytes() == b"first"
    assert [p.name for p in first.parent.iterdir()] == ["a.npy"]           # no temporary file left behind


def test_upload_staging_is_pruned_and_deleted_with_its_session(tmp_path):
    staging = jobs.UploadStaging(parent=tmp_path)
    kept = staging.stage("kept", "a.npy", b"a")
    dropped = staging.stage("dropped", "b.npy", b"b")
    staging.keep_only(["kept", "../never-staged"])
    assert kept.is_file() and not dropped.parent.exists()
    folder = staging.path
    del staging                                      # the session's state let go of it
    gc.collect()
    assert not folder.exists()
    explicit = jobs.UploadStaging(parent=tmp_path)
    explicit.stage("id", "c.npy", b"c")
    explicit.delete()
    assert list(tmp_path.iterdir()) == []


def test_train_command_lists_every_dataset_and_option(tmp_path):
    specs = [DatasetSpec(("a.npy",), {"alpha": 0.15}), DatasetSpec(("x.png", "y.png", "z.png"), {"alpha": 0.6})]
    command = jobs.train_command(tmp_path / "run", specs, preset="tiny", steps=30, voxel_size_um=0.5,
                                 options={"threads": 1, "g_widths": (8, 4, 2)})
    assert command[1:4] == ["-m", "slicegan_core", "train"]
    text = " ".join(command)
    assert f"--data {Path('a.npy').resolve()} --attr alpha=0.15" in text
    assert "--attr alpha=0.6" in text and "y.png," in text and "--steps 30" in text
    assert "--set threads=1" in text and "--set g_widths=8,4,2" in text and "--voxel-size 0.5" in text
    with pytest.raises(ValueError, match="at least one"):
        jobs.train_command(tmp_path, [])


def test_launch_stop_resume(tiny_specs, runs_dir):
    run_dir = jobs.new_run_dir(runs_dir, "tiny")
    # Launch from a short-lived process, as an app that is then closed or restarted would: the run goes on
    # and this process re-attaches to it from the run directory alone.
    launcher = f"""
import sys
from slicegan_core import jobs
from slicegan_core.data import DatasetSpec
specs = [DatasetSpec((path,), {{"alpha": float(alpha)}}) for path, alpha in zip(sys.argv[1::2], sys.argv[2::2])]
print(jobs.start_training({str(run_dir)!r}, specs, preset="tiny", steps=100_000, options={{"threads": 1}}).state)
"""
    arguments = [str(a) for spec in tiny_specs for a in (spec.paths[0], spec.attrs["alpha"])]
    launched = subprocess.run([sys.executable, "-c", launcher, *arguments], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1], check=True, timeout=120)
    assert launched.stdout.strip() in ("starting", "running") and jobs.run_status(run_dir).active
    with pytest.raises(ValueError, match="already used|already holds a run"):   # a second launch cannot share it
        jobs.start_training(run_dir, tiny_specs, preset="tiny")
    running = wait_for(run_dir, lambda s: s.state == "running" and s.has_model and s.step >= 5)
    assert running.steps == 100_000 and running.eta_s > 0
    assert "alpha=0.2" in jobs.latest_samples(run_dir) and jobs.read_events(run_dir)[-1]["step"] >= 5
    with pytest.raises(ValueError, match="stop it before resuming"):
        jobs.resume_training(run_dir)

    jobs.stop_training(run_dir)
    stopped = wait_for(run_dir, lambda s: not s.active)
    assert stopped.state == "stopped" and stopped.step >= running.step
    assert lock_holder(run_dir) is None          # run.lock stays by design (27e0393); nobody holds it
    with pytest.raises(ValueError, match="not running"):
        jobs.stop_training(run_dir)

    assert "slicegan_core train" in (run_dir / jobs.LOG_FILE).read_text()
    # Resuming it in the background (jobs.resume_training) is the Train page's Resume button: test_app.py.
    assert [r.name for r in jobs.list_runs(runs_dir)] == ["tiny"]


def test_a_run_with_two_processes_stops_through_torchrun_at_one_step_and_resumes_under_one(tiny_specs, runs_dir):
    """--nproc 2 runs torchrun inside the launched process (slicegan_core.launch), so this is also the path of a
    user who starts torchrun by hand: one pid to signal, SIGTERM checkpoints once, and the run goes on alone."""
    assert jobs.train_command("run", tiny_specs, processes=2)[-2:] == ["--nproc", "2"]
    with pytest.raises(ValueError, match="at least 1"):
        jobs.train_command("run", tiny_specs, processes=0)
    run_dir = jobs.new_run_dir(runs_dir, "two")
    jobs.start_training(run_dir, tiny_specs, preset="tiny", steps=100_000,
                        options={"threads": 1, "checkpoint_every": 1000}, processes=2)
    # status.json's step moves at checkpoints; events.jsonl has every step
    running = wait_for(run_dir, lambda s: s.state == "running" and len(jobs.read_events(run_dir)) >= 2)
    record = json.loads((run_dir / jobs.JOB_FILE).read_text())
    assert running.pid == record["pid"]        # --nproc became torchrun in the launched process: one pid to signal
    assert json.loads((run_dir / "status.json").read_text())["processes"] == 2
    jobs.stop_training(run_dir)
    stopped = wait_for(run_dir, lambda s: not s.active)
    status = json.loads((run_dir / "status.json").read_text())
    reached = load_tensors(run_dir / "checkpoint.safetensors")[1]["step"]
    assert stopped.state == "stopped" and status["processes"] == 2 and status["step"] == reached >= 2
    assert event_steps(run_dir) == list(range(1, reached + 1))       # one line per logged step, none twice
    assert lock_holder(run_dir) is None and not list(run_dir.glob("**/.*.tmp"))
    log = (run_dir / jobs.LOG_FILE).read_text()
    assert f"run stopped at step {reached}" in log and "Traceback" not in log, log[-3000:]
    assert "death signal" not in log                                   # nor torchrun's own log lines
    resume(run_dir, steps=reached + 2)                                 # 2 processes -> 1, in this process
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and "processes" not in status
    assert event_steps(run_dir) == list(range(1, reached + 3))


def test_invalid_data_fails_with_the_data_modules_message(runs_dir):
    flat = runs_dir / "flat.npy"
    np.save(flat, np.zeros((64, 64), np.uint8))
    run_dir = jobs.new_run_dir(runs_dir, "bad")
    jobs.start_training(run_dir, [DatasetSpec((str(flat),), {"alpha": 0.3})], preset="tiny")
    failed = wait_for(run_dir, lambda s: not s.active)
    assert failed.state == "failed"
    assert failed.error == "'flat.npy' has only one value (0); a training image needs structure, so check " \
                           "that the right file or segmentation was saved."
    with pytest.raises(ValueError, match="no config.json"):
        jobs.resume_training(run_dir)


def test_a_vanished_process_reads_as_crashed(tmp_path):
    run_dir = tmp_path / "ghost"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / jobs.LOG_FILE).write_text("step 3\nKilled\n")
    # Our own pid is alive, but it started after this status was written: a reused pid, not the trainer.
    status = {"state": "running", "pid": os.getpid(), "step": 3, "steps": 9, "updated": 1000.0}
    (run_dir / "status.json").write_text(json.dumps(status))
    crashed = jobs.run_status(run_dir)
    assert crashed.state == "crashed" and "ended without recording why" in crashed.error and "Killed" in crashed.error
    status["updated"] = time.time()
    (run_dir / "status.json").write_text(json.dumps(status))
    assert jobs.run_status(run_dir).state == "running"
    status.update(state="crashed", error="Traceback ...\nRuntimeError: out of memory")
    (run_dir / "status.json").write_text(json.dumps(status))
    assert jobs.run_status(run_dir).error.endswith("out of memory")


def test_events_skip_a_half_written_line_and_runs_need_a_record(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "events.jsonl").write_text('{"step": 10, "eta_s": 5.0}\n{"step": 20, "eta_s": 2.0}\n{"step": 3')
    assert [e["step"] for e in jobs.read_events(run_dir)] == [10, 20]
    assert [e["step"] for e in jobs.read_events(run_dir, last=1)] == [20]
    (tmp_path / "not_a_run").mkdir()
    assert jobs.list_runs(tmp_path) == []
    (run_dir / "config.json").write_text("{}")
    assert [r.name for r in jobs.list_runs(tmp_path)] == ["r"] and jobs.list_runs(tmp_path / "missing") == []


def test_synthetic_recipe_of_a_run_reaches_its_model(tmp_path):
    run_dir = tmp_path / "synthetic"
    (run_dir / "model").mkdir(parents=True)
    recipe = {"sigmas": [0.2, 0.5], "median_esd": 6.0, "phase_fractions": [0.5, 0.5], "periodic": True}
    jobs.save_recipe(run_dir, recipe)
    assert jobs.model_recipe(run_dir / "model", {}) == recipe
    assert jobs.model_recipe(run_dir / "model", {"recipe": {"median_esd": 8.0}}) == {"median_esd": 8.0}
    assert jobs.model_recipe(tmp_path / "models" / "default", {}) is None      # a shipped model: model.json only
    assert jobs.model_recipe(tmp_path / "other" / "model", {}) is None


def test_a_runs_model_knows_its_training_files(trained_run, tiny_specs):
    datasets = jobs.model_datasets(trained_run / "model")
    assert [(d.paths, d.attrs) for d in datasets] == [(s.paths, s.attrs) for s in tiny_specs]
    assert jobs.model_datasets(trained_run) == []                        # not RUN/model


def test_last_choices_come_from_the_newest_run_with_a_config(tmp_path):
    assert jobs.last_choices(tmp_path) == {} and jobs.last_choices(tmp_path / "missing") == {}
    older, newer, launching = tmp_path / "older", tmp_path / "newer", tmp_path / "launching"
    for run_dir in (older, newer, launching):
        run_dir.mkdir()
    (older / "config.json").write_text(json.dumps({
        "preset": "tiny", "train": {"steps": 50, "threads": "auto"},
        "data": {"image_type": "n-phase", "voxel_size_um": None, "datasets": [{"paths": ["a.png"], "attrs": {}}]}}))
    assert jobs.last_choices(tmp_path) == {"preset": "tiny", "steps": 50, "image_type": "n-phase", "voxel_size_um": 0.0,
                                           "threads": 0, "attribute_names": [], "n_datasets": 1, "source": "upload"}
    time.sleep(0.01)
    (newer / "config.json").write_text(json.dumps({
        "preset": "cpu", "train": {"steps": 900, "threads": 2},
        "data": {"image_type": "n-phase", "voxel_size_um": 0.5,
                 "datasets": [{"paths": ["s.npy"], "attrs": {"alpha": 0.2}}, {"paths": ["t.npy"], "attrs": {"alpha": 0.5}}]}}))
    jobs.save_recipe(newer, {"sigmas": [0.2, 0.5], "shape": [48, 48, 48], "median_esd": 6.0,
                             "phase_fractions": [0.5, 0.5], "periodic": True})
    time.sleep(0.01)
    (launching / jobs.JOB_FILE).write_text("{}")     # launched, config.json not written yet: skipped
    time.sleep(0.01)
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text(json.dumps({"preset": 3, "train": {"steps": 12.5, "threads": True},
                                                     "data": {"voxel_size_um": float("nan"), "datasets": "?"}}))
    assert jobs.last_choices(tmp_path) == {"source": "upload"}           # damaged values: the form's defaults
    (damaged / "config.json").unlink()
    assert jobs.last_choices(tmp_path) == {
        "preset": "cpu", "steps": 900, "image_type": "n-phase", "voxel_size_um": 0.5, "threads": 2,
        "attribute_names": ["alpha"], "n_datasets": 2, "source": "synthetic", "sigmas": [0.2, 0.5], "median_esd": 6.0,
        "phase_fractions": [0.5, 0.5], "side": 48}


def test_a_runs_model_is_calibrated_in_the_background(trained_run, tmp_path):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    assert jobs.calibration_progress(run_dir).state == "none"
    small = {"values": 3, "seeds": 2, "tile": 32, "slices": 2}
    assert jobs.start_calibration(run_dir, small).state in ("running", "done")
    deadline = time.monotonic() + 120
    while jobs.calibration_progress(run_dir).state == "running" and time.monotonic() < deadline:
        time.sleep(0.3)
    done = jobs.calibration_progress(run_dir)
    assert done.state == "done" and done.step == 4, (done, (run_dir / jobs.CALIBRATION_LOG).read_text()[-2000:])
    assert json.loads((run_dir / "model" / "model.json").read_text())["calibration"]["tile"] == 32

    jobs.start_calibration(run_dir, {"tile": 3})                 # the CLI refuses: its message comes back
    deadline = time.monotonic() + 120
    while jobs.calibration_progress(run_dir).state == "running" and time.monotonic() < deadline:
        time.sleep(0.3)
    failed = jobs.calibration_progress(run_dir)
    assert failed.state == "failed" and "tile" in failed.error
    with pytest.raises(ValueError, match="has no model yet"):
        jobs.start_calibration(tmp_path / "empty")
    (run_dir / jobs.CALIBRATION_JOB).write_text(json.dumps({"pid": os.getpid(), "launched": time.time()}))
    assert jobs.calibration_progress(run_dir).state == "running"        # a live process (this one) holds it
    with pytest.raises(ValueError, match="already being calibrated"):
        jobs.start_calibration(run_dir, small)


def test_run_status_reads_a_damaged_step_count_as_zero(tmp_path):
    (tmp_path / "status.json").write_text(json.dumps({"state": "stopped", "step": "ten", "steps": None,
                                                      "updated": 1.0}))
    (tmp_path / "config.json").write_text(json.dumps({"train": {"steps": "many"}}))
    status = jobs.run_status(tmp_path)
    assert status.step == 0 and status.steps == 0
