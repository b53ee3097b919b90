"""Seconds per training step of the ``cpu`` preset on one training image, as a user's run takes them.

    python bench/bench_step.py IMAGE [--steps 35] [--threads 2] [--set FIELD=JSON ...]

Trains a throwaway run of ``--steps`` steps (no fidelity monitor, no checkpoint before the last step) in a
temporary directory and prints the median ``sec_per_step`` of its log after the first 5 steps (warm-up). Time
it on a quiet machine: pause training runs (``kill -STOP``) for the minute it takes. No targets, no assertions.
E.g. ``python bench/bench_step.py runs/real_data/sofc_anode.npy`` (after ``python bench/real_micrographs.py
prepare``) and the same with ``--set island_loss='"expected"'``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slicegan_core.data import DatasetSpec  # noqa: E402
from slicegan_core.train import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("image")
    parser.add_argument("--steps", type=int, default=35)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        name, value = item.split("=", 1)
        overrides[name] = json.loads(value)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        train([DatasetSpec(paths=(args.image,), attrs={})], run_dir, preset_name="cpu", steps=args.steps,
              fidelity_seeds=0, threads=args.threads, checkpoint_every=10 ** 6, log_every=1, **overrides)
        events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    times = [e["sec_per_step"] for e in events if "sec_per_step" in e][5:]
    print(f"{args.image}: {statistics.median(times):.3f} s per step (median of {len(times)} steps after 5 "
          f"warm-up steps; {args.threads} threads; settings {overrides or 'cpu preset'})")


if __name__ == "__main__":
    main()
