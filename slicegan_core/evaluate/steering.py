"""Closed-loop steering evaluation: command an attribute, generate, measure, and compare with truth.

For each commanded value and seed the model generates a volume; its phases are measured with the same
label-only pipeline as :func:`~slicegan_core.evaluate.compare` (watershed ESD and chord lengths, border-cut
features and chords excluded). A band over seeds (median, quartiles, min/max) shows the spread. When a
ground truth is given (``truth(value, seed) -> labels``, e.g. the synthetic generator at sigma = alpha) it
is measured identically, so the comparison is free of the measurement's own bias (the watershed widens
ln(ESD) by ~0.1-0.3, see docs/metrics-validation.md).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from ..metrics import DEFAULT_MIN_VOXELS, chord_lengths, feature_sizes, fit_lognormal, size_spread
from ..metrics._checks import as_labels, as_phases, as_voxel_size
from ._report import SCHEMA_VERSION, json_safe

MEASURES = ("ln_esd_sigma", "ln_esd_sigma_field", "ln_chord_sigma", "ln_esd_median", "vf")
_SAME = 1e-6        # relative tolerance for "this value is a trained value" (models store float32 values)


def steering(model, attribute: str, values, seeds=4, shape=(96, 96, 96),
             truth: Callable[[float, int], np.ndarray] | None = None, *, phases=None, voxel_size: float | None = None,
             include_trained: bool = True, progress: bool = True) -> dict:
    """Measure how well ``attribute`` steers ``model``: commanded value -> measured statistics per phase.

    Parameters
    ----------
    model : Model-like
        Anything with ``generate(attrs=..., seed=..., shape=..., periodic=False) -> labels``,
        ``attribute_names``, ``trained_values`` and ``trained_range`` (see :class:`slicegan_core.Model`);
        ``phase_values`` and ``voxel_size_um`` are used when present.
    attribute : str
        The attribute to sweep; the model's other attributes stay at the middle of their trained range.
    values : sequence of float
        Commanded values (inside and beyond the trained range).
    seeds : int or sequence of int, default 4
        Seeds per value: a count n means seeds 0..n-1.
    shape : tuple of 3 int, default (96, 96, 96)
        Generated volume shape (D, H, W) in voxels.
    truth : callable, optional
        ``truth(value, seed)`` returning a ground-truth label volume at that value; measured the same way.
    phases : sequence of int, optional
        Phase values to measure; default ``model.phase_values`` or the values of the first volume.
    voxel_size : float, optional
        Micrometres per voxel; default ``model.voxel_size_um`` or 1.0. Only ln_esd_median depends on it.
    include_trained : bool, default True
        Add the model's trained values of ``attribute`` to ``values`` (needed for the interpolation error).
    progress : bool, default True
        tqdm bar over the generated (and truth) volumes.

    Returns
    -------
    dict
        JSON-ready steering report (schema in docs/report-schema.md): ``values``, ``seeds``, per-value
        flags, and per phase and measure the per-seed values, the band, Spearman's rho of the medians against
        the values, and errors at values between the trained ones.

    Examples
    --------
    >>> from slicegan_core.synthetic import synthesize
    >>> class Synthetic:                  # a stand-in model whose generator is the synthetic truth itself
    ...     attribute_names, phase_values = ("alpha",), (0, 1, 2)
    ...     trained_values, trained_range = {"alpha": [0.1, 0.5]}, {"alpha": (0.1, 0.5)}
    ...     def generate(self, attrs, seed, shape, periodic):
    ...         return synthesize(shape=shape, sigma=attrs["alpha"], median_esd=5.0, seed=seed,
    ...                           periodic=periodic).labels
    >>> report = steering(Synthetic(), "alpha", [0.1, 0.3, 0.5], seeds=1, shape=48, progress=False)
    >>> report["is_trained_value"], report["summary"]["ln_chord_sigma"]["monotone_increasing"]
    ([True, False, True], True)
    """
    names = tuple(getattr(model, "attribute_names", ()))
    if attribute not in names:
        raise ValueError(f"attribute {attribute!r} is not one of the model's attributes {list(names)}.")
    trained_range = tuple(float(v) for v in model.trained_range[attribute])
    trained = sorted(float(v) for v in (model.trained_values.get(attribute) or []))
    grid = _as_values(values)
    if include_trained:
        grid = sorted(set(grid) | {t for t in trained if not any(_same(t, v) for v in grid)})
    seed_list = _as_seeds(seeds)
    shape = _as_shape(shape)
    dx = as_voxel_size(voxel_size if voxel_size is not None else (getattr(model, "voxel_size_um", None) or 1.0))
    base = {n: sum(model.trained_range[n]) / 2 for n in names}
    wanted = list(phases) if phases is not None else list(getattr(model, "phase_values", ()) or ())

    sources = [("generated", None)] + ([("truth", truth)] if truth is not None else [])
    runs = [(src, v, s) for src, _ in sources for v in grid for s in seed_list]
    raw = {src: {} for src, _ in sources}                # src -> (value, seed) -> phase -> measure -> float
    for src, value, seed in tqdm(runs, desc=f"steering {attribute}", disable=not progress, unit="volume"):
        if src == "generated":
            with warnings.catch_warnings():          # out-of-range values are flagged in the report instead
                warnings.simplefilter("ignore", UserWarning)
                volume = model.generate(attrs={**base, attribute: value}, seed=int(seed), shape=shape, periodic=False)
        else:
            volume = truth(value, int(seed))
        labels = as_labels(volume, f"the {src} volume")
        if not wanted:
            wanted = as_phases(labels, None)
        raw[src][(value, seed)] = measure_volume(labels, wanted, dx)

    report_phases = {}
    for p in wanted:
        entry = {}
        for m in MEASURES:
            block = {src: _band([[raw[src][(v, s)][p][m] for s in seed_list] for v in grid]) for src, _ in sources}
            gen = block["generated"]
            rho, pval = _spearman(grid, gen["median"])
            result = {"generated": gen, "truth": block.get("truth"), "spearman": rho, "spearman_pvalue": pval,
                      "truth_spearman": _spearman(grid, block["truth"]["median"])[0] if "truth" in block else None}
            result.update(_interpolation_errors(grid, trained, trained_range, gen["median"],
                                                block["truth"]["median"] if "truth" in block else None))
            entry[m] = result
        report_phases[str(p)] = entry
    return json_safe({
        "schema_version": SCHEMA_VERSION,
        "kind": "steering",
        "attribute": attribute,
        "other_attributes": {n: v for n, v in base.items() if n != attribute},
        "values": grid,
        "seeds": [int(s) for s in seed_list],
        "shape": list(shape),
        "voxel_size_um": dx,
        "trained_values": trained,
        "trained_range": list(trained_range),
        "in_trained_range": [_inside(v, trained_range) for v in grid],
        "is_trained_value": [any(_same(v, t) for t in trained) for v in grid],
        "has_truth": truth is not None,
        "measures": list(MEASURES),
        "phases": report_phases,
        "summary": _summary(report_phases),
    })


def measure_volume(labels: np.ndarray, phases, voxel_size: float) -> dict:
    """Steering measures of one label volume: phase -> {ln_esd_sigma, ln_esd_sigma_field, ln_chord_sigma,
    ln_esd_median, vf}.

    ``ln_esd_sigma`` and ``ln_chord_sigma`` are standard deviations of ln(ESD) of the watershed features
    and of ln(chord length) pooled over the three axes (dimensionless); ``ln_esd_sigma_field`` is the field
    measure, ``ln_esd_sigma`` of the features of at least DEFAULT_MIN_VOXELS voxels
    (:func:`~slicegan_core.metrics.size_spread`); ``ln_esd_median`` is the median of
    ln(ESD / 1 um); ``vf`` the phase fraction. NaN when a phase has fewer than two features or chords.
    """
    sizes = feature_sizes(labels, phases, voxel_size=voxel_size)
    chords = chord_lengths(labels, phases, voxel_size=voxel_size)
    out = {}
    for p in phases:
        d = sizes[p].diameters
        out[p] = {"ln_esd_sigma": fit_lognormal(d, n_boot=0).sigma,
                  "ln_esd_sigma_field": size_spread(sizes[p], min_voxels=DEFAULT_MIN_VOXELS, n_boot=0).sigma,
                  "ln_chord_sigma": fit_lognormal(chords[p].pooled, n_boot=0).sigma,
                  "ln_esd_median": float(np.median(np.log(d))) if d.size else math.nan,
                  "vf": float(np.mean(labels == p))}
    return out


def _band(per_value: list[list[float]]) -> dict:
    """Median, quartiles and min/max over seeds of each value (NaN-aware), plus the raw per-seed lists."""
    a = np.asarray(per_value, dtype=float)           # (n_values, n_seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # all-NaN rows stay NaN (-> null)
        return {"per_seed": a, "median": np.nanmedian(a, axis=1), "q25": np.nanpercentile(a, 25, axis=1),
                "q75": np.nanpercentile(a, 75, axis=1), "min": np.nanmin(a, axis=1), "max": np.nanmax(a, axis=1)}


def _spearman(values, medians) -> tuple[float, float]:
    x, y = np.asarray(values, float), np.asarray(medians, float)
    ok = np.isfinite(y)
    if ok.sum() < 3 or np.ptp(y[ok]) == 0:
        return math.nan, math.nan
    result = stats.spearmanr(x[ok], y[ok])
    return float(result.statistic), float(result.pvalue)


def _interpolation_errors(grid, trained, trained_range, medians, truth_medians) -> dict:
    """Errors at values strictly between trained values (neither trained nor outside the trained range).

    ``error_vs_truth``: measured median minus the truth's median at the same value. ``error_vs_trained``:
    measured median minus the straight line through the measured medians at the neighbouring trained values.
    """
    medians = np.asarray(medians, float)
    at_trained = [(t, medians[i]) for i, v in enumerate(grid) for t in trained if _same(v, t)]
    rows = []
    for i, v in enumerate(grid):
        if not _inside(v, trained_range) or any(_same(v, t) for t in trained):
            continue
        row = {"value": v, "measured": medians[i], "truth": None, "error_vs_truth": None,
               "from_trained": None, "error_vs_trained": None}
        if truth_medians is not None:
            row["truth"] = float(truth_medians[i])
            row["error_vs_truth"] = float(medians[i] - truth_medians[i])
        if len(at_trained) >= 2:
            xs, ys = zip(*sorted(at_trained))
            row["from_trained"] = float(np.interp(v, xs, ys))
            row["error_vs_trained"] = float(medians[i] - row["from_trained"])
        rows.append(row)

    def worst(key):
        errs = [abs(r[key]) for r in rows if r[key] is not None and math.isfinite(r[key])]
        return max(errs) if errs else None

    return {"interpolation": rows, "interp_max_abs_error_vs_truth": worst("error_vs_truth"),
            "interp_max_abs_error_vs_trained": worst("error_vs_trained")}


def _summary(report_phases: dict) -> dict:
    """Per measure: the lowest Spearman rho over phases (monotone only if every phase is)."""
    out = {}
    for m in MEASURES:
        rhos = [e[m]["spearman"] for e in report_phases.values()]
        finite = [r for r in rhos if r is not None and math.isfinite(r)]
        out[m] = {"spearman_min": min(finite) if finite else None,
                  "monotone_increasing": bool(finite) and len(finite) == len(rhos) and min(finite) == 1.0}
    return out


def _as_values(values) -> list[float]:
    try:
        grid = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=float))]
    except (TypeError, ValueError):
        raise ValueError(f"values must be numbers, got {values!r}; pass e.g. [0.1, 0.2, 0.3].") from None
    if not grid or not all(math.isfinite(v) for v in grid):
        raise ValueError(f"values must be a non-empty list of finite numbers, got {values!r}.")
    return sorted(set(grid))


def _as_seeds(seeds) -> list[int]:
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive count or a list of seeds, got {seeds!r}; use e.g. 4.")
        return list(range(int(seeds)))
    try:
        seed_list = list(seeds)
    except TypeError:
        seed_list = []
    if not seed_list or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0
                                for s in seed_list):
        raise ValueError(f"seeds must be a positive count or a list of non-negative integers, got {seeds!r}.")
    return [int(s) for s in dict.fromkeys(seed_list)]


def _as_shape(shape) -> tuple[int, int, int]:
    dims = (shape,) * 3 if isinstance(shape, (int, np.integer)) else tuple(shape)
    if len(dims) != 3 or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 16
                                 for d in dims):
        raise ValueError(f"shape must be three whole numbers of at least 16 voxels, got {shape!r}; "
                         "use e.g. (96, 96, 96).")
    return tuple(int(d) for d in dims)


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _SAME * max(1.0, abs(a), abs(b))


def _inside(v: float, trained_range) -> bool:
    lo, hi = trained_range
    return lo - _SAME * max(1.0, abs(lo)) <= v <= hi + _SAME * max(1.0, abs(hi))
