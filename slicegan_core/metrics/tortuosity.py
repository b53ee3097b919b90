"""Tortuosity factor of each phase, by TauFactor's steady-state diffusion solver (CPU or CUDA).

tau = vf * D_0 / D_eff: how much the phase's geometry slows diffusion through it along one axis, relative
to a straight channel of the same volume fraction (tau = 1 for straight channels, larger when tortuous,
infinite when the phase does not connect the two faces). Slow (an iterative solve: ~1.5 s per phase at 64^3,
~25 s at 128^3 on a shared 2-core CPU), so it is on demand and size-limited.
"""
from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from tqdm.auto import tqdm

from ._checks import as_axes, as_labels, as_phases

MAX_VOXELS = 128 ** 3
_CHECK_EVERY = 500      # solver iterations between progress updates (TauFactor checks convergence every 100)


@dataclass(frozen=True)
class Tortuosity:
    """Tortuosity of one phase along one axis.

    Attributes
    ----------
    tau : float
        Tortuosity factor (dimensionless, >= 1 up to discretisation; inf when the phase does not connect
        the two faces normal to ``axis``).
    relative_diffusivity : float
        D_eff / D_0 = vf / tau (0 when not connected).
    volume_fraction : float
        Fraction of voxels in the phase.
    converged : bool
        Whether the solver met its convergence criterion before ``iter_limit``.
    iterations : int
        Solver iterations run.
    """

    tau: float
    relative_diffusivity: float
    volume_fraction: float
    converged: bool
    iterations: int


def tortuosity(labels, phases=None, *, axis: int = 0, max_voxels: int = MAX_VOXELS, iter_limit: int = 20_000,
               device: str = "cpu", progress: bool = True) -> dict[int, Tortuosity]:
    """Tortuosity factor of each phase for transport along ``axis`` (TauFactor ``Solver``).

    Parameters
    ----------
    labels : array_like of int, shape (H, W) or (D, H, W)
        Label image or volume (the voxel size cancels out: tau is dimensionless).
    phases : sequence of int, optional
        Phase values to measure (each one is the conducting phase in turn); default every value present.
    axis : int, default 0
        Array axis of the transport direction (fixed potentials on its two end faces, no flux elsewhere).
    max_voxels : int, default 128**3
        Refuse larger inputs (the solve time grows ~ n^(4/3)); crop or downsample instead.
    iter_limit : int, default 20000
        Stop the solver after this many iterations (``converged`` is then False).
    device : str, default "cpu"
        Torch device, e.g. "cuda" when a GPU is present.
    progress : bool, default True
        Show a tqdm bar of solver iterations per phase.

    Returns
    -------
    dict[int, Tortuosity]

    Examples
    --------
    >>> channel = np.zeros((16, 8, 8), np.uint8); channel[:, 2:6, 2:6] = 1
    >>> round(tortuosity(channel, phases=[1], progress=False)[1].tau, 3)
    1.0
    """
    arr = as_labels(labels)
    (axis,) = as_axes(arr.ndim, axis)
    if isinstance(max_voxels, bool) or not isinstance(max_voxels, (int, np.integer)) or max_voxels < 1:
        raise ValueError(f"max_voxels must be a positive whole number, got {max_voxels!r}.")
    if arr.size > max_voxels:
        raise ValueError(f"labels has {arr.size} voxels, above the tortuosity limit max_voxels={max_voxels}; "
                         "crop or downsample the volume, or raise max_voxels if you can wait.")
    if isinstance(iter_limit, bool) or not isinstance(iter_limit, (int, np.integer)) or iter_limit < 100:
        raise ValueError(f"iter_limit must be a whole number >= 100, got {iter_limit!r}.")
    from taufactor import Solver           # heavy import (torch, IPython, matplotlib): only when used

    flux_first = np.moveaxis(arr, axis, 0)
    out = {}
    for p in as_phases(arr, phases):
        mask = np.ascontiguousarray(flux_first == p)
        vf = float(mask.mean())
        if not _spans(mask):
            out[p] = Tortuosity(math.inf, 0.0, vf, True, 0)
            continue
        solver = Solver(mask.astype(np.uint8), device=device)
        bar = tqdm(total=iter_limit, desc=f"tortuosity phase {p}", unit="it", disable=not progress, leave=False)
        # TauFactor prints instead of returning status; keep its chatter out of the CLI and the app.
        with contextlib.redirect_stdout(io.StringIO()):
            while not solver.converged and solver.iter < iter_limit:
                before = solver.iter
                solver.solve(iter_limit=min(solver.iter + _CHECK_EVERY, iter_limit), verbose=False)
                bar.update(solver.iter - before)
        bar.close()
        tau = float(np.asarray(solver.tau).ravel()[0])
        tau = math.inf if not math.isfinite(tau) or tau <= 0 else tau
        out[p] = Tortuosity(tau=tau, relative_diffusivity=0.0 if math.isinf(tau) else vf / tau,
                            volume_fraction=vf, converged=bool(solver.converged), iterations=int(solver.iter))
    return out


def _spans(mask: np.ndarray) -> bool:
    """Whether a face-connected cluster of ``mask`` touches both ends of axis 0."""
    clusters, n = ndi.label(mask)
    if n == 0:
        return False
    return bool(np.intersect1d(clusters[0][clusters[0] > 0], clusters[-1][clusters[-1] > 0]).size)
