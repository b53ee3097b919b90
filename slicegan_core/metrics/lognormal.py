"""Log-normal fit of a size distribution with a seeded bootstrap confidence interval."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

_IQR_PER_SIGMA = 2 * special.ndtri(0.75)   # interquartile range of a unit normal, 1.349


@dataclass(frozen=True)
class LogNormalFit:
    """Fit of ln(size) ~ Normal(mu, sigma).

    Attributes
    ----------
    mu : float
        Mean of ln(size); exp(mu) is the median size, in the unit of the sizes (micrometres or voxels).
    sigma : float
        Standard deviation of ln(size) (sample std, ddof=1), dimensionless: ln of the geometric standard
        deviation, the quantity the ``alpha`` attribute commands.
    sigma_robust : float
        Interquartile range of ln(size) / 1.349: the same sigma for a log-normal, insensitive to a tail of
        fragments or merged features.
    mu_ci, sigma_ci : tuple of float
        Percentile-bootstrap confidence intervals (level ``ci``) of mu and sigma.
    n : int
        Number of sizes fitted; with n < 2 every value is NaN.
    """

    mu: float
    sigma: float
    sigma_robust: float
    mu_ci: tuple[float, float]
    sigma_ci: tuple[float, float]
    n: int


def fit_lognormal(sizes, *, n_boot: int = 200, ci: float = 0.95, seed: int = 0) -> LogNormalFit:
    """Fit a log-normal to positive sizes, with a bootstrap confidence interval.

    Parameters
    ----------
    sizes : array_like of float, shape (n,)
        Positive sizes (e.g. ESDs or chord lengths, any unit).
    n_boot : int, default 200
        Bootstrap resamples; 0 skips the bootstrap (intervals are NaN).
    ci : float, default 0.95
        Confidence level of the intervals, in (0, 1).
    seed : int, default 0
        Seed of the bootstrap's ``np.random.default_rng``; the global random state is never touched.

    Returns
    -------
    LogNormalFit

    Examples
    --------
    >>> fit = fit_lognormal(np.exp(np.random.default_rng(1).normal(2.0, 0.3, 4000)))
    >>> round(fit.mu, 1), round(fit.sigma, 1), fit.sigma_ci[0] < 0.3 < fit.sigma_ci[1]
    (2.0, 0.3, True)
    """
    values = np.asarray(sizes, dtype=np.float64).ravel()
    if values.size and (not np.all(np.isfinite(values)) or values.min() <= 0):
        raise ValueError("sizes must be positive finite numbers; drop empty or zero-size features first.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be a whole number >= 0, got {n_boot!r}.")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be a confidence level between 0 and 1, got {ci!r}; use e.g. 0.95.")
    nan = float("nan")
    n = int(values.size)
    if n < 2:
        return LogNormalFit(nan, nan, nan, (nan, nan), (nan, nan), n)
    logs = np.log(values)
    q25, q75 = np.percentile(logs, [25, 75])
    mu_ci = sigma_ci = (nan, nan)
    if n_boot:
        rng = np.random.default_rng(seed)
        # Resample in chunks to bound memory at ~8 MB whatever n is.
        chunk = max(1, 1_000_000 // n)
        mus, sigmas = [], []
        for start in range(0, n_boot, chunk):
            draw = logs[rng.integers(0, n, size=(min(chunk, n_boot - start), n))]
            mus.append(draw.mean(axis=1))
            sigmas.append(draw.std(axis=1, ddof=1))
        tails = [50 * (1 - ci), 50 * (1 + ci)]
        mu_ci = tuple(float(v) for v in np.percentile(np.concatenate(mus), tails))
        sigma_ci = tuple(float(v) for v in np.percentile(np.concatenate(sigmas), tails))
    return LogNormalFit(mu=float(logs.mean()), sigma=float(logs.std(ddof=1)),
                        sigma_robust=float((q75 - q25) / _IQR_PER_SIGMA),
                        mu_ci=mu_ci, sigma_ci=sigma_ci, n=n)
