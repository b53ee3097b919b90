"""Calibration: what each attribute of a model does to the statistics of its 2D slices, stored in model.json.

For each attribute, a sweep over its trained range (the other attributes at the middle of theirs) generates
``seeds`` volumes per value and measures ``tile x tile`` slices of them with :func:`tile_statistics`, the same
measurement :mod:`slicegan_core.match` applies to a user's micrograph. Per value, statistic and phase the
calibration keeps the mean and standard deviation over all tiles (the spread one tile of that size shows,
seeds and positions together), the 10th/90th percentiles over tiles, and the band over seeds (lowest and
highest per-seed mean). The curves go into ``model.json`` under ``"calibration"`` with a fingerprint of the
weights they were measured on, so a calibration that no longer belongs to the weights (training went on) is
recognised (:func:`calibration_status`).

Statistics of one 2D tile, per phase (lengths in micrometres, or pixels when the voxel size is unknown):

===================  ===========================================================================
``vf``               area fraction of the phase
``ln_chord_mean``    mean of ln(chord length / 1 um) along both tile axes, border-cut chords left out
``ln_chord_sigma``   standard deviation of ln(chord length) (the same chords)
``ln_ecd_sigma``     standard deviation of ln(equivalent circle diameter) of the distance-watershed
                     2D features that do not touch the tile border
``islands``          edge-connected single-phase blobs of at most 4 pixels per million pixels
===================  ===========================================================================

The data path: generate -> metrics -> (calibrate) -> match.
"""
from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .metrics import chord_lengths, feature_sizes, fit_lognormal, island_density
from .metrics._checks import as_voxel_size
from .metrics.tiles import image_tiles  # noqa: F401  (match and fidelity import it from here)
from .modelfile import INFO_FILE
from .storage import atomic_write_text

CALIBRATION_VERSION = 1
STATISTICS = ("vf", "ln_chord_mean", "ln_chord_sigma", "ln_ecd_sigma", "islands")
STATISTIC_LABELS = {"vf": "area fraction", "ln_chord_mean": "mean ln chord", "ln_chord_sigma": "σ ln chord",
                    "ln_ecd_sigma": "σ ln 2D size", "islands": "islands / M px"}
DEFAULT_TILE = 128
DEFAULT_VALUES = 10
DEFAULT_SEEDS = 6
DEFAULT_SLICES = 4      # tiles per axis of each generated volume, spread evenly (12 per volume)


def tile_statistics(image, phases, voxel_size: float = 1.0) -> dict[str, dict[int, float]]:
    """The calibration statistics of one 2D label tile, per phase.

    Parameters
    ----------
    image : array_like of int, shape (H, W)
        One segmented 2D image (tile).
    phases : sequence of int
        Phase values to measure.
    voxel_size : float, default 1.0
        Pixel edge in micrometres; only ``ln_chord_mean`` depends on it (ln of lengths in micrometres).

    Returns
    -------
    dict
        statistic name (:data:`STATISTICS`) -> phase value -> float (NaN when a phase has fewer than two
        chords or features).

    Examples
    --------
    >>> stripes = np.zeros((32, 32), np.uint8); stripes[:, 8:16] = 1; stripes[:, 24:] = 1
    >>> s = tile_statistics(stripes, [0, 1])
    >>> s["vf"][1], round(s["ln_chord_mean"][0], 3), s["ln_chord_sigma"][0]
    (0.5, 2.079, 0.0)
    """
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image must be one 2D (H, W) tile, got shape {arr.shape}.")
    phases = [int(p) for p in phases]
    dx = as_voxel_size(voxel_size)
    chords = chord_lengths(arr, phases, voxel_size=dx)
    sizes = feature_sizes(arr, phases, voxel_size=dx)
    islands = island_density(arr, phases)
    out = {name: {} for name in STATISTICS}
    for p in phases:
        logs = np.log(chords[p].pooled) if chords[p].pooled.size else np.empty(0)
        out["vf"][p] = float(np.mean(arr == p))
        out["ln_chord_mean"][p] = float(logs.mean()) if logs.size >= 2 else math.nan
        out["ln_chord_sigma"][p] = float(logs.std(ddof=1)) if logs.size >= 2 else math.nan
        out["ln_ecd_sigma"][p] = fit_lognormal(sizes[p].diameters, n_boot=0).sigma
        out["islands"][p] = float(islands[p])
    return out


def volume_tiles(volume: np.ndarray, tile: int, per_axis: int) -> list[np.ndarray]:
    """``per_axis`` evenly spaced slices along each axis of a (D, H, W) volume, each cropped to its central
    ``tile x tile`` pixels (slices of a larger stack), as 2D tiles."""
    tiles = []
    for axis in range(3):
        n = volume.shape[axis]
        for index in ((np.arange(per_axis) + 0.5) * n / per_axis).astype(int):
            plane = np.take(volume, int(index), axis=axis)
            tiles.extend(image_tiles(plane, tile, limit=1))
    return tiles


def weights_fingerprint(model) -> str:
    """sha256 (first 16 hex digits) of the generator's weights: the calibration belongs to these weights.
    ``model`` is a :class:`~slicegan_core.Model` or a generator module."""
    generator = getattr(model, "generator", model)
    digest = hashlib.sha256()
    for name, tensor in sorted(generator.state_dict().items()):
        if name == "phase_offset" and not tensor.any():
            continue        # no fraction calibration: the fingerprint of models written before it existed
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def calibrate(model, values=DEFAULT_VALUES, seeds=DEFAULT_SEEDS, tile: int = DEFAULT_TILE,
              slices_per_axis: int = DEFAULT_SLICES, progress: bool = True) -> dict:
    """Measure each attribute's effect on the 2D-slice statistics of ``model``; returns the calibration.

    Parameters
    ----------
    model : :class:`slicegan_core.Model`
        An n-phase model with at least one attribute.
    values : int or dict, default 10
        Values per attribute, evenly spaced over its trained range; or ``{name: [values]}``.
    seeds : int, default 6
        Volumes per value (seeds 0..seeds-1).
    tile : int, default 128
        Tile edge in pixels; each volume is ``tile`` voxels per side and gives ``3 * slices_per_axis`` tiles.
        :func:`slicegan_core.match.match` cuts the user's image into tiles of this size.
    slices_per_axis : int, default 4
        Tiles per axis of each volume, evenly spaced (``tile / slices_per_axis`` voxels apart).
    progress : bool, default True
        tqdm bar over the generated volumes.

    Returns
    -------
    dict
        The JSON-ready ``calibration`` section (docs/matching.md): ``attributes -> name -> {values,
        other_attributes, curves: statistic -> phase -> {mean, sd, q10, q90, seed_low, seed_high}}`` plus
        ``tile``, ``seeds``, ``voxel_size_um``, ``phases``, ``weights`` (fingerprint) and ``step``.

    Examples
    --------
    >>> calibration = calibrate(load_model("default"), values=5, seeds=2)         # doctest: +SKIP
    >>> calibration["attributes"]["alpha"]["curves"]["ln_chord_sigma"]["1"]["mean"]  # doctest: +SKIP
    """
    names = tuple(getattr(model, "attribute_names", ()) or ())
    if not names:
        raise ValueError("This model has no attributes, so there is nothing to calibrate; it makes one kind of "
                         "structure only.")
    if getattr(model, "image_type", "n-phase") != "n-phase":
        raise ValueError(f"Calibration measures label (n-phase) models; this model is {model.image_type}.")
    for label, number, least in (("seeds", seeds, 2), ("tile", tile, 16), ("slices_per_axis", slices_per_axis, 1)):
        if isinstance(number, bool) or not isinstance(number, (int, np.integer)) or number < least:
            raise ValueError(f"{label} must be a whole number of at least {least}, got {number!r}.")
    if hasattr(model, "memory_needed"):    # each sample is one tile^3 volume in memory
        from .synthetic import check_memory
        try:
            check_memory((tile,) * 3, model.memory_needed((tile,) * 3), lambda side: model.memory_needed((side,) * 3))
        except ValueError as error:
            raise ValueError(f"tile {tile} is too large to calibrate with: {error} The default tile is 128.") from None
    grids = _value_grids(model, values)
    phases = list(model.phase_values)
    dx = float(model.voxel_size_um or 1.0)
    base = {n: sum(model.trained_range[n]) / 2 for n in names}
    started = time.perf_counter()
    jobs = [(n, v, s) for n in names for v in grids[n] for s in range(seeds)]
    per_tile = {}                          # (name, value, seed) -> list of tile statistics
    for name, value, seed in tqdm(jobs, desc="calibrating", disable=not progress, unit="volume"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            volume = model.generate({**base, name: value}, seed=seed, shape=(tile,) * 3, periodic=False)
        per_tile[(name, value, seed)] = [tile_statistics(t, phases, dx) for t in volume_tiles(volume, tile,
                                                                                               slices_per_axis)]
    attributes = {}
    for name in names:
        curves = {stat: {str(p): _summarise([[[t[stat][p] for t in per_tile[(name, v, s)]] for s in range(seeds)]
                                              for v in grids[name]])
                         for p in phases} for stat in STATISTICS}
        attributes[name] = {"values": grids[name], "other_attributes": {n: base[n] for n in names if n != name},
                            "curves": curves}
    return _json_ready({
        "version": CALIBRATION_VERSION, "package_version": __version__,
        "weights": weights_fingerprint(model), "step": (getattr(model, "info", {}) or {}).get("training", {}).get("steps"),
        "precision": getattr(model, "precision", None),
        "tile": int(tile), "seeds": int(seeds), "slices_per_axis": int(slices_per_axis),
        "voxel_size_um": dx if model.voxel_size_um else None, "phases": phases, "statistics": list(STATISTICS),
        "attributes": attributes, "seconds": round(time.perf_counter() - started, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })


def _value_grids(model, values) -> dict[str, list[float]]:
    names = model.attribute_names
    if isinstance(values, dict):
        unknown = set(values) - set(names)
        if unknown:
            raise ValueError(f"values names unknown attribute(s) {sorted(unknown)}; the model has {list(names)}.")
        grids = {}
        for n in names:
            given = values.get(n)
            if given is None:
                grids[n] = _even(model.trained_range[n], DEFAULT_VALUES)
                continue
            try:
                grid = sorted({float(v) for v in given})
            except (TypeError, ValueError):
                raise ValueError(f"values for {n} must be numbers, got {given!r}.") from None
            if len(grid) < 2 or not all(math.isfinite(v) for v in grid):
                raise ValueError(f"values for {n} must be at least two finite numbers, got {given!r}.")
            grids[n] = grid
        return grids
    if isinstance(values, bool) or not isinstance(values, (int, np.integer)) or values < 2:
        raise ValueError(f"values must be a count of at least 2 or {{name: [values]}}, got {values!r}.")
    return {n: _even(model.trained_range[n], int(values)) for n in names}


def _even(trained_range, count: int) -> list[float]:
    low, high = (float(v) for v in trained_range)
    if high <= low:
        raise ValueError(f"the trained range [{low:g}, {high:g}] is a single value, so the attribute cannot be "
                         "calibrated; train on at least two values.")
    return np.linspace(low, high, count).round(6).tolist()


def _summarise(per_value) -> dict:
    """per_value[v][s][t] -> per-value mean / sd / q10 / q90 over tiles and the band of per-seed means."""
    out = {k: [] for k in ("mean", "sd", "q10", "q90", "seed_low", "seed_high")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)          # all-NaN (a phase absent) -> NaN -> null
        for seeds in per_value:
            tiles = np.array([x for s in seeds for x in s], float)
            tiles = tiles[np.isfinite(tiles)]
            seed_means = [np.nanmean(s) for s in seeds]
            out["mean"].append(float(tiles.mean()) if tiles.size else math.nan)
            out["sd"].append(float(tiles.std(ddof=1)) if tiles.size > 1 else math.nan)
            out["q10"].append(float(np.percentile(tiles, 10)) if tiles.size else math.nan)
            out["q90"].append(float(np.percentile(tiles, 90)) if tiles.size else math.nan)
            out["seed_low"].append(float(np.nanmin(seed_means)))
            out["seed_high"].append(float(np.nanmax(seed_means)))
    return out


def _json_ready(value):
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value


# ---- stored with the model ---------------------------------------------------------------------------

def save_calibration(model_dir, calibration: dict) -> Path:
    """Write ``calibration`` into ``model_dir/model.json`` (atomically; the weights are not touched)."""
    path = Path(model_dir) / INFO_FILE
    if not path.is_file():
        raise ValueError(f"{model_dir} has no {INFO_FILE}; pass a model directory.")
    info = json.loads(path.read_text())
    info["calibration"] = calibration
    atomic_write_text(path, json.dumps(info, indent=2))
    return path


def calibrate_model_dir(model_dir, progress: bool = True, **options) -> dict:
    """Load the model in ``model_dir`` (a directory or a shipped model's name), calibrate it, store the result
    in its model.json and return it. ``options`` go to :func:`calibrate`."""
    from .generate import load_model

    model = load_model(model_dir)
    from .storage import check_writable
    check_writable(Path(model.path) / "model.json")     # before minutes of measuring, not after
    calibration = calibrate(model, progress=progress, **options)
    save_calibration(model.path, calibration)
    return calibration


def calibration_status(model) -> tuple[dict | None, str | None]:
    """(the model's calibration or None, a note or None): the note says why it is missing or stale."""
    calibration = (getattr(model, "info", None) or {}).get("calibration")
    where = getattr(model, "path", None) or "MODEL"
    if not calibration:
        return None, (f"the model has no calibration; make one with: python -m slicegan_core calibrate {where}")
    if not isinstance(calibration, dict) or calibration.get("version") != CALIBRATION_VERSION:
        return None, (f"the model's calibration has another format; recalibrate with: "
                      f"python -m slicegan_core calibrate {where}")
    problem = calibration_problem(calibration, getattr(model, "attribute_names", None))
    if problem:
        return None, (f"the model's calibration is damaged ({problem}); recalibrate with: "
                      f"python -m slicegan_core calibrate {where}")
    if calibration.get("weights") != weights_fingerprint(model):
        step = (model.info.get("training") or {}).get("steps")
        return calibration, (f"the calibration was measured at step {calibration.get('step')} and the weights "
                             f"have changed since (now step {step}); recalibrate with: "
                             f"python -m slicegan_core calibrate {where}")
    return calibration, None


def calibration_problem(calibration: dict, attribute_names=None) -> str | None:
    """What makes a ``calibration`` section unusable (None when it can be used): checked once, before any
    curve is read, so a damaged model.json gives one sentence instead of an error deep inside matching."""
    def numbers(values, allow_none=False) -> bool:
        return isinstance(values, list) and all(
            (allow_none and v is None) or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                           and math.isfinite(v)) for v in values)

    tile = calibration.get("tile")
    if isinstance(tile, bool) or not isinstance(tile, int) or not 8 <= tile <= 100_000:
        return f"its tile is {tile!r}, not a side of 8 pixels or more"
    phases = calibration.get("phases")
    if not isinstance(phases, list) or not phases or not all(isinstance(p, int) and not isinstance(p, bool)
                                                             for p in phases):
        return "it lists no phases"
    statistics = calibration.get("statistics")
    if not isinstance(statistics, list) or not statistics or not set(statistics) <= set(STATISTICS):
        return f"its statistics are {statistics!r}"
    sweeps = calibration.get("attributes")
    if not isinstance(sweeps, dict) or not sweeps:
        return "it has no attributes"
    if attribute_names is not None and set(sweeps) != set(attribute_names):
        return f"it calibrates {sorted(sweeps)} but the model has {list(attribute_names)}"
    for name, sweep in sweeps.items():
        values = sweep.get("values") if isinstance(sweep, dict) else None
        if not numbers(values) or not values or any(b <= a for a, b in zip(values, values[1:])):
            return f"attribute {name!r} has no increasing list of values"
        others = sweep.get("other_attributes")
        if not isinstance(others, dict) or not numbers(list(others.values())) or \
                set(others) != set(sweeps) - {name}:
            return f"attribute {name!r} has damaged other_attributes"
        curves = sweep.get("curves")
        for stat in statistics:
            per_phase = curves.get(stat) if isinstance(curves, dict) else None
            if not isinstance(per_phase, dict) or set(per_phase) != {str(p) for p in phases}:
                return f"attribute {name!r} has no {stat} curve for every phase"
            for entry in per_phase.values():
                if not isinstance(entry, dict) or not all(
                        numbers(entry.get(k), allow_none=True) and len(entry[k]) == len(values)
                        for k in ("mean", "sd", "q10", "q90", "seed_low", "seed_high")):
                    return f"attribute {name!r} has a damaged {stat} curve"
    return None


def predict(calibration: dict, attrs: dict[str, float]) -> dict:
    """Predicted tile statistics at ``attrs`` from the calibration curves (a value may be an array of candidate
    values: every entry is then an array of the same shape).

    With one attribute this is linear interpolation of its curves (values outside the calibrated range take the
    end value). With several, the sweeps are combined additively around the middle of the trained ranges:
    ``mean(a) = mean_1(a_1) + sum_i [mean_i(a_i) - mean_i(middle_i)]`` (an approximation that ignores
    interactions); ``sd`` and the bands come from the first attribute's sweep shifted the same way.

    Returns
    -------
    dict
        statistic -> phase (str) -> {mean, sd, q10, q90, seed_low, seed_high} (floats, NaN when unknown).
    """
    sweeps = calibration["attributes"]
    names = list(sweeps)
    unknown = set(attrs) - set(names)
    if unknown or set(names) - set(attrs):
        raise ValueError(f"attrs must give a value for each calibrated attribute {names}, got {sorted(attrs)}.")
    out = {}
    first = names[0]
    for stat in calibration["statistics"]:
        out[stat] = {}
        for phase in sweeps[first]["curves"][stat]:
            entry = {k: _interp(sweeps[first], stat, phase, k, attrs[first])
                     for k in ("mean", "sd", "q10", "q90", "seed_low", "seed_high")}
            shift = 0.0
            for name in names[1:]:
                middle = sweeps[first]["other_attributes"].get(name, attrs[name])
                shift += _interp(sweeps[name], stat, phase, "mean", attrs[name]) - \
                    _interp(sweeps[name], stat, phase, "mean", middle)
            out[stat][phase] = {k: (v + shift if k != "sd" else v) for k, v in entry.items()}
    return out


def _interp(sweep: dict, stat: str, phase: str, key: str, value):
    ys = np.array([math.nan if y is None else y for y in sweep["curves"][stat][phase][key]], float)
    xs = np.asarray(sweep["values"], float)
    ok = np.isfinite(ys)
    if not ok.any():
        return math.nan if np.ndim(value) == 0 else np.full(np.shape(value), math.nan)
    out = np.interp(value, xs[ok], ys[ok])
    return float(out) if np.ndim(out) == 0 else out


def describe_value(calibration: dict, name: str, value: float, statistic: str = "ln_chord_sigma") -> str:
    """One line for a slider: the predicted ``statistic`` (mean over phases) of one tile at ``name = value``,
    with the seed band (lowest-highest per-seed mean, phase-averaged), e.g. ``σ ln chord 0.62 (seeds
    0.61-0.63)``."""
    sweep = calibration["attributes"].get(name)
    if sweep is None:
        return ""
    attrs = {n: (value if n == name else sweep["other_attributes"][n]) for n in calibration["attributes"]}
    predicted = predict(calibration, attrs)[statistic]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, low, high = (float(np.nanmean([e[k] for e in predicted.values()]))
                           for k in ("mean", "seed_low", "seed_high"))
    return f"{STATISTIC_LABELS[statistic]} {mean:.3f} (seeds {low:.3f}–{high:.3f}; {calibration['tile']}² slice)"
