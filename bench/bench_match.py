"""What one slice can tell: match 128^2 slices of held-out synthetic truth against the default model.

    python bench/bench_match.py [--model models/default] [--data runs/default_data] [--json out.json]

For each held-out alpha (0.25 and 0.475: truth volumes never trained on, made by
``python bench/default_model.py data``) 20 slices of 128 x 128 pixels are cut from the 160^3 truth (7, 7 and 6
evenly spaced slices along the three axes, each at a seeded random offset inside the slice) and matched with
``slicegan_core.match.match`` using the model's calibration (``python -m slicegan_core calibrate MODEL``).
Printed: the recovered alpha per statistic set (median, quartiles, share within 0.05 and 0.1 of the truth),
the truth's statistics against the model's calibrated prediction at the true alpha (bias in tile standard
deviations), and the wall time of whole ``python -m slicegan_core match`` processes.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slicegan_core.calibrate import STATISTICS, predict  # noqa: E402
from slicegan_core.generate import load_model  # noqa: E402
from slicegan_core.match import FIT_STATISTICS, match, mean_statistics  # noqa: E402

HELD_OUT = (0.25, 0.475)
SLICES, TILE = 20, 128
SETS = {"default (chord mean + chord sigma + 2D size sigma)": FIT_STATISTICS,
        "mean ln chord": ("ln_chord_mean",), "sigma ln chord": ("ln_chord_sigma",),
        "sigma ln 2D size": ("ln_ecd_sigma",), "chord sigma + 2D size sigma": ("ln_chord_sigma", "ln_ecd_sigma"),
        "islands": ("islands",), "all five": STATISTICS}


def truth_slices(volume: np.ndarray, count: int, tile: int, seed: int) -> list[np.ndarray]:
    """``count`` tiles: evenly spaced slices along the three axes in turn, each at a seeded random offset."""
    rng = np.random.default_rng(seed)
    per_axis = [count // 3 + (1 if a < count % 3 else 0) for a in range(3)]
    out = []
    for axis, n in enumerate(per_axis):
        for index in ((np.arange(n) + 0.5) * volume.shape[axis] / n).astype(int):
            plane = np.take(volume, int(index), axis=axis)
            top, left = (int(rng.integers(0, s - tile + 1)) for s in plane.shape)
            out.append(plane[top:top + tile, left:left + tile])
    return out


def summarise(recovered, truth: float) -> dict:
    errors = np.abs(np.asarray(recovered) - truth)
    q25, median, q75 = np.percentile(recovered, [25, 50, 75])
    return {"median": float(median), "q25": float(q25), "q75": float(q75), "median_error": float(median - truth),
            "within_0.05": float(np.mean(errors <= 0.05)), "within_0.1": float(np.mean(errors <= 0.1)),
            "recovered": [float(r) for r in recovered]}


def time_cli(model: str, tiles, runs: int = 3) -> list[float]:
    """Wall seconds of whole ``python -m slicegan_core match`` processes (1 slice each, with confirmation)."""
    from PIL import Image

    seconds = []
    with tempfile.TemporaryDirectory() as folder:
        for i, tile in enumerate(tiles[:runs]):
            path = Path(folder) / f"slice{i}.png"
            Image.fromarray(tile.astype(np.uint8)).save(path)
            began = time.perf_counter()
            subprocess.run([sys.executable, "-m", "slicegan_core", "match", "--model", model, "--image", str(path),
                            "--json", str(Path(folder) / f"slice{i}.json")], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL)
            seconds.append(time.perf_counter() - began)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--data", default="runs/default_data")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--timing-runs", type=int, default=3)
    args = parser.parse_args(argv)
    model = load_model(args.model)
    calibration = model.info.get("calibration")
    if not calibration:
        raise SystemExit(f"{args.model} has no calibration; run: python -m slicegan_core calibrate {args.model}")
    results = {"model": args.model, "threads": os.environ.get("OMP_NUM_THREADS"), "alphas": {}}
    all_tiles = []
    for alpha in HELD_OUT:
        path = Path(args.data) / f"synthetic_sigma{alpha:g}.npy"
        if not path.is_file():
            raise SystemExit(f"{path} is missing; make it with: python bench/default_model.py data")
        volume = np.load(path)
        tiles = truth_slices(volume, SLICES, TILE, seed=int(alpha * 1000))
        all_tiles += tiles
        entry = {"sets": {}}
        for label, stats in SETS.items():
            recovered = [match(model, t, statistics=stats, confirm=False)["match"]["alpha"] for t in tiles]
            entry["sets"][label] = summarise(recovered, alpha)
        # Bias: the truth's mean statistics over all 20 tiles against the calibrated prediction at the true alpha.
        observed = mean_statistics(tiles, model.phase_values, float(model.voxel_size_um or 1.0))
        predicted = predict(calibration, {"alpha": alpha})
        entry["bias_in_tile_sd"] = {s: {p: (observed[s][p] - predicted[s][p]["mean"]) / predicted[s][p]["sd"]
                                        for p in observed[s]} for s in STATISTICS}
        entry["truth_mean"], entry["predicted_mean"] = observed, {s: {p: v["mean"] for p, v in d.items()}
                                                                  for s, d in predicted.items()}
        results["alphas"][str(alpha)] = entry

    print(f"recovered alpha from one {TILE}^2 slice ({SLICES} slices per held-out alpha), model {args.model}")
    print(f"{'statistics fitted':>52} {'alpha':>6} {'median':>7} {'IQR':>13} {'|err|<=0.05':>11} {'|err|<=0.1':>10}")
    for label in SETS:
        for alpha in HELD_OUT:
            s = results["alphas"][str(alpha)]["sets"][label]
            print(f"{label:>52} {alpha:>6} {s['median']:>7.3f} {s['q25']:>6.3f}-{s['q75']:<6.3f} "
                  f"{s['within_0.05']:>11.0%} {s['within_0.1']:>10.0%}")
    print("\ntruth minus model prediction at the true alpha, in tile standard deviations (phases 0, 1, 2)")
    for stat in STATISTICS:
        row = "  ".join(" ".join(f"{results['alphas'][str(a)]['bias_in_tile_sd'][stat][str(p)]:+5.2f}"
                                 for p in model.phase_values) for a in HELD_OUT)
        print(f"{stat:>15}  alpha {HELD_OUT[0]}: {row[:17]}   alpha {HELD_OUT[1]}: {row[19:]}")
    if args.timing_runs:
        seconds = time_cli(args.model, all_tiles, args.timing_runs)
        results["cli_seconds"] = seconds
        print(f"\nwhole `python -m slicegan_core match` process, one 128^2 slice, with confirmation "
              f"(OMP_NUM_THREADS={results['threads']}): " + ", ".join(f"{s:.1f}" for s in seconds) + " s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
