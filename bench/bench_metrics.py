"""Timing and validation tables of slicegan_core.metrics (run: .venv/bin/python bench/bench_metrics.py).

Timing: every metric on a 128^3 synthetic 3-phase volume (best of --repeat runs, seconds, this machine's
CPU). The app's budget is <= 2 s for all histograms (vf, chord lengths, watershed ESD) of a 128^3 volume.

Validation (--validate): label-only grain sizes against the synthetic generator's true grain ids at
sigma 0.15 / 0.35 / 0.60; this is the table in docs/metrics-validation.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from slicegan_core.metrics import (chord_lengths, feature_sizes, fit_lognormal,  # noqa: E402
                                   label_features, phase_fractions, phase_statistics, specific_surface_area,
                                   tortuosity, two_point_correlation)
from slicegan_core.synthetic import grain_esd, synthesize  # noqa: E402


def best_of(fn, repeat: int) -> tuple[float, float]:
    """Best wall-clock and best CPU (process) time over ``repeat`` runs, in seconds.

    The CPU time is what the run costs on an idle machine; the wall time also counts waiting for cores that
    other processes hold (this machine is shared), so the two differ when it is busy.
    """
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def timing_table(edge: int, repeat: int, with_tortuosity: bool) -> None:
    labels = synthesize(shape=(edge,) * 3, sigma=0.35, median_esd=8.0, periodic=False, seed=0).labels
    rows = [
        ("phase_fractions", lambda: phase_fractions(labels)),
        ("chord_lengths (3 axes)", lambda: chord_lengths(labels)),
        ("feature_sizes (watershed ESD)", lambda: feature_sizes(labels)),
        ("ALL HISTOGRAMS: phase_statistics(s2=False, n_boot=200)",
         lambda: phase_statistics(labels, s2=False, n_boot=200)),
        ("two_point_correlation periodic", lambda: two_point_correlation(labels, periodic=True)),
        ("two_point_correlation zero-padded", lambda: two_point_correlation(labels, periodic=False)),
        ("phase_statistics(s2=True)", lambda: phase_statistics(labels, s2=True)),
        ("specific_surface_area faces", lambda: specific_surface_area(labels)),
        ("specific_surface_area marching_cubes", lambda: specific_surface_area(labels, method="marching_cubes")),
    ]
    load = os.getloadavg()[0]
    print(f"Timing on a {edge}^3 3-phase synthetic volume, {os.cpu_count()} CPU cores (load average {load:.1f}), "
          f"best of {repeat}")
    print(f"| {'metric':<56} | {'wall s':>6} | {'CPU s':>6} |\n|{'-' * 58}|{'-' * 8}|{'-' * 8}|")
    for name, fn in rows:
        wall, cpu = best_of(fn, repeat)
        print(f"| {name:<56} | {wall:6.2f} | {cpu:6.2f} |", flush=True)
    if with_tortuosity:
        small = labels[:64, :64, :64]
        wall, cpu = best_of(lambda: tortuosity(small, phases=[0], progress=False), 1)
        print(f"| {'tortuosity, one phase of a 64^3 crop (TauFactor, CPU)':<56} | {wall:6.2f} | {cpu:6.2f} |")


def validation_table(edge: int, seed: int) -> None:
    print(f"Validation on non-periodic {edge}^3 synthetic volumes (median ESD 8 voxels, seed {seed}); "
          "features/grains cut by the border excluded on both sides")
    print("| sigma | true sigma ln ESD | watershed sigma ln ESD | robust | true median ESD | watershed median "
          "| n true | n watershed | grains recovered (IoU>0.5) | conn. comp. n | sigma ln chord | mean chord |")
    print("|" + "---|" * 12)
    for sigma in (0.15, 0.35, 0.60):
        vol = synthesize(shape=(edge,) * 3, sigma=sigma, median_esd=8.0, periodic=False, seed=seed)
        ids = vol.grain_ids
        cut = np.unique(np.concatenate([np.take(ids, e, axis=a).ravel() for a in range(3) for e in (0, -1)]))
        true_esd = np.delete(grain_esd(ids), cut)
        stats = phase_statistics(vol.labels, s2=False, n_boot=0)
        esd = np.concatenate([s.sizes.diameters for s in stats.values()])
        chords = np.concatenate([s.chords.pooled for s in stats.values()])
        plain = sum(f.diameters.size for f in feature_sizes(vol.labels, split=False).values())
        fit = fit_lognormal(esd, n_boot=0)
        features, _ = label_features(vol.labels)
        n_feat = int(features.max()) + 1
        pairs, overlap = np.unique(ids.astype(np.int64) * n_feat + features, return_counts=True)
        grain, feature = pairs // n_feat, pairs % n_feat
        iou = overlap / (np.bincount(ids.ravel())[grain] + np.bincount(features.ravel(), minlength=n_feat)[feature]
                         - overlap)
        recovered = np.unique(grain[iou > 0.5]).size / (ids.max() + 1)
        print(f"| {sigma:.2f} | {np.log(true_esd).std(ddof=1):.3f} | {fit.sigma:.3f} | {fit.sigma_robust:.3f} "
              f"| {np.median(true_esd):.2f} | {np.median(esd):.2f} | {true_esd.size} | {esd.size} | {recovered:.2f} "
              f"| {plain} | {np.log(chords).std(ddof=1):.3f} | {chords.mean():.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edge", type=int, default=128, help="volume edge in voxels (default 128)")
    parser.add_argument("--repeat", type=int, default=3, help="timing repeats, best kept (default 3)")
    parser.add_argument("--tortuosity", action="store_true", help="also time TauFactor on a 64^3 crop")
    parser.add_argument("--validate", action="store_true", help="print the synthetic-truth validation table")
    parser.add_argument("--seed", type=int, default=1, help="seed of the validation volumes (default 1)")
    args = parser.parse_args()
    timing_table(args.edge, args.repeat, args.tortuosity)
    if args.validate:
        print()
        validation_table(args.edge, args.seed)


if __name__ == "__main__":
    main()
