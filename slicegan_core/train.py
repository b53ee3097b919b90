"""Train an AdaIN-SliceGAN (WGAN-GP) and keep the run safe on disk.

A run directory holds:
  config.json            model + training + data configuration (written once, read by resume)
  events.jsonl           one JSON line per log interval: step, losses, Wasserstein estimate, GP, s/step, ETA
  checkpoint.safetensors G, critics, optimisers, RNG states, step (atomic: temp file + rename)
  model/                 the latest generator as a model directory (load_model works on it)
  samples/               x/y/z centre slices of a generated volume per trained attribute value
  status.json            running / stopped / finished / crashed, with the pid to signal and the error tail

Under torchrun the run spans several processes (see :mod:`slicegan_core.distributed`): each makes its share of
the global batch, gradients are averaged, and rank 0 alone holds the lock and writes these files.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import fcntl
import json
import math
import os
import signal
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import __version__
from .config import ModelConfig, TrainConfig, check_voxel_size, from_dict, preset, to_dict
from .data import DatasetSpec, TrainingData, load_training_data
from . import distributed, fidelity, fractions
from .distributed import BatchShare, Ranks
from .generate import argmax_channels, cpu_has_fast_bf16, pick_device
from .modelfile import default_phases, save_model
from .networks import Generator, build_critics
from .threads import AutoThreads
from .storage import (atomic_write_bytes, atomic_write_text, load_meta, load_tensors, optimizer_from_flat,
                      optimizer_to_flat, save_tensors)

SAMPLE_SEED = 1234  # fixed noise for sample images, so successive samples are comparable


# ---- the training loop ------------------------------------------------------------------------------------

def _train_loop(run: "Run") -> str:
    """One readable WGAN-GP loop: schedule -> checkpoint -> critic steps -> generator step -> log."""
    cfg, G, critics, data = run.train_config, run.G, run.critics, run.data
    last_log_time, last_log_step = time.perf_counter(), run.step
    while run.step < cfg.steps:
        if run.should_stop():          # every process stops after the same step
            run.checkpoint()
            return "stopped"
        # Critic: fake slices (all axes) scored low, real patches of the same datasets scored high.
        for _ in range(cfg.critic_steps):
            dataset_index, attrs, fake = run.fake_batch(grad=False)
            run.opt_d.zero_grad(set_to_none=True)
            stats = torch.zeros(3, device=run.device)   # read back once per log interval, not per step
            for axis in range(3):
                critic = critics[0 if len(critics) == 1 else axis]
                fake_slices, slice_attrs, slice_dataset = run.slices(fake, attrs, dataset_index, axis,
                                                                     run.slices_per_axis)
                real, real_attrs, paired_fake = run.real_batch(fake_slices, slice_attrs, slice_dataset, axis)
                with run.autocast():
                    score_real = critic(real, real_attrs).mean()
                    score_fake = critic(fake_slices, slice_attrs).mean()
                pairs = len(run.share.penalty_rows)         # this process's penalty pairs come first
                penalty = gradient_penalty(critic, real[:pairs], paired_fake[:pairs], real_attrs[:pairs],
                                           run.torch_rng, run.share)
                loss = score_fake - score_real + cfg.gp_lambda * penalty
                loss.backward()
                stats += torch.stack([loss, score_real - score_fake, penalty]).detach()
            run.average_gradients(run.critics)
            run.opt_d.step()
        # Generator: make every axis's slices look real to the critics (frozen: their weight gradients
        # would only be thrown away, and skipping them saves a third of the critics' backward pass).
        dataset_index, attrs, fake = run.fake_batch(grad=True)
        run.opt_g.zero_grad(set_to_none=True)
        critics.requires_grad_(False)
        loss_g = 0.0
        for axis in range(3):
            critic = critics[0 if len(critics) == 1 else axis]
            fake_slices, slice_attrs, _ = run.slices(fake, attrs, dataset_index, axis,
                                                     run.generator_slices_per_axis)
            with run.autocast():
                loss_g = loss_g - critic(fake_slices, slice_attrs).mean()
        if run.island_phase_weights is not None:
            islands = island_count(run.last_logits, cfg, run.island_phase_weights)
            loss_g = loss_g + (run.island_weights(attrs) * islands).mean()
        if run.fraction_weight:
            loss_g = loss_g + run.fraction_weight * run.fraction_loss(fake, dataset_index[run.share.volumes])
        loss_g.backward()
        critics.requires_grad_(True)
        run.average_gradients(run.G)
        run.opt_g.step()
        run.update_average()
        run.step += 1
        run.threads.update()
        # Log and checkpoint.
        if run.step % cfg.log_every == 0 or run.step == cfg.steps:
            now = time.perf_counter()
            sec_per_step = (now - last_log_time) / max(1, run.step - last_log_step)
            last_log_time, last_log_step = now, run.step
            loss_d, wasserstein, penalty, loss_g = run.batch_means(stats, loss_g)
            run.log(step=run.step, loss_d=loss_d, loss_g=loss_g, wasserstein=wasserstein / 3,
                    gradient_penalty=penalty / 3, sec_per_step=sec_per_step, threads=run.threads.threads,
                    eta_s=sec_per_step * (cfg.steps - run.step))
        if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
            run.checkpoint()
            run.share_island_scales()
    return "finished"


RARE_PHASE_SHARE = 0.05     # a phase under this share of a training image turns the fraction penalty on
RARE_PHASE_WEIGHT = 100.0   # the automatic weight: docs/real-micrographs.md, "A rare phase"
# What the verdict advises when phase fractions miss: a sphere packing's generator stayed 0.015 under its slice's
# solid fraction at every setting the critics see, and came within 0.001 at this weight. Not a default: on the
# composite and the SEM segmentation it cost surface and chord (docs/real-micrographs.md, "Defaults that fit
# the data").
FRACTION_WEIGHT_FIT = 3000.0


def fraction_error(probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """How far each of (B, C, D, H, W) phase probabilities' fractions m are from ``targets`` t (B, C) -> (B,):
    2 KL(t || m) = 2 sum over phases of t_c ln(t_c / m_c). Near the target this is sum (m_c - t_c)^2 / t_c, so
    a rare phase gets the larger say, which the critics (fooled as well by a volume without it as by one with its
    few specks) do not give it; and unlike that square its pull on a missing phase does not vanish once the
    softmax is confident the phase is absent (its gradient on the phase's logits tends to 2 t_c, not to 0).
    Phases with t_c = 0 add nothing (the fractions sum to 1, so their excess costs the others)."""
    fractions = probabilities.float().mean(dim=tuple(range(2, probabilities.dim())))
    ratio = torch.log(targets.clamp_min(1e-12)) - torch.log(fractions.clamp_min(1e-12))
    return 2 * (targets * ratio).sum(dim=1)


def running_fraction_error(fractions: torch.Tensor, running: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """fraction_error's pull on the generator's *bias*, not on each volume (fraction_scope "running"): each of (B, C)
    volumes' phase fractions m is pulled as if it were ``running`` r (B, C), the generator's running mean
    fraction (no gradient), against ``targets`` t (B, C) -> (B,): 2 sum over phases of (1 - t_c / r_c) m_c, whose
    gradient in m is fraction_error's at m = r. A volume's own spread about the mean is then free: the
    per-volume penalty narrowed the composite's volume-to-volume spread by 37-45 % and coarsened it
    (docs/real-micrographs.md, "The fraction penalty on the bias")."""
    coefficients = (1 - targets / running.clamp_min(1e-6)).detach()
    return 2 * (coefficients * fractions.float()).sum(dim=1)


FRACTION_RUNNING_DECAY = 0.9   # the running mean's memory: ~10 steps (its noise ~0.1 of one volume's spread)


def fraction_weight(setting: float | None, fractions: list[dict]) -> tuple[float, list[str]]:
    """The fraction penalty's weight for a run whose training images have phase ``fractions`` (per dataset,
    ``{phase value: share}``): ``setting``, or when None RARE_PHASE_WEIGHT if a phase present in an image
    covers less than RARE_PHASE_SHARE of it, else 0. Also the rare phases, as "phase V (S %)" texts."""
    rare = sorted({f"phase {value} ({share:.1%})" for shares in fractions for value, share in shares.items()
                   if 0 < share < RARE_PHASE_SHARE})
    if setting is not None:
        return float(setting), rare
    return (RARE_PHASE_WEIGHT if rare else 0.0), rare


# The automatic island penalty (docs/real-micrographs.md, "The automatic island penalty" and "Defaults that fit
# the data"):
ISLAND_WEIGHT = 10.0       # its full weight, island_view "3d"
ISLAND_WEIGHT_SLICES = 30.0  # its full weight, island_view "slices" (its own count: one-pixel islands of slices)
# its full weight with island_loss "margin" (island_view "slices"): the hinge on every small piece's voxels is
# a larger count than the expected islands; 0.03 met the islands goal on a SOFC anode whose three phases all got
# it (docs/real-micrographs.md, "The SOFC anode's islands: a penalty on the small pieces' margins")
ISLAND_WEIGHT_MARGIN = 0.03
ISLAND_WARMUP_SLICES = 1000  # steps the slice count's weight ramps in over (island_warmup None)
ISLAND_SPARSE = 500.0      # small 2D islands per million pixels of a phase at or below which it gets the full weight
ISLAND_DENSE = 1_000.0     # at or above which it gets none, and no phase gets any (the data has real small features)
# What a failed verdict advises for small islands in a phase whose training images have few: the margin penalty
# on the slices' small pieces, its weight per phase from the data (ISLAND_WEIGHT_MARGIN where a phase has few).
ISLAND_MARGIN_MAX_VOXELS = 4   # the margin's largest 2D piece, advised and under "auto" (the measured setting)
ISLAND_MARGIN_ADVICE = ("--set island_loss='\"margin\"' --set island_view='\"slices\"' "
                        f"--set island_max_voxels={ISLAND_MARGIN_MAX_VOXELS}")
# island_loss "auto" takes the margin where every phase of the training images has at least this many small 2D
# islands per million of its pixels, and the expected count where one has fewer. Measured on six cases
# (docs/real-micrographs.md, "Which count, from the data"): the SOFC anode's phases have 208-792, and the margin
# brought its islands nearer the allowance than the expected count in three training runs of three; both
# PoreSpy blobs' phases have 0-106, and on blobs 0.3 the margin made the minority phase's thin necks too
# connected (tortuosity -28 %) where the expected count met every goal. 150 lies between the two.
ISLAND_MARGIN_FROM = 150.0


def resolve_island_loss(tc: TrainConfig, densities: dict[int, float], phase_values) -> TrainConfig:
    """``tc`` with island_loss "auto" made concrete from the training images' small 2D islands per million
    pixels of each phase (``TrainingData.island_densities``): "margin" in the slices' view, pieces of up to
    ISLAND_MARGIN_MAX_VOXELS pixels, where the penalty is automatic (island_penalty None) and every phase has
    at least ISLAND_MARGIN_FROM; else "expected" with ``tc``'s own view and piece size. A view or piece size
    set away from the defaults ("3d", 1) asks for that expected count, so "auto" keeps it. Other settings: as
    given."""
    if tc.island_loss != "auto":
        return tc
    values = list(phase_values)
    chosen = tc.island_view != "3d" or tc.island_max_voxels != 1
    if (tc.island_penalty is None and not chosen and values
            and all(densities.get(v, 0.0) >= ISLAND_MARGIN_FROM for v in values)):
        return dataclasses.replace(tc, island_loss="margin", island_view="slices",
                                   island_max_voxels=ISLAND_MARGIN_MAX_VOXELS)
    return dataclasses.replace(tc, island_loss="expected")


def island_phase_weights(densities: dict[int, float], phase_values, full_weight: float = ISLAND_WEIGHT) -> list[float]:
    """The island penalty's automatic weight per phase (channel order) from the training images' own small 2D
    islands per million pixels of each phase (``TrainingData.island_densities``): ``full_weight`` up to
    ISLAND_SPARSE, falling linearly in log(density) to none at ISLAND_DENSE; and none for any phase once one
    phase has ISLAND_DENSE or more. Speckle is wrong where the data has none (smooth particles, grains) and
    right where it is full of it (a fine phase), and the penalty cannot tell a generator's speckle from real
    small features, so the data decides. A phase's penalty also smooths the phases around its specks: on a
    sphere packing whose pores hold real small pockets, the penalty on the solid phase alone kept the pores too
    thick, so real small features in one phase turn it off for all."""
    if any(densities.get(value, 0.0) >= ISLAND_DENSE for value in phase_values):
        return [0.0] * len(list(phase_values))
    weights = []
    for value in phase_values:
        density = densities.get(value, 0.0)
        place = math.log(max(density, ISLAND_SPARSE) / ISLAND_SPARSE) / math.log(ISLAND_DENSE / ISLAND_SPARSE)
        weights.append(full_weight * max(0.0, 1.0 - place))
    return weights


ISLAND_FEEDBACK_STEP = 1.25          # island_feedback: factor per checkpoint on a phase's weight
ISLAND_FEEDBACK_RANGE = (0.125, 8.0)  # ... within this range of its starting weight
# Raise while islands are above this place between the training images' own (0) and the allowance (1). At 0.5
# the SOFC anode's islands came within the allowance in every phase and two phases coarsened (chords +10 and
# +16 %); at 1.0 its chords stayed within 8 % and two phases' surface fell 10-13 % (docs/real-micrographs.md,
# "Island weights in a closed loop").
ISLAND_FEEDBACK_TARGET = 1.0


def island_places(card_: dict, phase_values) -> list[float | None]:
    """Per phase, where its small islands lie between the training images' own (0) and the allowance (1), the
    worst (highest) over the card's datasets; None where the card could not measure it."""
    places = []
    for value in phase_values:
        found = []
        for dataset in card_.get("datasets", []):
            entry = dataset.get("phases", {}).get(str(int(value)), {}).get("islands") or {}
            generated, training, allowance = (entry.get(k) for k in ("generated", "training", "allowance"))
            if None not in (generated, training, allowance) and allowance > training:
                found.append((generated - training) / (allowance - training))
        places.append(max(found) if found else None)
    return places


def island_feedback(scales: list[float], card_: dict, phase_values) -> list[float]:
    """island_feedback's step: each phase's weight factor after one fidelity card of the current generator.

    A phase's place is (generated - training) / (allowance - training) small islands, the worst (highest) over
    the card's datasets: above ISLAND_FEEDBACK_TARGET the factor grows by ISLAND_FEEDBACK_STEP, below 0 (fewer
    than the training images have) it shrinks by it, else it holds; clamped to ISLAND_FEEDBACK_RANGE. A phase
    the card could not measure (absent from the generated slices) holds.
    """
    return _feedback_step(scales, island_places(card_, phase_values))


def _feedback_step(scales: list[float], places: list[float | None]) -> list[float]:
    """island_feedback's step from the places island_places found."""
    low, high = ISLAND_FEEDBACK_RANGE
    updated = []
    for scale, place in zip(scales, places):
        if place is not None and place > ISLAND_FEEDBACK_TARGET:
            scale *= ISLAND_FEEDBACK_STEP
        elif place is not None and place < 0:
            scale /= ISLAND_FEEDBACK_STEP
        updated.append(float(min(high, max(low, scale))))
    return updated


def expected_islands(probabilities: torch.Tensor, max_voxels: int = 1,
                     phase_weights: torch.Tensor | None = None, view: str = "3d") -> torch.Tensor:
    """Expected small phase islands per thousand interior voxels of each of (B, C, D, H, W) phase
    probabilities -> (B,). One-voxel islands: sum over phases of P_c(x) * prod over the 6 face neighbours n of
    (1 - P_c(n)); with ``max_voxels`` 2 also face-connected pairs x, y: P_c(x) P_c(y) * prod over the pair's
    10 other face neighbours of (1 - P_c(n)). For one-hot volumes these are the exact counts. 2D critics barely
    see such islands (each is a one- or two-pixel blob in a few slices, among the many small blobs that real
    slices show where they cut a grain's tip), so ``island_penalty`` asks for them directly. ``phase_weights``
    (C,): each phase's islands count that many times (default once). ``view`` "slices": instead one-pixel 2D
    islands of the slices across each axis (P_c(x) * prod over the 4 in-plane neighbours of (1 - P_c(n))),
    averaged over the three axes, per thousand interior voxels: also the cut ends of one-voxel-thin rods and
    plates, which is where most of a fine micrograph's excess slice speckle comes from (docs/real-micrographs.md)."""
    p = probabilities.float()
    q = 1 - p
    size = p.shape[2:]
    interior = tuple((1, n - 2) for n in size)

    def at(tensor, offset, region=interior):
        """``tensor`` at x + offset for every x of ``region`` ((start, length) per axis)."""
        return tensor[(slice(None), slice(None)) + tuple(slice(start + o, start + o + n)
                                                         for (start, n), o in zip(region, offset))]

    def unit(axis, step=1):
        return tuple(step if i == axis else 0 for i in range(3))

    # (1 - P) of both face neighbours along each axis; every product below is built from these three, so
    # each neighbour is read once (each read of a shifted view costs a full-size tensor in the backward pass).
    along = [at(q, unit(axis, -1)) * at(q, unit(axis, 1)) for axis in range(3)]
    centre = at(p, (0, 0, 0))
    if view == "slices":
        # one-pixel islands across axis a: the 4 in-plane neighbours, i.e. the pairs along the other two axes
        count = (centre * (along[0] * (along[1] + along[2]) + along[1] * along[2])).sum(dim=(2, 3, 4)) / 3
        max_voxels = 1
    else:
        count = (centre * along[0] * along[1] * along[2]).sum(dim=(2, 3, 4))
    if max_voxels >= 2:
        for axis in range(3):
            b, c = (other for other in range(3) if other != axis)
            across = along[b] * along[c]                # the 4 face neighbours across ``axis``
            first = tuple((1, n - 2 - (i == axis)) for i, n in enumerate(size))   # x and x + e_axis interior
            length = size[axis] - 3
            pair = (at(p, (0, 0, 0), first) * at(p, unit(axis), first)
                    * across.narrow(2 + axis, 0, length) * across.narrow(2 + axis, 1, length)
                    * at(q, unit(axis, -1), first) * at(q, unit(axis, 2), first))
            count = count + pair.sum(dim=(2, 3, 4))
    count = count.sum(dim=1) if phase_weights is None else (count * phase_weights.to(count)).sum(dim=1)
    return 1000 * count / math.prod(n - 2 for n in size)


def island_count(logits: torch.Tensor, cfg: TrainConfig, phase_weights: torch.Tensor) -> torch.Tensor:
    """What the island penalty counts in each of (B, C, D, H, W) generator logits -> (B,), as ``cfg`` says:
    on softmax(logits / island_temperature), islands of up to 2 voxels (3D or one-pixel islands of slices,
    :func:`expected_islands`) or voxels of specks of 3-7 voxels (:func:`expected_speck_voxels`)."""
    if cfg.island_loss == "margin":
        return speck_margins(logits, cfg.island_max_voxels, phase_weights, view=cfg.island_view)
    softened = torch.softmax(logits.float() / cfg.island_temperature, dim=1)
    if cfg.island_max_voxels >= 3:
        return expected_speck_voxels(softened, cfg.island_max_voxels, phase_weights)
    return expected_islands(softened, cfg.island_max_voxels, phase_weights, cfg.island_view)


def speck_mask(labels: np.ndarray, max_voxels: int, view: str = "3d") -> np.ndarray:
    """Voxels of (B, D, H, W) phase labels that lie in a small piece of their phase -> bool (B, D, H, W).
    ``view`` "3d": face-connected pieces of at most ``max_voxels`` voxels not touching the volume's faces (a
    piece there may be part of a larger one outside the volume); "slices": 2D pieces (edge-connected) of at most
    ``max_voxels`` pixels of the slices across any of the three axes, not touching the slice's edges."""
    from skimage.measure import label

    def small(pieces, borders):
        """Per voxel of ``pieces`` (labels of one labelling): is its piece at most ``max_voxels`` and off
        ``borders`` (the faces or slice edges, where a piece may continue outside)?"""
        keep = np.bincount(pieces.ravel()) <= max_voxels
        keep[0] = False
        for border in borders:
            keep[border] = False
        return keep[pieces]

    mask = np.zeros(labels.shape, dtype=bool)
    for b, volume in enumerate(labels):
        if view == "3d":
            # one pass labels every phase's face-connected pieces (as the island measures count them)
            pieces = label(volume, background=-1, connectivity=1)
            mask[b] = small(pieces, (pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1], pieces[:, :, 0],
                                     pieces[:, :, -1]))
            continue
        for axis in range(3):
            stack = np.moveaxis(volume, axis, 0).astype(np.int16)             # (slices, h, w)
            n, h, w = stack.shape
            # the slices one below the other with a separator row between them: one 2D labelling for all
            tall = np.full((n, h + 1, w), -1, np.int16)
            tall[:, :h] = stack
            pieces = label(tall.reshape(n * (h + 1), w), background=-1, connectivity=1).reshape(n, h + 1, w)[:, :h]
            mask[b] |= np.moveaxis(small(pieces, (pieces[:, 0], pieces[:, -1], pieces[:, :, 0], pieces[:, :, -1])),
                                   0, axis)
    return mask


def speck_margins(logits: torch.Tensor, max_voxels: int = 2,
                  phase_weights: torch.Tensor | None = None, floor: float = 1.0, view: str = "3d") -> torch.Tensor:
    """island_loss "margin": per thousand voxels of each of (B, C, D, H, W) logits -> (B,), the sum over the
    voxels of the argmax volume's small pieces (:func:`speck_mask`) of max(0, margin + ``floor``), margin = the
    voxel's phase's logit minus the largest other logit, times its phase's weight (``phase_weights`` (C,)).
    Where ``expected_islands`` pushes on every uncertain voxel and barely on a confident speck, this pushes only
    on specks, equally hard however confident: each unit of weight lowers a speck voxel's margin at the same
    rate until it flips to its runner-up phase (then it leaves the mask). ``view`` as :func:`speck_mask`."""
    values = logits.float()
    # argmax(dim=1) strides across whole channels on the CPU: 125 ms for four 64^3 volumes, ~15x this
    labels = argmax_channels(values.detach().transpose(0, 1)).long()
    mask = torch.from_numpy(speck_mask(labels.cpu().numpy().astype(np.uint8), max_voxels, view)).to(values.device)
    own = values.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = values.scatter(1, labels.unsqueeze(1), float("-inf")).amax(dim=1)
    hinge = torch.relu(own - others + floor) * mask
    if phase_weights is not None:
        hinge = hinge * phase_weights.to(values)[labels]
    return 1000 * hinge.sum(dim=(1, 2, 3)) / math.prod(values.shape[2:])


def expected_speck_voxels(probabilities: torch.Tensor, max_voxels: int = 7,
                          phase_weights: torch.Tensor | None = None, sharpness: float = 0.25) -> torch.Tensor:
    """Expected voxels in specks of up to ``max_voxels`` (3-7) voxels, per thousand interior voxels of each of
    (B, C, D, H, W) phase probabilities -> (B,). A voxel x of phase c counts when at most ``max_voxels`` voxels
    of its 3x3x3 neighbourhood (x included) are c: sum over phases of P_c(x) * sigmoid((max_voxels + 1/2 -
    M_c(x)) / sharpness), M_c(x) the sum of P_c over the neighbourhood. For one-hot volumes (sharpness -> 0) this
    counts every voxel of every piece of at most ``max_voxels`` voxels lying alone (no other voxel of its phase
    within one voxel, diagonals included), and never a voxel of a convex grain of 2x2x2 or more (a corner has 8
    of its phase around it); it also counts voxels of one-voxel-thin rods (3 per neighbourhood). Where
    ``expected_islands`` enumerates island shapes (exact, but only up to pairs), this reaches the 3-7-voxel
    specks at the price of counting voxels, not islands: a k-voxel speck counts k. ``phase_weights`` as there."""
    p = probabilities.float()
    neighbourhood = 27 * torch.nn.functional.avg_pool3d(p, 3, stride=1)         # (B, C, D-2, H-2, W-2)
    centre = p[:, :, 1:-1, 1:-1, 1:-1]
    count = (centre * torch.sigmoid((max_voxels + 0.5 - neighbourhood) / sharpness)).sum(dim=(2, 3, 4))
    count = count.sum(dim=1) if phase_weights is None else (count * phase_weights.to(count)).sum(dim=1)
    return 1000 * count / math.prod(n - 2 for n in p.shape[2:])


def gradient_penalty(critic, real, fake, attrs, generator: torch.Generator,
                     share: BatchShare | None = None) -> torch.Tensor:
    """WGAN-GP term E[(|grad D(x_hat)|_2 - 1)^2] on random interpolates of real and fake slices (N, C, P, P).

    ``share``: with several processes, ``real``/``fake`` are this process's pairs; the mixing weights of all
    ``share.penalty_draws`` pairs are drawn (so every process's random stream stays in step) and its rows kept.
    """
    if share is None:
        eps = torch.rand((real.shape[0], 1, 1, 1), generator=generator)
    else:
        eps = torch.rand((share.penalty_draws, 1, 1, 1), generator=generator)[torch.from_numpy(share.penalty_rows)]
    eps = eps.to(real.device)
    mixed = (eps * real + (1 - eps) * fake.detach()).requires_grad_(True)
    score = critic(mixed, attrs)
    (grad,) = torch.autograd.grad(score.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


# ---- the run: state, batches, checkpoints -----------------------------------------------------------------

def batch_counts(tc: TrainConfig, patch_size: int, planes: int = 1) -> tuple[int, int, int, int]:
    """Per axis of a global batch: (critic slices per fake volume, generator slices per fake volume, real
    patches, gradient-penalty pairs), from the settings' None defaults and caps (see :class:`TrainConfig`).
    With ``planes`` 3 (ModelConfig.critic_planes) a slice needs both neighbours: patch_size - 2 positions."""
    positions = patch_size - planes + 1
    slices = min(tc.slices_per_axis or positions, positions)
    generator_slices = min(tc.generator_slices_per_axis or slices, positions)
    real = min(tc.real_patches_per_axis or tc.batch_size, tc.batch_size * slices)
    pairs = min(tc.penalty_pairs_per_axis or tc.batch_size, real)
    return slices, generator_slices, real, pairs


def check_batch_split(train_fields: dict, patch_size: int, processes: int, planes: int = 1) -> None:
    """ValueError (one sentence) unless a run with these training settings (a :class:`TrainConfig` as a dict)
    splits into ``processes`` equal shares (see :class:`slicegan_core.distributed.BatchShare`)."""
    tc = from_dict(TrainConfig, train_fields)
    slices, _, real, pairs = batch_counts(tc, patch_size, planes)
    BatchShare.of(Ranks(0, processes), tc.batch_size, slices, real, pairs)


class Run:
    """Everything a training run holds; built fresh by :func:`train` or from disk by :func:`resume`."""

    def __init__(self, run_dir: Path, config: dict, data: TrainingData | None = None):
        self.dir = run_dir
        self.config = config
        self.model_config = from_dict(ModelConfig, config["model"])
        self.train_config = from_dict(TrainConfig, config["train"])
        data_cfg = config["data"]
        specs = [DatasetSpec(paths=tuple(d["paths"]), attrs=d["attrs"]) for d in data_cfg["datasets"]]
        # ``data``: already loaded from these specs by train() (loading twice would double peak memory)
        self.data: TrainingData = data or load_training_data(specs, image_type=data_cfg["image_type"],
                                                             patch_size=self.model_config.patch_size)
        self.ranks: Ranks = distributed.current()
        self.device = pick_device(self.train_config.device)
        if self.device.type == "cuda" and self.ranks.size > 1 and distributed.local_rank() >= torch.cuda.device_count():
            raise ValueError(f"Process {distributed.local_rank()} on this machine has no GPU of its own ({torch.cuda.device_count()} "
                             "GPUs); start at most one process per GPU, or train on the CPU with device cpu.")
        self.bf16 = resolve_bf16(self.train_config.bf16, self.device)
        self.threads = AutoThreads(self.train_config.threads)    # re-checked after every step
        torch.manual_seed(self.train_config.seed)  # weight initialisation only; batches use the generators below
        self.G = Generator(self.model_config).to(self.device)
        # The exported generator: an exponential moving average of G's weights, or G itself when off.
        self.G_average = copy.deepcopy(self.G).requires_grad_(False) if self.train_config.ema_decay else self.G
        self.critics = build_critics(self.model_config).to(self.device)
        tc = self.train_config
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=tc.lr_g, betas=(tc.beta1, tc.beta2))
        self.opt_d = torch.optim.Adam(self.critics.parameters(), lr=tc.lr_d, betas=(tc.beta1, tc.beta2))
        self.rng = np.random.default_rng(tc.seed)                      # real patches, dataset choice
        self.torch_rng = torch.Generator().manual_seed(tc.seed + 1)    # noise, slices, GP mixing
        self.step, self.elapsed_before = 0, 0.0
        self.started = time.perf_counter()
        self.stop_requested = False
        (self.slices_per_axis, self.generator_slices_per_axis, self.real_patches_per_axis,
         self.penalty_pairs) = batch_counts(tc, self.model_config.patch_size, self.model_config.critic_planes)
        # This process's part of every global batch (all of it in a one-process run).
        self.share = BatchShare.of(self.ranks, tc.batch_size, self.slices_per_axis, self.real_patches_per_axis,
                                   self.penalty_pairs)
        image_fractions = self.data.phase_fractions()
        self.fraction_weight, self.rare_phases = (fraction_weight(tc.fraction_penalty, image_fractions)
                                                  if self.model_config.image_type == "n-phase" else (0.0, []))
        # The island penalty's weight per phase (C,), or None when it is off: a number in the settings weighs
        # every phase alike (scaled by island_weights along alpha); None sets it per phase from the data.
        self.rare_phase_kept = bool(self.rare_phases and self.fraction_weight)
        self.island_densities, self.island_phase_weights = {}, None
        if self.model_config.image_type == "n-phase" and tc.island_penalty is None:
            self.island_densities = self.data.island_densities()
        # island_loss "auto": the count the data calls for (config.json keeps "auto"; model.json both)
        self.train_config = tc = resolve_island_loss(tc, self.island_densities, self.data.phase_values)
        if self.model_config.image_type == "n-phase":
            if tc.island_penalty is None:
                full_weight = (ISLAND_WEIGHT_MARGIN if tc.island_loss == "margin" else
                               ISLAND_WEIGHT_SLICES if tc.island_view == "slices" else ISLAND_WEIGHT)
                weights = island_phase_weights(self.island_densities, self.data.phase_values, full_weight)
                if self.rare_phase_kept:
                    # With a rare phase kept by the fraction penalty, the other phases' island penalty made its
                    # specks come out as coarse grains (docs/real-micrographs.md, "A rare phase"): off.
                    weights = [0.0] * len(weights)
            else:
                weights = [1.0 if tc.island_penalty or tc.island_penalty_high else 0.0] * len(self.data.phase_values)
            if any(weights):
                self.island_phase_weights = torch.tensor(weights, device=self.device)
        # island_feedback's factor per phase on the weights above (None when off); kept in the checkpoint.
        self.island_base_weights = self.island_phase_weights
        self.island_scales = (None if self.island_phase_weights is None or not tc.island_feedback
                              else [1.0] * len(self.data.phase_values))
        # (datasets, C): each training image's phase fractions in channel order, the penalty's targets
        self.target_fractions = torch.tensor([[shares.get(v, 0.0) for v in self.data.phase_values]
                                              for shares in image_fractions], device=self.device)
        # (datasets, C): the generator's running mean fractions (fraction_scope "running"); NaN until a dataset's
        # first batch; kept in the checkpoint
        self.running_fractions = torch.full_like(self.target_fractions, float("nan"))
        self.fidelity_reference = None      # the training images' statistics for the monitor, on first use
        # (C,) the exported model's phase-fraction calibration (fraction_calibration), set at each checkpoint
        self.phase_offset = torch.zeros(self.model_config.n_channels)

    def should_stop(self) -> bool:
        """True when a stop was requested (SIGTERM/SIGINT) in any of the run's processes."""
        return self.ranks.any(self.stop_requested, self.device)

    def average_gradients(self, module: torch.nn.Module):
        """Average ``module``'s gradients over the processes: the gradient of the whole batch's loss."""
        self.ranks.average_gradients(module)

    def batch_means(self, stats: torch.Tensor, loss_g: torch.Tensor) -> list[float]:
        """The critic's (loss, Wasserstein, penalty) sums over axes and the generator's loss, as means over the
        whole batch (this process's share averaged with the others')."""
        return self.ranks.mean(torch.cat([stats.float(), loss_g.detach().float().reshape(1)])).tolist()

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def fake_batch(self, grad: bool):
        """(dataset index (B,), attrs (b, k), fake volumes (b, C, P, P, P)) for datasets drawn uniformly.

        The draws are those of the whole batch of B volumes; this process makes its share, the b = B / N
        volumes ``share.volumes`` (b = B in a one-process run). The dataset index is the whole batch's.
        """
        batch, own = self.train_config.batch_size, self.share.volumes
        dataset_index = self.rng.integers(0, len(self.data), batch)
        attrs = torch.from_numpy(self.data.attrs[dataset_index])
        if self.train_config.attr_jitter > 0:
            half_span = torch.tensor([(high - low) / 2 for low, high in self.model_config.attribute_ranges])
            noise = torch.randn(attrs.shape, generator=self.torch_rng)
            attrs = attrs + noise * half_span * self.train_config.attr_jitter
        z = torch.randn((batch, self.model_config.z_channels, 4, 4, 4), generator=self.torch_rng)
        attrs, z = attrs[own].to(self.device), z[own].to(self.device)
        with torch.set_grad_enabled(grad), self.autocast():
            self.last_logits = self.G(z, attrs, activate=False)
        fake = self.G.activate(self.last_logits)
        return dataset_index, attrs, fake

    def fraction_loss(self, fake: torch.Tensor, datasets: np.ndarray) -> torch.Tensor:
        """The fraction penalty (unweighted) for this process's fake volumes (b, C, P, P, P) drawn from
        ``datasets`` (b,): fraction_error per volume, or with fraction_scope "running" running_fraction_error
        against each dataset's running mean, which is then updated with this batch."""
        targets = self.target_fractions[datasets]
        if self.train_config.fraction_scope == "volume":
            return fraction_error(fake, targets).mean()
        fractions = fake.float().mean(dim=tuple(range(2, fake.dim())))              # (b, C)
        index = torch.as_tensor(datasets, device=fractions.device)
        batch_means = {dataset: fractions[index == dataset].detach().mean(0) for dataset in index.unique().tolist()}
        for dataset, mean in batch_means.items():   # the first batch of a dataset starts its running mean
            if torch.isnan(self.running_fractions[dataset]).any():
                self.running_fractions[dataset] = mean
        loss = running_fraction_error(fractions, self.running_fractions[index], targets).mean()
        for dataset, mean in batch_means.items():
            self.running_fractions[dataset].lerp_(mean, 1 - FRACTION_RUNNING_DECAY)
        return loss

    def island_weights(self, attrs: torch.Tensor) -> torch.Tensor:
        """Weight of the island penalty for each fake volume (b,), from its first attribute's place in the
        trained range (island_penalty at the bottom, island_penalty_high at the top), ramped in over the
        first ``island_warmup`` steps."""
        cfg = self.train_config
        warmup = self.island_warmup_steps()
        ramp = min(1.0, (self.step + 1) / warmup) if warmup else 1.0
        if cfg.island_penalty is None:     # automatic: the weights are per phase (island_phase_weights)
            weight = torch.ones((attrs.shape[0],), device=attrs.device)
        else:
            weight = torch.full((attrs.shape[0],), float(cfg.island_penalty), device=attrs.device)
            if cfg.island_penalty_high is not None and attrs.shape[1] > 0:
                low, high = self.model_config.attribute_ranges[0]
                place = ((attrs[:, 0].float() - low) / (high - low) if high > low else attrs[:, 0] * 0).clamp(0, 1)
                weight = weight + (cfg.island_penalty_high - cfg.island_penalty) * place
        return ramp * weight

    def island_warmup_steps(self) -> int:
        """Steps over which the island penalty ramps in (island_warmup, or its automatic value)."""
        warmup = self.train_config.island_warmup
        if warmup is None:
            warmup = ISLAND_WARMUP_SLICES if self.train_config.island_view == "slices" else 0
        return warmup

    @torch.no_grad()
    def update_average(self):
        """Move the averaged generator towards G; the decay ramps up from 0 so early steps are not frozen in."""
        if self.G_average is self.G:
            return
        decay = min(self.train_config.ema_decay, (1 + self.step) / (10 + self.step))
        for averaged, current in zip(self.G_average.parameters(), self.G.parameters()):
            averaged.lerp_(current, 1 - decay)

    def slices(self, fake, attrs, dataset_index, axis, count: int):
        """Cut ``count`` random 2D slices perpendicular to ``axis`` from each fake volume ->
        (b*S, C', P, P), attrs (b*S, k) and the whole batch's slices' dataset index (B*S,), volume-major
        (b = B in a one-process run; the same slice positions for every volume and process). C' = C, or
        3 x C with critic_planes 3: each slice with its two neighbours, in slice order (as data.sample)."""
        planes = self.model_config.critic_planes
        positions = fake.shape[2 + axis] - planes + 1             # first slice of each group of planes
        if count >= positions and planes == 1:   # all slices: no draw needed
            picked = fake
        else:
            first = (torch.arange(positions) if count >= positions
                     else torch.randperm(positions, generator=self.torch_rng)[:count])
            chosen = (first[:, None] + torch.arange(planes)).flatten().to(fake.device)
            picked = fake.index_select(2 + axis, chosen)          # (B, C, ..S x planes.., ...)
        picked = picked.movedim(2 + axis, 1)                       # (B, S x planes, C, P, P)
        picked = picked.reshape(picked.shape[0], -1, planes * picked.shape[2], *picked.shape[3:])
        count = picked.shape[1]
        images = picked.reshape(-1, *picked.shape[2:])
        return images, attrs.repeat_interleave(count, 0), np.repeat(dataset_index, count)

    def real_batch(self, fake_slices, slice_attrs, slice_dataset, axis):
        """Real patches for ``real_patches_per_axis`` of the fake slices (B*S, volume-major): each from
        its slice's dataset, with its (jittered) attributes, so the conditional critic compares like with
        like. Returns real (n, C, P, P), their attrs (n, k) and the matching fake slices (n, C, P, P).

        The slices are spread over the fake volumes (volume i % B, a random slice of it); with one real
        patch per fake slice every slice is taken, in order. Every process draws the patches of the whole
        batch and keeps those of its own volumes (``share.real_rows``: n of them, all in a one-process run).
        """
        total = len(slice_dataset)
        count = self.real_patches_per_axis
        if count >= total:
            chosen = torch.arange(total)
        else:
            volumes = self.train_config.batch_size
            per_volume = total // volumes
            offsets = torch.randint(per_volume, (count,), generator=self.torch_rng)
            chosen = (torch.arange(count) % volumes) * per_volume + offsets
        real = self.data.sample(slice_dataset[chosen.numpy()], axis, self.rng, self.train_config.augment,
                                self.train_config.patch_edges, self.model_config.critic_planes)
        rows = torch.from_numpy(self.share.real_rows)
        local = (chosen[rows] - self.share.volumes.start * (total // self.train_config.batch_size))
        local = local.to(fake_slices.device)          # into this process's fake slices
        return (real[rows].to(self.device), slice_attrs.index_select(0, local),
                fake_slices.index_select(0, local))

    def log(self, **event):
        if not self.ranks.main:
            return
        event = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in event.items()}
        event["elapsed_s"] = round(self.elapsed(), 2)
        event["time"] = time.time()
        with open(self.dir / "events.jsonl", "a") as f:
            f.write(json.dumps(event) + "\n")

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    # ---- checkpoints ----
    def checkpoint(self):
        """Write checkpoint.safetensors, model/ and sample images (each atomically), then status.json (rank 0
        only: the others hold the same weights and random state)."""
        if not self.ranks.main:
            return
        # A diverged run must not replace the last good checkpoint and model with NaN weights.
        broken = [name for name, module in (("generator", self.G), ("averaged generator", self.G_average),
                                            ("critic", self.critics))
                  if not bool(torch.stack([torch.isfinite(t).all() for t in module.state_dict().values()
                                           if t.is_floating_point()]).all())]   # one device sync per module
        if broken:
            raise ValueError(f"Training diverged by step {self.step}: the {broken[0]}'s weights are NaN or "
                             f"infinite, so neither checkpoint.safetensors nor model/ in {self.dir} was "
                             "overwritten; lower lr_g / lr_d and start a new run, or resume from a copy of an "
                             "earlier checkpoint.")
        tensors = {f"G.{k}": v for k, v in self.G.state_dict().items()}
        tensors.update({f"D.{k}": v for k, v in self.critics.state_dict().items()})
        if self.G_average is not self.G:
            tensors.update({f"G_average.{k}": v for k, v in self.G_average.state_dict().items()})
        opt_g_tensors, opt_g_meta = optimizer_to_flat("opt_g", self.opt_g)
        opt_d_tensors, opt_d_meta = optimizer_to_flat("opt_d", self.opt_d)
        tensors.update(opt_g_tensors)
        tensors.update(opt_d_tensors)
        tensors["rng.torch"] = self.torch_rng.get_state()
        if self.train_config.fraction_calibration and self.model_config.image_type == "n-phase":
            self.phase_offset = torch.as_tensor(fractions.calibrate(
                self.G_average, self.data.attrs, self.target_fractions.cpu().numpy(), device=self.device),
                dtype=torch.float32)
        # Measured before the save, so that the checkpoint holds island_feedback's weights after this step's
        # measurement (a resume truncates fidelity.jsonl to the checkpoint's step).
        self.measure_fidelity()
        meta = {"step": self.step, "elapsed_s": self.elapsed(), "package_version": __version__,
                "config": self.config, "processes": self.ranks.size, "opt_g": opt_g_meta, "opt_d": opt_d_meta,
                "rng_numpy": self.rng.bit_generator.state, "island_scales": self.island_scales,
                "running_fractions": [[None if math.isnan(x) else x for x in row]
                                      for row in self.running_fractions.tolist()]}
        save_tensors(self.dir / "checkpoint.safetensors", tensors, meta)
        if self.exports_now():
            self.export_model(self.dir / "model")
        self.write_samples()
        self.set_status("running")

    def restore(self):
        """Load checkpoint.safetensors into this run; a ValueError naming the file if any part is damaged
        (nothing on disk is changed here)."""
        path = self.dir / "checkpoint.safetensors"
        tensors, meta = load_tensors(path)
        try:
            self._load_state(tensors, meta)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError, OverflowError) as error:
            raise ValueError(f"{path} is damaged ({type(error).__name__}: {str(error)[:200]}); restore it from a "
                             "backup, or start a new run with train.") from None

    def _load_state(self, tensors: dict, meta: dict):
        self.G.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("G.")})
        self.critics.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
        if self.G_average is not self.G:
            # A run that switched the average on at resume starts it from the current weights.
            averaged = {k[len("G_average."):]: v for k, v in tensors.items() if k.startswith("G_average.")}
            self.G_average.load_state_dict(averaged or self.G.state_dict())
        optimizer_from_flat("opt_g", self.opt_g, tensors, meta["opt_g"])
        optimizer_from_flat("opt_d", self.opt_d, tensors, meta["opt_d"])
        for optimizer, lr in ((self.opt_g, self.train_config.lr_g), (self.opt_d, self.train_config.lr_d)):
            for group in optimizer.param_groups:   # the configured rate, which a resume may have changed
                group["lr"] = lr
        self.torch_rng.set_state(tensors["rng.torch"])
        self.rng.bit_generator.state = meta["rng_numpy"]
        step, elapsed = meta["step"], meta["elapsed_s"]
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"its step is {step!r}, not a whole number of 0 or more")
        if isinstance(elapsed, bool) or not isinstance(elapsed, (int, float)) or not math.isfinite(elapsed):
            raise ValueError(f"its elapsed time is {elapsed!r}")
        self.step, self.elapsed_before = step, float(elapsed)
        scales = meta.get("island_scales")
        if self.island_scales is not None and scales is not None:
            if (not isinstance(scales, list) or len(scales) != len(self.island_scales)
                    or not all(isinstance(x, (int, float)) and 0 < x < math.inf for x in scales)):
                raise ValueError(f"its island_scales {str(scales)[:80]} are not one positive number per phase")
            self.set_island_scales(scales)
        running = meta.get("running_fractions")    # absent in checkpoints written before it was kept
        if running is not None:
            if (not isinstance(running, list) or len(running) != len(self.running_fractions)
                    or not all(isinstance(row, list) and len(row) == self.running_fractions.shape[1]
                               and all(x is None or (isinstance(x, (int, float)) and 0 <= x <= 1) for x in row)
                               for row in running)):
                raise ValueError(f"its running_fractions {str(running)[:80]} are not one fraction per dataset and phase")
            self.running_fractions = torch.tensor([[math.nan if x is None else float(x) for x in row]
                                                   for row in running], device=self.device)

    def measure_fidelity(self):
        """The fidelity verdict of the averaged generator now (slicegan_core.fidelity): appended to
        fidelity.jsonl, printed as one line, and kept for model.json (``verdict``). n-phase runs only; off with
        fidelity_seeds 0."""
        if not self.train_config.fidelity_seeds or self.model_config.image_type != "n-phase":
            return
        if self.fidelity_reference is None:
            self.fidelity_reference = fidelity.references(self.data)
        card = fidelity.card(_GeneratorView(self), self.data, step=self.step, seeds=self.train_config.fidelity_seeds,
                             reference=self.fidelity_reference)
        self.fidelity = card
        event, line = fidelity.series_event(card), fidelity.summary_line(card)
        if self.island_scales is not None and self.step >= self.island_warmup_steps():
            # Not while the penalty ramps in (the factors would wind up against a weight not yet applied).
            # The loop reads the generator being trained, not the average, which lags it by ~1 / (1 - ema_decay)
            # steps: a controller on the average would keep pushing long after the generator has moved.
            current = fidelity.card(_GeneratorView(self, averaged=False), self.data, step=self.step, seeds=1,
                                    reference=self.fidelity_reference)
            places = island_places(current, self.data.phase_values)
            self.set_island_scales(_feedback_step(self.island_scales, places))
            factors = [round(x, 4) for x in self.island_scales]
            names = [str(int(v)) for v in self.data.phase_values]
            event["island_factors"] = dict(zip(names, factors))
            event["island_places"] = dict(zip(names, (None if p is None else round(p, 3) for p in places)))
            line += "; island penalty x " + ", ".join(f"{x:.3g}" for x in factors) + " (island_feedback)"
        with open(self.dir / "fidelity.jsonl", "a") as f:
            f.write(json.dumps(event) + "\n")
        print(f"step {self.step}: {line}", flush=True)

    def set_island_scales(self, scales: list[float]):
        """island_feedback's factors per phase: the penalty's weights become the starting weights x these."""
        self.island_scales = [float(x) for x in scales]
        self.island_phase_weights = self.island_base_weights * torch.tensor(self.island_scales,
                                                                            device=self.device)

    def share_island_scales(self):
        """Rank 0's island_feedback factors on every rank (they are measured where the checkpoint is written)."""
        if self.island_scales is not None and self.ranks.size > 1:
            self.set_island_scales(self.ranks.from_main(lambda: self.island_scales))

    def exports_now(self) -> bool:
        """Whether this checkpoint becomes model/: always, unless export_best keeps an exported model whose
        fidelity distance is lower than (or as low as) this checkpoint's."""
        if not self.train_config.export_best or not getattr(self, "fidelity", None):
            return True
        try:
            kept = json.loads((self.dir / "model" / "model.json").read_text()).get("verdict") or {}
        except (OSError, ValueError):
            return True
        distance, best = self.fidelity.get("distance"), kept.get("distance")
        if best is None or distance is None or distance < best:
            return True
        print(f"step {self.step}: model/ stays at step {kept.get('step')} (fidelity distance {best} <= {distance})",
              flush=True)
        return False

    def island_summary(self) -> dict | None:
        """What the island penalty did in this run (None when off): its count as resolved from "auto" and the
        weight per phase value."""
        if self.island_phase_weights is None:
            return None
        tc = self.train_config
        return {"loss": tc.island_loss, "view": tc.island_view, "max_voxels": tc.island_max_voxels,
                "phase_weights": {str(value): round(float(weight), 4) for value, weight
                                  in zip(self.data.phase_values, self.island_phase_weights.tolist())}}

    def export_model(self, directory: Path):
        data, mc = self.data, self.model_config
        # The values as given (config.json), not data.attrs' float32 roundings (0.2 -> 0.2000000030).
        given = [d["attrs"] for d in self.config["data"]["datasets"]]
        attributes = {name: {"trained_values": sorted({float(a[name]) for a in given}),
                             "range": list(mc.attribute_ranges[i])}
                      for i, name in enumerate(mc.attribute_names)}
        phases = default_phases(data.phase_values) if mc.image_type == "n-phase" else []
        last = _last_event(self.dir / "events.jsonl")
        info = {"phases": phases, "attributes": attributes,
                "voxel_size_um": self.config["data"].get("voxel_size_um"),
                "training_data": data.describe(),
                "training": {"steps": self.step, "wall_time_s": round(self.elapsed(), 1),
                             "run": self.dir.name, "config": self.config["train"],
                             "options": self.config.get("options", {}),
                             "island_penalty": self.island_summary(),
                             "history": self.config.get("history", [])},
                "metrics": {k: last[k] for k in ("wasserstein", "gradient_penalty") if k in last}}
        if getattr(self, "fidelity", None):
            info["verdict"] = self.fidelity
        info.update(self.config.get("model_info", {}))
        previous = _calibration_of(directory)     # kept: calibration_status() tells when the weights moved on
        if previous:
            info["calibration"] = previous
        if self.train_config.fraction_calibration and mc.image_type == "n-phase":
            info["fraction_calibration"] = {"phase_offset": [round(float(x), 4) for x in self.phase_offset],
                                            "volumes": fractions.CALIBRATION_VOLUMES,
                                            "latent_edge": fractions.CALIBRATION_LATENT,
                                            "deadband": fractions.CALIBRATION_DEADBAND}
        weights = {**self.G_average.state_dict(), "phase_offset": self.phase_offset.to(self.device)}
        save_model(directory, weights, mc, info)

    @torch.no_grad()
    def write_samples(self):
        """x, y, z centre slices of one volume per trained attribute value, side by side, as PNG (n-phase: the
        labels of the exported model, fraction calibration included)."""
        z = torch.randn((1, self.model_config.z_channels, 4, 4, 4),
                        generator=torch.Generator().manual_seed(SAMPLE_SEED)).to(self.device)
        seen = set()
        for row in self.data.attrs:
            key = tuple(float(v) for v in row)
            if key in seen:
                continue
            seen.add(key)
            attrs = torch.tensor(row[None], device=self.device)
            if self.model_config.image_type == "n-phase":   # what the run exports: with its fraction calibration
                logits = self.G_average(z, attrs, activate=False)[0].float()
                volume = (logits + self.phase_offset.to(logits.device).view(-1, 1, 1, 1)).cpu()
            else:
                volume = self.G_average(z, attrs)[0].float().cpu()
            image = _slices_to_rgb(volume, self.model_config.image_type)
            label = "_".join(f"{n}={v:g}" for n, v in zip(self.model_config.attribute_names, key)) or "sample"
            buffer = _png_bytes(image)
            atomic_write_bytes(self.dir / "samples" / f"step_{self.step:06d}_{label}.png", buffer)
            atomic_write_bytes(self.dir / "samples" / f"latest_{label}.png", buffer)

    def set_status(self, state: str, error: str | None = None):
        """status.json (rank 0 only); ``pid`` is the process to signal to stop the run: torchrun's under
        torchrun, which forwards SIGTERM to every process; ``processes`` when there are several."""
        if not self.ranks.main:
            return
        status = {"state": state, "pid": distributed.launcher_pid(), "step": self.step,
                  "steps": self.train_config.steps, "updated": time.time()}
        if self.ranks.size > 1:
            status["processes"] = self.ranks.size
        if error:
            status["error"] = error
        atomic_write_text(self.dir / "status.json", json.dumps(status, indent=2))


class _GeneratorView:
    """The run's averaged generator with its fraction calibration (with ``averaged`` False: the one being
    trained, without) seen as a model for
    :func:`fidelity.card`: ``generate(attrs, seed, shape)`` -> (D, H, W) phase values, from the noise of the
    sample images (a fixed seed per volume)."""

    def __init__(self, run: "Run", averaged: bool = True):
        self.run, self.averaged = run, averaged
        self.module = run.G_average if averaged else run.G

    @torch.no_grad()
    def generate(self, attrs: dict, seed: int, shape) -> np.ndarray:
        run, mc = self.run, self.run.model_config
        side = -(-int(max(shape)) // mc.voxels_per_latent) + 2     # the generator makes (latent - 2) x vpl voxels
        z = torch.randn((1, mc.z_channels, side, side, side),
                        generator=torch.Generator().manual_seed(SAMPLE_SEED + seed)).to(run.device)
        row = torch.tensor([[attrs[n] for n in mc.attribute_names]], dtype=torch.float32, device=run.device)
        was_training = self.module.training
        self.module.eval()
        try:
            out = self.module(z, row, activate=False)[0].float()      # logits: their argmax is the label
            if self.averaged:           # what the run exports: with its fraction calibration
                out = out + run.phase_offset.to(out.device).view(-1, 1, 1, 1)
        finally:
            self.module.train(was_training)
        index = argmax_channels(out).cpu().numpy()[:shape[0], :shape[1], :shape[2]]
        return np.asarray(run.data.phase_values)[index]


def _slices_to_rgb(volume: torch.Tensor, image_type: str) -> np.ndarray:
    """(C, P, P, P) generator output -> (P, 3P + 2 gaps, 3) uint8 with the three centre slices."""
    centre = volume.shape[1] // 2
    views = [volume[:, centre], volume[:, :, centre], volume[:, :, :, centre]]
    if image_type == "n-phase":
        palette = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)]
                            for c in (p["colour"] for p in default_phases(range(volume.shape[0])))], np.uint8)
        rgb = [palette[v.argmax(0).numpy()] for v in views]
    else:
        rgb = [np.repeat((v.numpy() * 255).astype(np.uint8).transpose(1, 2, 0), 3 // v.shape[0], axis=2)
               for v in views]
    gap = np.full((rgb[0].shape[0], 2, 3), 255, np.uint8)
    return np.concatenate([rgb[0], gap, rgb[1], gap, rgb[2]], axis=1)


def _png_bytes(image: np.ndarray) -> bytes:
    import io
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _calibration_of(directory: Path) -> dict | None:
    """The ``calibration`` section of an existing model.json in ``directory`` (None if none or unreadable)."""
    try:
        return json.loads((Path(directory) / "model.json").read_text()).get("calibration")
    except (OSError, ValueError, AttributeError):
        return None


def _last_event(path: Path) -> dict:
    if not path.is_file():
        return {}
    events = [e for e in map(_event, path.read_text(errors="replace").splitlines()) if e is not None]
    return events[-1] if events else {}


def _truncate_events(path: Path, step: int):
    """Drop log lines written after the checkpoint we resume from, so the curve has no duplicate steps."""
    if path.is_file():
        kept = [line for line in path.read_text(errors="replace").splitlines()
                if _event_step(line) is not None and _event_step(line) <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def _event_step(line: str) -> int | None:
    step = (_event(line) or {}).get("step")
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _event(line: str) -> dict | None:
    """One events.jsonl line, or None for a line cut short by a kill in the middle of its write (or any line
    that is not a JSON object)."""
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, RecursionError):
        return None
    return event if isinstance(event, dict) else None


# ---- public entry points ------------------------------------------------------------------------------

def train(datasets, run_dir, preset_name: str = "cpu", image_type: str = "n-phase",
          voxel_size_um: float | None = None, model_info: dict | None = None, calibrate: bool | dict = False,
          **overrides) -> Path:
    """Train a new run in ``run_dir`` (must not hold another run) and return its path.

    Parameters
    ----------
    datasets : list of :class:`DatasetSpec` (paths + attribute values, e.g. ``{"alpha": 0.35}``).
    preset_name : "cpu" (laptop), "paper" (the seed's configuration, for a GPU) or "tiny" (tests).
    image_type : "n-phase", "grayscale" or "colour".
    voxel_size_um : voxel edge in micrometres, recorded in the model.
    calibrate : True (or a dict of :func:`slicegan_core.calibrate.calibrate` options): when the run finishes
        (also after a resume), calibrate its model for matching (about 20 s for the default model's size).
    overrides : any :class:`ModelConfig` / :class:`TrainConfig` field, e.g. ``steps=500, bf16=True``.

    Under torchrun every process calls it with the same arguments (see :mod:`slicegan_core.distributed`).
    """
    with distributed.joined() as ranks:
        return _train(ranks, datasets, Path(run_dir), preset_name, image_type, voxel_size_um, model_info,
                      calibrate, overrides)


def _train(ranks: Ranks, datasets, run_dir: Path, preset_name, image_type, voxel_size_um, model_info, calibrate,
           overrides) -> Path:
    datasets = [d if isinstance(d, DatasetSpec) else DatasetSpec(**d) for d in datasets]
    voxel_size_um = check_voxel_size(voxel_size_um)
    model_fields, train_fields = preset(preset_name, **overrides)
    # Validate the data before anything is written, so a bad file leaves no half-made run behind.
    data = load_training_data(datasets, image_type=image_type, patch_size=model_fields["patch_size"])
    if model_fields.get("critic_planes", 1) != 1 and any(kind != "stack" for kind in data._kinds):
        raise ValueError("critic_planes 3 shows the critics each slice with its neighbours, which only 3D stacks "
                         "have; train on 3D stacks, or leave critic_planes at 1 for 2D images.")
    # From the values as given: data.attrs is float32, and 0.2 rounded to float32 lies above 0.2, so a
    # float32-based range would call the trained value 0.2 "outside the trained range".
    given = np.array([[float(d.attrs[n]) for n in data.attribute_names] for d in datasets]).reshape(len(datasets), -1)
    ranges = tuple((float(given[:, i].min()), float(given[:, i].max())) for i in range(given.shape[1]))
    model_config = ModelConfig(**{**model_fields, "image_type": image_type, "n_channels": data.n_channels,
                                  "attribute_names": tuple(data.attribute_names), "attribute_ranges": ranges,
                                  "isotropic": data.isotropic})
    train_config = TrainConfig(**train_fields)
    config = {"package_version": __version__, "preset": preset_name,
              "model": to_dict(model_config), "train": to_dict(train_config),
              "data": {"image_type": image_type, "voxel_size_um": voxel_size_um,
                       "datasets": [{"paths": [str(Path(p).resolve()) for p in d.paths], "attrs": d.attrs}
                                    for d in datasets]},
              "options": {"bf16": resolve_bf16(train_config.bf16, pick_device(train_config.device)), "slices_per_axis": train_config.slices_per_axis,
                          "generator_slices_per_axis": train_config.generator_slices_per_axis,
                          "real_patches_per_axis": train_config.real_patches_per_axis,
                          "penalty_pairs_per_axis": train_config.penalty_pairs_per_axis,
                          "threads": train_config.threads, "device": train_config.device,
                          "attr_jitter": train_config.attr_jitter},
              "model_info": model_info or {}}
    if calibrate:
        config["calibrate"] = dict(calibrate) if isinstance(calibrate, dict) else True
    run = Run(run_dir, config, data)   # every setting is checked (in every process) before the run is written

    def claim():   # rank 0 only
        if run_dir.exists() and not run_dir.is_dir():
            raise ValueError(f"Run directory {run_dir} is an existing file; choose a new directory name.")
        run_dir.mkdir(parents=True, exist_ok=True)
        # The lock comes first: checking for an existing run and then writing one must be a single step.
        held.enter_context(_RunLock(run_dir))
        if (run_dir / "config.json").exists():
            raise ValueError(f"Run directory {run_dir} already holds a run; resume it or choose a new directory.")
        atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2))

    with contextlib.ExitStack() as held:   # rank 0 holds the run lock until the run ends
        ranks.from_main(claim)
        return _execute(run)


def resume(run_dir, steps: int | None = None, **changes) -> Path:
    """Continue a run from its last checkpoint, optionally raising its total ``steps`` or changing training
    settings (``changes``: :class:`TrainConfig` fields, e.g. ``threads=2, attr_jitter=0.3, lr_g=2e-4``; the
    architecture is fixed by the checkpoint). Changes are recorded in config.json and in ``history``.

    A run resumes under any number of processes (torchrun), whatever number it was stopped under."""
    run_dir = Path(run_dir)
    with distributed.joined() as ranks, contextlib.ExitStack() as held:
        built = {}

        def claim() -> dict:   # rank 0 only: the lock, the checks, config.json; the others get the config
            built["run"], config = _claim_for_resume(run_dir, steps, changes, held)
            return config

        config = ranks.from_main(claim)
        run = built.get("run")
        if run is None:        # the other processes: rank 0 has checked the run directory
            run = Run(run_dir, config)
            if (run_dir / "checkpoint.safetensors").is_file():
                run.restore()
        return _execute(run)


def _claim_for_resume(run_dir: Path, steps, changes: dict, held: contextlib.ExitStack) -> tuple[Run, dict]:
    """Take the run lock (held in ``held``), apply ``steps`` and ``changes`` to config.json and build the Run."""
    if not (run_dir / "config.json").is_file():
        raise ValueError(f"{run_dir} is not a training run (no config.json); start one with train.")
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in changes:
        if key not in train_names:
            raise ValueError(f"resume can change training settings only; {key!r} is not one "
                             f"(the architecture is fixed by the checkpoint).")
    held.enter_context(_RunLock(run_dir))
    config = read_run_config(run_dir)
    has_checkpoint = _check_resumable(run_dir)
    remove_temp_files(run_dir)          # left by a process killed in the middle of an atomic write
    reached = checkpoint_step(run_dir)
    if steps is not None:
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
            raise ValueError(f"steps must be a whole number (got {steps!r}).")
        if steps < reached:
            raise ValueError(f"The run has already reached step {reached}; give --steps {reached} or more.")
        changes["steps"] = int(steps)
    changes = {k: v for k, v in changes.items() if v is not None and config["train"].get(k) != v}
    if changes:
        try:
            from_dict(TrainConfig, {**config["train"], **changes})   # validate before anything is written
        except TypeError as error:
            raise ValueError(f"Invalid setting ({error}).") from None
        config["train"].update(changes)
        config.setdefault("history", []).append({"at_step": reached, "changed": changes})
    run = Run(run_dir, config)
    if has_checkpoint:
        run.restore()                   # every check passes before anything in the run is changed
    if changes:
        atomic_write_text(run_dir / "config.json", json.dumps(config, indent=2))
    _truncate_events(run_dir / "events.jsonl", run.step)
    _truncate_events(run_dir / "fidelity.jsonl", run.step)
    return run, config


def _check_resumable(run_dir: Path) -> bool:
    """Whether the run has a checkpoint to continue from; a ValueError naming what to do when its state would
    make a resume lose work: a trained model without a checkpoint, or run files that are not files."""
    checkpoint, events, model = (run_dir / "checkpoint.safetensors", run_dir / "events.jsonl",
                                 run_dir / "model" / "model.json")
    for path in (checkpoint, events, run_dir / "model" / "model.safetensors", model):
        if path.exists() and not path.is_file():
            raise ValueError(f"{path} is not a file; move it away (or restore the run's file) and resume again.")
    if checkpoint.is_file():
        return True
    if model.is_file() or (run_dir / "model" / "model.safetensors").is_file():
        raise ValueError(f"{checkpoint} is missing but the run has a trained model in {run_dir / 'model'}; "
                         "resuming would start again from step 0 and overwrite it, so restore the checkpoint, or "
                         "start a new run with train (the model stays usable with generate).")
    return False


def read_run_config(run_dir) -> dict:
    """config.json of a run, checked enough to build a :class:`Run` from; ValueError naming the file if not."""
    path = Path(run_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the run cannot be resumed.") from None
    problem = None
    if not isinstance(config, dict):
        problem = f"it holds a {type(config).__name__}, not a run configuration"
    elif not all(isinstance(config.get(k), dict) for k in ("model", "train", "data")):
        problem = "its model, train or data section is missing"
    elif not isinstance(config["data"].get("datasets"), list) or not config["data"]["datasets"] or \
            not all(isinstance(d, dict) and isinstance(d.get("paths"), list) and isinstance(d.get("attrs"), dict)
                    for d in config["data"]["datasets"]):
        problem = "its data section lists no datasets"
    else:
        for cls, key in ((ModelConfig, "model"), (TrainConfig, "train")):
            try:
                from_dict(cls, config[key])
            except (TypeError, ValueError) as error:
                problem = f"its {key} section is invalid ({error})"
                break
    if problem:
        raise ValueError(f"{path} is damaged: {problem}; the run cannot be resumed.")
    return config


def remove_temp_files(run_dir: Path) -> None:
    """Delete the temporary files of atomic writes (``.NAME.*.tmp``) that a killed process left in a run."""
    for folder in (run_dir, run_dir / "model", run_dir / "samples"):
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)


def resolve_bf16(setting: bool | None, device: torch.device) -> bool:
    """The ``bf16`` setting as used: None means on where bfloat16 is fast (CUDA, CPUs with AVX-512 BF16)."""
    if setting is None:
        return device.type == "cuda" or (device.type == "cpu" and cpu_has_fast_bf16())
    return bool(setting)


def checkpoint_step(run_dir) -> int:
    """Generator step of the run's last checkpoint (0 before the first one)."""
    path = Path(run_dir) / "checkpoint.safetensors"
    if not path.is_file():
        return 0
    step = load_meta(path).get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{path} is damaged: its step is {step!r}, not a whole number of 0 or more; restore it from "
                         "a backup, or start a new run with train.")
    return step


def island_message(densities: dict[int, float], phase_values, weights: torch.Tensor | None,
                   rare_phase: bool = False, tc: TrainConfig | None = None) -> str:
    """The start-of-run line saying what the automatic island penalty found in the data and does about it
    (and, given the run's settings ``tc``, what it counts)."""
    found = ", ".join(f"phase {value} {densities.get(value, 0.0):,.0f}" for value in phase_values)
    if weights is None and rare_phase:
        action = "the island penalty is off (it would coarsen the rare phase's specks)"
    elif weights is None:
        action = "the island penalty is off (the data is full of real small features)"
    else:
        counts = ("" if tc is None else
                  f" counts the margins of the slices' pieces of up to {tc.island_max_voxels} px and"
                  if tc.island_loss == "margin" else f" counts expected islands ({tc.island_view} view) and")
        action = f"the island penalty{counts} weights " + ", ".join(
            f"phase {value} {weight:.3g}" for value, weight in zip(phase_values, weights.tolist()))
    return (f"small islands (<= 4 px) per million pixels of each phase in the training images: {found}; {action} "
            "(--set island_penalty=W for one weight, 0 for none)")


def _execute(run: Run) -> Path:
    """Run the loop with SIGTERM/SIGINT turned into "checkpoint, then exit", and record the outcome."""
    def request_stop(signum, frame):
        run.stop_requested = True
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread (e.g. inside a test runner thread): no handler
            pass
    try:
        run.set_status("running")
        if run.rare_phases and run.ranks.main:
            several = len(run.rare_phases) > 1
            kept = f"keeps {'them' if several else 'it'} in the output" if run.fraction_weight else "is off"
            print(f"rare phase{'s' if several else ''}: {', '.join(run.rare_phases)} of a training image; the "
                  f"fraction penalty {kept} (weight {run.fraction_weight:g}; --set fraction_penalty=W to change it)",
                  flush=True)
        if run.island_densities and run.ranks.main:
            print(island_message(run.island_densities, run.data.phase_values, run.island_phase_weights,
                                 run.rare_phase_kept, run.train_config), flush=True)
        run.G.train()
        outcome = _train_loop(run)
        if outcome == "finished" and run.config.get("calibrate") and run.ranks.main:
            from .calibrate import calibrate_model_dir
            options = run.config["calibrate"] if isinstance(run.config["calibrate"], dict) else {}
            calibrate_model_dir(run.dir / "model", progress=False, **options)
        run.set_status(outcome)
    except BaseException as error:
        # A ValueError is already one sentence for the user (e.g. a full disk while checkpointing); anything
        # else is a bug, whose traceback is what a report needs. Either way the last checkpoint resumes.
        tail = str(error) if isinstance(error, ValueError) else "".join(traceback.format_exception(error))[-4000:]
        run.set_status("crashed", error=tail)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return run.dir


class _RunLock:
    """Hold an exclusive OS lock (``flock``) on ``run.lock`` for the run's life; a second trainer on the same
    directory is refused. The kernel drops the lock when its process ends, kill -9 included, so a lock is never
    stale, and two processes that start at the same instant cannot both get it. The file stays (removing a
    locked file would let a third process lock a new one beside it); it names the holder's pid while held."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "run.lock"
        self.fd: int | None = None

    def __enter__(self):
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise ValueError(f"Run directory {self.path.parent} is in use by process {owner or '(starting)'}; "
                             "stop that run first or choose another directory.") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def __exit__(self, *exc):
        os.ftruncate(self.fd, 0)
        os.close(self.fd)      # releases the lock


def lock_holder(run_dir) -> int | None:
    """pid of the process training in ``run_dir`` now, or None when no process holds its lock."""
    path = Path(run_dir) / "run.lock"
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        owner = os.read(fd, 32).decode(errors="replace").strip()
        return int(owner) if owner.isdigit() else -1
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (it may be a zombie; jobs.py also rules those out)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
