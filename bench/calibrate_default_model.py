"""Recalibrate the shipped default model and refresh its matching documents, in one command:

    OMP_NUM_THREADS=2 python bench/calibrate_default_model.py [--model models/default] [--data runs/default_data]

1. ``python -m slicegan_core calibrate MODEL`` (10 alpha values x 6 seeds of 128^3, 128^2 tiles; ~20 s on 1 core),
   written into MODEL/model.json (the weights are not touched);
2. docs/default-model/calibration.png: the calibration curves (tile mean, 10-90 % of tiles, seed band) with
   the synthetic truth at the five recipe alphas measured the same way (20 tiles of 128^2 each);
3. ``bench/bench_match.py --json docs/matching.json``: the held-out slices table of docs/matching.md.

Run it after every re-export of models/default (``bench/default_model.py export --calibrate`` does step 1 only).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from slicegan_core.calibrate import STATISTIC_LABELS, calibrate_model_dir  # noqa: E402
from slicegan_core.match import mean_statistics  # noqa: E402

PLOTTED = ("ln_chord_mean", "ln_chord_sigma", "ln_ecd_sigma", "vf", "islands")
TRUTH_ALPHAS = (0.15, 0.25, 0.35, 0.475, 0.6)


def plot(calibration: dict, data: Path, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bench_match import truth_slices

    sweep = calibration["attributes"]["alpha"]
    x = np.asarray(sweep["values"])
    truths = {}
    for alpha in TRUTH_ALPHAS:
        file = data / f"synthetic_sigma{alpha:g}.npy"
        if file.is_file():
            tiles = truth_slices(np.load(file), 20, calibration["tile"], seed=int(alpha * 1000))
            truths[alpha] = mean_statistics(tiles, calibration["phases"], calibration["voxel_size_um"] or 1.0)
    colours = ("#0072B2", "#E69F00", "#009E73", "#CC79A7")
    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(4.2 * len(PLOTTED), 3.8))
    for ax, stat in zip(axes, PLOTTED):
        for i, phase in enumerate(str(p) for p in calibration["phases"]):
            c = sweep["curves"][stat][phase]
            col = colours[i % len(colours)]
            arr = {k: np.array([np.nan if v is None else v for v in c[k]], float) for k in c}
            ax.fill_between(x, arr["q10"], arr["q90"], color=col, alpha=0.10, linewidth=0)
            ax.fill_between(x, arr["seed_low"], arr["seed_high"], color=col, alpha=0.35, linewidth=0)
            ax.plot(x, arr["mean"], color=col, label=f"phase {phase}")
            if truths:
                ax.plot(list(truths), [truths[a][stat][phase] for a in truths], "o", color=col, mfc="white", ms=5)
        for alpha in TRUTH_ALPHAS:
            ax.axvline(alpha, color="#bbbbbb", lw=0.6, zorder=0)
        ax.set_title(STATISTIC_LABELS[stat])
        ax.set_xlabel("alpha (commanded)")
    axes[0].legend(fontsize=8, title="line: tile mean; dark band: seeds;\nlight: 10-90 % of tiles; o: truth",
                   title_fontsize=7)
    fig.suptitle(f"default model calibration: one {calibration['tile']}² slice, {calibration['seeds']} seeds x "
                 f"{3 * calibration['slices_per_axis']} tiles per alpha", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--data", default="runs/default_data")
    parser.add_argument("--plot", default="docs/default-model/calibration.png")
    parser.add_argument("--bench-json", default="docs/matching.json")
    parser.add_argument("--skip-calibrate", action="store_true", help="plot and bench the stored calibration")
    args = parser.parse_args(argv)
    if args.skip_calibrate:
        import json
        calibration = json.loads((Path(args.model) / "model.json").read_text())["calibration"]
    else:
        calibration = calibrate_model_dir(args.model)
        print(f"calibrated {args.model} in {calibration['seconds']:.0f} s")
    plot(calibration, Path(args.data), Path(args.plot))
    import bench_match
    return bench_match.main(["--model", args.model, "--data", args.data, "--json", args.bench_json])


if __name__ == "__main__":
    sys.exit(main())
