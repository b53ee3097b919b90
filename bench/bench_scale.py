"""Benchmark scaling out: training throughput at 1 and N processes (torchrun).

Run: ``.venv/bin/python bench/bench_scale.py [--preset cpu] [--processes 1,2] [--steps 3] [--warmup 1]
[--threads 1] [--device cpu]``.

Training: the real command, ``python -m slicegan_core train --preset PRESET --nproc N`` (N = 1 runs without
torchrun), on two synthetic 72^3 volumes (``synthesize``, alpha 0.2 / 0.5), with a log line every step and no
checkpoint before the end. Throughput is ``batch_size`` (the global batch: N processes share it) divided by
the median seconds per step of the ``--steps`` steps after ``--warmup`` steps, from the run's events.jsonl
(rank 0's wall clock between steps, gradient all-reduce included). Start-up, data loading and the final
checkpoint are not counted. ``--threads`` is the torch threads of each process.

(Generation to large files is benchmarked in a second part of this script, added with out-of-core generation.)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from slicegan_core.config import PRESETS  # noqa: E402
from slicegan_core.synthetic import synthesize  # noqa: E402


def training_data(folder: Path) -> list[tuple[Path, float]]:
    """Two synthetic 72^3 training volumes (as bench_core.py uses) -> [(path, alpha)]."""
    out = []
    for i, alpha in enumerate((0.2, 0.5)):
        path = folder / f"alpha{alpha:g}.npy"
        np.save(path, synthesize(shape=(72, 72, 72), sigma=alpha, seed=10 + i).labels)
        out.append((path, alpha))
    return out


def train_throughput(data, preset: str, processes: int, steps: int, warmup: int, threads: int,
                     device: str, folder: Path) -> dict:
    """Run ``warmup + steps`` training steps with ``processes`` processes; volumes per second after warm-up."""
    run_dir = folder / f"{preset}_{processes}"
    command = [sys.executable, "-m", "slicegan_core", "train", "--preset", preset, "--run-dir", str(run_dir),
               "--steps", str(warmup + steps), "--device", device, "--set", f"threads={threads}",
               "--set", "log_every=1", "--set", "checkpoint_every=100000"]
    for path, alpha in data:
        command += ["--data", str(path), "--attr", f"alpha={alpha}"]
    if processes > 1:
        command += ["--nproc", str(processes)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    timed = [e["sec_per_step"] for e in events if e["step"] > warmup]
    batch = PRESETS[preset][1]["batch_size"]
    seconds = statistics.median(timed)
    return {"processes": processes, "threads_each": threads, "batch_size": batch, "steps_timed": len(timed),
            "sec_per_step": seconds, "volumes_per_s": batch / seconds, "wall_s": wall}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (default 1,2)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        folder = Path(tmp)
        data = training_data(folder)
        for processes in (int(p) for p in args.processes.split(",")):
            rows.append(train_throughput(data, args.preset, processes, args.steps, args.warmup, args.threads,
                                         args.device, folder))
            print(f"  {processes} process(es): {rows[-1]['sec_per_step']:.2f} s/step", file=sys.stderr)

    base = rows[0]["volumes_per_s"]
    print(f"Training throughput, preset {args.preset}, device {args.device}, {args.threads} thread(s) per process "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores; median of {args.steps} steps "
          f"after {args.warmup} warm-up)\n")
    print("| processes | batch (global) | s / step | volumes / s | speed-up |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['processes']} | {row['batch_size']} | {row['sec_per_step']:.2f} | "
              f"{row['volumes_per_s']:.3f} | {row['volumes_per_s'] / base:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
