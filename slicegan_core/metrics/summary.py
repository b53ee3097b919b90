"""All size statistics of a label volume in one call: fractions, chords, watershed features, fits, S2.

This is what the comparison, the steering evaluation, the app and the benchmark use; each part is also a
function of its own module.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np  # noqa: F401  (used by the docstring example)

from ._checks import as_labels, as_phases, as_voxel_size
from .chords import ChordLengths, chord_lengths
from .correlation import TwoPointCorrelation, two_point_correlation
from .features import FeatureSizes, feature_sizes
from .fractions import phase_fractions
from .islands import island_density
from .lognormal import LogNormalFit, fit_lognormal


@dataclass(frozen=True)
class PhaseStatistics:
    """Statistics of one phase (lengths in ``voxel_size`` units, micrometres).

    Attributes
    ----------
    volume_fraction : float
        Fraction of voxels in the phase.
    chords : ChordLengths
        Chord lengths along every axis, border-cut chords excluded and counted.
    chord_fit : LogNormalFit
        Log-normal fit of all chord lengths pooled over the axes, without a bootstrap interval: chords are
        so many (~10^5 at 128^3) that resampling them costs more than the rest, and neighbouring chords are
        correlated, so an i.i.d. bootstrap would understate the uncertainty anyway.
    sizes : FeatureSizes
        Watershed-split feature diameters (ESD in 3D, ECD in 2D), border-cut features excluded and counted.
    size_fit : LogNormalFit
        Log-normal fit of the feature diameters.
    s2 : TwoPointCorrelation or None
        Two-point correlation (None when not requested).
    islands_per_million : float
        Small islands (speckle) of the phase: face-connected pieces of at most 4 voxels (2D: pixels) per
        million voxels (pixels) of the whole volume (:func:`~slicegan_core.metrics.island_density`).
    """

    volume_fraction: float
    chords: ChordLengths
    chord_fit: LogNormalFit
    sizes: FeatureSizes
    size_fit: LogNormalFit
    s2: TwoPointCorrelation | None
    islands_per_million: float = float("nan")


def phase_statistics(labels, phases=None, *, voxel_size: float = 1.0, s2: bool = True, periodic: bool = False,
                     n_boot: int = 200, seed: int = 0, min_distance: int = 2) -> dict[int, PhaseStatistics]:
    """Fractions, chord lengths, feature sizes, their log-normal fits and (optionally) S2 of each phase.

    Parameters
    ----------
    labels : array_like of int, shape (H, W) or (D, H, W)
        Label image or volume.
    phases : sequence of int, optional
        Phase values to measure; default every value present.
    voxel_size : float, default 1.0
        Voxel edge in micrometres.
    s2 : bool, default True
        Also compute the two-point correlation (the slowest part after the watershed).
    periodic : bool, default False
        S2 of a periodic volume (chords and features always treat the border as a cut).
    n_boot : int, default 200
        Bootstrap resamples for the feature-size fit's confidence intervals (0: none).
    seed : int, default 0
        Bootstrap seed.
    min_distance : int, default 2
        Watershed marker spacing, see :func:`~slicegan_core.metrics.label_features`.

    Returns
    -------
    dict[int, PhaseStatistics]

    Examples
    --------
    >>> lam = np.zeros((32, 8, 8), np.uint8); lam[8:12] = 1; lam[20:24] = 1
    >>> st = phase_statistics(lam, [1], s2=False, n_boot=0)[1]
    >>> st.volume_fraction, st.chords.lengths[0][:3].tolist(), st.chords.n_border
    (0.25, [4.0, 4.0, 4.0], (0, 64, 64))
    """
    arr = as_labels(labels)
    dx = as_voxel_size(voxel_size)
    wanted = as_phases(arr, phases)
    fractions = phase_fractions(arr, wanted)
    chords = chord_lengths(arr, wanted, voxel_size=dx)
    sizes = feature_sizes(arr, wanted, voxel_size=dx, min_distance=min_distance)
    correlations = two_point_correlation(arr, wanted, periodic=periodic, voxel_size=dx) if s2 else {}
    islands = island_density(arr, wanted)
    return {p: PhaseStatistics(volume_fraction=fractions[p], chords=chords[p],
                               chord_fit=fit_lognormal(chords[p].pooled, n_boot=0),
                               sizes=sizes[p], size_fit=fit_lognormal(sizes[p].diameters, n_boot=n_boot, seed=seed),
                               s2=correlations.get(p), islands_per_million=islands[p])
            for p in wanted}
