"""Training step and 256^3 generation at each CPU-thread setting, quiet and beside busy processes.

Run: ``.venv/bin/python bench/bench_threads.py [--steps 12] [--warmup 4] [--busy 0 1 2] [--settings 1 2 auto]``

For every number of busy processes beside it (``python -c "while True: pass"``, started before and killed after
each measurement) and every thread setting, a fresh process:

1. trains the ``cpu`` preset on ``tests/data/composite_3phase_256.npy`` (one real 256^2 micrograph) for
   ``--steps`` steps with ``--set threads=SETTING`` (no checkpoint, no fidelity) and reports the median of
   ``sec_per_step`` from ``events.jsonl`` after ``--warmup`` steps (the loop as users run it);
2. loads the default model with the same threads setting and generates 256^3 three times after a 64^3
   warm-up; the median.

Extra settings: ``2-passive`` is 2 threads with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads sleep at a barrier
instead of spinning). The table gives each time and its ratio to the better of the fixed 1 and 2 threads in
the same condition. Nothing else should run on the machine meanwhile.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "composite_3phase_256.npy"

CHILD = r"""
import json, statistics, sys, time
from pathlib import Path
from slicegan_core.train import train
from slicegan_core.data import DatasetSpec
from slicegan_core.generate import load_model
setting, run_dir, steps, warmup = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
threads = setting if setting == "auto" else int(setting)
train([DatasetSpec(paths=(sys.argv[5],), attrs={})], run_dir, preset_name="cpu", steps=steps, log_every=1,
      checkpoint_every=10**6, fidelity_seeds=0, threads=threads)
events = [json.loads(l) for l in (run_dir / "events.jsonl").read_text().splitlines()]
steps_s = [e["sec_per_step"] for e in events if "sec_per_step" in e][warmup:]
used = sorted({e["threads"] for e in events if "threads" in e})
model = load_model("default", threads=threads)
model.generate(seed=0, shape=64)
times = []
for seed in range(3):
    began = time.perf_counter()
    model.generate(seed=seed, shape=256)
    times.append(time.perf_counter() - began)
print(json.dumps({"step_s": statistics.median(steps_s), "generate_s": statistics.median(times),
                  "train_threads": used, "generate_threads": model.threads.threads if model.threads else None}))
"""


def measure(setting: str, busy: int, steps: int, warmup: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    if setting == "2-passive":
        setting, env["OMP_WAIT_POLICY"] = "2", "PASSIVE"
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        with tempfile.TemporaryDirectory() as folder:
            result = subprocess.run([sys.executable, "-c", CHILD, setting, str(Path(folder) / "run"), str(steps),
                                     str(warmup), str(DATA)], capture_output=True, text=True, env=env, timeout=3600)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    if result.returncode:
        raise SystemExit(f"the {setting} run beside {busy} busy process(es) failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=4, help="steps left out of the median (auto decides then)")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["1", "2", "auto", "2-passive"])
    args = parser.parse_args()
    rows = []
    for busy in args.busy:
        found = {setting: measure(setting, busy, args.steps, args.warmup) for setting in args.settings}
        for what in ("step_s", "generate_s"):
            fixed = [found[s][what] for s in ("1", "2") if s in found]
            best = min(fixed) if fixed else float("nan")
            for setting, numbers in found.items():
                rows.append((busy, what, setting, numbers[what], numbers[what] / best,
                             numbers["train_threads" if what == "step_s" else "generate_threads"]))
        print(f"done: {busy} busy", file=sys.stderr, flush=True)
    print(f"{os.cpu_count()} cores, torch threads per setting; --steps {args.steps} --warmup {args.warmup}\n")
    print("| busy processes beside | measured | setting | seconds | / best of 1 and 2 threads | threads used |")
    print("|---|---|---|---|---|---|")
    for busy, what, setting, seconds, ratio, used in rows:
        label = "cpu preset training step (256^2 micrograph)" if what == "step_s" else "256^3 generation, default model"
        print(f"| {busy} | {label} | {setting} | {seconds:.2f} | {ratio:.2f} | {used} |")


if __name__ == "__main__":
    main()
