"""Phase (volume) fractions of a label image or volume."""
from __future__ import annotations

import numpy as np

from ._checks import as_labels, as_phases


def phase_fractions(labels, phases=None) -> dict[int, float]:
    """Fraction of voxels holding each phase value.

    Parameters
    ----------
    labels : array_like of int, shape (H, W) or (D, H, W)
        Label image or volume; each value is a phase.
    phases : sequence of int, optional
        Phase values to report. Default: every value present. A listed phase that is absent gets 0.0.

    Returns
    -------
    dict[int, float]
        Phase value -> volume (area) fraction in [0, 1], dimensionless.

    Examples
    --------
    >>> phase_fractions(np.array([[0, 0], [1, 2]]))
    {0: 0.5, 1: 0.25, 2: 0.25}
    """
    arr = as_labels(labels)
    values, counts = np.unique(arr, return_counts=True)
    by_value = dict(zip(values.tolist(), counts.tolist()))
    return {p: by_value.get(p, 0) / arr.size for p in as_phases(arr, phases)}
