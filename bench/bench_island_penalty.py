"""Time the island penalty (``train.island_count``), forward and backward, on one generator step's fake batch
of the ``cpu`` preset: softmax(logits / 4) of (4, 3, 64, 64, 64) logits.

Run: ``.venv/bin/python bench/bench_island_penalty.py [--threads 2] [--repeats 5]``. Prints the median seconds
per call for each counting mode; a training step of the ``cpu`` preset takes ~0.6 s without the penalty on 2
cores (docs/default-model.md), so these are its added cost per step. No targets, no assertions.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from slicegan_core.config import TrainConfig
from slicegan_core.train import island_count

MODES = {  # name -> (island_max_voxels, island_view)
    "single voxels, 3d (cpu preset)": (1, "3d"),
    "1-2 voxels, 3d (default model's recipe)": (2, "3d"),
    "one-pixel islands of slices": (1, "slices"),
    "specks up to 7 voxels": (7, "3d"),
}


def time_mode(logits: torch.Tensor, max_voxels: int, view: str, repeats: int) -> float:
    weights = torch.ones(logits.shape[1])
    settings = TrainConfig(island_max_voxels=max_voxels, island_view=view, island_temperature=4.0)
    times = []
    for attempt in range(repeats + 1):               # the first call warms the allocator up and is dropped
        x = logits.detach().requires_grad_(True)
        started = time.perf_counter()
        island_count(x, settings, weights).mean().backward()
        if attempt:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logits = 8 * torch.randn(args.batch, 3, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    print(f"island penalty, forward + backward, ({args.batch}, 3, 64, 64, 64) float32, {args.threads} threads, "
          f"median of {args.repeats}")
    print("| counting | seconds per call |\n|---|---|")
    for name, (max_voxels, view) in MODES.items():
        print(f"| {name} | {time_mode(logits, max_voxels, view, args.repeats):.3f} |")


if __name__ == "__main__":
    main()
