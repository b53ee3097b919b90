"""Quick fidelity check of a training run's current model against the synthetic truth (for monitoring).

    python bench/watch_run.py runs/default [--size 96] [--seeds 2]

Prints, per alpha, phase fractions, mean / std of ln(chord length) pooled over phases, and speckle, generated
vs truth: phase islands under 20 voxels (face-connected, per million voxels, phases pooled: the measure of the
earlier tables in docs/default-model.md) and, per phase, the product's measure ``metrics.island_density``
(at most 4 voxels per million voxels). Truth islands are counted on a crop of the generated size.
Cheap (label-only metrics); the full report is bench/default_model.py + slicegan_core.evaluate.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from slicegan_core import load_model  # noqa: E402
from slicegan_core.metrics import island_density  # noqa: E402
from slicegan_core.metrics.chords import chord_lengths  # noqa: E402


def islands_per_million(volume: np.ndarray, below: int = 20) -> float:
    """Face-connected single-phase components smaller than ``below`` voxels, per 10^6 voxels: speckle."""
    count = 0
    for phase in (0, 1, 2):
        labels, _ = ndimage.label(volume == phase)
        count += int((np.bincount(labels.ravel())[1:] < below).sum())
    return 1e6 * count / volume.size


def summary(volume: np.ndarray, islands_volume: np.ndarray | None = None) -> tuple:
    """Fractions, mean / std of ln chord of ``volume``; islands per million of ``islands_volume`` (default:
    the same volume; the truth passes a crop of the generated size, since cut faces make islands too)."""
    fractions = np.bincount(volume.ravel(), minlength=256)[[0, 1, 2]] / volume.size
    chords = chord_lengths(volume, phases=[0, 1, 2])
    pooled = np.log(np.concatenate([c.pooled for c in chords.values()]))
    counted = volume if islands_volume is None else islands_volume
    small = island_density(counted, [0, 1, 2])
    return fractions, float(pooled.mean()), float(pooled.std()), islands_per_million(counted), \
        [small[p] for p in (0, 1, 2)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--data", default="runs/default_data")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model_dir = Path(args.run) / "model" if (Path(args.run) / "model").is_dir() else Path(args.run)
    model = load_model(model_dir)
    step = model.info.get("training", {}).get("steps")
    rows = []
    for alpha in (0.05, 0.15, 0.25, 0.35, 0.475, 0.6, 0.75):
        stats = []
        for seed in range(args.seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                stats.append(summary(model.generate({"alpha": alpha}, seed=seed, shape=(args.size,) * 3)))
        fractions = np.mean([s[0] for s in stats], axis=0)
        mean_ln, std_ln = np.mean([s[1] for s in stats]), np.mean([s[2] for s in stats])
        islands = np.mean([s[3] for s in stats])
        small = np.mean([s[4] for s in stats], axis=0)
        truth_path = Path(args.data) / f"synthetic_sigma{alpha:g}.npy"
        truth = None
        if truth_path.exists():
            truth_volume = np.load(truth_path)
            truth = summary(truth_volume[: args.size * 2, : args.size * 2, : args.size * 2],
                            truth_volume[: args.size, : args.size, : args.size])
        rows.append(dict(alpha=alpha, vf=[round(float(f), 3) for f in fractions], mean_ln_chord=round(mean_ln, 3),
                         std_ln_chord=round(std_ln, 3), islands_per_million=round(float(islands)),
                         truth_islands_per_million=round(truth[3]) if truth else None,
                         small_islands=[round(float(v)) for v in small],
                         truth_small_islands=[round(float(v)) for v in truth[4]] if truth else None,
                         truth_vf=[round(float(f), 3) for f in truth[0]] if truth else None,
                         truth_mean_ln_chord=round(truth[1], 3) if truth else None,
                         truth_std_ln_chord=round(truth[2], 3) if truth else None))
    print(f"step {step}")
    print(f"{'alpha':>6} {'vf (gen)':>20} {'vf (truth)':>20} {'mean ln c':>9} {'truth':>6} {'std ln c':>8} "
          f"{'truth':>6} {'islands/M':>9} {'truth':>6} {'<=4 vox/M per phase':>20} {'truth':>16}")
    for r in rows:
        print(f"{r['alpha']:>6} {str(r['vf']):>20} {str(r['truth_vf']):>20} {r['mean_ln_chord']:>9} "
              f"{str(r['truth_mean_ln_chord']):>6} {r['std_ln_chord']:>8} {str(r['truth_std_ln_chord']):>6} "
              f"{r['islands_per_million']:>9} {str(r['truth_islands_per_million']):>6} "
              f"{str(r['small_islands']):>20} {str(r['truth_small_islands']):>16}")
    with open(Path(args.run) / "watch.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
