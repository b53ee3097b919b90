"""Which grain-size width recovers the truth: all features, a minimum feature size, or the IQR sigma.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/bench_grain_measure.py   (about 2 minutes on one core)

On the synthetic truth (``slicegan_core.synthetic.synthesize``, the default model's recipe: median ESD 8
voxels, phase fractions 0.35 / 0.35 / 0.30, periodic) the grain ids are known, so the true ESD of every grain
is known. Each label volume is measured from labels alone (``metrics.feature_sizes``: distance watershed,
features cut by the border left out, all phases pooled) and its width of ln(ESD) is compared with the true
per-grain width of the same volume. Printed: mean over seeds, and the seed-to-seed standard deviation of each
measure's error (measured - true per-grain sigma). This is the table in docs/metrics-validation.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from slicegan_core.metrics import DEFAULT_MIN_VOXELS, feature_sizes, size_spread  # noqa: E402
from slicegan_core.synthetic import grain_esd, synthesize  # noqa: E402

RECIPE = {"median_esd": 8.0, "phase_fractions": (0.35, 0.35, 0.30), "periodic": True}   # models/default recipe


def measure(alpha: float, edge: int, seed: int, min_sizes: list[int]) -> dict:
    """True per-grain widths and every label-only width of one synthetic volume."""
    vol = synthesize(shape=(edge,) * 3, sigma=alpha, seed=seed, **RECIPE)
    ids = vol.grain_ids
    esd = grain_esd(ids)
    cut = np.unique(np.concatenate([np.take(ids, e, axis=a).ravel() for a in range(3) for e in (0, -1)]))
    interior = np.delete(esd, cut)
    sizes = feature_sizes(vol.labels)
    big = np.cbrt(6 * DEFAULT_MIN_VOXELS / np.pi) - 1e-9             # ESD of a DEFAULT_MIN_VOXELS-voxel grain
    row = {"true": np.log(esd).std(ddof=1), "true_interior": np.log(interior).std(ddof=1),
           "true_big": np.log(esd[esd >= big]).std(ddof=1)}
    for m in min_sizes:
        s = size_spread(sizes, min_voxels=m, n_boot=0)
        row["all"], row["iqr_all"] = s.sigma_all, s.sigma_robust_all
        row[f"min{m}"], row[f"iqr{m}"], row[f"small{m}"] = s.sigma, s.sigma_robust, s.small_share
    row["true_small"] = float(np.mean(esd < np.cbrt(6 * DEFAULT_MIN_VOXELS / np.pi)))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge", type=int, default=128, help="volume edge in voxels (default 128)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated synthesis seeds (default 1,2,3)")
    parser.add_argument("--alphas", default="0.15,0.35,0.6", help="alpha = ln sigma_g values (default 0.15,0.35,0.6)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    alphas = [float(a) for a in args.alphas.split(",")]
    min_sizes = [DEFAULT_MIN_VOXELS, 27]
    start = time.perf_counter()
    print(f"Synthetic truth, {args.edge}^3, median ESD {RECIPE['median_esd']:g} voxels, periodic, seeds {seeds}; "
          "all phases pooled, border-cut features left out; mean over seeds (error = measured - true per-grain "
          "sigma, mean +- seed sd)")
    names = {"all": "all features", f"min{DEFAULT_MIN_VOXELS}": f">= {DEFAULT_MIN_VOXELS} voxels (field)",
             "min27": ">= 27 voxels", "iqr_all": "IQR sigma, all", f"iqr{DEFAULT_MIN_VOXELS}":
             f"IQR sigma, >= {DEFAULT_MIN_VOXELS} voxels"}
    print(f"| alpha | true per-grain sigma | true, interior grains | true, grains >= {DEFAULT_MIN_VOXELS} voxels | "
          + " | ".join(names.values())
          + f" | features < {DEFAULT_MIN_VOXELS} voxels |")
    print("|" + "---|" * (5 + len(names)))
    errors = {name: [] for name in names}
    for alpha in alphas:
        rows = [measure(alpha, args.edge, seed, min_sizes) for seed in seeds]
        mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        cells = []
        for name in names:
            err = np.array([r[name] - r["true"] for r in rows])
            errors[name].append(err)
            cells.append(f"{mean[name]:.3f} ({err.mean():+.3f} +- {err.std(ddof=1) if err.size > 1 else 0:.3f})")
        print(f"| {alpha:.2f} | {mean['true']:.3f} | {mean['true_interior']:.3f} | {mean['true_big']:.3f} | "
              + " | ".join(cells)
              + f" | {100 * mean[f'small{DEFAULT_MIN_VOXELS}']:.1f} % (true grains: "
              f"{100 * mean['true_small']:.1f} %) |", flush=True)
    print("\nmean |error| over alphas and seeds: "
          + ", ".join(f"{label} {np.mean(np.abs(np.concatenate(errors[name]))):.3f}" for name, label in names.items()))
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
