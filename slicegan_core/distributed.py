"""One training run over several processes (ranks) with ``torch.distributed``: NCCL between GPUs, gloo on CPUs.

Launch with ``torchrun --nproc_per_node N -m slicegan_core train ...`` or ``train/resume ... --nproc N`` (which
starts torchrun, :func:`torchrun_command`). How N processes stay one run:

* **One global batch.** ``batch_size`` B keeps its meaning; rank r makes fake volumes ``[r*b, (r+1)*b)``,
  b = B / N (:class:`BatchShare`). Every rank draws the randomness of the *whole* batch from the run's
  generators (dataset choice, attribute jitter, noise, slice choice, real patches, penalty mixing weights) and
  keeps its share, so the random streams of all ranks stay in lockstep: each rank's, rank 0's included, is the
  one a one-process run would have, and checkpoints stay exact.
* **Averaged gradients.** Each rank's losses are means over its share; the shares have equal sizes, so the
  mean of the ranks' gradients is the global batch's gradient (:meth:`Ranks.average_gradients`, an explicit
  all-reduce after backward: DDP's wrapper does not support ``torch.autograd.grad(create_graph=True)``, which
  the gradient penalty needs). The networks have no batch normalisation (AdaIN normalises each volume on its
  own), so nothing else depends on the batch.
* **Rank 0 does the files.** It alone creates the run directory, holds the run lock and writes config,
  events, samples, status, checkpoints and the model; the others get the config from it (:meth:`Ranks.from_main`).
* **One stop.** SIGTERM/SIGINT set a flag in whichever ranks receive it; :meth:`Ranks.any` all-reduces it once
  per step, so every rank stops after the same step and rank 0 writes one checkpoint.

Outside torchrun everything here is a no-op for one process.
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

# Seconds torchrun waits, when launched by --nproc, between forwarding SIGTERM and killing its workers: time for
# every rank to finish its step and for rank 0 to write a checkpoint (plain torchrun waits 30 s).
SHUTDOWN_TIMEOUT_S = 120


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``size`` processes (0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        """True on rank 0, the process that writes the run's files."""
        return self.rank == 0

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is True on any rank (one all-reduce)."""
        if self.size == 1:
            return bool(flag)
        value = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of ``values`` (same shape on every rank)."""
        if self.size == 1:
            return values
        values = values.detach().clone()
        dist.all_reduce(values)
        return values / self.size

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Replace the gradients of ``module``'s trainable parameters by their mean over ranks (one all-reduce
        of one flat buffer; a parameter without a gradient counts as zero)."""
        if self.size == 1:
            return
        params = [p for p in module.parameters() if p.requires_grad]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(flat)
        flat /= self.size
        offset = 0
        for p in params:
            chunk = flat[offset:offset + p.numel()].view(p.shape)
            offset += p.numel()
            if p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)

    def from_main(self, action):
        """``action()`` run on rank 0 only, its result returned on every rank (an object broadcast). An exception
        in it is raised on rank 0 and, as a ValueError with the same message, on the other ranks, so no rank
        is left waiting."""
        if self.size == 1:
            return action()
        outcome, error = None, None
        if self.main:
            try:
                outcome = ("ok", action())
            except BaseException as caught:    # noqa: BLE001 - re-raised below, after the others are told
                error, outcome = caught, ("error", str(caught) or type(caught).__name__)
        box = [outcome]
        dist.broadcast_object_list(box, src=0)
        if error is not None:
            raise error
        kind, value = box[0]
        if kind == "error":
            raise ValueError(value)
        return value


@dataclass(frozen=True)
class BatchShare:
    """Which part of the global batch this rank computes, fixed for a run (the random offsets of the real
    patches never change which volume a patch belongs to).

    Attributes
    ----------
    volumes : slice of the B fake volumes (b = B / N of them).
    real_rows : (n,) indices of this rank's real patches among the ``real_patches_per_axis`` drawn per axis,
        ascending; their first ``len(penalty_rows)`` are its gradient-penalty pairs.
    penalty_rows : (m,) indices of this rank's pairs among the ``penalty_pairs`` whose mixing weights are drawn.
    penalty_draws : the number of mixing weights drawn per axis (the global penalty pairs).
    """

    volumes: slice
    real_rows: np.ndarray
    penalty_rows: np.ndarray
    penalty_draws: int

    @classmethod
    def of(cls, ranks: Ranks, batch_size: int, slices_per_volume: int, real_patches: int,
           penalty_pairs: int) -> "BatchShare":
        """The share of ``ranks`` in a batch of ``batch_size`` volumes with ``slices_per_volume`` critic slices
        per axis each, ``real_patches`` real patches and ``penalty_pairs`` penalty pairs per axis; ValueError
        (one sentence) when the ranks would not get equal shares."""
        size = ranks.size
        if batch_size % size:
            raise ValueError(f"batch_size ({batch_size}) must be divisible by the number of processes ({size}), "
                             "which each make an equal part of the batch; change batch_size or the process count.")
        per_rank = batch_size // size
        total = batch_size * slices_per_volume
        # The volume each real patch is drawn for (Run.real_batch): round robin over the volumes, or every
        # slice in order when there is one real patch per fake slice.
        rows = np.arange(real_patches)
        volume_of = rows % batch_size if real_patches < total else rows // slices_per_volume
        owner = volume_of // per_rank
        real_counts = np.bincount(owner, minlength=size)
        pair_counts = np.bincount(owner[:penalty_pairs], minlength=size)
        if size > 1 and (len(set(real_counts)) > 1 or len(set(pair_counts)) > 1):
            raise ValueError(f"With {size} processes each must score the same number of real patches and penalty "
                             f"pairs, but real_patches_per_axis = {real_patches} and penalty_pairs_per_axis = "
                             f"{penalty_pairs} do not split evenly over batch_size = {batch_size} volumes; make "
                             "both multiples of batch_size.")
        mine = rows[owner == ranks.rank]
        return cls(volumes=slice(ranks.rank * per_rank, (ranks.rank + 1) * per_rank), real_rows=mine,
                   penalty_rows=mine[mine < penalty_pairs], penalty_draws=penalty_pairs)


def current() -> Ranks:
    """This process's :class:`Ranks` from the joined process group (rank 0 of 1 when there is none)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


@contextlib.contextmanager
def joined():
    """Join the process group for one run when torchrun launched this process (``WORLD_SIZE`` > 1) and leave it
    afterwards; yields this process's :class:`Ranks`. A group the caller joined already is used and kept.

    Backends: gloo for CPU tensors, and NCCL for CUDA tensors when a GPU is present (each rank then uses the
    GPU of its ``LOCAL_RANK``).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise ValueError("This torch build has no torch.distributed; install the standard build to train with "
                         "several processes.")
    backend = "gloo"
    if torch.cuda.is_available():
        backend = "cpu:gloo,cuda:nccl"
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local < torch.cuda.device_count():
            torch.cuda.set_device(local)
    dist.init_process_group(backend=backend)
    try:
        yield current()
    finally:
        dist.destroy_process_group()


def local_rank() -> int:
    """This process's rank on its node (0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def under_torchrun() -> bool:
    """True when torchrun (torch.distributed.run) started this process."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def launcher_pid() -> int:
    """The process to signal to stop the run: torchrun (this process's parent) under torchrun, else this one."""
    return os.getppid() if under_torchrun() else os.getpid()


def torchrun_command(processes: int, arguments: list[str]) -> list[str]:
    """``python -m slicegan_core.launch`` (torch.distributed.run with one-line failures; no PATH lookup for
    ``torchrun``) starting ``processes`` ranks of
    ``python -m slicegan_core ARGUMENTS`` on this machine (a standalone rendezvous on a free port)."""
    return [sys.executable, "-m", "slicegan_core.launch", "--standalone", f"--nproc-per-node={int(processes)}",
            f"--shutdown-timeout={SHUTDOWN_TIMEOUT_S}", "-m", "slicegan_core", *arguments]


def check_processes(processes) -> int:
    """``processes`` as a positive whole number, else ValueError (one sentence)."""
    if isinstance(processes, bool) or not isinstance(processes, (int, np.integer)) or processes < 1:
        raise ValueError(f"The number of processes must be a whole number of at least 1 (got {processes!r}).")
    return int(processes)
