"""Fidelity: how close a model's generated slices are to its training images, per phase, against stated
tolerances. Measured during training (a series, ``fidelity.jsonl`` beside ``events.jsonl``) and kept as a
verdict card (``fidelity`` in ``model.json``) on every trained model.

What is compared, and why on 2D slices: the critics only ever see 2D patches, and a 2D micrograph has no third
dimension to compare with, so both sides are measured the same way, on ``patch_size`` x ``patch_size`` tiles:
the training images' tiles (a 3D stack's slices along each axis) against slices of generated volumes along each
axis. Per phase:

==============  ==========================================================  ===================================
statistic       measured                                                    tolerance (pass when within)
==============  ==========================================================  ===================================
``vf``          area fraction                                               |d| <= 0.02
``mean_chord``  mean run length along both image axes (pixels)              |d| / training <= 10 %
``perimeter``   interface length per unit area (1/pixel)                    |d| / training <= 10 %
``islands``     pieces of at most 4 pixels per million pixels               <= 1.5 x training + 20
``s2``          largest |d S2(r)|, radial two-point correlation, 1 <= r <= 16  <= 0.02
``kept``        a phase of >= 0.5 % of the training pixels appears          |d vf| / training vf <= 30 %
==============  ==========================================================  ===================================

The tolerances are those of the project's fidelity goals for real micrographs (docs/fidelity.md). The
**fidelity distance** is the mean over phases and statistics of error / tolerance, each capped at 10 (0 =
identical, 1 = on average at the tolerance, 10 = everything ten times off or worse); the verdict passes when
every entry is within its tolerance. Islands count as error only above the training image's own density.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import numpy as np

from .metrics import chord_lengths, island_density, specific_surface_area
from .metrics.correlation import radial_two_point_stack

STATISTICS = ("vf", "mean_chord", "perimeter", "islands", "s2")
TOLERANCES = {"vf": 0.02, "mean_chord": 0.10, "perimeter": 0.10, "islands": (1.5, 20.0), "s2": 0.02,
              "kept": 0.30}
RARE_PHASE = 0.005          # phases at least this common must be kept within TOLERANCES["kept"]
S2_MAX_R = 16               # pixels: S2 compared up to this lag (short range, where structure differs)
REFERENCE_TILES = 48        # training tiles measured per dataset (spread evenly)
SLICES_PER_AXIS = 8         # generated slices measured per axis and volume
GENERATED_PATCHES = 2       # generated volumes are this many patches per side: one patch-size volume's phase
                            # fractions vary by more than the vf tolerance from seed to seed
CARD_VERSION = 1
MAX_RATIO = 10.0            # an entry adds at most this to the distance: one wild statistic does not hide the rest


def tile_statistics(tile: np.ndarray, n_phases: int, s2: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The fidelity statistics of one 2D tile of phase indices ``0..n_phases-1`` -> statistic -> (n_phases,)
    array (NaN where a phase is absent and a statistic needs it). Chords and S2 use the tile's pixels only.
    ``s2``: the tile's radial S2, (n_phases, lags), when already computed for many tiles at once."""
    tile = np.asarray(tile)
    phases = list(range(n_phases))
    chords = chord_lengths(tile, phases)
    perimeter = specific_surface_area(tile, phases)
    islands = island_density(tile, phases)
    if s2 is None:
        s2 = radial_two_point_stack(tile[None], phases, _s2_max_r(tile.shape))[0]
    return {"vf": np.array([np.mean(tile == p) for p in phases]),
            "mean_chord": np.array([chords[p].pooled.mean() if chords[p].pooled.size else math.nan for p in phases]),
            "perimeter": np.array([perimeter[p] for p in phases], float),
            "islands": np.array([islands[p] for p in phases], float),
            "s2": s2}


def _s2_max_r(shape) -> int:
    return min(S2_MAX_R, min(shape) // 2)


def pooled_statistics(tiles, n_phases: int) -> dict[str, np.ndarray]:
    """Mean of :func:`tile_statistics` over ``tiles`` (NaN-aware; S2 averaged per lag)."""
    tiles = [np.asarray(t) for t in tiles]
    s2 = [None] * len(tiles)
    for shape in {t.shape for t in tiles}:          # S2 of all same-shape tiles in one batched FFT
        where = [i for i, t in enumerate(tiles) if t.shape == shape]
        batch = radial_two_point_stack(np.stack([tiles[i] for i in where]), range(n_phases), _s2_max_r(shape))
        for i, row in zip(where, batch):
            s2[i] = row
    per_tile = [tile_statistics(t, n_phases, s2=row) for t, row in zip(tiles, s2)]
    if not per_tile:
        raise ValueError("No tiles to measure.")
    width = min(s["s2"].shape[1] for s in per_tile)
    out = {}
    for name in STATISTICS:
        stack = np.stack([s[name][:, :width] if name == "s2" else s[name] for s in per_tile])
        with warnings.catch_warnings():                 # an all-NaN column (absent phase) stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            out[name] = np.nanmean(stack, axis=0)
    return out


def reference_tiles(arrays, kind: str, patch_size: int, limit: int = REFERENCE_TILES) -> list[np.ndarray]:
    """``patch_size`` tiles of one training dataset (its phase-index arrays, as :class:`TrainingData` holds
    them): a 2D image's tiles, a 3D stack's slices along each axis, or each of three views' tiles."""
    from .calibrate import image_tiles
    planes = []
    for array in arrays:
        if array.ndim == 3:                     # a 3D stack (three views are 2D arrays)
            for axis in range(3):
                n = array.shape[axis]
                for index in ((np.arange(8) + 0.5) * n / 8).astype(int):
                    planes.append(np.take(array, int(index), axis=axis))
        else:
            planes.append(array)
    per_plane = max(1, limit // len(planes))
    tiles = [t for plane in planes for t in image_tiles(plane, patch_size, limit=per_plane)]
    return tiles[:max(limit, len(planes))]


def volume_slices(volume: np.ndarray, per_axis: int = SLICES_PER_AXIS) -> list[np.ndarray]:
    """``per_axis`` evenly spaced 2D slices along each axis of a (D, H, W) volume."""
    slices = []
    for axis in range(3):
        n = volume.shape[axis]
        for index in ((np.arange(per_axis) + 0.5) * n / per_axis).astype(int):
            slices.append(np.take(volume, int(index), axis=axis))
    return slices


def compare(reference: dict, generated: dict, phase_values) -> dict:
    """Per phase and statistic: training value, generated value, error / tolerance and pass; the fidelity
    distance and the verdict. ``reference`` / ``generated`` are :func:`pooled_statistics` results."""
    phases, entries, ratios = {}, [], []
    for index, value in enumerate(phase_values):
        row = {}
        for name in STATISTICS:
            entry, ratio = _entry(name, reference[name][index], generated[name][index])
            # A missing value (a phase absent from the generated slices) fails: it cannot be shown to match.
            entry["pass"] = bool(math.isfinite(ratio) and ratio <= 1.0)
            entry["error_over_tolerance"] = _round(ratio)
            row[name] = entry
            entries.append(entry["pass"])
            ratios.append(min(ratio, MAX_RATIO) if math.isfinite(ratio) else MAX_RATIO)
        ref_vf, gen_vf = float(reference["vf"][index]), float(generated["vf"][index])
        if ref_vf >= RARE_PHASE:
            kept = abs(gen_vf - ref_vf) / ref_vf <= TOLERANCES["kept"]
            row["kept"] = {"training": _round(ref_vf), "generated": _round(gen_vf), "pass": bool(kept)}
            entries.append(bool(kept))
        phases[str(int(value))] = row
    distance = float(np.mean(ratios)) if ratios else math.nan
    return {"phases": phases, "distance": _round(distance), "pass": bool(entries) and all(entries),
            # A vanished phase first: it is the failure that matters most.
            "failed": sorted((f"phase {p} {name}" for p, row in phases.items() for name, entry in row.items()
                              if not entry["pass"]), key=lambda item: not item.endswith(" kept"))}


def _entry(name: str, ref, gen) -> tuple[dict, float]:
    """One statistic of one phase: its JSON entry and error / tolerance (NaN when it cannot be computed)."""
    if name == "s2":
        finite = np.isfinite(ref).all() and np.isfinite(gen).all()
        error = float(np.max(np.abs(ref[1:] - gen[1:]))) if finite else math.nan    # S2(0) is vf, judged above
        return {"max_abs_difference": _round(error)}, error / TOLERANCES["s2"]
    ref, gen = float(ref), float(gen)
    entry = {"training": _round(ref), "generated": _round(gen)}
    if name == "vf":
        return entry, abs(gen - ref) / TOLERANCES["vf"]
    if name == "islands":
        factor, offset = TOLERANCES["islands"]
        allowance = factor * ref + offset
        entry["allowance"] = _round(allowance)
        return entry, max(0.0, gen - ref) / (allowance - ref)   # 0 at or below the training's, 1 at the allowance
    return entry, (abs(gen - ref) / (abs(ref) * TOLERANCES[name]) if ref else math.nan)


def references(data) -> list[dict]:
    """The training images' statistics the card compares with, one :func:`pooled_statistics` per dataset of
    ``data`` (:class:`~slicegan_core.data.TrainingData`). They never change during a run, so a run computes
    them once and passes them to every :func:`card`."""
    if data.image_type != "n-phase":
        raise ValueError("The fidelity verdict measures segmented (n-phase) models.")
    return [pooled_statistics(reference_tiles(arrays, data._kinds[index], data.patch_size), len(data.phase_values))
            for index, arrays in enumerate(data.sources)]


def card(model, data, step: int | None = None, seeds: int = 2, reference: list[dict] | None = None) -> dict:
    """The verdict card of ``model`` (a :class:`~slicegan_core.generate.Model` or anything with ``generate``)
    against ``data`` (:class:`~slicegan_core.data.TrainingData`): one comparison per dataset (its attribute
    values), ``seeds`` volumes of (GENERATED_PATCHES x ``patch_size``)^3 each. ``reference``: :func:`references`
    of ``data`` when already computed. JSON-ready; goes into model.json as ``fidelity``."""
    from .calibrate import image_tiles
    started = time.perf_counter()
    if data.image_type != "n-phase":
        raise ValueError("The fidelity verdict measures segmented (n-phase) models.")
    n_phases = len(data.phase_values)
    per_dataset = references(data) if reference is None else reference
    datasets = []
    for index, reference in enumerate(per_dataset):
        attrs = {n: float(f"{v:.6g}") for n, v in zip(data.attribute_names, data.attrs[index])}   # float32 -> as given
        slices = []
        for seed in range(seeds):
            volume = model.generate(attrs, seed=seed, shape=(GENERATED_PATCHES * data.patch_size,) * 3)
            indices = np.searchsorted(np.asarray(data.phase_values), volume)
            slices.extend(t for s in volume_slices(indices) for t in image_tiles(s, data.patch_size, limit=4))
        result = compare(reference, pooled_statistics(slices, n_phases), data.phase_values)
        datasets.append({"attrs": attrs, **result})
    return finish_card(datasets, step, time.perf_counter() - started)


def finish_card(datasets: list[dict], step: int | None, seconds: float) -> dict:
    """The card from per-dataset comparisons: verdict over all of them, the worst distance."""
    return {"version": CARD_VERSION, "step": step, "pass": all(d["pass"] for d in datasets),
            "distance": _round(max((d["distance"] for d in datasets if d["distance"] is not None),
                                   default=math.nan)),
            "tolerances": {k: list(v) if isinstance(v, tuple) else v for k, v in TOLERANCES.items()},
            "datasets": datasets, "seconds": round(seconds, 2),
            "measured": "patch-size tiles of the training images vs slices of generated patch-size volumes"}


def summary_line(card_: dict) -> str:
    """One line: verdict, distance and the failed entries (at most four)."""
    failed = [(f"{' '.join(f'{k}={v:g}' for k, v in d['attrs'].items())}: " if d["attrs"] else "") + item
              for d in card_["datasets"] for item in d["failed"]]
    head = f"fidelity {'PASS' if card_['pass'] else 'FAIL'}, distance {card_['distance']}"
    if not failed:
        return head
    more = f" and {len(failed) - 4} more" if len(failed) > 4 else ""
    return f"{head}; outside tolerance: {', '.join(failed[:4])}{more}"


def series_event(card_: dict) -> dict:
    """The card condensed for ``fidelity.jsonl``: step, distance, pass, and per dataset, phase and statistic
    the generated value (S2: its largest difference) with the training value."""
    event = {"step": card_["step"], "distance": card_["distance"], "pass": card_["pass"], "datasets": []}
    for d in card_["datasets"]:
        values = {}
        for phase, row in d["phases"].items():
            for name, entry in row.items():
                if name == "s2":
                    values[f"{name}/{phase}"] = [entry["max_abs_difference"], 0.0]
                elif name != "kept":
                    values[f"{name}/{phase}"] = [entry["generated"], entry["training"]]
        event["datasets"].append({"attrs": d["attrs"], "distance": d["distance"], "values": values})
    return event


def verdict(model_path, datasets, seeds: int = 2, write: bool = True) -> dict:
    """The verdict card of a saved model against its training data, on demand (any model): ``datasets`` are
    :class:`~slicegan_core.data.DatasetSpec` (paths + the attribute values they were trained at). With
    ``write`` the card is stored in the model's model.json under ``verdict`` (atomically). Returns the card."""
    from .data import load_training_data
    from .generate import load_model
    from .modelfile import update_info
    model = load_model(model_path)
    if model.image_type != "n-phase":
        raise ValueError(f"The fidelity verdict measures segmented (n-phase) models; this model is {model.image_type}.")
    data = load_training_data(datasets, image_type="n-phase", patch_size=model.config.patch_size)
    if tuple(data.phase_values) != tuple(model.phase_values):
        raise ValueError(f"The data's phase values {list(data.phase_values)} are not the model's "
                         f"{list(model.phase_values)}; give the images the model was trained on.")
    if tuple(data.attribute_names) != tuple(model.attribute_names):
        raise ValueError(f"Give each dataset the model's attributes {list(model.attribute_names)} with --attr "
                         f"(got {list(data.attribute_names)}).")
    if write:
        from .storage import check_writable
        check_writable(Path(model.path) / "model.json")
    result = card(model, data, step=(model.info.get("training") or {}).get("steps"), seeds=seeds)
    if write:
        update_info(model.path, verdict=result)
    return result


def banner(card_: dict | None, training: dict | None = None) -> tuple[str, str]:
    """(level, one paragraph) for a model's verdict card: level "pass", "partial" (passes for some datasets'
    attribute values, fails for others), "fail" or "none". ``training``: model.json's "training" section, which
    tailors the advice to what the run already did."""
    if not card_:
        return "none", ("This model has no fidelity verdict (it was not measured against its training images); "
                        "make one with: python -m slicegan_core verdict MODEL --data IMAGE --attr NAME=VALUE.")
    step = f" at step {card_['step']}" if card_.get("step") is not None else ""
    if card_.get("pass"):
        return "pass", (f"Fidelity verdict{step}: every statistic of the generated slices is within tolerance of "
                        f"the training images (distance {card_['distance']}).")
    datasets = card_.get("datasets", [])
    passed = [d for d in datasets if d["pass"]]
    where = ""
    if passed and len(datasets) > 1:
        def label(d):
            return ", ".join(f"{k} {v:g}" for k, v in d["attrs"].items())
        where = (f" It passes at {'; '.join(label(d) for d in passed)} and fails at "
                 f"{'; '.join(label(d) for d in datasets if not d['pass'])}.")
    return ("partial" if where else "fail"), (f"Fidelity verdict{step}: {summary_line(card_).split('; ', 1)[-1]} (distance "
                    f"{card_['distance']}; 0 = identical, 1 = at the tolerance).{where} There, volumes from this "
                    "model differ from its training images by more than the tolerances: train longer, or check "
                    "those statistics before you rely on them. " + " ".join(remedies(card_, training))).strip()


def remedies(card_: dict, training: dict | None = None) -> list[str]:
    """What to retrain with for the statistics outside tolerance, one sentence per kind, each a setting that
    moved that statistic on the real-micrograph cases (docs/real-micrographs.md). ``training`` (model.json's
    "training" section, optional): a setting the run already had is not advised again."""
    from .train import FRACTION_WEIGHT_FIT, ISLAND_MARGIN_ADVICE, ISLAND_SPARSE
    failed = {(phase, name) for d in card_.get("datasets", []) for phase, row in d.get("phases", {}).items()
              for name, entry in row.items() if not entry.get("pass", True)}
    names = {name for _, name in failed}
    advice = []
    if "kept" in names:
        advice.append(f"A phase that (nearly) vanished: retrain with --set fraction_penalty={FRACTION_WEIGHT_FIT:g}, "
                      "which keeps a rare phase in the output (docs/real-micrographs.md, \"A rare phase\").")
    if "vf" in names:
        # The calibration came after many models were trained, and costs nothing in training, so it is named
        # first; the penalty (which changes training, and cost a fine composite some surface) second.
        # A vanished phase fails vf too: the sentence above has already named the penalty.
        penalty = ("the fraction penalty above" if "kept" in names
                   else f"--set fraction_penalty={FRACTION_WEIGHT_FIT:g}")
        advice.append("Phase fractions: a model trained without --set fraction_calibration=true (the cpu preset's "
                      "default; `info` lists its offsets) does not correct its output's fractions, so retrain with "
                      f"it (docs/real-micrographs.md, \"Phase-fraction calibration\"); if it had it, {penalty} "
                      "holds each volume's fractions to the training image's in training (it cost a fine composite "
                      "some surface: compare afterwards); and give a larger image or several, since the critics "
                      "see random patches of it (docs/real-micrographs.md, \"Volume fraction\").")
    # The slice count helped where a phase's own image has few small islands (SOFC anode) and coarsened a phase
    # that has thousands per million of its pixels (composite), so it is advised for the former only.
    sparse = sorted({phase for d in card_.get("datasets", []) for phase, row in d.get("phases", {}).items()
                     if not row.get("islands", {}).get("pass", True) and _per_phase_million(row) <= ISLAND_SPARSE})
    island_count = ((training or {}).get("island_penalty") or {}).get("loss")
    if sparse and island_count == "margin":
        advice.append(f"Small islands in phase {', '.join(sparse)}, whose training images have few: this run "
                      "already pushed on them with the margin penalty on the slices' small pieces; on a SOFC anode "
                      "training runs of the same settings differed by about 7 % of the allowance per phase, so "
                      "train again with another --set seed=N and compare (docs/real-micrographs.md, \"Which "
                      "count, from the data\").")
    elif sparse:
        advice.append(f"Small islands in phase {', '.join(sparse)}, whose training images have few: "
                      f"retrain with {ISLAND_MARGIN_ADVICE}, which pushes only on the small 2D pieces of the "
                      "slices, the one-pixel cut ends of thin features included (on a SOFC anode it met the "
                      "islands goal in one of three training runs and came within 7 % of it in the others, "
                      "docs/real-micrographs.md, \"The SOFC anode's islands: a penalty on the small pieces' "
                      "margins\"); compare the surface afterwards.")
    # Spheres' pores came out too thick with fewer small islands than their slice: the automatic penalty was
    # erasing real small pockets, and without it their chord went from +14 % to +8 % of the truth's.
    erased = sorted({phase for d in card_.get("datasets", []) for phase, row in d.get("phases", {}).items()
                     if _coarse(row.get("mean_chord")) and _below_training(row.get("islands"))})
    if erased:
        advice.append(f"Phase {', '.join(erased)} comes out coarser than its training images and with fewer small "
                      "islands: if the model was trained with the island penalty (the cpu preset's default), it "
                      "may be erasing real small features; retrain with --set island_penalty=0.0 "
                      "(docs/real-micrographs.md, \"Island weights in a closed loop\").")
    if names & {"mean_chord", "perimeter", "s2"}:
        advice.append("Feature sizes (chords, perimeter, S2): train longer, and with a 3D scan train on the stack "
                      "rather than one slice (docs/real-micrographs.md, \"One small image\").")
    return advice


def _coarse(entry: dict | None) -> bool:
    """A failed mean-chord entry whose generated chord is longer than the training images'."""
    return bool(entry) and not entry.get("pass", True) and (entry.get("generated") or 0) > (entry.get("training") or 0)


def _below_training(entry: dict | None) -> bool:
    """An islands entry with fewer generated small islands than the training images have."""
    return bool(entry) and entry.get("generated") is not None and entry.get("training") is not None \
        and entry["generated"] < entry["training"]


def _per_phase_million(row: dict) -> float:
    """A phase's small islands in its training images per million pixels of that phase (inf if absent)."""
    fraction = (row.get("vf") or {}).get("training") or 0.0
    islands = (row.get("islands") or {}).get("training") or 0.0
    return islands / fraction if fraction > 0 else math.inf


def _round(value) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 5)
