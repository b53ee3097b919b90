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
from that checkpoint. Two launches can never share a directory: :func:`start_training` claims it by creating
``job.json`` exclusively, and the trainer itself holds ``run.lock`` while it runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .data import DatasetSpec
from .storage import atomic_write_text
from .train import pid_alive

JOB_FILE = "job.json"
LOG_FILE = "train.log"
RECIPE_FILE = "synthetic_recipe.json"  # how the run's training data was synthesised, when it was
ACTIVE_STATES = ("starting", "running", "stopping")


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


def new_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create ``runs_dir/name`` for a new run and return it; refuse names that exist or are not plain.

    The directory is created exclusively, so two callers can never both get the same one.
    """
    name = str(name).strip()
    if not name or name.startswith(".") or any(c in name for c in "/\\:*?\"<>|") or name != Path(name).name:
        raise ValueError(f"Run name {name!r} is not a plain folder name; use letters, digits, '-' or '_'.")
    path = Path(runs_dir) / name
    Path(runs_dir).mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        raise ValueError(f"A run named {name!r} already exists in {runs_dir}; choose another name "
                         "or open that run.") from None
    return path


def train_command(run_dir: str | Path, datasets, preset: str = "cpu", steps: int | None = None,
                  image_type: str = "n-phase", voxel_size_um: float | None = None,
                  options: dict | None = None) -> list[str]:
    """The ``python -m slicegan_core train`` command line (a list of arguments) for a run.

    Parameters
    ----------
    datasets : list of :class:`DatasetSpec` (1 path or 3 view paths each, and attribute values).
    preset : "tiny", "cpu" or "paper".
    steps : total generator steps (default: the preset's).
    image_type : "n-phase", "grayscale" or "colour".
    voxel_size_um : voxel edge in micrometres, recorded in the model.
    options : extra model/training fields passed as ``--set FIELD=VALUE`` (e.g. ``{"threads": 1}``).
    """
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
    return command


def start_training(run_dir: str | Path, datasets, preset: str = "cpu", steps: int | None = None,
                   image_type: str = "n-phase", voxel_size_um: float | None = None,
                   options: dict | None = None) -> RunStatus:
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
    command = train_command(run_dir, datasets, preset, steps, image_type, voxel_size_um, options)
    return _launch(run_dir, command, exclusive=True)


def resume_training(run_dir: str | Path, steps: int | None = None) -> RunStatus:
    """Continue a stopped, finished (with a larger ``steps``) or crashed run from its last checkpoint."""
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
    with open(run_dir / LOG_FILE, "a") as log:
        log.write(f"$ {' '.join(command)}\n")
        log.flush()
        # A new session: the run is not killed with the app (or a Ctrl-C in its terminal). It runs in its own
        # directory with every path absolute, and finds this package whether it is installed or a checkout.
        package_root = str(Path(__file__).resolve().parents[1])
        python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=run_dir.resolve(), start_new_session=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path})
    record["pid"] = process.pid
    atomic_write_text(run_dir / JOB_FILE, json.dumps(record, indent=2))
    return run_status(run_dir)


# ---- reading a run back ----------------------------------------------------------------------------------

def run_status(run_dir: str | Path) -> RunStatus:
    """The state of the run in ``run_dir`` from its files and whether its process is alive."""
    run_dir = Path(run_dir)
    status, job = _read_json(run_dir / "status.json"), _read_json(run_dir / JOB_FILE)
    events = read_events(run_dir, last=1)
    common = {"run_dir": run_dir, "has_model": (run_dir / "model" / "model.json").is_file(),
              "step": int(status.get("step", 0)), "steps": int(status.get("steps", 0)),
              "eta_s": events[-1].get("eta_s") if events else None}
    if not common["steps"] and (run_dir / "config.json").is_file():
        common["steps"] = int(_read_json(run_dir / "config.json").get("train", {}).get("steps", 0))
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
    lines = path.read_text().splitlines()
    if last is not None:
        lines = lines[-(last + 1):]
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events[-last:] if last else events


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


# ---- helpers ---------------------------------------------------------------------------------------------

def _failure_reason(run_dir: Path) -> str:
    """The CLI's one-line ``error: ...`` message when there is one, else the log tail."""
    tail = log_tail(run_dir, lines=40)
    errors = [line[len("error: "):] for line in tail.splitlines() if line.startswith("error: ")]
    return errors[-1] if errors else (tail or "The training process exited before training began.")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


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
