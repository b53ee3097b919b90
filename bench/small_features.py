"""What the small-feature tail of a model's grain sizes is made of (issue: grain-size distributions).

    python bench/small_features.py [--model models/default] [--seeds 2] [--size 128] [--threads 1]
    python bench/small_features.py --margins [--size 96]     # how sure the generator is of its specks

The field measure drops features under 8 voxels; the all-features sigma of ln ESD is inflated by them, and the
default model makes ~10x the truth's share. A small feature may be a lobe that the distance watershed cut off a
larger grain at a neck (it touches another feature of its own phase) or an isolated speck (a face-connected
piece of its phase on its own). Which one it is says what to change: necks and bumps are the grains' shape;
specks are pieces of one phase sitting inside or between others (a lone voxel by its faces may still touch its
phase at an edge or corner: a diagonal attachment, which face-connected labelling, as the field's, separates).
Per trained alpha this prints, for truth crops and generated volumes of the same size, the interior features
(not touching a face: pieces cut by the faces are excluded, as in ``metrics.feature_sizes``), the share under
8 voxels, how many of those are isolated, their sizes, how many single voxels touch their phase diagonally,
how many other phases border an isolated one, and the generator's largest phase probability at
those voxels (how confident it is about them).
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from slicegan_core import load_model, synthesize  # noqa: E402
from slicegan_core.metrics.features import label_features  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_model import RECIPE  # noqa: E402

SMALL = 8          # voxels: the field measure's minimum size


def tail(labels: np.ndarray, probabilities: np.ndarray | None = None) -> dict:
    """Counts of the small interior features of a (D, H, W) label volume (see the module docstring)."""
    ids, phase_of = label_features(labels)
    voxels = np.bincount(ids.ravel())
    touches = np.zeros(len(voxels), dtype=bool)
    for axis in range(3):
        for end in (0, -1):
            touches[np.take(ids, end, axis=axis)] = True
    interior = ~touches
    interior[0] = False
    small = np.nonzero(interior & (voxels < SMALL))[0]
    isolated, bordering, confidence, diagonal = [], np.zeros(3, dtype=int), [], 0
    slices = ndimage.find_objects(ids)
    for feature in small:
        # a box one voxel wider than the feature holds its face neighbours
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in slices[feature - 1])
        mine = ids[box] == feature
        ring = ndimage.binary_dilation(mine) & ~mine
        around = labels[box][ring]
        if not np.any((around == phase_of[feature]) & (ids[box][ring] != feature)):
            isolated.append(voxels[feature])
            if voxels[feature] == 1:      # a lone voxel by its faces: does its phase touch it at an edge or corner?
                diagonal += int((labels[box] == phase_of[feature]).sum() > 1)
            bordering[min(len(np.unique(around)), 2)] += 1
            if probabilities is not None:
                confidence.extend(probabilities.max(axis=0)[box][mine].tolist())
    sizes = np.bincount(np.asarray(isolated, dtype=np.int64), minlength=SMALL)[1:]
    return {"interior": int(interior.sum()), "small": len(small), "isolated": len(isolated),
            "sizes": sizes.tolist(), "bordering": bordering[1:].tolist(), "confidence": confidence,
            "diagonal": diagonal}


NEIGHBOURHOOD_BINS = ((1, 1), (2, 3), (4, 7), (8, 12), (13, 27))


def generated_logits(model, alpha: float, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The generator's logits (1, C, size, size, size) for one volume, and their argmax one-hot."""
    logits = model._forward(model.latent(seed, (size,) * 3), torch.tensor([[alpha]]), activate=False).float()
    logits = logits if logits.dim() == 5 else logits[None]
    one_hot = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 4, 1, 2, 3).float()
    return logits, one_hot


def margins(logits: torch.Tensor, one_hot: torch.Tensor) -> list[tuple[str, int, np.ndarray]]:
    """The generator's logit margin (its largest logit minus the second) at each interior voxel of one
    generated volume (``generated_logits``), grouped by how many voxels of the voxel's own phase its 3x3x3
    neighbourhood holds (itself included): 1 is a lone voxel, 2-7 specks and sharp tips, 8 or more the inside or
    surface of a grain of 2x2x2 or larger. -> [(bin, voxels, percentiles 10 / 50 / 90)]. An island penalty
    computed on softmax(logits / T) reaches a voxel only while margin / T is a few units (its gradient is
    P (1 - P))."""
    own = (one_hot[:, :, 1:-1, 1:-1, 1:-1] * 27 * torch.nn.functional.avg_pool3d(one_hot, 3, stride=1)).sum(1).round()
    top = logits.topk(2, dim=1).values
    margin = (top[:, 0] - top[:, 1])[:, 1:-1, 1:-1, 1:-1]
    rows = []
    for low, high in NEIGHBOURHOOD_BINS:
        chosen = margin[(own >= low) & (own <= high)].numpy()
        if chosen.size:
            rows.append((f"{low}" if low == high else f"{low}-{high}", chosen.size, np.percentile(chosen, [10, 50, 90])))
    return rows


def island_background(logits: torch.Tensor, one_hot: torch.Tensor) -> list[tuple[str, float]]:
    """The island penalty's count (one- and two-voxel islands per thousand voxels) on one generated volume: on its
    labels (one-hot: the exact count), and on softmax(logits / T) for T = 4 and 16 (exact count + background)."""
    from slicegan_core.train import expected_islands
    rows = [("labels", expected_islands(one_hot, 2).item())]
    for temperature in (4, 16):
        rows.append((f"T = {temperature}", expected_islands(torch.softmax(logits / temperature, dim=1), 2).item()))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--seeds", type=int, default=2, help="generated volumes (and truth crops) per alpha")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--margins", action="store_true",
                        help="instead: the logit margins of one volume (seed 0) per alpha, by neighbourhood count")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    if args.margins:
        print(f"| alpha | own-phase voxels in the 3x3x3 neighbourhood | voxels in one {args.size}^3 volume | logit "
              "margin 10th / 50th / 90th percentile | P of the voxel's phase at the median margin (both "
              "other phases at it), softmax(logits / 4) / (logits / 16) |")
        print("|---" * 5 + "|")
        for alpha in RECIPE["sigmas"]:
            logits, one_hot = generated_logits(model, alpha, args.size)
            for name, count, (p10, p50, p90) in margins(logits, one_hot):
                print(f"| {alpha:g} | {name} | {count} | {p10:.0f} / {p50:.0f} / {p90:.0f} | "
                      f"{1 / (1 + 2 * np.exp(-p50 / 4)):.3f} / {1 / (1 + 2 * np.exp(-p50 / 16)):.3f} |", flush=True)
            print(f"|   | expected islands of 1-2 voxels per thousand voxels (train.expected_islands): "
                  + ", ".join(f"{name} {value:.3f}" for name, value in island_background(logits, one_hot))
                  + " |   |   |   |", flush=True)
        return
    print("| alpha | volumes | interior features | < 8 voxels (share) | of them isolated | isolated by size "
          "1 / 2 / 3-7 voxels | single voxels touching their phase at an edge or corner | isolated bordered by "
          "1 / 2 other phases | generator's max probability there (10th / 50th percentile) |")
    print("|---" * 9 + "|")
    for alpha in RECIPE["sigmas"]:
        truth = synthesize(shape=tuple(RECIPE["shape"]), sigma=alpha, median_esd=RECIPE["median_esd"],
                           phase_fractions=tuple(RECIPE["phase_fractions"]), periodic=RECIPE["periodic"],
                           seed=RECIPE["seeds"][f"{alpha:g}"]).labels
        starts = np.linspace(0, truth.shape[0] - args.size, args.seeds).astype(int)
        crops = [np.ascontiguousarray(truth[s:s + args.size, s:s + args.size, s:s + args.size]) for s in starts]
        truth_rows = [tail(crop) for crop in crops]
        generated_rows = []
        for seed in range(args.seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                probabilities = model.generate({"alpha": alpha}, seed=seed, shape=(args.size,) * 3,
                                               probabilities=True)
            labels = np.asarray(model.phase_values)[np.argmax(probabilities, axis=0)]
            generated_rows.append(tail(labels, probabilities))
        for name, rows in (("truth", truth_rows), ("generated", generated_rows)):
            total = {key: np.sum([r[key] for r in rows], axis=0) for key in ("interior", "small", "isolated",
                                                                               "sizes", "bordering", "diagonal")}
            confidence = [c for r in rows for c in r["confidence"]]
            sizes = total["sizes"]
            conf = (" / ".join(f"{q:.3f}" for q in np.percentile(confidence, [10, 50])) if confidence else "-")
            print(f"| {alpha:g} {name} | {len(rows)} x {args.size}^3 | {total['interior']} | {total['small']} "
                  f"({100 * total['small'] / total['interior']:.2f} %) | {total['isolated']} | "
                  f"{sizes[0]} / {sizes[1]} / {sizes[2:].sum()} | {total['diagonal']} | {total['bordering'][0]} / {total['bordering'][1]} | "
                  f"{conf} |", flush=True)


if __name__ == "__main__":
    main()
