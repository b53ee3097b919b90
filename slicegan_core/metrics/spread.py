"""The width of a grain-size distribution measured the way the field measures it, and a verdict against a truth.

The field does not fit a size distribution to every piece a segmentation produces: DREAM3D's "Minimum Size"
filter removes features below a set voxel count before its statistics, and EBSD practice excludes grains of
only a few points. Here the same convention is applied to the watershed features of
:func:`~slicegan_core.metrics.feature_sizes`: features of fewer than ``min_voxels`` voxels are dropped, then
ln(ESD) is fitted (:func:`~slicegan_core.metrics.fit_lognormal`). Two widths come out of the same features:
the standard deviation (the "field measure") and the robust IQR / 1.349. The all-features values stay beside
them, so nothing is hidden by the filter: the share of features it dropped is reported too.

Generated and truth volumes are measured by the same call with the same arguments
(:func:`compare_size_spread`), so the filter can never flatter one side.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from .features import FeatureSizes
from .lognormal import fit_lognormal

#: Default minimum feature size in voxels (pixels in 2D). A feature of fewer than 8 voxels has an ESD under
#: (6 * 8 / pi)^(1/3) = 2.48 voxels: it cannot hold a 2 x 2 x 2 cube, its distance to the phase boundary never
#: exceeds one voxel, so the distance watershed (markers >= 2 voxels apart) cannot resolve it as a grain; such
#: pieces are lobes split off at necks or speckle, not grains. 8 voxels is also the smallest "Minimum Size"
#: commonly set in DREAM3D pipelines (2 voxels per axis). On the synthetic truth of the default recipe (median
#: ESD 8 voxels) no true grain is that small at alpha <= 0.35, so there the filter removes only watershed
#: fragments; at alpha 0.6, 2 % of the true grains are below it and are dropped too, which narrows the measure
#: (docs/metrics-validation.md). Compare it with the truth measured the same way, never with alpha itself.
DEFAULT_MIN_VOXELS = 8


@dataclass(frozen=True)
class SizeSpread:
    """Width of the ln(ESD) distribution of a set of features, with and without the minimum size.

    Attributes
    ----------
    sigma : float
        The field measure: standard deviation of ln(ESD) of the features of at least ``min_voxels`` voxels.
    sigma_ci : tuple of float
        Percentile-bootstrap interval of ``sigma`` (NaN without a bootstrap).
    sigma_robust : float
        IQR of ln(ESD) / 1.349 of the same filtered features.
    sigma_all, sigma_robust_all : float
        The same two widths over every feature (the measure before the minimum size).
    min_voxels : int
        The minimum size applied.
    n : int
        Features kept.
    n_small : int
        Features dropped as smaller than ``min_voxels``.
    """

    sigma: float
    sigma_ci: tuple[float, float]
    sigma_robust: float
    sigma_all: float
    sigma_robust_all: float
    min_voxels: int
    n: int
    n_small: int

    @property
    def small_share(self) -> float:
        """Fraction of all features below the minimum size (NaN without features)."""
        total = self.n + self.n_small
        return self.n_small / total if total else math.nan


@dataclass(frozen=True)
class SpreadComparison:
    """Generated against truth, both measured by :func:`size_spread` with the same arguments.

    Attributes
    ----------
    generated, truth : SizeSpread
    band : tuple of float
        The truth's seed band of the field measure: ``truth.sigma +- sqrt(2) x`` the half-width of its
        bootstrap interval, where the same measure of another truth volume of this size lands with the
        interval's confidence (the difference of two independent draws spreads sqrt(2) times one draw).
        NaN without a bootstrap.
    within : bool or None
        Whether ``generated.sigma`` lies inside ``band``; None when either value or the band is NaN.
    """

    generated: SizeSpread
    truth: SizeSpread
    band: tuple[float, float]
    within: bool | None

    @property
    def difference(self) -> float:
        """Generated minus truth, field measure."""
        return self.generated.sigma - self.truth.sigma

    @property
    def difference_all(self) -> float:
        """Generated minus truth, all features."""
        return self.generated.sigma_all - self.truth.sigma_all


def size_spread(sizes, *, min_voxels: int = DEFAULT_MIN_VOXELS, n_boot: int = 200, ci: float = 0.95,
                seed: int = 0) -> SizeSpread:
    """Field-measure width of ln(ESD), pooled over the given features.

    Parameters
    ----------
    sizes : FeatureSizes, or a mapping / iterable of FeatureSizes or of PhaseStatistics
        Features to pool, e.g. ``feature_sizes(volume)`` (all phases) or ``phase_statistics(volume)``.
    min_voxels : int, default DEFAULT_MIN_VOXELS (8)
        Minimum feature size in voxels (pixels in 2D); see :data:`DEFAULT_MIN_VOXELS` for why 8.
    n_boot, ci, seed
        Bootstrap of the field measure's interval, passed to :func:`fit_lognormal`.

    Returns
    -------
    SizeSpread

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> voxels = np.round(np.pi / 6 * np.exp(rng.normal(np.log(8), 0.3, 3000)) ** 3).astype(np.int64)
    >>> tail = np.ones(300, np.int64)                      # 10 % single-voxel fragments
    >>> v = np.concatenate([voxels, tail])
    >>> f = FeatureSizes(np.cbrt(6 * v / np.pi), v.astype(float), v.size, 0, v)
    >>> s = size_spread(f, n_boot=0)
    >>> round(s.sigma, 2), round(s.sigma_all, 2), s.n_small
    (0.3, 0.6, 300)
    """
    pooled = _pool(sizes)
    fit_all = fit_lognormal(pooled.diameters, n_boot=0)
    kept = pooled.at_least(min_voxels)
    fit = fit_lognormal(kept.diameters, n_boot=n_boot, ci=ci, seed=seed)
    return SizeSpread(sigma=fit.sigma, sigma_ci=fit.sigma_ci, sigma_robust=fit.sigma_robust,
                      sigma_all=fit_all.sigma, sigma_robust_all=fit_all.sigma_robust, min_voxels=int(min_voxels),
                      n=fit.n, n_small=fit_all.n - fit.n)


def compare_size_spread(generated, truth, *, min_voxels: int = DEFAULT_MIN_VOXELS, n_boot: int = 200,
                        ci: float = 0.95, seed: int = 0) -> SpreadComparison:
    """Measure generated and truth features the same way and say whether the generated width is in the
    truth's seed band (see :class:`SpreadComparison`).

    Parameters
    ----------
    generated, truth
        Features of each side, as :func:`size_spread` takes them.
    min_voxels, n_boot, ci, seed
        Passed unchanged to :func:`size_spread` for both sides.

    Returns
    -------
    SpreadComparison
    """
    options = {"min_voxels": min_voxels, "n_boot": n_boot, "ci": ci, "seed": seed}
    gen, tru = size_spread(generated, **options), size_spread(truth, **options)
    low, high = tru.sigma_ci
    half = math.sqrt(2.0) * (high - low) / 2
    band = (tru.sigma - half, tru.sigma + half)
    values = (gen.sigma, *band)
    within = None if not all(np.isfinite(values)) else bool(band[0] <= gen.sigma <= band[1])
    return SpreadComparison(generated=gen, truth=tru, band=band, within=within)


def _pool(sizes) -> FeatureSizes:
    """One FeatureSizes of every feature given (phases pooled)."""
    if isinstance(sizes, FeatureSizes):
        return sizes
    items = list(sizes.values()) if isinstance(sizes, Mapping) else list(sizes) if isinstance(sizes, Iterable) \
        else None
    if items is None:
        raise TypeError(f"sizes must be FeatureSizes or a mapping / iterable of them, got {type(sizes).__name__}.")
    parts = [getattr(item, "sizes", item) for item in items]      # PhaseStatistics carry theirs in .sizes
    if not all(isinstance(part, FeatureSizes) for part in parts):
        raise TypeError("sizes must hold FeatureSizes or PhaseStatistics.")
    if any(part.voxels is None for part in parts):
        raise ValueError("these FeatureSizes carry no voxel counts; measure them with feature_sizes().")
    if not parts:
        return FeatureSizes(np.empty(0), np.empty(0), 0, 0, np.empty(0, np.int64))
    return FeatureSizes(diameters=np.concatenate([p.diameters for p in parts]),
                        volumes=np.concatenate([p.volumes for p in parts]),
                        n_features=sum(p.n_features for p in parts), n_border=sum(p.n_border for p in parts),
                        voxels=np.concatenate([p.voxels for p in parts]))
