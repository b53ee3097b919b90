"""Phase-fraction calibration: one offset per phase on a generator's output logits, chosen so that its labelled
volumes (argmax over phases) hold each phase at the training images' fraction.

The critics judge structure and see phase fractions only weakly, so a trained generator's fractions can sit
0.01-0.03 off its micrograph's (docs/real-micrographs.md, "Phase-fraction calibration"). A constant offset per
phase moves every interface of that phase a little, the same everywhere: it corrects the bias and leaves the
structure's shapes and the volumes' natural spread about their mean alone. It is part of the exported model
(``Generator.phase_offset``, saved with the weights), not a step applied to generated volumes.
"""
from __future__ import annotations

import numpy as np
import torch

CALIBRATION_VOLUMES = 8          # generated volumes of patch_size^3 per training dataset
CALIBRATION_ROUNDS = 20          # passes over the phases (each sets one phase exactly; they interact)
CALIBRATION_TOLERANCE = 2e-4     # stop when every pooled fraction is this close to its target


def phase_offsets(logits: list[torch.Tensor], targets) -> np.ndarray:
    """Offsets (C,) to add to every voxel's logits so that the argmax labels of ``logits`` (one (n, C, D, H, W)
    or (C, D, H, W) tensor per dataset) take the fractions ``targets`` ((datasets, C), or (C,) for one
    dataset), pooled over the datasets (mean of each dataset's fractions, as its voxels weigh alike).

    Coordinate-wise and exact per step: with the other phases' offsets fixed, a voxel is phase c when
    logit_c + b_c > max over k != c of (logit_k + b_k), so b_c is the target quantile of that margin. The
    offsets are centred (only their differences matter)."""
    flat = [x.detach().float().reshape(-1, x.shape[-4], *x.shape[-3:]).movedim(1, 0).reshape(x.shape[-4], -1)
            for x in logits]
    channels = flat[0].shape[0]
    target = np.atleast_2d(np.asarray(targets, dtype=float)).mean(axis=0)
    if target.shape != (channels,):
        raise ValueError(f"targets have {target.shape[-1]} phases, the logits {channels}.")
    weights = [1.0 / x.shape[1] / len(flat) for x in flat]          # each dataset's voxels weigh as one dataset
    offsets = torch.zeros(channels)
    for _ in range(CALIBRATION_ROUNDS):
        for phase in range(channels):
            others = [i for i in range(channels) if i != phase]
            margins = torch.cat([(x[others] + offsets[others, None]).amax(0) - x[phase] for x in flat])
            voxel_weight = torch.cat([torch.full((x.shape[1],), w) for x, w in zip(flat, weights)])
            order = torch.argsort(margins)
            cumulative = torch.cumsum(voxel_weight[order], 0)
            # the smallest offset that puts a target share of the (weighted) voxels above their margin
            count = int(torch.searchsorted(cumulative, torch.tensor(float(target[phase]))))
            sorted_margins = margins[order]
            if count <= 0:
                offsets[phase] = sorted_margins[0] - 1.0
            elif count >= len(sorted_margins):
                offsets[phase] = sorted_margins[-1] + 1.0
            else:       # midway between the last voxel in and the first voxel out
                offsets[phase] = 0.5 * (sorted_margins[count - 1] + sorted_margins[count])
        fractions = pooled_fractions(flat, weights, offsets)
        if np.max(np.abs(fractions - target)) <= CALIBRATION_TOLERANCE:
            break
    return (offsets - offsets.mean()).numpy()


def pooled_fractions(flat: list[torch.Tensor], weights: list[float], offsets: torch.Tensor) -> np.ndarray:
    """(C,) fractions of the argmax labels of (C, N) logits plus ``offsets``, each tensor's voxels weighted."""
    total = torch.zeros(flat[0].shape[0], dtype=torch.float64)
    for x, weight in zip(flat, weights):
        labels = (x + offsets[:, None]).argmax(0)
        total += torch.bincount(labels, minlength=x.shape[0]).double() * weight
    return total.numpy()


@torch.no_grad()
def calibrate(generator, attrs, targets, device="cpu", volumes: int = CALIBRATION_VOLUMES, seed: int = 0) -> np.ndarray:
    """Phase offsets (C,) for ``generator`` (a :class:`~slicegan_core.networks.Generator`, n-phase) from
    ``volumes`` volumes of its training edge per dataset: ``attrs`` (datasets, k) raw attribute values,
    ``targets`` (datasets, C) the training images' fractions. Measured without any current offset; the
    generator is left as it was (the caller stores the result in ``phase_offset`` of what it exports)."""
    config = generator.config
    was_training, saved = generator.training, generator.phase_offset.clone()
    generator.eval()
    generator.phase_offset.zero_()
    noise = torch.Generator().manual_seed(seed)
    try:
        logits = []
        for row in np.atleast_2d(np.asarray(attrs, dtype=np.float32)):
            z = torch.randn((volumes, config.z_channels, 4, 4, 4), generator=noise).to(device)
            batch = torch.as_tensor(np.repeat(row[None], volumes, 0), device=device)
            logits.append(torch.cat([generator(z[i:i + 1], batch[i:i + 1], activate=False).float().cpu()
                                     for i in range(volumes)]))
    finally:
        generator.phase_offset.copy_(saved)
        generator.train(was_training)
    return phase_offsets(logits, targets)
