"""Bin edges and axis ticks for histograms of sizes on a logarithmic axis (chord lengths, grain ESDs)."""
from __future__ import annotations

import math

import numpy as np


def log_bin_edges(values, bins: int = 30) -> np.ndarray:
    """Edges of about ``bins`` log-spaced bins over positive sizes, snapped between the values that occur.

    Sizes measured on a voxel grid take discrete values: chord lengths are whole numbers of voxels (times the
    voxel size), and small grains have a few possible ESDs. Plain log-spaced bins are narrower than the gap
    between such values at short lengths, so some bins stay empty by construction and a histogram looks like
    a comb. Here every edge lies at the geometric midpoint between two neighbouring distinct values (for whole
    voxels: between n and n + 1), each bin is at least as wide as the log-spaced target and holds at least one
    distinct value of ``values``; where values are dense the bins are the plain log-spaced ones.

    Parameters
    ----------
    values : array_like
        Sizes, in any length unit (micrometres or voxels); zero, negative and non-finite entries are ignored.
    bins : int, default 30
        Number of log-spaced bins aimed at; fewer come back where the values are sparser than that.

    Returns
    -------
    numpy.ndarray
        Increasing float edges, ``len >= 2``; the first lies below the smallest value and the last above the
        largest, each by half a gap in log space.

    Examples
    --------
    >>> log_bin_edges([1, 2, 3, 4, 6, 9, 20], bins=30).round(3)  # one bin per distinct whole number
    array([ 0.707,  1.414,  2.449,  3.464,  4.899,  7.348, 13.416, 29.814])
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a whole number >= 1 (got {bins!r}).")
    values = np.asarray(values, dtype=np.float64).ravel()
    distinct = np.unique(values[np.isfinite(values) & (values > 0)])
    if distinct.size < 2:
        raise ValueError(f"values need at least two distinct positive sizes for a histogram (got "
                         f"{distinct.size}); measure a larger volume.")
    middles = np.sqrt(distinct[1:] * distinct[:-1])              # geometric midpoints between neighbours
    bounds = np.concatenate([[distinct[0] ** 2 / middles[0]], middles, [distinct[-1] ** 2 / middles[-1]]])
    ratio = (bounds[-1] / bounds[0]) ** (1.0 / bins)
    chosen = [0]
    while chosen[-1] < bounds.size - 1:        # the next edge: the first bound at least one target bin further
        index = int(np.searchsorted(bounds, bounds[chosen[-1]] * ratio * (1 - 1e-12)))
        chosen.append(min(max(index, chosen[-1] + 1), bounds.size - 1))
    if len(chosen) > 2 and np.log(bounds[-1] / bounds[chosen[-2]]) < 0.5 * np.log(ratio):
        del chosen[-2]                         # a last sliver of a bin joins the one before
    return bounds[chosen]


def log_ticks(low: float, high: float, least: int = 3) -> list[float]:
    """Tick values for a log axis from ``low`` to ``high``: 1, 2, 5 x 10^k (e.g. 1, 2, 5, 10, 20, 50, 100),
    with 1, 2, 3, 5, 7 x 10^k or every digit when fewer than ``least`` would be in range.

    Each tick is meant to be labelled with its full value (``f"{v:g}"``), unlike a log axis's own minor
    labels ("2", "5" for 20 and 50).

    >>> log_ticks(1.5, 70)
    [2.0, 5.0, 10.0, 20.0, 50.0]
    """
    if not (math.isfinite(low) and math.isfinite(high) and 0 < low < high):
        raise ValueError(f"low and high must be positive with low < high (got {low!r}, {high!r}).")
    ticks = []
    for mantissas in ((1, 2, 5), (1, 2, 3, 5, 7), tuple(range(1, 10))):
        ticks = [float(f"{m * 10.0 ** k:.12g}") for k in range(math.floor(math.log10(low)),
                                                               math.floor(math.log10(high)) + 1)
                 for m in mantissas if low <= m * 10.0 ** k <= high]
        if len(ticks) >= least:
            break
    return ticks
