"""Two generator operations, old and new way, on the ``cpu`` preset's shapes: AdaIN's per-channel statistics
(``torch.var_mean`` against two plain passes) and the output layer's x2 upsampling of the logits
(``F.interpolate`` trilinear and the crop, against ``networks._upsample_logits``, axis by axis).

    python bench/bench_generator_ops.py [--threads 1 2] [--repeats 20]

At the training batch (4 volumes, latent edge 4) and at one 128^3 volume (latent edge 6): milliseconds forward
without autograd (generating, and the critic steps' fake volumes) and forward + backward (the generator step),
median of ``--repeats``, and the largest difference of the new way from the old (relative for the variance,
absolute for the logits). Time it on a quiet machine. No targets, no assertions.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slicegan_core.networks import _upsample_logits  # noqa: E402

DIMS = (2, 3, 4)


def var_mean(x):
    var, mean = torch.var_mean(x, dim=DIMS, keepdim=True, correction=0)
    return var, mean


def two_pass(x):
    mean = x.mean(dim=DIMS, keepdim=True)
    return (x - mean).square().mean(dim=DIMS, keepdim=True), mean


def interpolate(logits):
    return F.interpolate(logits, scale_factor=2, mode="trilinear", align_corners=False)[:, :, 2:-2, 2:-2, 2:-2]


def milliseconds(function, x, repeats: int, backward: bool) -> float:
    times = []
    for _ in range(repeats + 1):
        leaf = x.clone().requires_grad_(backward)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            result = function(leaf)
            if backward:
                sum(r.sum() for r in (result if isinstance(result, tuple) else (result,))).backward()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    # (batch, channels, edge): the cpu preset's g_widths (128, 64, 32, 16) at latent edge 4 (batch 4, training)
    # and at latent edge 6 (one 128^3 volume)
    shapes = [(4, 128, 6), (4, 64, 10), (4, 32, 18), (4, 16, 34), (1, 64, 18), (1, 32, 34), (1, 16, 66)]
    print("| threads | operation | tensor (B, C, edge^3) | old ms | new ms | old fwd+bwd ms | new fwd+bwd ms | "
          "largest difference |")
    print("|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for batch, channels, edge in shapes:
            x = torch.randn(batch, channels, edge, edge, edge, generator=torch.Generator().manual_seed(0)) * 2 + 1
            reference = torch.var_mean(x.double(), dim=DIMS, keepdim=True, correction=0)[0]
            error = float(((two_pass(x)[0].double() - reference) / reference).abs().max())
            cells = [milliseconds(f, x, args.repeats, backward) for backward in (False, True) for f in (var_mean, two_pass)]
            print(f"| {threads} | AdaIN statistics | ({batch}, {channels}, {edge}) | "
                  + " | ".join(f"{c:.2f}" for c in cells) + f" | {error:.1e} (relative) |", flush=True)
        for batch, edge in ((4, 34), (1, 66)):      # the logits grid of 64^3 and 128^3 volumes
            x = torch.randn(batch, 3, edge, edge, edge, generator=torch.Generator().manual_seed(0))
            error = float((_upsample_logits(x) - interpolate(x)).abs().max())
            cells = [milliseconds(f, x, args.repeats, backward) for backward in (False, True)
                     for f in (interpolate, _upsample_logits)]
            print(f"| {threads} | x2 upsampling of the logits | ({batch}, 3, {edge}) | "
                  + " | ".join(f"{c:.2f}" for c in cells) + f" | {error:.1e} |", flush=True)

if __name__ == "__main__":
    main()
