"""What a command-line user waits for: ``generate`` as a whole process, large shapes against a tiny one.

    python bench/bench_first_call.py [--model models/default] [--repeats 5] [--sizes 16 128 256] [--ext npy]

Each repeat runs ``python -m slicegan_core generate --shape N --out FILE`` once per size, sizes interleaved so a
drift of the machine's speed hits them alike; the table has the median wall time per size and the median
difference to the smallest size: the cost of the first (and only) generation of that shape in a fresh process,
its output file included, with start-up, imports and model loading taken out.
Targets (issue "Training and generation cost"): 256^3 - 16^3 <= 1.5 s, 128^3 - 16^3 <= 0.3 s.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {128: 0.3, 256: 1.5}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 128, 256])
    parser.add_argument("--ext", default="npy", choices=("npy", "tif", "vti"))
    args = parser.parse_args()
    walls = {n: [] for n in args.sizes}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats + 1):          # the first round warms the disk cache; not counted
            for n in args.sizes:
                out = Path(tmp) / f"v{n}.{args.ext}"
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "slicegan_core", "generate", "--model", args.model,
                                "--shape", str(n), "--out", str(out)], cwd=ROOT, check=True,
                               capture_output=True)
                walls[n].append(time.perf_counter() - start)
    base = min(args.sizes)
    print(f"generate as a whole process ({args.repeats} repeats, median; output .{args.ext})")
    print(f"{'shape':>8}{'wall_s':>9}{'minus ' + str(base) + '^3':>12}{'target':>8}")
    for n in args.sizes:
        counted = walls[n][1:]
        diffs = [a - b for a, b in zip(counted, walls[base][1:])]
        target = f"{TARGETS[n]:.1f}" if n in TARGETS else "-"
        print(f"{n:>7}^3{statistics.median(counted):>9.2f}{statistics.median(diffs):>12.2f}{target:>8}")


if __name__ == "__main__":
    main()
