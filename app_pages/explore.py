"""Explore: steer a trained model, look at the 3D volume and its cuts, measure grain sizes, export.

Widgets and layout only: models, volumes and statistics come from slicegan_core (cached), the 3D scene from
slicegan_core.scene. Everything is keyed by (model, attributes, seed, shape, periodic).
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
import warnings
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots
from stpyvista import stpyvista

from slicegan_core import fidelity, jobs, load_model, scene, synthesize
from slicegan_core.data import load_image
from slicegan_core.calibrate import STATISTIC_LABELS, calibration_status, describe_value
from slicegan_core.config import check_voxel_size
from slicegan_core.export import provenance, save_volume, sidecar_files
from slicegan_core.match import VERDICTS, match, read_micrograph

try:  # the metrics package is optional here: without it the page shows the volume only
    from slicegan_core.metrics import compare_size_spread, log_bin_edges, log_ticks, phase_statistics, size_spread
except ImportError:
    compare_size_spread = phase_statistics = size_spread = None

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = Path(os.environ.get("SLICEGAN_MODELS_DIR", ROOT / "models"))
RUNS_DIR = Path(os.environ.get("SLICEGAN_RUNS_DIR", ROOT / "runs"))
VIEW_SIZES = (32, 48, 64, 96, 128)
EXPORT_SIZES = (128, 192, 256, 384)
FORMATS = {".tif": "TIFF (ImageJ / Fiji)", ".npy": "NumPy .npy", ".vti": "VTK .vti (ParaView)",
           ".dream3d": "DREAM3D 6 .dream3d (+ .xdmf for ParaView)", ".zarr": "OME-Zarr 0.4 (napari, Fiji)"}
FEW_GRAINS = 100  # grains per phase below which the ESD histogram is coarse: a hint suggests a larger volume
SECONDS_PER_VOXEL = 2e-6  # first guess for export progress, replaced by this machine's measured speed


# ---- cached work -----------------------------------------------------------------------------------------

def model_stamp(path: str) -> float:
    """Changes when a training run writes a new checkpoint into the model directory."""
    return (Path(path) / "model.safetensors").stat().st_mtime


@st.cache_resource(show_spinner=False)
def web_export_ready() -> bool:
    scene.preload_web_export()
    return True


@st.cache_resource(max_entries=4, show_spinner=False)
def get_model(path: str, stamp: float):
    model = load_model(path)
    # The first generation of a shape builds its kernels; do that for the other slider sizes in the
    # background while the page shows the default one.
    model.warm_up([side for side in VIEW_SIZES if side != 64 and side <= 128])
    return model


@st.cache_data(max_entries=48, show_spinner=False)
def get_volume(path: str, stamp: float, attrs: tuple, seed: int, shape: tuple, periodic: bool) -> np.ndarray:
    with warnings.catch_warnings():  # out-of-range values are shown on the page instead
        warnings.simplefilter("ignore")
        return get_model(path, stamp).generate(dict(attrs), seed=seed, shape=shape, periodic=periodic)


@st.cache_data(max_entries=48, show_spinner=False)
def get_statistics(path: str, stamp: float, attrs: tuple, seed: int, shape: tuple, periodic: bool):
    model = get_model(path, stamp)
    volume = get_volume(path, stamp, attrs, seed, shape, periodic)
    return phase_statistics(volume, model.phase_values, voxel_size=model.voxel_size_um or 1.0, s2=False,
                            n_boot=100, seed=seed)


@st.cache_data(max_entries=16, show_spinner=False)
def get_truth_statistics(recipe_json: str, sigma: float, seed: int, shape: tuple, voxel_size: float):
    """Statistics of the synthetic generator's volume at this sigma (the truth the model was trained on)."""
    recipe = json.loads(recipe_json)
    truth = synthesize(shape=shape, sigma=sigma, median_esd=recipe["median_esd"],
                       phase_fractions=tuple(recipe["phase_fractions"]), periodic=True, seed=seed)
    return phase_statistics(truth.labels, list(range(len(recipe["phase_fractions"]))), voxel_size=voxel_size,
                            s2=False, n_boot=100, seed=seed)


@st.cache_data(max_entries=8, show_spinner=False)
def get_training_statistics(path: str, phase_values: tuple, voxel_size: float):
    """Statistics of one training image or stack (centre crop of at most 128^3 or 1024^2): chords compare
    directly with the generated volume's; feature sizes only for a 3D stack (2D gives circle diameters)."""
    labels = load_image(path)
    if labels.ndim not in (2, 3) or labels.dtype.kind not in "biu":
        return None  # colour-coded labels or intensities: nothing comparable to show
    limit = 128 if labels.ndim == 3 else 1024
    labels = labels[tuple(slice(max(0, (n - limit) // 2), max(0, (n - limit) // 2) + limit) for n in labels.shape)]
    return phase_statistics(labels, list(phase_values), voxel_size=voxel_size, s2=False, n_boot=100), labels.ndim


def matching_dataset(model_path: str, attrs: dict) -> str | None:
    """The file of the training dataset with exactly these attribute values, when it is still on disk."""
    for spec in jobs.model_datasets(model_path):
        same = set(spec.attrs) == set(attrs) and all(abs(spec.attrs[k] - attrs[k]) < 1e-6 for k in attrs)
        if same and len(spec.paths) == 1 and Path(spec.paths[0]).is_file():
            return spec.paths[0]
    return None


@st.cache_data(max_entries=8, show_spinner=False)
def get_export(path: str, stamp: float, attrs: tuple, seed: int, shape: tuple, periodic: bool,
               suffix: str, voxel_size_um: float | None) -> tuple[str, bytes]:
    """(zip name, zip bytes) of the volume file plus its JSON provenance sidecar; ``voxel_size_um`` (micrometres,
    None = unknown) goes into the file's metadata."""
    model = get_model(path, stamp)
    volume = get_volume(path, stamp, attrs, seed, shape, periodic)
    return export_zip(model, volume, dict(attrs), seed, shape, periodic, suffix, voxel_size_um)


@st.cache_resource(max_entries=4, show_spinner=False)
def get_calibration(path: str, stamp: float) -> tuple:
    """(calibration or None, note or None) of the model: see slicegan_core.calibrate.calibration_status."""
    return calibration_status(get_model(path, stamp))


SLIDER_STEP = 0.005


def run_match(path: str, stamp: float):
    """A micrograph was dropped: match it, put the matched value(s) on the slider(s), keep the result."""
    upload = st.session_state.get("match_upload")
    st.session_state.pop("match_result", None)
    st.session_state.pop("match_error", None)
    if upload is None:
        return
    try:
        result = match(get_model(path, stamp), read_micrograph(upload.getvalue(), upload.name), step=SLIDER_STEP)
    except ValueError as error:
        st.session_state.match_error = str(error)
        return
    for name, value in result["match"].items():   # already on the slider's steps: the slider shows what is reported
        st.session_state[f"attr_{name}"] = round(value, 3)
    st.session_state.match_result = (path, upload.name, result)


def model_name(path: str) -> str:
    """models/default -> "default"; runs/NAME/model -> "NAME"."""
    path = Path(path)
    return path.parent.name if path.name == "model" else path.name


def export_zip(model, volume, attrs: dict, seed: int, shape, periodic: bool, suffix: str,
               voxel_size_um: float | None) -> tuple[str, bytes]:
    label = "".join(f"_{k}{v:g}" for k, v in attrs.items())      # empty for a model without attributes
    stem = f"{model_name(model.path)}{label}_seed{seed}_{'x'.join(map(str, shape))}{'_periodic' * periodic}"
    buffer = BytesIO()
    with tempfile.TemporaryDirectory() as folder:
        target = save_volume(Path(folder) / f"{stem}{suffix}", volume, voxel_size_um,
                             provenance(model, attrs, seed, shape, periodic))
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            extras = [target.with_name(name) for name in sidecar_files(target, volume, voxel_size_um)]
            tree = sorted(target.rglob("*")) if target.is_dir() else []       # a .zarr is a folder of chunks
            for file in (target, *tree, target.with_name(target.name + ".json"), *extras):
                archive.write(file, file.relative_to(folder).as_posix())
    return f"{stem}_{suffix.lstrip('.')}.zip", buffer.getvalue()      # one name per format: downloads never collide


def available_models() -> dict[str, str]:
    """{model directory: label}: shipped models first, then training runs that have a checkpoint."""
    found = {}
    for folder in sorted(MODELS_DIR.glob("*/model.json")):
        found[str(folder.parent)] = f"{folder.parent.name} (shipped)"
    for run in jobs.list_runs(RUNS_DIR):
        if run.has_model:
            found[str(run.run_dir / "model")] = f"run {run.name} ({run.state}, step {run.step})"
    return found


# ---- page -------------------------------------------------------------------------------------------------

def new_seed():
    st.session_state.seed = int(np.random.default_rng().integers(0, 100_000))


def jump(key: str):
    """A trained-value pill was clicked: move the slider there and let the pill go."""
    if st.session_state.get(f"{key}_jump") is not None:
        st.session_state[key] = st.session_state[f"{key}_jump"]
        st.session_state[f"{key}_jump"] = None


web_export_ready()
models = available_models()
if "open_model" in st.session_state:  # "Open in Explore" on the Train page
    wanted = st.session_state.pop("open_model")
    models.setdefault(wanted, f"run {Path(wanted).parent.name}")
    st.session_state.model_path = wanted
if not models:
    st.error(f"No model found in {MODELS_DIR} or {RUNS_DIR}; train one on the Train page.")
    st.stop()

sidebar = st.sidebar
model_path = sidebar.selectbox("Model", list(models), format_func=models.get, key="model_path",
                              persist_state="session")
stamp = model_stamp(model_path)
model = get_model(model_path, stamp)
info = model.info
voxel_size = model.voxel_size_um
phases = model.phases if model.image_type == "n-phase" else []
if not phases:
    st.error(f"This page shows n-phase (label) models; {model_name(model_path)} is {model.image_type}.")
    st.stop()
names = {int(p["value"]): p["name"] for p in phases}

card_title = ", ".join(f"{n} {lo:.3g} to {hi:.3g}" for n, (lo, hi) in model.trained_range.items()) or "no attribute"
with sidebar.expander(f"Model card: {model.image_type}, {card_title}"):
    lines = [f"**Image type** {model.image_type}", "**Voxel size** "
             + (f"{voxel_size:g} µm" if voxel_size else "not set (lengths in voxels)")]
    for name in model.attribute_names:
        low, high = model.trained_range[name]
        trained = ", ".join(f"{v:.3g}" for v in model.trained_values[name])
        lines.append(f"**{name}** trained at {trained}; range {low:.3g} to {high:.3g}")
    training = info.get("training", {})
    if training:
        lines.append(f"**Training** {training.get('steps')} steps in {training.get('wall_time_s', 0) / 3600:.1f} h")
    lines.append("**Training data**")
    for dataset in info.get("training_data", {}).get("datasets", []):
        attrs_text = ", ".join(f"{k} = {v:.3g}" for k, v in dataset.get("attrs", {}).items())
        shapes = " + ".join("×".join(map(str, s)) for s in dataset.get("shapes", []))
        lines.append(f"- {' + '.join(Path(p).name for p in dataset.get('paths', []))} ({dataset.get('kind')} "
                     f"{shapes}): {attrs_text}")
    if jobs.model_recipe(model_path, info):
        lines.append("Synthetic recipe known: the truth is shown under Grain statistics.")
    st.markdown("\n".join(line if line.startswith("- ") else line + "  " for line in lines))

level, verdict_text = fidelity.banner(info.get("verdict"), info.get("training"))   # before anything is generated or exported
if level == "fail":
    st.warning(verdict_text, icon=":material/report:")
elif level == "partial":
    st.info(verdict_text, icon=":material/report:")
elif level == "pass":
    st.caption(f":material/verified: {verdict_text}")
elif not jobs.model_recipe(model_path, info):           # the default model is judged by its own report
    st.caption(verdict_text)

sidebar.subheader("Structure")


def attribute_sliders(suffix: str, default_index: int) -> dict[str, float]:
    """One slider per attribute (beyond the trained range too) and a pill per trained value to jump to."""
    values = {}
    for name in model.attribute_names:
        low, high = model.trained_range[name]
        span = max(high - low, 0.1)
        trained = [round(v, 3) for v in model.trained_values[name]] or [round((low + high) / 2, 3)]
        lowest = 0.0 if low >= 0 and low - span / 2 < 0 else round(low - span / 2, 2)
        highest = round(high + span / 2, 2)
        key = f"attr_{name}{suffix}"
        if not lowest <= st.session_state.get(key, np.nan) <= highest:  # first visit, or another model's range
            st.session_state[key] = trained[min(default_index, len(trained) - 1)]
        values[name] = sidebar.slider(f"{name}{' (B)' if suffix else ''}", lowest, highest,
                                      step=SLIDER_STEP, format="%.3f", key=key, persist_state="session")
        if calibration and name in calibration["attributes"]:   # the value in measured units
            sidebar.caption(f"predicted {describe_value(calibration, name, values[name])}",
                            help="Mean over phases of one generated slice of the calibration's size; the band is "
                                 "the lowest to highest mean over the calibration's seeds. From the model's "
                                 "calibration (python -m slicegan_core calibrate).")
        sidebar.pills(f"Trained {name} values (click to jump)", trained, format_func=lambda v: f"{v:g}",
                      key=f"{key}_jump", on_change=jump, args=(key,))
    return values


calibration, calibration_note = get_calibration(model_path, stamp)
first_trained = model.trained_values.get(model.attribute_names[0], []) if model.attribute_names else []
attrs_a = attribute_sliders("", default_index=len(first_trained) // 2)     # {} for a model without attributes
if "seed" not in st.session_state:
    st.session_state.seed = 7
seed = int(sidebar.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="seed",
                                persist_state="session"))
sidebar.button("New seed", on_click=new_seed, icon=":material/casino:", width="stretch")
side = sidebar.select_slider("Volume size (voxels per side)", VIEW_SIZES, value=64, key="side",
                             persist_state="session")
periodic = sidebar.toggle("Periodic (opposite faces continue)", value=False, key="periodic",
                          persist_state="session")
if periodic and side % model.voxels_per_latent:
    side = max(model.voxels_per_latent, side // model.voxels_per_latent * model.voxels_per_latent)
    sidebar.caption(f"Periodic volumes need multiples of {model.voxels_per_latent} voxels: using {side}.")
shape = (side, side, side)
compare = bool(model.attribute_names) and sidebar.toggle("A/B: compare two values (same seed)", value=False)
attrs_b = attribute_sliders("_b", default_index=len(first_trained))\
    if compare else None

# ---- volumes -------------------------------------------------------------------------------------------

cases = [("A", attrs_a)] + ([("B", attrs_b)] if compare else [])
for label, attrs in cases:
    for message in model.out_of_range(attrs):
        st.warning(f"{label + ': ' if compare else ''}{message}", icon=":material/warning:")
started = time.perf_counter()
volumes = [get_volume(model_path, stamp, tuple(attrs.items()), seed, shape, periodic) for _, attrs in cases]
generate_s = time.perf_counter() - started
if generate_s > 0.05:  # a real generation, not a cache hit: remember this machine's speed for exports
    st.session_state.seconds_per_voxel = generate_s / (len(volumes) * np.prod(shape))


def describe(attrs: dict) -> str:
    return ", ".join(f"{k} = {v:.3g}" for k, v in attrs.items()) or "no attribute"


@st.fragment
def views(volumes, shape):
    """3D view(s) with phase toggles and a slab; only this part reruns when those change."""
    controls = st.columns([3, 1, 2], vertical_alignment="bottom")
    shown = controls[0].pills("Phases shown", list(names), format_func=names.get, selection_mode="multi",
                              default=list(names), key="shown_" + "_".join(map(str, names)))
    axis_name = controls[1].selectbox("Slab along", ["none", "x", "y", "z"], key="slab_axis")
    crop = None
    if axis_name != "none":
        axis = scene.AXES.index(axis_name)
        first, last = controls[2].slider("Voxels kept", 0, shape[axis] - 1, (0, shape[axis] * 2 // 3),
                                         key=f"slab_{axis_name}_{shape[axis]}")
        crop = {axis: (first, last)}
    legend = " ".join(f"<span style='color:{p['colour']}'>■</span> {p['name']}" for p in phases)
    st.markdown(legend, unsafe_allow_html=True)
    for column, (label, attrs), volume in zip(st.columns(len(volumes)), cases, volumes):
        with column:
            if compare:
                st.markdown(f"**{label}**: {describe(attrs)}")
            plotter = scene.volume_plotter(volume, phases, shown=shown, crop=crop, voxel_size_um=voxel_size,
                                           window_size=(640, 460 if compare else 520))
            stpyvista(plotter, key=f"view_{label}")
    length, edge = scene.triad_length(shape, voxel_size), f"{shape[2]} voxels"
    st.caption(f"Axes: x (orange), y (green), z (blue), each arrow {length:g} {'µm' if voxel_size else 'voxels'} "
               f"long. The volume is {edge}" + (f" = {shape[2] * voxel_size:g} µm" if voxel_size else "")
               + " per edge; x-y cuts are at a height z, y-z cuts at a depth x.")


@st.fragment
def cuts(volumes, shape):
    """x-y and y-z cuts at chosen slice indices (this part reruns alone when they move)."""
    left, right = st.columns(2)
    z_index = left.slider("x-y cut at z", 0, shape[0] - 1, shape[0] // 2, key=f"cut_z_{shape[0]}")
    x_index = right.slider("y-z cut at x", 0, shape[2] - 1, shape[2] // 2, key=f"cut_x_{shape[2]}")
    for (label, attrs), volume in zip(cases, volumes):
        left, right = st.columns(2)
        prefix = f"{label}: " if compare else ""
        left.image(scene.cut_image(volume, phases, 0, z_index), caption=f"{prefix}x-y cut at z = {z_index}",
                   width="stretch")
        right.image(scene.cut_image(volume, phases, 2, x_index), caption=f"{prefix}y-z cut at x = {x_index}",
                    width="stretch")


st.markdown(f"#### {model_name(model_path)} · {' vs '.join(describe(a) for _, a in cases)} · seed {seed} · {side}³"
            f"{' · periodic' if periodic else ''}")
if compare:
    views(volumes, shape)
    cuts(volumes, shape)
else:
    left, right = st.columns([3, 2])
    with left:
        views(volumes, shape)
    with right:
        cuts(volumes, shape)
first_load_s = None if st.session_state.get("app_loaded") else \
    time.perf_counter() - st.session_state.get("first_run_started", time.perf_counter())    # set by app.py
st.caption((f"Generated in {generate_s:.2f} s" if generate_s > 0.05 else "From the cache")
           + (f"; opening the page took {first_load_s:.0f} s (starting PyTorch and loading the model, once per "
              "server)" if first_load_s and first_load_s > 3 else ""))

# ---- match an image -------------------------------------------------------------------------------------

st.subheader("Match an image")
if calibration is None:
    st.info(f"Matching needs the model's calibration: {calibration_note} (or, for a run trained here, the "
            "Train page's 'Calibrate for matching' button).")
else:
    st.caption("Drop a segmented micrograph (2D image or 3D stack; phase values are mapped to the model's in sorted "
               f"order, one pixel = one voxel): the {', '.join(model.attribute_names)} whose generated slices look "
               "most like it is set on the slider. Distance: RMS over the fitted statistics of (image − model) in "
               "tile-to-tile standard deviations (docs/matching.md).")
    if calibration_note:
        st.warning(calibration_note, icon=":material/warning:")
    st.file_uploader("Micrograph to match", type=["png", "tif", "tiff", "npy"], key="match_upload",
                     on_change=run_match, args=(model_path, stamp))
    if st.session_state.get("match_error"):
        st.error(st.session_state.match_error, icon=":material/error:")
    matched = st.session_state.get("match_result")
    if matched and matched[0] == model_path:
        _, source, result = matched
        on_slider = ", ".join(f"{k} = {v:.3f}" for k, v in result["match"].items())   # the slider's format
        fits = ", ".join(f"{v:.4g}" for v in result["best_fit"].values())
        st.success(f"Matched {on_slider} (set on the slider; best fit {fits}, rounded to the slider's step of "
                   f"{SLIDER_STEP:g}): distance {result['distance']:.2f} (confirmed by generating: "
                   f"{result['confirmed_distance']:.2f}), from {result['image']['tiles']} tile(s) of "
                   f"{result['image']['tile']}² pixels.", icon=":material/target:")
        verdict = result["verdict"]
        badge = {"typical": "green", "edge": "orange", "outside": "red"}[verdict["label"]]
        st.markdown(f":{badge}-badge[{VERDICTS[verdict['label']]}] Distance {result['distance']:.2f}; "
                    f"{verdict['band_text']}.",
                    help="The band: distances that images of the model itself, of as many tiles as yours, reach "
                         "against its calibration at the matched value (simulated from the calibration's one-slice "
                         "spread and seed bands; docs/matching.md, \"Verdict\").")
        for message in result["warnings"]:
            st.warning(message, icon=":material/warning:")
        tile, shown = result["image"]["tile"], result["image_tile"]
        height, width = result["image_slice"].shape
        left, right = st.columns(2)
        left.image(scene.cut_image(shown[None], phases, 0, 0), width="stretch",
                   caption=f"your image: {source}" + (f", central {shown.shape[0]} × {shown.shape[1]} of {height} × "
                                                      f"{width} pixels" if shown.shape != (height, width) else ""))
        right.image(scene.cut_image(result["generated_slice"][None], phases, 0, 0), width="stretch",
                    caption=f"generated at {on_slider}, seed {result['confirm_seed']}, {tile} × {tile} voxels")
        st.caption(f"Same scale: 1 pixel = 1 voxel. Both pictures show {tile} × {tile} pixels, the size of one "
                   "calibration tile, at the same width; the match uses all tiles of your image.")
        rows = [{"statistic": STATISTIC_LABELS[stat], "phase": names.get(int(phase), phase),
                 "your image": entry["image"], "model (predicted)": entry["predicted"],
                 "10–90 % of model slices": f"{entry['band'][0]:.3g} to {entry['band'][1]:.3g}",
                 "generated": entry["generated"],
                 "z": f"{entry['z']:+.2f}" if entry["z"] is not None else "—", "fitted": entry["fitted"]}
                for stat, per_phase in result["statistics"].items() for phase, entry in per_phase.items()]
        number = st.column_config.NumberColumn
        st.dataframe(rows, hide_index=True, height="content", column_config={     # all 15 rows, no scrolling
            "your image": number(format="%.3f", help="Mean of the statistic over your image's tiles."),
            "model (predicted)": number(format="%.3f", help="Calibrated mean of one generated slice at the "
                                                            "matched value."),
            "10–90 % of model slices": st.column_config.TextColumn(help="80 % of the model's slices at the matched "
                                                                        "value lie in this range."),
            "generated": number(format="%.3f", help="Mean over slices of one volume generated at the match "
                                                    f"(seed {result['confirm_seed']})."),
            "z": st.column_config.TextColumn(help="(your image − model) / the model's one-slice standard "
                                                  "deviation; only for fitted statistics (— otherwise). |z| > 2 is "
                                                  "warned about."),
            "fitted": st.column_config.CheckboxColumn(help="Whether the statistic enters the distance. Area "
                                                           "fractions are checked instead; islands are reported "
                                                           "only.")})
        st.caption("z: how many standard deviations of one model slice your image's value lies from the model's "
                   "(— for statistics that are not fitted). fitted: the statistic enters the distance, the RMS of "
                   "the fitted z's; area fraction and islands are shown for comparison only.")

# ---- statistics -----------------------------------------------------------------------------------------

st.subheader("Grain statistics")
recipe = jobs.model_recipe(model_path, info)
unit = "µm" if voxel_size else "voxels"
if phase_statistics is None:
    st.info("The metrics module is not available in this version; statistics are not shown.")
else:
    # (label, {phase value: PhaseStatistics}, style): generated A solid, B dashed; truth / training data grey
    series = []
    for label, attrs in cases:
        key = (model_path, stamp, tuple(attrs.items()), seed, shape, periodic)
        with st.spinner(f"Measuring grain sizes{' of ' + label if compare else ''}..."):
            series.append((f"generated {label}" if compare else "generated", get_statistics(*key),
                           {"dash": "dash" if label == "B" else "solid", "fill": label == "A"}))
        sigma = next(iter(attrs.values()), -1.0)       # no attribute: no synthetic truth to overlay
        if recipe and len(attrs) == 1 and sigma >= 0:
            try:
                with st.spinner("Synthesising the truth at this value..."):
                    truth = get_truth_statistics(json.dumps(recipe), float(sigma), seed, shape, voxel_size or 1.0)
                series.append((f"truth {label}" if compare else "synthetic truth", truth,
                               {"dash": "dashdot" if label == "B" else "dot", "colour": "#333333"}))
            except ValueError as error:   # e.g. a spread so wide that its largest grains outgrow this volume
                st.caption(f"No synthetic truth at {label or 'this value'}: {error}")
        elif not recipe and (source := matching_dataset(model_path, attrs)):
            training = get_training_statistics(source, model.phase_values, voxel_size or 1.0)
            if training:
                series.append((f"training data {label}" if compare else "training data", training[0],
                               {"dash": "dashdot" if label == "B" else "dot", "colour": "#333333",
                                "chords_only": training[1] == 2}))
    if not recipe:
        st.caption("This model carries no synthetic recipe, so there is no ground truth to overlay; the "
                   "training data is overlaid when the attribute values are those of a training dataset.")

    sized = [entry for entry in series if not entry[2].get("chords_only")]
    for column, (label, statistics, _) in zip(st.columns(len(sized)), sized):
        spread = size_spread(statistics, n_boot=0)
        column.metric(f"σ of ln ESD, {label}", f"{spread.sigma:.3f}", help=(
            f"The field's measure: features of at least {spread.min_voxels} voxels (DREAM3D's Minimum Size; "
            "smaller pieces are below what the distance watershed resolves as grains), all phases pooled, grains "
            "cut by the border left out. Generated and truth are measured the same way; the truth's value is "
            "close to its alpha, not equal to it (docs/metrics-validation.md)."))
        column.caption(f"field measure, ≥ {spread.min_voxels} voxels · all features: {spread.sigma_all:.3f} "
                       f"({spread.n_small} of {spread.n + spread.n_small} features are smaller)")
    verdicts = 0      # each generated volume against the reference (truth or training data) listed after it
    for (label, statistics, style), (reference, ref_statistics, ref_style) in zip(sized, sized[1:]):
        if "colour" in style or "colour" not in ref_style:
            continue
        verdict = compare_size_spread(statistics, ref_statistics, seed=seed)
        if verdict.within is None:
            st.caption(f"No verdict for {label}: too few grains to fit a width.")
            continue
        verdicts += 1
        low, high = verdict.band
        badge = ":green-badge[within]" if verdict.within else ":orange-badge[outside]"
        st.markdown(f"**{label[:1].upper() + label[1:]}** {verdict.generated.sigma:.3f} is {badge} the "
                    f"{reference}'s seed band {low:.3f} to {high:.3f} (field measure; gap {verdict.difference:+.3f}, "
                    f"all features {verdict.difference_all:+.3f}).")
    if verdicts:
        st.caption("Seed band: where another volume of the truth of this size would land 95 % of the time (its "
                   "bootstrap interval widened by √2). A gap in the field measure means the generated grains vary "
                   "more (+) or less (−) in size than the truth's; a larger all-features gap on top of it comes "
                   "from pieces under the minimum size: for the default model mostly single voxels that touch a "
                   "grain of their phase only at an edge or corner, between grains of the others "
                   "(bench/small_features.py).")
    rows = []
    for label, statistics, style in series:
        for value, stat in statistics.items():
            low, high = stat.size_fit.sigma_ci
            sizes = not style.get("chords_only")  # 2D training images: circle diameters, not comparable
            rows.append({"volume": label, "phase": names.get(value, value),
                         "fraction": round(stat.volume_fraction, 3),
                         "grains": len(stat.sizes.diameters) if sizes else None,
                         f"median ESD ({unit})": round(float(np.exp(stat.size_fit.mu)), 2) if sizes else None,
                         "σ fit ESD": round(stat.size_fit.sigma, 3) if sizes else None,
                         "σ 95% CI": f"{low:.3f} to {high:.3f}" if sizes else None,
                         f"mean chord ({unit})": round(stat.chords.mean, 2),
                         "σ fit chords": round(stat.chord_fit.sigma, 3),
                         "islands / M voxels": round(stat.islands_per_million) if sizes else None})
    st.dataframe(rows, hide_index=True, height="content")       # every row on screen, no scrolling
    st.caption("σ = standard deviation of ln(size), the quantity alpha steers. ESD = equivalent-sphere diameter "
               "of the grains found by a distance-watershed split of each phase; grains cut by the border are "
               "left out. Islands: single-phase pieces of at most 4 voxels (face-connected) per million voxels, "
               "the speckle that widens the measured ESD spread.")

    def histograms() -> go.Figure:
        """Rows: grain ESD, chord length; one column per phase; every series as a density of ln(size) on
        log-spaced bins shared within a panel, snapped between the sizes the voxel grid allows (log_bin_edges:
        no empty bins by construction) and drawn as exact steps; ticks 1, 2, 5, 10, ... labelled in full."""
        measures = [(lambda s: s.sizes.diameters, "grain ESD"), (lambda s: s.chords.pooled, "chord length")]
        figure = make_subplots(2, len(phases), subplot_titles=[p["name"] for p in phases], shared_yaxes=True,
                               vertical_spacing=0.2)
        for row, (measure, title) in enumerate(measures, start=1):
            for column, phase in enumerate(phases, start=1):
                data = [(label, measure(stats[int(phase["value"])]), style) for label, stats, style in series
                        if row == 2 or not style.get("chords_only")]
                pooled = np.concatenate([d[d > 0] for _, d, _ in data])
                if pooled.size < 2 or pooled.min() == pooled.max():
                    continue
                edges = log_bin_edges(pooled)
                for label, sizes, style in data:
                    counts, _ = np.histogram(sizes, bins=edges)
                    if counts.sum() < 2:
                        continue
                    density = counts / (counts.sum() * np.diff(np.log(edges)))
                    figure.add_trace(go.Scatter(         # one step per bin, from its lower to its upper edge
                        x=edges, y=np.append(density, density[-1]), mode="lines", name=label, legendgroup=label,
                        showlegend=row == 1 and column == 1,
                        line={"shape": "hv", "color": style.get("colour", phase["colour"]), "width": 2,
                              "dash": style["dash"]}, fill="tozeroy" if style.get("fill") else None),
                        row=row, col=column)
                ticks = log_ticks(edges[0], edges[-1])
                figure.update_xaxes(type="log", title_text=f"{title} ({unit})", tickvals=ticks,
                                    ticktext=[f"{v:g}" for v in ticks], row=row, col=column)
            figure.update_yaxes(title_text="density of ln(size)", row=row, col=1)
        figure.update_layout(height=600, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                             legend={"orientation": "h", "y": -0.16, "x": 0})
        return figure

    st.plotly_chart(histograms(), key="histograms")
    grains = [len(stat.sizes.diameters) for _, statistics, style in series if not style.get("chords_only")
              for stat in statistics.values()]          # per phase of every volume with an ESD histogram
    if grains and min(grains) < FEW_GRAINS:
        st.caption(f":material/info: Few grains at this volume size ({min(grains)} to {max(grains)} per phase): "
                   + ("choose a larger volume in the sidebar for a smoother histogram." if side < max(VIEW_SIZES)
                      else "the ESD histogram stays coarse; an exported larger volume measures more grains."))

# ---- export ------------------------------------------------------------------------------------------

st.subheader("Export")
left, middle, voxel_column, right = st.columns([2, 2, 2, 3], vertical_alignment="bottom")
formats = [f for f in FORMATS if f != ".dream3d" or model.image_type == "n-phase"]   # DREAM3D: labels only
suffix = left.selectbox("Format", formats, format_func=FORMATS.get, key="export_format")
sizes = {side: f"as shown ({side}³)"} | {s: f"{s}³" for s in EXPORT_SIZES if s > side}
export_side = middle.selectbox("Size", list(sizes), format_func=sizes.get, key=f"export_size_{side}")
if st.session_state.get("export_voxel_model") != model_path or "export_voxel_size" not in st.session_state:
    # a model's own voxel size, or unknown; again after another page (Streamlit drops an unshown widget's value)
    st.session_state.export_voxel_model = model_path
    st.session_state.export_voxel_size = voxel_size
export_voxel = voxel_column.number_input(
    "Voxel size (µm)", value=None, step=0.1, format="%.4g", placeholder="unknown", key="export_voxel_size",
    help="Written into the file's metadata (ImageJ calibration, VTK / DREAM3D spacing, OME-Zarr scale) and the "
         "sidecar. Left empty, the files claim no physical unit: their spacing is 1 voxel.")
try:
    export_voxel = check_voxel_size(export_voxel, "The voxel size")
    voxel_problem = None
except ValueError:
    voxel_problem = (f"The voxel size must be a positive number of micrometres (got {export_voxel:g}); "
                     "correct it, or clear the field if it is unknown.")
export_shape = (export_side,) * 3
if periodic and export_side % model.voxels_per_latent:
    export_shape = (export_side // model.voxels_per_latent * model.voxels_per_latent,) * 3
st.caption(f"A zip of the volume and its JSON provenance sidecar (model, {', '.join(model.attribute_names)}, "
           "seed, shape, voxel size). TIFF opens in ImageJ/Fiji; .vti in ParaView; .dream3d in DREAM3D 6, and its "
           ".xdmf in ParaView; OME-Zarr in napari and Fiji. "
           + (f"Every file states {export_voxel:g} µm per voxel." if export_voxel else
              "The voxel size is unknown, so the files are in voxels (spacing 1, no unit).")
           + (" In A/B mode the export is volume A." if compare else ""))
if voxel_problem:
    right.error(voxel_problem, icon=":material/error:")
elif export_shape == shape:
    name, payload = get_export(model_path, stamp, tuple(attrs_a.items()), seed, shape, periodic, suffix,
                               export_voxel)
    right.download_button(f"Download {FORMATS[suffix].split(' (')[0]}", payload, file_name=name,
                          mime="application/zip", icon=":material/download:", on_click="ignore", key="download")
else:
    request = (model_path, stamp, tuple(attrs_a.items()), seed, export_shape, periodic, suffix, export_voxel)
    prepared = st.session_state.get("export_prepared")
    if prepared and prepared[0] == request:
        right.download_button(f"Download {export_side}³ {FORMATS[suffix].split(' (')[0]}", prepared[2],
                              file_name=prepared[1], mime="application/zip", icon=":material/download:",
                              on_click="ignore", key="download")
    elif right.button(f"Generate {export_side}³ for export", icon=":material/deployed_code:"):
        done: dict = {}

        def work():
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    big = model.generate(attrs_a, seed=seed, shape=export_shape, periodic=periodic)
                done["result"] = export_zip(model, big, attrs_a, seed, export_shape, periodic, suffix,
                                            export_voxel)
            except (ValueError, MemoryError, RuntimeError) as error:  # RuntimeError: torch out of memory
                done["error"] = str(error).splitlines()[0]

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        expected = st.session_state.get("seconds_per_voxel", SECONDS_PER_VOXEL) * np.prod(export_shape) * 1.2
        bar, began = st.progress(0.0), time.perf_counter()
        while worker.is_alive():
            elapsed = time.perf_counter() - began
            bar.progress(min(0.99, elapsed / expected),
                         text=f"Generating {export_side}³ voxels: {elapsed:.0f} s of about {expected:.0f} s")
            worker.join(0.25)
        bar.empty()
        if "result" in done:
            st.session_state.export_prepared = (request, *done["result"])
            st.rerun()
        st.error(f"Generating the export volume failed ({done.get('error', 'no result')}); try a smaller size.")
