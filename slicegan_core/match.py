"""Inverse steering: which attribute value makes slices like a user's segmented micrograph?

The image (2D, or a 3D stack whose slices are used) is cut into tiles of the calibration's size and measured
with :func:`slicegan_core.calibrate.tile_statistics`; the mean over its tiles is compared with the model's
calibration curves, and the attribute value(s) with the smallest distance win. The match is then confirmed by
generating a volume at that value and measuring its slices the same way.

Distance (docs/matching.md): over the fitted statistics k (statistic x phase; by default mean and sigma of
ln chord and sigma of ln 2D feature size of every phase),

    d(a) = sqrt( mean_k ((x_k - m_k(a)) / s_k)^2 ),

with x_k the image's value, m_k(a) the calibrated mean of one generated tile at attribute value a and s_k the
calibrated standard deviation of one tile (seeds and positions together, averaged over the calibrated values).
d is in units of tile-to-tile spread: d <= 1 means the image is as close to the model's slices at a as those
slices are to each other.

Verdict (:func:`model_distance_band`): the distance is judged against the distances the model's own images of
the same number of tiles reach against its calibration at the match, simulated from the calibration's one-tile
standard deviations and seed bands: up to their 90th percentile "typical of the model's own slices", up to the
99th "at the edge", beyond "outside what the model produces".

Phase values of the image are mapped to the model's in sorted order; each area fraction must then lie within
the range of fractions the model makes, widened by ``VF_TOLERANCE`` (0.10) or by three tile-to-tile standard
deviations of the mean over the image's tiles, whichever is larger, or the image is refused.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np

from .metrics._checks import as_segmented
from .calibrate import STATISTIC_LABELS, STATISTICS, calibration_status, image_tiles, predict, tile_statistics, \
    volume_tiles

FIT_STATISTICS = ("ln_chord_mean", "ln_chord_sigma", "ln_ecd_sigma")
VF_TOLERANCE = 0.10        # largest |area fraction of image - model| per phase after the phase mapping
TYPICAL_QUANTILE = 0.90    # distances up to this quantile of the model's own images: "typical"
EDGE_QUANTILE = 0.99       # up to this one: "at the edge"; beyond: "outside what the model produces"
BAND_DRAWS = 2000          # simulated model images behind the band (seeded: the band is reproducible)
Z_WARNING = 2.0            # a fitted statistic with |z| above this is named in a warning
VERDICTS = {"typical": "typical of the model's own slices", "edge": "at the edge of what the model produces",
            "outside": "outside what the model produces"}
MAX_TILES = 48
GRID = 401                 # candidate values per attribute


def load_micrograph(path) -> np.ndarray:
    """Read a segmented image or stack (.png .tif .npy ...) as (H, W) or (D, H, W) labels; an RGB image with
    equal channels is read as grey labels. ValueError (one sentence) for anything that is not label data."""
    from .data import load_image

    array = load_image(path)
    if array.ndim in (3, 4) and array.shape[-1] == 3 and array.ndim - 1 in (2, 3) and \
            (array.ndim == 4 or min(array.shape[:2]) > 8):
        if np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]):
            array = array[..., 0]
        else:
            raise ValueError(f"'{path}' is a colour image; match needs a segmented image whose pixel values are "
                             "the phases (e.g. 0, 1, 2).")
    return as_label_image(array, f"'{path}'")


def read_micrograph(data: bytes, name: str) -> np.ndarray:
    """:func:`load_micrograph` of an uploaded file's bytes (``name`` gives only the file type, by its suffix)."""
    import tempfile
    from pathlib import Path

    suffix = Path(str(name)).suffix.lower()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return load_micrograph(path)
        except ValueError as error:       # name the user's file, not the temporary copy
            raise ValueError(str(error).replace(str(path), str(Path(str(name)).name))) from None


def as_label_image(image, name: str = "image") -> np.ndarray:
    """``image`` as integer labels (H, W) or (D, H, W), or ValueError naming what is wrong."""
    return as_segmented(image, name)


def map_phases(image: np.ndarray, model_phases) -> tuple[np.ndarray, dict[int, int]]:
    """Relabel ``image`` so that its sorted phase values become the model's sorted phase values.

    Returns the relabelled image and the map {image value: model value}; ValueError (one sentence) when the
    numbers of phases differ."""
    ours, theirs = np.unique(image), sorted(int(p) for p in model_phases)
    if ours.size != len(theirs):
        raise ValueError(f"The image has {ours.size} phase(s) (values {ours.tolist()}) but the model makes "
                         f"{len(theirs)} ({theirs}); segment the image into {len(theirs)} phases or choose a model "
                         f"trained on {ours.size}-phase data.")
    mapping = {int(a): int(b) for a, b in zip(ours, theirs)}
    lookup = np.searchsorted(ours, image)
    return np.asarray(theirs)[lookup], mapping


def micrograph_tiles(labels: np.ndarray, tile: int) -> list[np.ndarray]:
    """Tiles of a 2D image, or of up to 4 evenly spaced slices per axis of a 3D stack (at most MAX_TILES)."""
    if labels.ndim == 2:
        tiles = image_tiles(labels, tile, limit=MAX_TILES)
    else:
        tiles = []
        for axis in range(3):
            n = labels.shape[axis]
            for index in ((np.arange(min(4, n)) + 0.5) * n / min(4, n)).astype(int):
                tiles.extend(image_tiles(np.take(labels, int(index), axis=axis), tile, limit=4))
        if len(tiles) > MAX_TILES:
            tiles = [tiles[i] for i in np.linspace(0, len(tiles) - 1, MAX_TILES).round().astype(int)]
    if not tiles:
        raise ValueError(f"The image is {' x '.join(map(str, labels.shape))} pixels; the model's calibration "
                         f"compares tiles of {tile} x {tile} pixels, so give an image at least that large.")
    return tiles


def mean_statistics(tiles, phases, voxel_size: float) -> dict[str, dict[str, float]]:
    """statistic -> phase (str) -> mean over the tiles (NaN where no tile has a value)."""
    measured = [tile_statistics(t, phases, voxel_size) for t in tiles]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return {s: {str(p): float(np.nanmean([m[s][p] for m in measured])) for p in phases} for s in STATISTICS}


def distance(observed: dict, predicted: dict, scale: dict, keys) -> tuple:
    """RMS z-score over ``keys`` ((statistic, phase) pairs) and the z of each; entries that are NaN are skipped.

    ``predicted[stat][phase]["mean"]`` may be an array (one entry per candidate value): the distance is then an
    array too."""
    zs = {}
    for stat, phase in keys:
        x, m, s = observed[stat][phase], np.asarray(predicted[stat][phase]["mean"], float), scale[(stat, phase)]
        if math.isfinite(x) and math.isfinite(s) and s > 0 and np.all(np.isfinite(m)):
            zs[(stat, phase)] = (x - m) / s
    if not zs:
        return math.nan, zs
    d = np.sqrt(np.mean(np.square(np.stack(list(zs.values()))), axis=0))
    return (float(d) if d.ndim == 0 else d), {k: (float(v) if np.ndim(v) == 0 else v) for k, v in zs.items()}


def match(model, image, *, pixel_size: float | None = None, statistics=FIT_STATISTICS, confirm: bool = True,
          seed: int = 100, calibration: dict | None = None, step: float | None = None) -> dict:
    """Find the attribute value(s) whose generated slices look most like ``image``.

    Parameters
    ----------
    model : :class:`slicegan_core.Model`
        An n-phase model with attributes and a calibration in its model.json (``python -m slicegan_core
        calibrate MODEL``).
    image : array_like of int, shape (H, W) or (D, H, W)
        The user's segmented image or stack; at least one calibration tile (e.g. 128 x 128) large.
    pixel_size : float, optional
        Micrometres per pixel of the image; default the model's voxel size (needs the model's voxel size).
    statistics : sequence of str, default FIT_STATISTICS
        Which of :data:`slicegan_core.calibrate.STATISTICS` the distance uses (all phases of each).
    confirm : bool, default True
        Generate a volume at the match and measure it the same way (``generated`` column, ``confirmed``).
    seed : int, default 100
        Seed of the confirming volume (the calibration uses seeds 0, 1, ...).
    calibration : dict, optional
        Use this calibration instead of the model's own.
    step : float, optional
        Round the match to a multiple of ``step`` (e.g. the app's slider step) before the comparison and the
        confirming generation, so that the value reported is the value used; ``best_fit`` keeps the unrounded
        one.

    Returns
    -------
    dict
        ``match`` {attribute: value}, ``best_fit`` (the same before rounding to ``step``), ``distance`` (see
        the module docstring), ``confirmed_distance``, ``verdict`` {label ("typical", "edge", "outside"),
        text, band_text, distance, median, q90, q99, tiles, draws, share_z_over_2} (:func:`judge`),
        ``statistics`` statistic -> phase -> {image, predicted, band, generated, sd, z, fitted} (``z`` is None
        for statistics that are not fitted), ``phase_map``, ``warnings``, ``outside`` (bool), ``image``
        (shape, tiles, pixel size), and, not JSON: ``generated_slice`` (a (tile, tile) label array; only with
        ``confirm``), ``image_slice`` (the image, or the middle slice of a stack, in the model's phase values)
        and ``image_tile`` (its central (tile, tile) pixels: the same scale as ``generated_slice``).

    Examples
    --------
    >>> result = match(load_model("default"), load_micrograph("slice.png"))      # doctest: +SKIP
    >>> result["match"], round(result["distance"], 2)                            # doctest: +SKIP
    ({'alpha': 0.27}, 0.41)
    """
    started = time.perf_counter()
    names = tuple(getattr(model, "attribute_names", ()) or ())
    if not names:
        raise ValueError("This model has no attributes, so there is nothing to match; it makes one kind of "
                         "structure only.")
    if getattr(model, "image_type", "n-phase") != "n-phase":
        raise ValueError(f"match compares segmented images with label (n-phase) models; this model is "
                         f"{model.image_type}.")
    labels, mapping = map_phases(as_label_image(image), model.phase_values)
    note = None
    if calibration is None:
        calibration, note = calibration_status(model)
        if calibration is None:
            raise ValueError(f"Cannot match: {note}.")
    unknown = [s for s in statistics if s not in STATISTICS]
    if unknown or not statistics:
        raise ValueError(f"statistics must be some of {list(STATISTICS)}, got {list(statistics)!r}.")
    tile = int(calibration["tile"])
    model_dx = model.voxel_size_um
    if pixel_size is not None:
        if not isinstance(pixel_size, (int, float)) or isinstance(pixel_size, bool) or not pixel_size > 0 \
                or not math.isfinite(pixel_size):
            raise ValueError(f"pixel_size must be a positive number of micrometres, got {pixel_size!r}.")
        if not model_dx:
            raise ValueError("A pixel size needs the model's voxel size, which this model does not record; leave "
                             "it out to take one pixel as one voxel.")
    dx = float(pixel_size or model_dx or 1.0)
    if step is not None:
        _round_to_step(0.0, step, 0.0, 0.0)          # only checks step, before the work

    phases = sorted(int(p) for p in calibration["phases"])
    tiles = micrograph_tiles(labels, tile)
    observed = mean_statistics(tiles, phases, dx)

    sweeps = calibration["attributes"]
    _check_fractions(observed, sweeps, phases, mapping, len(tiles))
    keys = [(s, str(p)) for s in statistics for p in phases]
    scale = {k: _mean_sd(sweeps, *k) for k in keys}
    grids = {n: np.linspace(min(sweeps[n]["values"]), max(sweeps[n]["values"]), GRID) for n in sweeps}
    best = {n: float(np.median(grids[n])) for n in sweeps}
    for _ in range(3 if len(sweeps) > 1 else 1):          # coordinate descent (one pass for one attribute)
        for name in sweeps:
            scores = distance(observed, predict(calibration, {**best, name: grids[name]}), scale, keys)[0]
            if np.all(np.isnan(scores)):
                raise ValueError("None of the fitted statistics could be measured on the image (too few chords or "
                                 "features per phase); give a larger image.")
            best[name] = float(grids[name][int(np.nanargmin(scores))])
    best_fit = {n: round(v, 4) for n, v in best.items()}
    best = dict(best_fit) if step is None else {n: _round_to_step(v, step, grids[n][0], grids[n][-1])
                                                 for n, v in best_fit.items()}
    predicted = predict(calibration, best)
    d, zs = distance(observed, predicted, scale, keys)

    image_slice = labels if labels.ndim == 2 else labels[labels.shape[0] // 2]
    generated, confirmed, gen_slice = None, None, None
    if confirm:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            volume = model.generate(dict(best), seed=seed, shape=(tile,) * 3, periodic=False)
        per_axis = max(1, min(2, int(calibration.get("slices_per_axis", 2))))
        generated = mean_statistics(volume_tiles(volume, tile, per_axis), phases, float(model_dx or 1.0))
        confirmed = distance(observed, {s: {p: {"mean": generated[s][p]} for p in generated[s]} for s in generated},
                             scale, keys)[0]
        gen_slice = volume[tile // 2]

    table = {}
    for stat in STATISTICS:
        table[stat] = {}
        for p in phases:
            key, entry = (stat, str(p)), predicted[stat][str(p)]
            table[stat][str(p)] = {
                "image": observed[stat][str(p)], "predicted": entry["mean"], "band": [entry["q10"], entry["q90"]],
                "generated": generated[stat][str(p)] if generated else None, "sd": entry["sd"],
                "z": zs.get(key), "fitted": key in zs}
    messages = [note] if note else []
    at_edge = [n for n in best if best_fit[n] in (round(float(grids[n][0]), 4), round(float(grids[n][-1]), 4))]
    for n in at_edge:
        messages.append(f"The best {n} is at the end of the calibrated range [{grids[n][0]:g}, {grids[n][-1]:g}]; "
                        "the image may need a value the model was not trained for.")
    band = model_distance_band(calibration, best, list(zs), scale, len(tiles), grids)
    verdict = judge(d, band, len(tiles), tile)
    outside = verdict["label"] == "outside" or bool(at_edge)
    if verdict["label"] == "outside":
        worst = max(zs, key=lambda k: abs(zs[k])) if zs else None
        messages.append(f"The image lies outside what the model makes: its distance {d:.2f} is above "
                        + (f"{band['q99']:.2f}, what 99 % of the model's own images of this size reach"
                           if math.isfinite(band["q99"]) else "what the model's own images reach")
                        + (f"; most in {STATISTIC_LABELS[worst[0]]} of phase {worst[1]} (z = {zs[worst]:+.2f})."
                           if worst else "."))
    far = sorted((k for k in zs if abs(zs[k]) > Z_WARNING), key=lambda k: -abs(zs[k]))
    if far:
        share = band["share_z_over_2"]
        messages.append(
            f"{'This fitted statistic lies' if len(far) == 1 else 'These fitted statistics lie'} more than "
            f"{Z_WARNING:g} one-slice standard deviations from the model's prediction: "
            + ", ".join(f"{STATISTIC_LABELS[k[0]]} of phase {k[1]} (z = {zs[k]:+.2f})" for k in far)
            + (f" ({share:.0%} of the model's own images of this size have at least one such statistic)."
               if math.isfinite(share) else "."))
    return {
        "match": best, "best_fit": best_fit, "distance": d, "verdict": verdict, "confirmed_distance": confirmed,
        "outside": outside, "warnings": messages,
        "statistics": table, "fitted_statistics": list(statistics), "phase_map": {str(k): v for k, v in mapping.items()},
        "image": {"shape": list(labels.shape), "tiles": len(tiles), "tile": tile, "pixel_size_um": dx if (pixel_size or model_dx) else None},
        "calibrated_range": {n: [float(grids[n][0]), float(grids[n][-1])] for n in grids},
        "confirm_seed": seed if confirm else None, "seconds": round(time.perf_counter() - started, 2),
        "generated_slice": gen_slice, "image_slice": image_slice, "image_tile": central_tile(image_slice, tile),
    }


def central_tile(image: np.ndarray, tile: int) -> np.ndarray:
    """The central ``tile x tile`` pixels of a 2D image (all of it along a side that is shorter)."""
    top, left = max(0, (image.shape[0] - tile) // 2), max(0, (image.shape[1] - tile) // 2)
    return image[top: top + tile, left: left + tile]


def _round_to_step(value: float, step: float, low: float, high: float) -> float:
    """``value`` rounded to a multiple of ``step``, moved one step inwards if that leaves [low, high]."""
    if not (isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be a positive number, got {step!r}.")
    count = round(value / step)
    if count * step > high + 1e-12 and (count - 1) * step >= low - 1e-12:
        count -= 1
    elif count * step < low - 1e-12 and (count + 1) * step <= high + 1e-12:
        count += 1
    return round(count * step, 10)


def _expected_range(n: int) -> float:
    """Expected range (largest - smallest) of ``n`` standard normal draws: 1.128 for 2, 2.534 for 6 (the
    d2 of quality control); turns a seed band into a standard deviation."""
    x = np.linspace(-9.0, 9.0, 3601)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    return float(np.sum(1.0 - cdf ** n - (1.0 - cdf) ** n) * (x[1] - x[0]))


def model_distance_band(calibration: dict, attrs: dict, keys, scale: dict, n_tiles: int, grids: dict, *,
                        draws: int = BAND_DRAWS, seed: int = 0) -> dict:
    """The distances the model's own images of ``n_tiles`` tiles reach against its calibration at ``attrs``.

    Each fitted statistic k of such an image (the mean over its tiles) is drawn from a normal around the
    calibrated mean m_k at ``attrs`` with variance ``sd_k^2 / n + tau_k^2 + seed_sd_k^2 / seeds``: sd_k is the
    calibrated one-tile standard deviation; seed_sd_k = (seed_high - seed_low) / d2(seeds) the standard
    deviation of one calibration volume's mean, from its seed band; tau_k^2 = max(0, seed_sd_k^2 - sd_k^2 / T)
    (T tiles per calibration volume) the volume-to-volume part that more tiles of one image do not average
    away; seed_sd_k^2 / seeds the error of the calibrated mean itself. The statistics are drawn independently
    (the calibration stores no correlations). Each simulated image is then fitted like a user's image (the
    best value on ``grids``, one attribute at a time from ``attrs``) and its distance recorded.

    Returns
    -------
    dict
        ``median``, ``q90``, ``q99`` of the simulated distances, ``share_z_over_2`` (the share of simulated
        images with a fitted statistic of |z| > ``Z_WARNING``), ``tiles``, ``draws``; NaN entries when no
        fitted statistic has a calibrated spread.
    """
    seeds = max(2, int(calibration.get("seeds", 2)))
    per_volume = 3 * max(1, int(calibration.get("slices_per_axis", 1)))
    at = predict(calibration, attrs)
    d2 = _expected_range(seeds)
    usable, centre, spread = [], [], []
    for stat, phase in keys:
        entry, s = at[stat][phase], scale.get((stat, phase), math.nan)
        sd, low, high = entry["sd"], entry["seed_low"], entry["seed_high"]
        if not all(math.isfinite(v) for v in (entry["mean"], sd, low, high, s)) or s <= 0:
            continue
        seed_sd = (high - low) / d2
        between = max(0.0, seed_sd ** 2 - sd ** 2 / per_volume)
        usable.append((stat, phase))
        centre.append(entry["mean"])
        spread.append(math.sqrt(sd ** 2 / n_tiles + between + seed_sd ** 2 / seeds))
    empty = {"median": math.nan, "q90": math.nan, "q99": math.nan, "share_z_over_2": math.nan,
             "tiles": int(n_tiles), "draws": 0}
    if not usable:
        return empty
    rng = np.random.default_rng(seed)
    weights = np.array([scale[k] for k in usable])
    z = (np.array(centre) + rng.standard_normal((draws, len(usable))) * np.array(spread)) / weights   # (R, K)
    best_d = np.full(draws, np.inf)
    best_z = np.zeros_like(z)
    for name in grids:
        curves = predict(calibration, {**attrs, name: grids[name]})
        m = np.stack([np.asarray(curves[s][p]["mean"], float) for s, p in usable]) / weights[:, None]      # (K, G)
        m = np.where(np.isfinite(m), m, np.nan)
        d_sq = ((z ** 2).sum(1)[:, None] - 2 * z @ np.nan_to_num(m) + np.nan_to_num(m ** 2).sum(0)[None]) / len(usable)
        d_sq[:, ~np.all(np.isfinite(m), axis=0)] = np.inf
        index = np.argmin(d_sq, axis=1)
        d = np.sqrt(np.maximum(d_sq[np.arange(draws), index], 0.0))
        better = d < best_d
        best_d[better] = d[better]
        best_z[better] = z[better] - m[:, index].T[better]
    return {"median": float(np.median(best_d)), "q90": float(np.quantile(best_d, TYPICAL_QUANTILE)),
            "q99": float(np.quantile(best_d, EDGE_QUANTILE)),
            "share_z_over_2": float(np.mean(np.any(np.abs(best_z) > Z_WARNING, axis=1))),
            "tiles": int(n_tiles), "draws": int(draws)}


def judge(distance: float, band: dict, n_tiles: int, tile: int) -> dict:
    """The verdict on a match's ``distance`` against :func:`model_distance_band`'s ``band``: label
    ("typical", "edge", "outside"), a sentence with the band's numbers, and the band itself."""
    if not math.isfinite(distance):
        label = "outside"
    elif not math.isfinite(band["q99"]):
        label = "typical" if distance <= 1 else "edge" if distance <= 2 else "outside"    # no band: the old rule
    else:
        label = "typical" if distance <= band["q90"] else "edge" if distance <= band["q99"] else "outside"
    size = f"{n_tiles} tile{'s' if n_tiles != 1 else ''} of {tile}²"
    band_text = (f"the model's own images of this size ({size}) reach {band['median']:.2f} typically, at most "
                 f"{band['q90']:.2f} in 9 of 10 and {band['q99']:.2f} in 99 of 100" if math.isfinite(band["q99"])
                 else "the calibration has no spread to compare with: judged by distance 1 and 2")
    return {"label": label, "text": f"distance {distance:.2f}: {VERDICTS[label]} ({band_text})",
            "band_text": band_text, "distance": distance, **band}


def _mean_sd(sweeps: dict, stat: str, phase: str) -> float:
    """Tile-to-tile standard deviation of a statistic, averaged over every calibrated value of every sweep."""
    sds = [v for sweep in sweeps.values() for v in sweep["curves"][stat][phase]["sd"] if v is not None]
    sds = [v for v in sds if math.isfinite(v) and v > 0]
    return float(np.mean(sds)) if sds else math.nan


def fraction_tolerance(sweeps: dict, phase: str, n_tiles: int) -> float:
    """How far the image's area fraction of ``phase`` may lie outside the model's: ``VF_TOLERANCE`` or three
    tile-to-tile standard deviations of the mean of ``n_tiles`` tiles, whichever is larger."""
    sds = [v for sweep in sweeps.values() for v in sweep["curves"]["vf"][phase]["sd"] if v is not None]
    return max(VF_TOLERANCE, 3 * max(sds, default=0.0) / math.sqrt(n_tiles))


def _check_fractions(observed: dict, sweeps: dict, phases, mapping, n_tiles: int) -> None:
    """Refuse an image whose area fractions (after the phase map) are far from every fraction the model makes."""
    excess, worst = {}, None
    for p in phases:
        made = [v for sweep in sweeps.values() for v in sweep["curves"]["vf"][str(p)]["mean"] if v is not None]
        x = observed["vf"][str(p)]
        gap = max(0.0, min(made) - x, x - max(made)) if made else 0.0
        excess[p] = gap - fraction_tolerance(sweeps, str(p), n_tiles)
        if worst is None or excess[p] > excess[worst]:
            worst = p
    if excess[worst] > 0:
        image_vf = ", ".join(f"{observed['vf'][str(p)]:.2f}" for p in phases)
        model_vf = ", ".join(f"{np.mean([v for s in sweeps.values() for v in s['curves']['vf'][str(p)]['mean'] if v is not None]):.2f}"
                             for p in phases)
        raise ValueError(f"After mapping the image's phase values {list(mapping)} to the model's {list(phases)} in "
                         f"sorted order, its area fractions ({image_vf}) differ from the model's ({model_vf}) by more "
                         f"than the tolerance of {fraction_tolerance(sweeps, str(worst), n_tiles):.2f} (phase "
                         f"{worst}); check the segmentation and the order of the phase values, or use a model of "
                         "this material.")


def format_match(result: dict) -> str:
    """A short text report: the match, the distance, warnings and the per-statistic comparison."""
    lines = [f"match: {', '.join(f'{k} = {v:.3f}' for k, v in result['match'].items())}   "
             f"distance {result['distance']:.2f}"
             + (f" (confirmed by generating: {result['confirmed_distance']:.2f})"
                if result.get("confirmed_distance") is not None else "")
             + f"   [{result['image']['tiles']} tile(s) of {result['image']['tile']}², phases "
             + ", ".join(f"{a}->{b}" for a, b in result["phase_map"].items()) + "]"]
    if result.get("verdict"):
        lines.append(f"verdict: {result['verdict']['text']}")
    lines.append(f"{'statistic':>15} {'phase':>5} {'image':>8} {'predicted':>9} {'10-90 %':>15} {'generated':>9} {'z':>6}")
    for stat, per_phase in result["statistics"].items():
        for phase, e in per_phase.items():
            band = f"{_f(e['band'][0])}-{_f(e['band'][1])}"
            lines.append(f"{STATISTIC_LABELS[stat]:>15} {phase:>5} {_f(e['image']):>8} {_f(e['predicted']):>9} "
                         f"{band:>15} {_f(e['generated']):>9} {_f(e['z'], 2):>6}{'' if e['fitted'] else '  (not fitted)'}")
    for message in result["warnings"]:
        lines.append(f"warning: {message}")
    return "\n".join(lines)


def _f(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if abs(value) < 1000 else f"{value:.0f}"
