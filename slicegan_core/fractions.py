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

from .generate import argmax_channels

# 8 volumes of twice the training edge per dataset (latent edge 6: 128^3 for a 64-voxel patch), every second
# voxel along each axis (neighbours carry little more). Volumes vary (a sphere packing's 64^3 volumes by sd
# ~0.01), and a generator's fractions at its training edge differ from those of the larger volumes users make by
# up to ~0.005 (docs/real-micrographs.md, "Phase-fraction calibration").
CALIBRATION_VOLUMES = 8
CALIBRATION_LATENT = 6
CALIBRATION_STRIDE = 2
# A phase whose fraction is already this close to the training images' keeps it: the calibration's own error at
# another volume size is ~0.005 (docs/real-micrographs.md), and on a 0.9 % phase a correction of 0.001 cost 7
# points of its surface.
CALIBRATION_DEADBAND = 0.005
CALIBRATION_ROUNDS = 20          # passes over the phases (each sets one phase exactly; they interact)
CALIBRATION_TOLERANCE = 2e-4     # stop when every fraction is this close to its target


def phase_offsets(logits: torch.Tensor, targets) -> np.ndarray:
    """Offsets (C,) to add to every voxel's logits so that the argmax labels of ``logits`` ((C, N) voxels, or
    (n, C, D, H, W) volumes) take the fractions ``targets`` ((C,); (datasets, C) is averaged, for logits that
    hold the same number of voxels of each dataset).

    Coordinate-wise and exact per step: with the other phases' offsets fixed, a voxel is phase c when
    logit_c + b_c > max over k != c of (logit_k + b_k), so b_c is the target quantile of that margin. The
    offsets are centred (only their differences matter)."""
    if logits.dim() == 5:
        logits = logits.movedim(1, 0).reshape(logits.shape[1], -1)
    flat = logits.detach().float()
    channels, voxels = flat.shape
    target = np.atleast_2d(np.asarray(targets, dtype=float)).mean(axis=0)
    if target.shape != (channels,):
        raise ValueError(f"targets have {target.shape[-1]} phases, the logits {channels}.")
    offsets = torch.zeros(channels)
    for _ in range(CALIBRATION_ROUNDS):
        for phase in range(channels):
            others = [i for i in range(channels) if i != phase]
            margins = (flat[others] + offsets[others, None]).amax(0) - flat[phase]
            inside = int(round(float(target[phase]) * voxels))       # voxels that must end up in this phase
            if inside <= 0:
                offsets[phase] = margins.min() - 1.0
            elif inside >= voxels:
                offsets[phase] = margins.max() + 1.0
            else:       # midway between the last voxel in and the first voxel out
                last_in = torch.kthvalue(margins, inside).values
                first_out = torch.kthvalue(margins, inside + 1).values
                offsets[phase] = 0.5 * (last_in + first_out)
        if np.max(np.abs(label_fractions(flat, offsets) - target)) <= CALIBRATION_TOLERANCE:
            break
    return (offsets - offsets.mean()).numpy()


def label_fractions(logits: torch.Tensor, offsets) -> np.ndarray:
    """(C,) fractions of the argmax labels of (C, N) ``logits`` plus ``offsets``."""
    # not argmax(0): on the CPU its reduction across whole channels is 8x slower (0.6 s for 2M voxels)
    labels = argmax_channels(logits + torch.as_tensor(offsets, dtype=logits.dtype)[:, None]).long()
    return (torch.bincount(labels, minlength=logits.shape[0]).double() / labels.numel()).numpy()


@torch.no_grad()
def calibrate(generator, attrs, targets, device="cpu", volumes: int = CALIBRATION_VOLUMES, seed: int = 0) -> np.ndarray:
    """Phase offsets (C,) for ``generator`` (a :class:`~slicegan_core.networks.Generator`, n-phase) from
    ``volumes`` volumes of latent edge CALIBRATION_LATENT per dataset (every CALIBRATION_STRIDE-th voxel): ``attrs``
    (datasets, k) raw attribute values, ``targets`` (datasets, C) the training images' fractions, pooled with
    equal weight per dataset; zeros when every phase is within CALIBRATION_DEADBAND, or when, with several
    datasets, the offsets would not lower the worst dataset's worst fraction error. Measured without any current
    offset; the generator is left as it was (the caller stores the result in ``phase_offset`` of what it
    exports)."""
    config = generator.config
    was_training, saved = generator.training, generator.phase_offset.clone()
    generator.eval()
    generator.phase_offset.zero_()
    noise = torch.Generator().manual_seed(seed)
    try:
        per_dataset, step = [], CALIBRATION_STRIDE
        for row in np.atleast_2d(np.asarray(attrs, dtype=np.float32)):
            z = torch.randn((volumes, config.z_channels, *(CALIBRATION_LATENT,) * 3), generator=noise).to(device)
            batch = torch.as_tensor(row[None], device=device)
            chunks = []
            for i in range(volumes):       # one volume at a time
                out = generator(z[i:i + 1], batch, activate=False)[0, :, ::step, ::step, ::step]
                chunks.append(out.float().cpu().reshape(out.shape[0], -1))
            per_dataset.append(torch.cat(chunks, dim=1))
    finally:
        generator.phase_offset.copy_(saved)
        generator.train(was_training)
    logits = torch.cat(per_dataset, dim=1)
    none = np.zeros(logits.shape[0], dtype=np.float32)
    raw = label_fractions(logits, none)
    goal = calibration_targets(raw, targets)
    if np.array_equal(goal, raw):           # every phase within the deadband: no offsets at all
        return none
    offsets = phase_offsets(logits, goal)
    # One offset serves every dataset: with several (a model steered by an attribute), keep it only if it
    # brings the worst dataset's worst phase closer to its image's fraction than the raw output is.
    targets = np.atleast_2d(np.asarray(targets, dtype=float))
    if len(per_dataset) > 1 and worst_error(per_dataset, offsets, targets) >= worst_error(per_dataset, none, targets):
        return none
    return offsets


def worst_error(per_dataset: list[torch.Tensor], offsets, targets: np.ndarray) -> float:
    """Largest abs difference, over datasets and phases, between the labels' fractions and ``targets``."""
    return max(float(np.max(np.abs(label_fractions(x, offsets) - t))) for x, t in zip(per_dataset, targets))


def calibration_targets(raw, targets, deadband: float = CALIBRATION_DEADBAND) -> np.ndarray:
    """(C,) the fractions to calibrate to, from the generator's ``raw`` (C,) and the training images'
    ``targets`` ((C,) or (datasets, C), averaged): a phase within ``deadband`` of its target keeps its raw
    fraction; the others share the rest in the training images' proportions. All within: ``raw`` (no change)."""
    raw = np.asarray(raw, dtype=float)
    target = np.atleast_2d(np.asarray(targets, dtype=float)).mean(axis=0)
    keep = np.abs(raw - target) <= deadband
    if keep.all():
        return raw
    out = target.copy()
    out[keep] = raw[keep]
    out[~keep] *= (1.0 - raw[keep].sum()) / target[~keep].sum()
    return out
