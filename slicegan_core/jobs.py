"""Training runs as background processes: launch, watch, stop, resume and list them by their run directory.

A run is launched as its own process, ``python -m slicegan_core train ... --run-dir RUN`` (or ``resume RUN``),
in a new session so that it outlives the app, its browser tab and a restart of the app. Everything about a
run is read back from its directory, so any process can re-attach to it:

  job.json       this module's launch record: command, pid, launch time (written atomically, once per launch)
  train.log      the process's stdout and stderr (appended to by each launch)
  synthetic_recipe.json   optional: the synthetic generator's settings when the data came from it, so the
                 run's model can be compared with the truth (see :func:`save_recipe`, :func:`model_recipe`)
  config.json, events.jsonl, status.json, samples/, model/, run.lock   written by the trainer
                 (see :mod:`slicegan_core.train`)

Stopping sends SIGTERM: the trainer writes a checkpoint and exits with state "stopped"; resume continues
from that checkpoint. A run with several processes (``processes`` > 1) is the same command with ``--nproc N``,
which becomes torchrun (same pid); status.json names that pid, and torchrun passes SIGTERM to every process. Two launches can never share a directory: :func:`start_training` claims it by creating
``job.json`` exclusively, and the trainer itself holds ``run.lock`` while it runs.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unicodedata
import weakref
from dataclasses import dataclass
from pathlib import Path

from .data import DatasetSpec
from .distributed import check_processes
from .storage import atomic_write_bytes, atomic_write_text
from .train import pid_alive

JOB_FILE = "job.json"
LOG_FILE = "train.log"
RECIPE_FILE = "synthetic_recipe.json"  # how the run's training data was synthesised, when it was
CALIBRATION_JOB = "calibrate.json"     # launch record of the run's calibration process (start_calibration)
CALIBRATION_LOG = "calibrate.log"      # its output
ACTIVE_STATES = ("starting", "running", "stopping")
MAX_RUN_NAME = 100  # characters: a readable label, and far below the 255-byte limit on a folder name
RUN_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # ASCII only, so the length in characters is the length in bytes
# UTF-8 bytes of a staged upload's name: under the 255-byte limit on a file name, with room for the run's "d1_"
# prefix and the ".NAME.XXXXXXXX.tmp" of an atomic write.
MAX_UPLOAD_NAME_BYTES = 150


@dataclass(frozen=True)
class RunStatus:
    """What a run directory says about its run, checked against the process table.

    Attributes
    ----------
    run_dir : the run directory.
    state : "starting" (launched, loading data), "running", "stopping" (SIGTERM sent), "stopped",
        "finished", "crashed" (the trainer failed or its process vanished) or "failed" (the process exited
        before training began, e.g. invalid data; ``error`` says why).
    step, steps : generator steps done and planned.
    pid : the process id of the latest launch (None when never launched by this module).
    error : the error tail for "crashed" / "failed" runs, else None.
    eta_s : estimated seconds to finish from the latest logged event (None before the first).
    has_model : True once ``model/`` exists (after the first checkpoint); load_model works on it.
    """

    run_dir: Path
    state: str
    step: int = 0
    steps: int = 0
    pid: int | None = None
    error: str | None = None
    eta_s: float | None = None
    has_model: bool = False

    @property
    def active(self) -> bool:
        """True while a process works on the run (starting, running or stopping)."""
        return self.state in ACTIVE_STATES

    @property
    def name(self) -> str:
        return self.run_dir.name


def validate_run_name(name: str) -> str:
    """``name`` without surrounding spaces when it can name a run folder, else ValueError (one sentence).

    A run name is 1 to MAX_RUN_NAME ASCII letters, digits, '-', '_' or '.', and does not start with '.'
    (no hidden folders, no '.' or '..').
    """
    name = str(name).strip()
    if not name:
        raise ValueError("The run name is empty; type a name such as run-1.")
    if len(name) > MAX_RUN_NAME:
        raise ValueError(f"The run name is {len(name)} characters long; shorten it to at most {MAX_RUN_NAME}.")
    if name.startswith(".") or not RUN_NAME.fullmatch(name):
        raise ValueError(f"Run name {_shown(name)} is not a plain folder name; use letters, digits, '-', '_' "
                         "or '.', and do not start it with '.'.")
    return name


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create ``runs_dir/name`` for a new run and return it; refuse names that exist or are not plain
    (see :func:`validate_run_name`).

    The directory is created exclusively, so two callers can never both get the same one.
    """
    name = validate_run_name(name)
    path = Path(runs_dir) / name
    try:
        Path(runs_dir).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"Could not create the runs folder {runs_dir} ({error.strerror or error}); choose a "
                         "writable folder for runs (SLICEGAN_RUNS_DIR in the app).") from None
    try:
        path.mkdir()
    except FileExistsError:
        raise ValueError(f"A run named {name!r} already exists in {runs_dir}; choose another name "
                         "or open that run.") from None
    except OSError as error:
        raise ValueError(f"Could not create the run folder {path} ({error.strerror or error}); check that "
                         f"{runs_dir} is writable and has free space.") from None
    return path


def discard_unlaunched_run(run_dir: str | Path) -> None:
    """Delete a run directory whose launch failed before it was claimed (no job.json and no config.json), so
    its name is free for the retry; a directory that a launch claimed is left alone."""
    run_dir = Path(run_dir)
    if run_dir.is_dir() and not (run_dir / JOB_FILE).exists() and not (run_dir / "config.json").exists():
        shutil.rmtree(run_dir, ignore_errors=True)


# ---- uploads -------------------------------------------------------------------------------------------------

def plain_file_name(name: str, what: str = "File name") -> str:
    """``name`` reduced to a plain file name, or ValueError (one sentence) when nothing usable is left.

    Keeps the last part after any '/' or '\\' (a browser sends base names, a hand-made request can send
    any path), turns commas into '_' (the train command separates data paths with commas) and cuts names
    longer than MAX_UPLOAD_NAME_BYTES in UTF-8, keeping the extension. Refuses names with control characters
    (NUL, newlines, ...) and names that end up empty, '.' or '..'. ``what`` names the thing in messages.
    """
    text = str(name)
    if any(unicodedata.category(c) == "Cc" for c in text):
        raise ValueError(f"{what} {_shown(text)} contains control characters; rename the file and upload "
                         "it again.")
    base = re.split(r"[/\\]", text)[-1].strip().replace(",", "_")
    if base in ("", ".", ".."):
        raise ValueError(f"{what} {_shown(text)} has no file name in it; upload a file with a plain name "
                         "such as scan.tif.")
    if len(base.encode()) > MAX_UPLOAD_NAME_BYTES:
        stem, suffix = os.path.splitext(base)
        if len(suffix.encode()) > 16:
            raise ValueError(f"{what} {_shown(text)} is too long; rename the file to at most "
                             f"{MAX_UPLOAD_NAME_BYTES} characters and upload it again.")
        room = MAX_UPLOAD_NAME_BYTES - len(suffix.encode())
        base = stem.encode()[:room].decode("utf-8", "ignore").rstrip() + suffix
    return base


def stage_upload(staging_dir: str | Path, file_id: str, name: str, data: bytes) -> Path:
    """Save an uploaded file's ``data`` as ``staging_dir/FILE_ID/NAME`` (once) and return that path.

    ``file_id`` and ``name`` come from the upload request, so both are reduced to plain names
    (:func:`plain_file_name`) and the result must lie inside ``staging_dir``. A file staged before under the
    same id and name is reused. The write is atomic, so an interrupted one never leaves a partial file for a
    later call to reuse. Raises ValueError (one sentence) for unusable names and failed writes.
    """
    root = Path(staging_dir).resolve()
    path = root / plain_file_name(file_id, "Upload id") / plain_file_name(name, "Uploaded file name")
    if not path.resolve().is_relative_to(root):
        raise ValueError(f"Uploaded file name {_shown(name)} would be saved outside the staging folder; "
                         "rename the file and upload it again.")
    if not path.is_file():
        try:
            atomic_write_bytes(path, data)
        except OSError as error:
            raise ValueError(f"Could not save the upload {_shown(name)} in {root} ({error.strerror or error}); "
                             "free disk space and upload it again.") from None
    return path


class UploadStaging:
    """One app session's staging folder for uploads: a new temporary folder, deleted when this object is (its
    session's state is dropped) or when the process exits, and pruned to the uploads still in use.

    Attributes
    ----------
    path : the folder; uploads are staged as ``path/FILE_ID/NAME`` (see :func:`stage_upload`).
    """

    def __init__(self, parent: str | Path | None = None):
        self.path = Path(tempfile.mkdtemp(prefix="slicegan_uploads_", dir=parent))
        self._delete = weakref.finalize(self, shutil.rmtree, str(self.path), ignore_errors=True)

    def stage(self, file_id: str, name: str, data: bytes) -> Path:
        """Stage one upload (see :func:`stage_upload`) and return its path."""
        return stage_upload(self.path, file_id, name, data)

    def keep_only(self, file_ids) -> None:
        """Delete the staged uploads whose id is not in ``file_ids`` (removed from or replaced on the page)."""
        keep = set()
        for file_id in file_ids:
            try:
                keep.add(plain_file_name(file_id))
            except ValueError:
                continue  # never staged: stage_upload refuses the same ids
        if self.path.is_dir():
            for folder in self.path.iterdir():
                if folder.name not in keep:
                    shutil.rmtree(folder, ignore_errors=True)

    def delete(self) -> None:
        """Delete the folder now (it is deleted anyway when this object is)."""
        self._delete()


def max_processes() -> tuple[int, str]:
    """(the most training processes worth starting on this machine, what each one uses): one per GPU when
    there are GPUs, else one per CPU core."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.device_count(), "GPU"
    return max(1, os.cpu_count() or 1), "CPU core"


def train_command(run_dir: str | Path, datasets, preset: str = "cpu", steps: int | None = None,
                  image_type: str = "n-phase", voxel_size_um: float | None = None,
                  options: dict | None = None, processes: int = 1) -> list[str]:
    """The ``python -m slicegan_core train`` command line (a list of arguments) for a run.

    Parameters
    ----------
    datasets : list of :class:`DatasetSpec` (1 path or 3 view paths each, and attribute values).
    preset : "tiny", "cpu" or "paper".
    steps : total generator steps (default: the preset's).
    image_type : "n-phase", "grayscale" or "colour".
    voxel_size_um : voxel edge in micrometres, recorded in the model.
    options : extra model/training fields passed as ``--set FIELD=VALUE`` (e.g. ``{"threads": 1}``).
    processes : training processes (``--nproc``; one per GPU, or CPU processes); the batch is split among them.
    """
    processes = check_processes(processes)
    if not datasets:
        raise ValueError("datasets is empty; add at least one training dataset.")
    command = [sys.executable, "-m", "slicegan_core", "train", "--run-dir", str(Path(run_dir).resolve()),
               "--preset", str(preset), "--image-type", str(image_type)]
    for spec in datasets:
        spec = spec if isinstance(spec, DatasetSpec) else DatasetSpec(**spec)
        if any("," in p for p in spec.paths):
            raise ValueError(f"Data paths must not contain commas (got {spec.paths}); rename the files.")
        command += ["--data", ",".join(str(Path(p).resolve()) for p in spec.paths)]
        if spec.attrs:
            command += ["--attr", ",".join(f"{k}={float(v)!r}" for k, v in sorted(spec.attrs.items()))]
    if steps is not None:
        command += ["--steps", str(int(steps))]
    if voxel_size_um:
        command += ["--voxel-size", repr(float(voxel_size_um))]
    for key, value in (options or {}).items():
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        command += ["--set", f"{key}={text}"]
    if processes > 1:
        command += ["--nproc", str(processes)]
    return command


def start_training(run_dir: str | Path, datasets, preset: str = "cpu", steps: int | None = None,
                   image_type: str = "n-phase", voxel_size_um: float | None = None,
                   options: dict | None = None, processes: int = 1) -> RunStatus:
    """Launch a new training run in ``run_dir`` (an existing, unused directory) as a background process.

    Arguments as in :func:`train_command`. Returns the run's status right after the launch ("starting").
    Validation of the data happens in the process; a bad dataset ends it with state "failed" and the
    data module's message as ``error`` (validate with ``load_training_data`` first to show it earlier).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"Run directory {run_dir} does not exist; create it with new_run_dir first.")
    if (run_dir / "config.json").exists():
        raise ValueError(f"Run directory {run_dir} already holds a run; resume it or choose a new directory.")
    command = train_command(run_dir, datasets, preset, steps, image_type, voxel_size_um, options, processes)
    return _launch(run_dir, command, exclusive=True)


def resume_training(run_dir: str | Path, steps: int | None = None, processes: int = 1) -> RunStatus:
    """Continue a stopped, finished (with a larger ``steps``) or crashed run from its last checkpoint, with
    ``processes`` training processes (any number, whatever the run was stopped under)."""
    processes = check_processes(processes)
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} is not a training run that can resume (no config.json); start a new run.")
    current = run_status(run_dir)
    if current.active:
        raise ValueError(f"Run {run_dir.name} is still {current.state}; stop it before resuming.")
    command = [sys.executable, "-m", "slicegan_core", "resume", str(run_dir.resolve())]
    if steps is not None:
        if int(steps) <= current.step:
            raise ValueError(f"steps must be more than the {current.step} steps already done (got {steps}).")
        command += ["--steps", str(int(steps))]
    if processes > 1:
        command += ["--nproc", str(processes)]
    return _launch(run_dir, command, exclusive=False)


def stop_training(run_dir: str | Path) -> RunStatus:
    """Ask a run's process to stop (SIGTERM): it checkpoints, writes state "stopped" and exits."""
    run_dir = Path(run_dir)
    current = run_status(run_dir)
    if not current.active or current.pid is None:
        raise ValueError(f"Run {run_dir.name} is not running (state {current.state}); nothing to stop.")
    os.kill(current.pid, signal.SIGTERM)
    job = _read_json(run_dir / JOB_FILE)
    job["stop_requested"] = time.time()
    atomic_write_text(run_dir / JOB_FILE, json.dumps(job, indent=2))
    return run_status(run_dir)


def _launch(run_dir: Path, command: list[str], exclusive: bool) -> RunStatus:
    record = {"command": command, "launched": time.time(), "pid": None}
    if exclusive:  # claim the directory: only one launcher can create job.json
        try:
            with open(run_dir / JOB_FILE, "x") as f:
                f.write(json.dumps(record, indent=2))
        except FileExistsError:
            raise ValueError(f"Run directory {run_dir} was already used for a run; choose a new one.") from None
    record["pid"] = _spawn(run_dir, command, run_dir / LOG_FILE).pid
    atomic_write_text(run_dir / JOB_FILE, json.dumps(record, indent=2))
    return run_status(run_dir)


def _spawn(run_dir: Path, command: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``command`` in ``run_dir`` as a background process whose output is appended to ``log_path``."""
    with open(log_path, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        # A new session: the run is not killed with the app (or a Ctrl-C in its terminal). It runs in its own
        # directory with every path absolute, and finds this package whether it is installed or a checkout.
        package_root = str(Path(__file__).resolve().parents[1])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=run_dir.resolve(), start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path})


# ---- calibrating a run's model for matching --------------------------------------------------------------

@dataclass(frozen=True)
class CalibrationStatus:
    """Where the calibration of a run's model stands (:func:`calibration_progress`).

    state : "none" (never calibrated), "running", "done" (at the model's current step), "stale" (measured at
        an earlier step; the weights changed since), "failed" (the latest calibration process ended without
        writing one; ``error`` says why), or "no attributes" (a model without attributes has nothing to
        calibrate or match).
    done, total : sweep points measured and planned, while running (0 when not known yet).
    step : the training step the stored calibration was measured at.
    """

    state: str
    done: int = 0
    total: int = 0
    step: int | None = None
    error: str | None = None


def start_calibration(run_dir: str | Path, options: dict | None = None) -> CalibrationStatus:
    """Calibrate the model of a run (``RUN/model``) for matching, in a background process
    (``python -m slicegan_core calibrate RUN/model``), logged to ``RUN/calibrate.log``.

    ``options``: the calibrate command's settings, e.g. ``{"values": 10, "seeds": 6, "tile": 128, "slices": 4}``
    (its defaults when left out). Refused while the run trains (its model changes at every checkpoint) or a
    calibration of it is still running.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "model" / "model.json").is_file():
        raise ValueError(f"Run {run_dir.name} has no model yet; calibrate it after its first checkpoint.")
    if run_status(run_dir).active:
        raise ValueError(f"Run {run_dir.name} is still training; stop it or let it finish, then calibrate.")
    if calibration_progress(run_dir).state == "running":
        raise ValueError(f"Run {run_dir.name} is already being calibrated; wait for it to finish.")
    command = [sys.executable, "-m", "slicegan_core", "calibrate", str((run_dir / "model").resolve())]
    for key, value in (options or {}).items():
        command += [f"--{key}", str(int(value))]
    record = {"command": command, "launched": time.time(), "pid": None}
    record["pid"] = _spawn(run_dir, command, run_dir / CALIBRATION_LOG).pid
    atomic_write_text(run_dir / CALIBRATION_JOB, json.dumps(record, indent=2))
    return calibration_progress(run_dir)


def calibration_progress(run_dir: str | Path) -> CalibrationStatus:
    """The state of the calibration of a run's model, from its launch record, log and ``model/model.json``."""
    run_dir = Path(run_dir)
    job = _read_json(run_dir / CALIBRATION_JOB)
    info_path = run_dir / "model" / "model.json"
    info = _read_json(info_path)
    if info and not info.get("attributes"):
        return CalibrationStatus("no attributes")
    pid = job.get("pid")
    if isinstance(pid, int) and _process_alive(pid, job.get("launched")):
        counts = re.findall(r"(\d+)/(\d+) \[", _tail(run_dir / CALIBRATION_LOG, 2_000))   # tqdm's "12/30 ["
        done, total = (int(n) for n in counts[-1]) if counts else (0, 0)
        return CalibrationStatus("running", done, total)
    calibration = info.get("calibration")
    launched = job.get("launched")
    written_since = isinstance(launched, (int, float)) and info_path.is_file() \
        and info_path.stat().st_mtime >= launched
    if launched is not None and not (written_since and calibration):
        errors = [line[len("error: "):] for line in _tail(run_dir / CALIBRATION_LOG).splitlines()
                  if line.startswith("error: ")]
        return CalibrationStatus("failed", error=errors[-1] if errors else
                                 (_tail(run_dir / CALIBRATION_LOG)[-500:] or "The calibration process ended."))
    if isinstance(calibration, dict):
        step = calibration.get("step")
        return CalibrationStatus("done" if step == (info.get("training") or {}).get("steps") else "stale", step=step)
    return CalibrationStatus("none")


def _tail(path: Path, size: int = 8_000) -> str:
    """The last ``size`` bytes of a text file, tqdm's carriage returns as line ends ('' when absent)."""
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode("utf-8", "replace").replace("\r", "\n")


# ---- reading a run back ----------------------------------------------------------------------------------

def run_status(run_dir: str | Path) -> RunStatus:
    """The state of the run in ``run_dir`` from its files and whether its process is alive."""
    run_dir = Path(run_dir)
    status, job = _read_json(run_dir / "status.json"), _read_json(run_dir / JOB_FILE)
    events = read_events(run_dir, last=1)
    common = {"run_dir": run_dir, "has_model": (run_dir / "model" / "model.json").is_file(),
              "step": _count(status.get("step")), "steps": _count(status.get("steps")),
              "eta_s": events[-1].get("eta_s") if events else None}
    if not common["steps"] and (run_dir / "config.json").is_file():
        train_section = _read_json(run_dir / "config.json").get("train")
        common["steps"] = _count(train_section.get("steps") if isinstance(train_section, dict) else None)
    launched, job_pid = job.get("launched", 0.0), job.get("pid")
    job_alive = job_pid is not None and _process_alive(job_pid, started_by=launched + 60)
    # A launch newer than the last status: the process is loading data, or it exited before training.
    if job_pid is not None and (not status or launched > status.get("updated", 0.0)):
        if job_alive:
            return RunStatus(state="stopping" if job.get("stop_requested", 0) > launched else "starting",
                             pid=job_pid, **common)
        return RunStatus(state="failed", pid=job_pid, error=_failure_reason(run_dir), **common)
    if not status:
        return RunStatus(state="unknown", **common)
    state, pid = status.get("state", "unknown"), status.get("pid")
    if state == "running":
        if pid is None or not _process_alive(pid, started_by=status.get("updated")):
            return RunStatus(state="crashed", pid=pid, error=f"The training process {pid} ended without "
                             f"recording why.\n{log_tail(run_dir)}".rstrip(), **common)
        stopping = job.get("stop_requested", 0) > max(launched, 0.0)
        return RunStatus(state="stopping" if stopping else "running", pid=pid, **common)
    return RunStatus(state=state, pid=pid, error=status.get("error"), **common)


def read_events(run_dir: str | Path, last: int | None = None) -> list[dict]:
    """The logged events of a run (step, loss_d, loss_g, wasserstein, gradient_penalty, sec_per_step,
    eta_s, elapsed_s, time), oldest first; ``last`` keeps only that many. A half-written line is skipped."""
    path = Path(run_dir) / "events.jsonl"
    if not path.is_file():
        return []
    lines = path.read_text(errors="replace").splitlines()
    if last is not None:
        lines = lines[-(last + 1):]
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(event, dict):    # a line that is not an object is damage, not an event
            events.append(event)
    return events[-last:] if last else events


def read_fidelity(run_dir: str | Path) -> list[dict]:
    """The run's fidelity series (``fidelity.jsonl``, one entry per checkpoint; see
    :func:`slicegan_core.fidelity.series_event`), oldest first; damaged lines are skipped."""
    path = Path(run_dir) / "fidelity.jsonl"
    if not path.is_file():
        return []
    series = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(event, dict) and isinstance(event.get("datasets"), list):
            series.append(event)
    return series


def log_tail(run_dir: str | Path, lines: int = 20) -> str:
    """The last ``lines`` lines of the run's ``train.log`` ('' when there is none)."""
    path = Path(run_dir) / LOG_FILE
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 64_000))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


def latest_samples(run_dir: str | Path) -> dict[str, Path]:
    """The newest sample image of each trained attribute value: {"alpha=0.35": path}. Each image shows the
    x, y and z centre slices of one generated volume side by side."""
    folder = Path(run_dir) / "samples"
    if not folder.is_dir():
        return {}
    return {p.stem[len("latest_"):]: p for p in sorted(folder.glob("latest_*.png"))}


def list_runs(runs_dir: str | Path) -> list[RunStatus]:
    """Every run under ``runs_dir`` (folders with config.json or job.json), newest first."""
    root = Path(runs_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and ((p / "config.json").is_file() or (p / JOB_FILE).is_file())]
    found.sort(key=lambda p: max((p / f).stat().st_mtime for f in ("config.json", JOB_FILE) if (p / f).exists()),
               reverse=True)
    return [run_status(p) for p in found]


def save_recipe(run_dir: str | Path, recipe: dict) -> Path:
    """Record how a run's training data was synthesised (``median_esd``, ``phase_fractions`` and per dataset
    ``sigmas``, ``seeds``, ``shape``, ``periodic``), the same keys as the default model's ``recipe``."""
    path = Path(run_dir) / RECIPE_FILE
    atomic_write_text(path, json.dumps(recipe, indent=2))
    return path


def model_recipe(model_dir: str | Path, info: dict) -> dict | None:
    """The synthetic recipe of a model: its model.json ``recipe`` (``info``), else that of the run it was
    exported by (``RUN/model`` -> ``RUN/synthetic_recipe.json``), else None."""
    if info.get("recipe"):
        return info["recipe"]
    if Path(model_dir).name != "model":
        return None
    return _read_json(Path(model_dir).parent / RECIPE_FILE) or None


def model_datasets(model_dir: str | Path) -> list[DatasetSpec]:
    """The training datasets (full paths, attribute values) of the run that exported ``model_dir``
    (``RUN/model``, read from ``RUN/config.json``); [] for other models, whose model.json keeps file names
    only."""
    if Path(model_dir).name != "model":
        return []
    config = _read_json(Path(model_dir).parent / "config.json")
    return [DatasetSpec(tuple(d["paths"]), d.get("attrs", {}))
            for d in config.get("data", {}).get("datasets", []) if d.get("paths")]


def last_choices(runs_dir: str | Path) -> dict:
    """The launch choices of the newest run under ``runs_dir`` that has a config.json, to prefill a new-run form
    (e.g. after a browser reload); {} when there is none.

    Keys (each only when the run records it): ``source`` ("synthetic" when the run has a synthetic recipe,
    else "upload"), ``preset``, ``steps``, ``image_type``, ``voxel_size_um``, ``threads`` (a fixed number;
    0 = automatic), ``attribute_names`` (list), ``n_datasets``, and for a synthetic run ``sigmas`` (list),
    ``side`` (voxels), ``median_esd`` (voxels) and ``phase_fractions`` (list).
    """
    for run in list_runs(runs_dir):
        config = _read_json(run.run_dir / "config.json")
        if not config:
            continue
        train, data = config.get("train", {}), config.get("data", {})
        datasets = [d for d in data.get("datasets", []) if isinstance(d, dict)]
        choices = {"preset": config.get("preset"), "steps": train.get("steps"),
                   "image_type": data.get("image_type"), "voxel_size_um": data.get("voxel_size_um") or 0.0,
                   "threads": train["threads"] if isinstance(train.get("threads"), int) else 0,
                   "attribute_names": sorted(datasets[0].get("attrs", {})) if datasets else None,
                   "n_datasets": len(datasets) or None}
        recipe = _read_json(run.run_dir / RECIPE_FILE)
        choices["source"] = "synthetic" if recipe else "upload"
        if recipe:
            choices.update(sigmas=recipe.get("sigmas"), median_esd=recipe.get("median_esd"),
                           phase_fractions=recipe.get("phase_fractions"),
                           side=(recipe.get("shape") or [None])[0])
        return {k: v for k, v in choices.items() if _plain(v, _CHOICE_TYPES[k])}   # a damaged file: defaults
    return {}


_CHOICE_TYPES = {"preset": str, "steps": int, "image_type": str, "voxel_size_um": float, "threads": int,
                 "attribute_names": list, "n_datasets": int, "source": str, "sigmas": list, "median_esd": float,
                 "phase_fractions": list, "side": int}


def _plain(value, kind) -> bool:
    """``value`` is of JSON type ``kind`` (an int counts as a float; a list must hold numbers or names)."""
    if isinstance(value, bool) or value is None:
        return False
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    if kind is list:
        return isinstance(value, list) and all(
            isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))
            for v in value)
    return isinstance(value, kind)


# ---- helpers ---------------------------------------------------------------------------------------------

def _failure_reason(run_dir: Path) -> str:
    """The CLI's one-line ``error: ...`` message when there is one, else the log tail."""
    tail = log_tail(run_dir, lines=40)
    errors = [line[len("error: "):] for line in tail.splitlines() if line.startswith("error: ")]
    return errors[-1] if errors else (tail or "The training process exited before training began.")


def _shown(text: str, limit: int = 60) -> str:
    """``text`` quoted for a message, with escapes for control characters and cut when very long."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def _count(value) -> int:
    """A step count read from a run's JSON: 0 unless it is a whole number (a damaged file must not break the page)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _read_json(path: Path) -> dict:
    """A JSON object file written by the trainer or the launcher; {} when absent or damaged."""
    try:
        document = json.loads(path.read_text(errors="replace"))
    except (OSError, json.JSONDecodeError, RecursionError):
        return {}
    return document if isinstance(document, dict) else {}


def _process_alive(pid: int, started_by: float | None = None) -> bool:
    """True when process ``pid`` is alive and not a zombie; with ``started_by`` (a time.time() value), also
    only when it started no later than that, which rules out a pid reused by a newer, unrelated process."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap our own finished children so they do not linger as zombies
    except ChildProcessError:
        pass
    if not pid_alive(pid):
        return False
    try:  # Linux: the process table tells zombies and start times
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if fields[0] == "Z":
            return False
        if started_by is not None:
            boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                        if line.startswith("btime"))
            started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
            return started <= started_by + 2.0  # btime is whole seconds
    except (OSError, IndexError, ValueError, StopIteration):
        pass
    return True
