"""Compare a generated microstructure with real data: per-phase statistics and distances (report schema 1.0).

Modes (``report["mode"]``):

- ``"3d"``: real (D, H, W) against generated (D', H', W'): every statistic on both volumes.
- ``"2d_slices"``: real (H, W) image against generated volume. SliceGAN only ever matched 2D slices, so
  the generated side is measured on 2D sections: chords along the three axes (a chord of the volume along an
  axis is a chord of the slices along it), S2 along the axes (averaged), feature sizes as equivalent circle
  diameters (ECD) of ``n_slices`` evenly spaced slices per axis, surface as perimeter per area on those slices.
- ``"2d"``: real image against generated image.

See docs/report-schema.md for every key.
"""
from __future__ import annotations

import numpy as np
from scipy import stats
from tqdm.auto import tqdm

from ..metrics import (DEFAULT_MIN_VOXELS, chord_lengths, feature_sizes, fit_lognormal,
                       island_density, phase_fractions, size_spread, slice_island_density, specific_surface_area,
                       tiled_island_density,
                       tortuosity, two_point_correlation)
from ..metrics.islands import DEFAULT_MAX_SIZE
from ..metrics._checks import as_labels, as_phases, as_voxel_size
from ._report import SCHEMA_VERSION, json_safe, log_histograms


def compare(real, generated, phases=None, voxel_size: float = 1.0, *, tortuosity_factor: bool = False,
            n_slices: int = 8, n_boot: int = 200, seed: int = 0, progress: bool = False,
            min_voxels: int = DEFAULT_MIN_VOXELS) -> dict:
    """Per-phase statistics of real and generated label data and the distances between them.

    Parameters
    ----------
    real : array_like of int, shape (H, W) or (D, H, W)
        Real (training or held-out) label image or volume.
    generated : array_like of int, shape (D, H, W) (or (H, W) when real is 2D)
        Generated labels holding the same phase values.
    phases : sequence of int, optional
        Phase values to compare; default every value present in either input.
    voxel_size : float, default 1.0
        Voxel edge in micrometres for both inputs; lengths in the report are in micrometres.
    tortuosity_factor : bool, default False
        Also compute TauFactor tortuosity along axis 0 (slow: ~25 s per phase and input at 128^3 on 2 cores).
        In "2d_slices" mode the generated value is the median over the middle slice normal to each axis.
    n_slices : int, default 8
        Slices per axis of the generated volume whose ECDs are measured in "2d_slices" mode.
    n_boot : int, default 200
        Bootstrap resamples of the log-normal fits' confidence intervals.
    seed : int, default 0
        Bootstrap seed.
    progress : bool, default False
        Show a tqdm bar over the measurement steps.
    min_voxels : int, default DEFAULT_MIN_VOXELS (8)
        Minimum feature size in voxels (pixels for 2D sizes) of the field measure ``ln_esd_sigma_field_*``
        (:func:`~slicegan_core.metrics.size_spread`), applied alike to both sides; the all-features
        ``ln_esd_sigma_*`` stay beside it.

    Returns
    -------
    dict
        The JSON-ready report (schema in docs/report-schema.md): ``schema_version``, ``kind="compare"``,
        ``mode``, ``size_measure``, ``voxel_size_um``, ``real``/``generated`` shapes, ``phases`` keyed by the
        phase value as a string, and ``curves`` (S2 and ln-size histograms for the plots).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = (rng.random((32, 32, 32)) < 0.4).astype(np.uint8), (rng.random((32, 32, 32)) < 0.4).astype(np.uint8)
    >>> report = compare(a, b, n_boot=0)
    >>> report["mode"], sorted(report["phases"]), report["phases"]["1"]["s2_max_abs_diff"] < 0.02
    ('3d', ['0', '1'], True)
    """
    real_arr = as_labels(real, "real")
    gen_arr = as_labels(generated, "generated")
    dx = as_voxel_size(voxel_size)
    if isinstance(n_slices, bool) or not isinstance(n_slices, (int, np.integer)) or n_slices < 1:
        raise ValueError(f"n_slices must be a whole number >= 1, got {n_slices!r}.")
    if real_arr.ndim == 3 and gen_arr.ndim == 2:
        raise ValueError("generated is a 2D image but real is a 3D volume; pass a generated (D, H, W) volume.")
    mode = "3d" if real_arr.ndim == 3 else ("2d_slices" if gen_arr.ndim == 3 else "2d")
    if isinstance(min_voxels, bool) or not isinstance(min_voxels, (int, np.integer)) or min_voxels < 1:
        raise ValueError(f"min_voxels must be a whole number of voxels >= 1, got {min_voxels!r}.")
    if phases is None:
        wanted = sorted(set(np.unique(real_arr).tolist()) | set(np.unique(gen_arr).tolist()))
    else:
        wanted = as_phases(real_arr, phases)
    max_r = min(min(real_arr.shape), min(gen_arr.shape)) // 2
    if max_r < 1:
        raise ValueError(f"real {real_arr.shape} and generated {gen_arr.shape} must be at least 2 voxels along "
                         "every axis to compare two-point correlations.")

    steps = ["real", "generated"] + (["tortuosity"] if tortuosity_factor else [])
    bar = tqdm(steps, desc="compare", disable=not progress, leave=False)
    sides = {}
    for step in bar:
        bar.set_postfix_str(step)
        if step == "tortuosity":
            taus = {"real": _tortuosity(real_arr, wanted, sections=False),
                    "generated": _tortuosity(gen_arr, wanted, sections=mode == "2d_slices")}
            continue
        arr = real_arr if step == "real" else gen_arr
        sides[step] = _measure(arr, wanted, dx, max_r, slices=(mode == "2d_slices" and step == "generated"),
                               n_slices=int(n_slices), n_boot=n_boot, seed=seed, min_voxels=int(min_voxels))
    bar.close()
    islands = _islands(real_arr, gen_arr, wanted, mode)

    report_phases, curves = {}, {}
    for p in wanted:
        r, g = sides["real"][p], sides["generated"][p]
        if mode == "3d":                     # same axes on both sides: compare axis by axis
            s2_diff = float(np.max(np.abs(r["s2_axes"] - g["s2_axes"])))
        else:                                # 2D data vs 2D sections: direction-averaged S2
            s2_diff = float(np.max(np.abs(r["s2_axes"].mean(axis=0) - g["s2_axes"].mean(axis=0))))
        entry = {
            "vf_real": r["vf"], "vf_generated": g["vf"], "vf_abs_diff": abs(r["vf"] - g["vf"]),
            "s2_max_abs_diff": s2_diff,
            **_distances("ln_chord", r["chords"], g["chords"]),
            "ln_chord_sigma_real": r["chord_fit"].sigma, "ln_chord_sigma_generated": g["chord_fit"].sigma,
            "chord_mean_real": _mean(r["chords"]), "chord_mean_generated": _mean(g["chords"]),
            "n_chords_real": int(r["chords"].size), "n_chords_generated": int(g["chords"].size),
            "n_border_chords_real": r["n_border_chords"], "n_border_chords_generated": g["n_border_chords"],
            **_distances("ln_esd", r["sizes"], g["sizes"]),
            "ln_esd_mu_real": r["size_fit"].mu, "ln_esd_mu_generated": g["size_fit"].mu,
            "ln_esd_sigma_real": r["size_fit"].sigma, "ln_esd_sigma_generated": g["size_fit"].sigma,
            "ln_esd_sigma_diff": g["size_fit"].sigma - r["size_fit"].sigma,
            "ln_esd_sigma_ci_real": list(r["size_fit"].sigma_ci),
            "ln_esd_sigma_ci_generated": list(g["size_fit"].sigma_ci),
            "ln_esd_sigma_robust_real": r["size_fit"].sigma_robust,
            "ln_esd_sigma_robust_generated": g["size_fit"].sigma_robust,
            "ln_esd_sigma_field_real": r["field"].sigma, "ln_esd_sigma_field_generated": g["field"].sigma,
            "ln_esd_sigma_field_diff": g["field"].sigma - r["field"].sigma,
            "ln_esd_sigma_field_ci_real": list(r["field"].sigma_ci),
            "ln_esd_sigma_field_ci_generated": list(g["field"].sigma_ci),
            "ln_esd_sigma_robust_field_real": r["field"].sigma_robust,
            "ln_esd_sigma_robust_field_generated": g["field"].sigma_robust,
            "n_small_features_real": r["field"].n_small, "n_small_features_generated": g["field"].n_small,
            "n_features_real": int(r["sizes"].size), "n_features_generated": int(g["sizes"].size),
            "n_border_features_real": r["n_border_features"], "n_border_features_generated": g["n_border_features"],
            "ssa_real": r["ssa"], "ssa_generated": g["ssa"],
            "islands_per_million_real": islands["real"][p],
            "islands_per_million_generated": islands["generated"][p],
            "tortuosity_real": None, "tortuosity_generated": None, "tortuosity_ratio": None,
        }
        if tortuosity_factor:
            t_real, t_gen = taus["real"][p], taus["generated"][p]
            entry.update(tortuosity_real=t_real, tortuosity_generated=t_gen,
                         tortuosity_ratio=t_gen / t_real if np.isfinite(t_real) and np.isfinite(t_gen) else None)
        report_phases[str(p)] = entry
        curves[str(p)] = {
            "s2": {"r": r["s2_r"], "real": r["s2_axes"].mean(axis=0), "generated": g["s2_axes"].mean(axis=0)},
            "ln_chord_hist": log_histograms(r["chords"], g["chords"]),
            "ln_esd_hist": log_histograms(r["sizes"], g["sizes"]),
        }
    return json_safe({
        "schema_version": SCHEMA_VERSION,
        "kind": "compare",
        "mode": mode,
        "size_measure": "esd" if mode == "3d" else "ecd",
        "voxel_size_um": dx,
        "real": {"shape": list(real_arr.shape), "phase_values": np.unique(real_arr).tolist()},
        "generated": {"shape": list(gen_arr.shape), "phase_values": np.unique(gen_arr).tolist()},
        "tortuosity_axis": 0 if tortuosity_factor else None,
        "islands_max_size": DEFAULT_MAX_SIZE,
        "esd_min_voxels": int(min_voxels),
        "phases": report_phases,
        "curves": curves,
    })


def _islands(real_arr, gen_arr, phases, mode) -> dict:
    """Small islands per million voxels (pixels) of both sides, measured the same way: in "3d" on central
    crops of the common shape (pieces cut by the faces count, so sizes must match); in "2d_slices" the
    micrograph's 2D blobs, counted in tiles of the generated slices' size, against every slice of the
    generated volume along the three axes (of its central cube of the tile's size)."""
    if mode == "2d_slices":
        tile = min(real_arr.shape + gen_arr.shape)
        cube = gen_arr[tuple(slice((n - tile) // 2, (n - tile) // 2 + tile) for n in gen_arr.shape)]
        return {"real": tiled_island_density(real_arr, tile, phases), "generated": slice_island_density(cube, phases)}
    common = [min(a, b) for a, b in zip(real_arr.shape, gen_arr.shape)]

    def crop(arr):
        return arr[tuple(slice((n - c) // 2, (n - c) // 2 + c) for n, c in zip(arr.shape, common))]
    return {"real": island_density(crop(real_arr), phases), "generated": island_density(crop(gen_arr), phases)}


def _measure(arr, phases, dx, max_r, *, slices, n_slices, n_boot, seed, min_voxels) -> dict:
    """Per-phase raw statistics of one side; ``slices`` measures sizes/surface on 2D sections."""
    fractions = phase_fractions(arr, phases)
    chords = chord_lengths(arr, phases, voxel_size=dx)
    s2 = two_point_correlation(arr, phases, max_r=max_r, voxel_size=dx)
    if slices:
        sections = [np.take(arr, i, axis=axis) for axis in range(3)
                    for i in np.unique(np.linspace(0, arr.shape[axis] - 1, n_slices + 2).round().astype(int)[1:-1])]
        per_slice = [feature_sizes(s, phases, voxel_size=dx) for s in sections]
        surface = [specific_surface_area(s, phases, voxel_size=dx, method="faces_corrected") for s in sections]
        features = {p: [f[p] for f in per_slice] for p in phases}
        sizes = {p: np.concatenate([f[p].diameters for f in per_slice]) for p in phases}
        n_border = {p: sum(f[p].n_border for f in per_slice) for p in phases}
        ssa = {p: float(np.mean([s[p] for s in surface])) for p in phases}
    else:
        features = feature_sizes(arr, phases, voxel_size=dx)
        sizes = {p: features[p].diameters for p in phases}
        n_border = {p: features[p].n_border for p in phases}
        ssa = specific_surface_area(arr, phases, voxel_size=dx, method="faces_corrected")
    out = {}
    for p in phases:
        pooled = chords[p].pooled
        out[p] = {"vf": fractions[p], "chords": pooled, "n_border_chords": int(sum(chords[p].n_border)),
                  "chord_fit": fit_lognormal(pooled, n_boot=0),
                  "sizes": sizes[p], "n_border_features": int(n_border[p]),
                  "size_fit": fit_lognormal(sizes[p], n_boot=n_boot, seed=seed),
                  "field": size_spread(features[p], min_voxels=min_voxels, n_boot=n_boot, seed=seed),
                  "s2_r": s2[p].r, "s2_axes": s2[p].axes, "ssa": ssa[p]}
    return out


def _distances(prefix: str, real: np.ndarray, generated: np.ndarray) -> dict:
    """Wasserstein-1 and two-sample KS between ln(real) and ln(generated); None when a side is empty."""
    if real.size == 0 or generated.size == 0:
        return {f"{prefix}_wasserstein": None, f"{prefix}_ks": None, f"{prefix}_ks_pvalue": None}
    a, b = np.log(real), np.log(generated)
    ks = stats.ks_2samp(a, b)
    return {f"{prefix}_wasserstein": float(stats.wasserstein_distance(a, b)),
            f"{prefix}_ks": float(ks.statistic), f"{prefix}_ks_pvalue": float(ks.pvalue)}


def _mean(values: np.ndarray):
    return float(values.mean()) if values.size else None


def _tortuosity(arr: np.ndarray, phases, sections: bool) -> dict:
    """Tortuosity along axis 0, or (``sections``) the median over the middle slice normal to each axis."""
    if not sections:
        return {p: t.tau for p, t in tortuosity(arr, phases, axis=0).items()}
    per_slice = [tortuosity(np.take(arr, arr.shape[a] // 2, axis=a), phases, axis=0) for a in range(arr.ndim)]
    return {p: float(np.median([t[p].tau for t in per_slice])) for p in phases}
