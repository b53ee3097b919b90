"""Two-point correlation S2(r): probability that two points a distance r apart both lie in one phase.

FFT based. ``periodic=True`` treats the volume as a torus (right for periodic generator output and
synthetic truth); ``periodic=False`` zero-pads and divides by the number of point pairs that fit inside the
volume at each lag (``prod_i (n_i - |lag_i|)``), so every lag is an unbiased average over the real data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft

from ._checks import as_labels, as_phases, as_voxel_size


@dataclass(frozen=True)
class TwoPointCorrelation:
    """S2 of one phase.

    Attributes
    ----------
    r : ndarray, shape (n_r,)
        Lag distances 0, 1, ..., max_r voxels times ``voxel_size`` (micrometres when voxel_size is).
    radial : ndarray, shape (n_r,)
        S2 averaged over all lag vectors whose length rounds to r (isotropic estimate).
    axes : ndarray, shape (ndim, n_r)
        S2 along each array axis (lag vector along that axis only); equals ``radial`` for isotropic media.
    volume_fraction : float
        S2(0), the phase fraction; S2(r -> large) tends to volume_fraction**2 for a random medium.
    periodic : bool
        Whether the volume was treated as periodic.
    """

    r: np.ndarray
    radial: np.ndarray
    axes: np.ndarray
    volume_fraction: float
    periodic: bool


def two_point_correlation(labels, phases=None, *, periodic: bool = False, max_r: int | None = None,
                          voxel_size: float = 1.0) -> dict[int, TwoPointCorrelation]:
    """Two-point correlation S2 of each phase, radially averaged and along each axis.

    Parameters
    ----------
    labels : array_like of int, shape (H, W) or (D, H, W)
        Label image or volume.
    phases : sequence of int, optional
        Phase values to measure; default every value present.
    periodic : bool, default False
        True: circular correlation (volume is a torus). False: zero-padded correlation normalised by the
        overlap count, exact for non-periodic data at every lag.
    max_r : int, optional
        Largest lag in voxels; default ``min(shape) // 2``; must be below the shortest edge.
    voxel_size : float, default 1.0
        Voxel edge in micrometres; only scales ``r``.

    Returns
    -------
    dict[int, TwoPointCorrelation]
        Phase value -> S2 (dimensionless probabilities in [0, 1]).

    Examples
    --------
    >>> lam = np.zeros((16, 4, 4), np.uint8); lam[::2] = 1     # layers one voxel thick
    >>> s2 = two_point_correlation(lam, phases=[1], periodic=True)[1]
    >>> s2.axes[0, :3].tolist()
    [0.5, 0.0, 0.5]
    """
    arr = as_labels(labels)
    dx = as_voxel_size(voxel_size)
    shortest = min(arr.shape)
    if max_r is None:
        max_r = shortest // 2
    if not isinstance(max_r, (int, np.integer)) or not 0 < max_r < shortest:
        raise ValueError(f"max_r must be a whole number of voxels in [1, {shortest - 1}] for shape {arr.shape}, "
                         f"got {max_r!r}.")
    max_r = int(max_r)
    lags = np.r_[0:max_r + 1, -max_r:0]                       # (2 max_r + 1,) wrap-around order
    radius = np.sqrt(sum(g.astype(float) ** 2 for g in np.ix_(*[lags] * arr.ndim)))
    shell = np.rint(radius).astype(np.int64)
    inside = shell <= max_r
    shell_count = np.bincount(shell[inside], minlength=max_r + 1)
    out = {}
    for p in as_phases(arr, phases):
        ac = _autocorrelation(arr == p, periodic, max_r)     # (2 max_r + 1,) * ndim
        radial = np.bincount(shell[inside], weights=ac[inside], minlength=max_r + 1) / shell_count
        along = np.empty((arr.ndim, max_r + 1))
        for axis in range(arr.ndim):
            index = [0] * arr.ndim
            index[axis] = slice(0, max_r + 1)
            along[axis] = ac[tuple(index)]
        out[p] = TwoPointCorrelation(r=np.arange(max_r + 1) * dx, radial=radial, axes=along,
                                     volume_fraction=float(ac[(0,) * arr.ndim]), periodic=periodic)
    return out


def radial_two_point_stack(images, phases, max_r: int) -> np.ndarray:
    """Radial S2 of many same-shape 2D label images at once (non-periodic, as :func:`two_point_correlation`
    computes it for each): (N, H, W) labels -> (N, len(phases), max_r + 1). One batched FFT per phase instead of
    one per image and phase: the fidelity monitor measures a few hundred small tiles per checkpoint."""
    stack = np.asarray(images)
    if stack.ndim != 3 or not 0 < max_r < min(stack.shape[1:]):
        raise ValueError(f"radial_two_point_stack needs (N, H, W) images and 0 < max_r < min(H, W) "
                         f"(got shape {stack.shape}, max_r {max_r!r}).")
    lags = np.r_[0:max_r + 1, -max_r:0]
    radius = np.sqrt(sum(g.astype(float) ** 2 for g in np.ix_(lags, lags)))
    shell = np.rint(radius).astype(np.int64)
    inside = shell <= max_r
    shell_count = np.bincount(shell[inside], minlength=max_r + 1)
    # shell membership as a (lags^2, max_r + 1) matrix: the radial mean of every image is one product
    members = np.zeros((inside.sum(), max_r + 1))
    members[np.arange(inside.sum()), shell[inside]] = 1.0 / shell_count[shell[inside]]
    out = np.empty((stack.shape[0], len(phases), max_r + 1))
    for index, phase in enumerate(phases):
        ac = _autocorrelation(stack == phase, False, max_r, batched=True)      # (N, 2 max_r + 1, 2 max_r + 1)
        out[:, index] = ac[:, inside] @ members
    return out


def _autocorrelation(mask: np.ndarray, periodic: bool, max_r: int, batched: bool = False) -> np.ndarray:
    """Normalised autocorrelation of a boolean mask at lags -max_r..max_r along every axis (wrap order).
    ``batched``: the first axis counts independent masks (non-periodic only)."""
    x = mask.astype(np.float32)                 # single precision: 5x faster, S2 error ~1e-7
    lags = np.r_[0:max_r + 1, -max_r:0]
    if periodic:
        spectrum = fft.rfftn(x)
        ac = fft.irfftn(spectrum * spectrum.conj(), s=x.shape) / x.size
        return np.clip(ac[np.ix_(*[lags % n for n in x.shape])], 0.0, 1.0)
    # Zero-padding to n + max_r keeps lags up to max_r free of wrap-around; dividing by the number of
    # overlapping positions, prod_i (n_i - |lag_i|), gives the mean over the pairs that exist.
    shape = x.shape[1:] if batched else x.shape
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    padded = [fft.next_fast_len(n + max_r, real=True) for n in shape]
    spectrum = fft.rfftn(x, s=padded, axes=axes)
    ac = fft.irfftn(spectrum * spectrum.conj(), s=padded, axes=axes)
    ac = ac[(slice(None),) * (x.ndim - len(shape)) + np.ix_(*[lags % n for n in padded])]
    overlap = np.ones((1,) * len(shape))
    for axis, n in enumerate(shape):
        along = [1] * len(shape)
        along[axis] = lags.size
        overlap = overlap * (n - np.abs(lags)).reshape(along)
    return np.clip(ac / overlap, 0.0, 1.0)         # FFT round-off can dip just below 0
