"""Chord-length distributions: lengths of straight runs of one phase along the array axes.

A chord is a maximal run of voxels of one phase along a grid line (the label-only analogue of the
linear-intercept grain-size method). Chords that touch the first or last voxel of their line are cut by the
volume border: their true length is unknown, so they are excluded by default and counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import as_axes, as_labels, as_phases, as_voxel_size


@dataclass(frozen=True)
class ChordLengths:
    """Chord lengths of one phase.

    Attributes
    ----------
    axes : tuple of int
        The array axes measured along.
    lengths : tuple of ndarray
        One (n_chords,) float array per axis: chord lengths in ``voxel_size`` units (micrometres), each
        the number of voxels in the run times voxel_size.
    n_border : tuple of int
        Per axis, chords cut by the volume border (excluded from ``lengths`` unless include_border).
    """

    axes: tuple[int, ...]
    lengths: tuple[np.ndarray, ...]
    n_border: tuple[int, ...]

    @property
    def pooled(self) -> np.ndarray:
        """All axes' chord lengths concatenated, shape (n_total,)."""
        return np.concatenate(self.lengths) if self.lengths else np.empty(0)

    @property
    def mean(self) -> float:
        """Mean chord length over all axes (NaN when there is none); 2/3 of D for spheres of diameter D."""
        pooled = self.pooled
        return float(pooled.mean()) if pooled.size else float("nan")


def chord_lengths(labels, phases=None, *, axes=None, voxel_size: float = 1.0,
                  include_border: bool = False) -> dict[int, ChordLengths]:
    """Chord lengths of each phase along each axis, by run-length encoding of the grid lines.

    Parameters
    ----------
    labels : array_like of int, shape (H, W) or (D, H, W)
        Label image or volume.
    phases : sequence of int, optional
        Phase values to measure; default every value present.
    axes : int or sequence of int, optional
        Axes to measure along; default all.
    voxel_size : float, default 1.0
        Voxel edge in micrometres; lengths are returned in the same unit.
    include_border : bool, default False
        Keep chords cut by the border (they are still counted in ``n_border``).

    Returns
    -------
    dict[int, ChordLengths]

    Examples
    --------
    >>> row = np.array([[0, 1, 1, 0, 0, 0, 1]])
    >>> chord_lengths(row, phases=[0, 1], axes=1)[0].lengths[0].tolist()   # the 0-run at the border is cut
    [3.0]
    """
    arr = as_labels(labels)
    dx = as_voxel_size(voxel_size)
    axes = as_axes(arr.ndim, axes)
    wanted = as_phases(arr, phases)
    per_phase = {p: ([], []) for p in wanted}
    for axis in axes:
        run_phase, run_length, cut = _runs(arr, axis)
        for p in wanted:
            mine = run_phase == p
            keep = mine if include_border else mine & ~cut
            per_phase[p][0].append(run_length[keep] * dx)
            per_phase[p][1].append(int(np.count_nonzero(mine & cut)))
    return {p: ChordLengths(axes=axes, lengths=tuple(lengths), n_border=tuple(n_border))
            for p, (lengths, n_border) in per_phase.items()}


def _runs(arr: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every run along ``axis``: its phase value, its length in voxels and whether the border cuts it."""
    lines = np.moveaxis(arr, axis, -1)
    n = lines.shape[-1]
    lines = np.ascontiguousarray(lines).reshape(-1, n)          # (n_lines, n)
    starts = np.ones(lines.shape, dtype=bool)                     # a run starts at 0 and wherever the label changes
    np.not_equal(lines[:, 1:], lines[:, :-1], out=starts[:, 1:])
    start = np.flatnonzero(starts)
    # Every line begins a run, so consecutive starts never span two lines.
    length = np.diff(start, append=lines.size)
    position = start % n
    cut = (position == 0) | (position + length == n)
    return lines.ravel()[start], length, cut
