"""How far the default model's S2 is from the truth's, next to how far two truths of the same recipe are apart.

    python bench/s2_noise.py [--model default] [--seeds 8] [--realisations 4] [--max-r 32]

Per trained alpha: the radial S2 of every phase (``metrics.two_point_correlation``, lags up to ``--max-r``) of
the recipe's 160^3 synthetic volume (the training data, ``bench/default_model.py``) and of ``--realisations``
more volumes of the same recipe with other seeds, against the mean S2 of ``--seeds`` generated 128^3 volumes.
Prints max |d S2| (over phases and lags) of each pair, and where along r the generated S2 differs most. A
generator cannot be held closer to one 160^3 volume than other volumes of the same recipe are to it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from default_model import RECIPE  # noqa: E402
from slicegan_core.generate import load_model  # noqa: E402
from slicegan_core.metrics.correlation import two_point_correlation  # noqa: E402
from slicegan_core.synthetic import synthesize  # noqa: E402

OTHER_SEEDS = 900      # first seed of the extra realisations (the recipe's own are 101-105)


def radial_s2(labels: np.ndarray, max_r: int) -> np.ndarray:
    """(3, max_r + 1) radial S2 of phases 0, 1, 2."""
    result = two_point_correlation(labels, [0, 1, 2], max_r=max_r)
    return np.stack([result[phase].radial for phase in (0, 1, 2)])


def recipe_volume(alpha: float, seed: int) -> np.ndarray:
    return synthesize(shape=tuple(RECIPE["shape"]), sigma=alpha, median_esd=RECIPE["median_esd"],
                      phase_fractions=tuple(RECIPE["phase_fractions"]), periodic=RECIPE["periodic"],
                      seed=seed).labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--realisations", type=int, default=4)
    parser.add_argument("--max-r", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, threads=args.threads)
    print("| alpha | recipe truth vs other realisations | generated vs recipe truth | generated vs other "
          "realisations | generated - truth at r = 1 / 4 / 8 / 16 (worst phase) |")
    print("|---|---|---|---|---|")
    for alpha in RECIPE["sigmas"]:
        recipe = radial_s2(recipe_volume(alpha, RECIPE["seeds"][f"{alpha:g}"]), args.max_r)
        others = [radial_s2(recipe_volume(alpha, OTHER_SEEDS + i), args.max_r) for i in range(args.realisations)]
        generated = np.mean([radial_s2(model.generate({"alpha": alpha}, seed=seed, shape=(128,) * 3), args.max_r)
                             for seed in range(args.seeds)], axis=0)
        gap = generated - recipe
        worst = int(np.argmax(np.abs(gap).max(axis=1)))
        lags = [r for r in (1, 4, 8, 16) if r <= args.max_r]
        print(f"| {alpha:g} | {', '.join(f'{np.abs(recipe - o).max():.4f}' for o in others)} | "
              f"{np.abs(gap).max():.4f} | {', '.join(f'{np.abs(generated - o).max():.4f}' for o in others)} | "
              f"{' / '.join(f'{gap[worst, r]:+.4f}' for r in lags)} (phase {worst}) |", flush=True)


if __name__ == "__main__":
    main()
