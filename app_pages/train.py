"""Train: choose data and a preset, launch a background training run, watch it, stop, resume, open it.

Runs are separate processes (slicegan_core.jobs) that outlive this page; everything shown here is read back
from the run directory, so the page re-attaches to runs after a closed tab or a restarted app.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from slicegan_core import jobs, scene, synthesize
from slicegan_core.config import PRESETS, check_voxel_size
from slicegan_core.data import IMAGE_EXTENSIONS, IMAGE_TYPES, DatasetSpec, load_training_data

ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR = Path(os.environ.get("SLICEGAN_RUNS_DIR", ROOT / "runs"))
PRESET_NOTES = {"tiny": "32³ patches, tiny networks: a smoke test in a minute",
                "cpu": "64³ patches, 8× narrower networks: a laptop CPU run (hours)",
                "paper": "the published configuration: needs a GPU"}
ATTRIBUTE_NOTE = ("An **attribute** is a number that describes each training dataset and steers the generator, e.g. "
                  "alpha = ln σg, the spread of the grain-size distribution (σg its geometric standard deviation): "
                  "trained on images at several values, the model makes structures at and between them (a slider "
                  "in Explore). Leave the names empty to train on one micrograph, or on several of the same "
                  "material: the model then makes that one kind of structure.")
ISOTROPY_NOTE = ("One 2D image: the material is assumed isotropic, so the same image stands for the x, y and z "
                 "slices (give three views, x, y and z, for a material that is not).")
SYNTHETIC_SEED = 101  # seed of the first synthetic training volume; the next ones count up
STATE_COLOURS = {"starting": "blue", "running": "green", "stopping": "orange", "stopped": "gray",
                 "finished": "green", "crashed": "red", "failed": "red", "unknown": "gray"}


# ---- data sources (cached) ------------------------------------------------------------------------------

@st.cache_data(max_entries=16, show_spinner=False)
def synthetic_volume(sigma: float, side: int, median_esd: float, fractions: tuple, seed: int) -> np.ndarray:
    return synthesize(shape=(side,) * 3, sigma=sigma, median_esd=median_esd, phase_fractions=fractions,
                      periodic=True, seed=seed).labels


def staged(upload) -> str:
    """Save an uploaded file (once) in this session's staging folder and return its path.

    The folder is deleted with the session's state (see jobs.UploadStaging); the upload's name comes from the
    request, so jobs.stage_upload keeps it inside the folder.
    """
    if "upload_staging" not in st.session_state:
        st.session_state.upload_staging = jobs.UploadStaging()
    return str(st.session_state.upload_staging.stage(upload.file_id, upload.name, upload.getvalue()))


def keep_staged(file_ids) -> None:
    """Delete staged uploads that no uploader on the page holds any more (removed, replaced, or not shown)."""
    if "upload_staging" in st.session_state:
        st.session_state.upload_staging.keep_only(file_ids)


def form_defaults() -> dict:
    """Starting values of the new-run form: the newest run's choices (jobs.last_choices), read once per browser
    session, so a reloaded page starts where the user left off. Within a session the widgets keep the user's
    own changes (persist_state="session": through reruns, Stop, and a visit to another page)."""
    if "train_defaults" not in st.session_state:
        st.session_state.train_defaults = jobs.last_choices(RUNS_DIR)
    return st.session_state.train_defaults


def numbers_text(values, fallback: str) -> str:
    return ", ".join(f"{v:g}" for v in values) if values else fallback


def parse_numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be numbers separated by commas, e.g. 0.15, 0.35, 0.6 (got {text!r}).")
    if not values:
        raise ValueError(f"{what} is empty; give at least one number.")
    return values


def choose_data(defaults: dict) -> tuple[list, str, dict]:
    """Data widgets -> ([(DatasetSpec, array to write or None)], image type, synthetic recipe or {}).

    ``defaults``: the form's starting values (form_defaults)."""
    source = st.radio("Training data", ["Synthetic grains (known truth)", "Upload images or stacks"],
                      index=int(defaults.get("source") == "upload"), horizontal=True, key="source",
                      persist_state="session")
    if source.startswith("Synthetic"):
        keep_staged([])  # the uploaders are not shown, so the files they held are gone
        left, middle, right, last = st.columns(4)
        sigmas = left.text_input("alpha = σ of ln(grain size), one dataset each",
                                 numbers_text(defaults.get("sigmas"), "0.15, 0.35, 0.6"), key="sigmas",
                                 persist_state="session")
        sides = (48, 64, 96, 128)
        side = middle.select_slider("Volume side (voxels)", sides, key="synth_side", persist_state="session",
                                    value=defaults["side"] if defaults.get("side") in sides else 64)
        median = right.number_input("Median grain ESD (voxels)", 2.0, 40.0,
                                    float(min(40.0, max(2.0, defaults.get("median_esd", 8.0)))), step=0.5,
                                    key="median_esd", persist_state="session")
        fractions = last.text_input("Phase fractions",
                                    numbers_text(defaults.get("phase_fractions"), "0.35, 0.35, 0.30"),
                                    key="fractions", persist_state="session")
        values = parse_numbers(sigmas, "alpha values")
        fraction_values = tuple(parse_numbers(fractions, "Phase fractions"))
        datasets = []
        seeds = {f"{sigma:g}": SYNTHETIC_SEED + i for i, sigma in enumerate(values)}
        with st.spinner("Synthesising the training volumes..."):
            for sigma in values:
                volume = synthetic_volume(sigma, side, median, fraction_values, seeds[f"{sigma:g}"])
                datasets.append((DatasetSpec((f"synthetic_alpha{sigma:g}.npy",), {"alpha": sigma}), volume))
        recipe = {"sigmas": values, "shape": [side] * 3, "median_esd": median,
                  "phase_fractions": list(fraction_values), "periodic": True, "seeds": seeds}
        return datasets, "n-phase", recipe

    uploaded = defaults if defaults.get("source") == "upload" else {}    # the last run's upload choices, if any
    left, middle, right = st.columns([1, 2, 1])
    count = left.number_input("Datasets", 1, 8, min(8, max(1, uploaded.get("n_datasets", 1))), key="n_datasets",
                              persist_state="session")
    names = [n.strip() for n in middle.text_input("Attribute names (comma separated, may be empty)",
                                                  ", ".join(uploaded.get("attribute_names", [])),
                                                  key="attr_names", persist_state="session").split(",") if n.strip()]
    image_type = right.selectbox("Image type", IMAGE_TYPES, key="image_type", persist_state="session",
                                 index=list(IMAGE_TYPES).index(uploaded["image_type"])
                                 if uploaded.get("image_type") in IMAGE_TYPES else 0)
    st.caption(ATTRIBUTE_NOTE)
    datasets, file_ids = [], []
    for i in range(int(count)):
        with st.container(border=True):
            files_column, *value_columns = st.columns([3] + [1] * max(1, len(names)))
            uploads = files_column.file_uploader(
                f"Dataset {i + 1}: one 2D image, one 3D stack, or three 2D views (x, y, z)",
                type=[e.lstrip(".") for e in IMAGE_EXTENSIONS], accept_multiple_files=True, key=f"files_{i}")
            attrs = {name: column.number_input(name, value=0.15 + 0.2 * i, step=0.05, format="%.3f",
                                               key=f"value_{i}_{name}")
                     for name, column in zip(names, value_columns)}
            if uploads:
                datasets.append((DatasetSpec(tuple(staged(u) for u in uploads), attrs), None))
                file_ids += [u.file_id for u in uploads]
    keep_staged(file_ids)
    return datasets, image_type, {}


# ---- page: new run -----------------------------------------------------------------------------------------

st.title("Train a model")
runs = jobs.list_runs(RUNS_DIR)
defaults = form_defaults()
runs_area = st.container()    # the runs list and the selected run come first, so the form never pushes them down
with st.expander("New run", expanded=not any(r.active for r in runs) or "launch_error" in st.session_state,
                 icon=":material/add_circle:"):
    problem = None
    try:
        datasets, image_type, synthetic = choose_data(defaults)
    except ValueError as error:
        datasets, image_type, synthetic, problem = [], "n-phase", {}, str(error)
    left, middle, right = st.columns(3)
    preset = left.selectbox("Preset", list(PRESETS), key="preset", persist_state="session",
                            index=list(PRESETS).index(defaults["preset"] if defaults.get("preset") in PRESETS
                                                      else "cpu"),
                            help="\n".join(f"- **{k}**: {v}" for k, v in PRESET_NOTES.items()))
    left.caption(PRESET_NOTES.get(preset, ""))
    patch_size = PRESETS[preset][0]["patch_size"]
    steps = middle.number_input("Generator steps", 1, 100_000, key=f"steps_{preset}", persist_state="session",
                                value=min(100_000, max(1, defaults["steps"])) if defaults.get("preset") == preset
                                and defaults.get("steps") else PRESETS[preset][1]["steps"])
    voxel_size = right.number_input("Voxel size (µm)", value=defaults.get("voxel_size_um") or None, step=0.1,
                                    format="%.4g", placeholder="unknown", key="voxel", persist_state="session",
                                    help="Micrometres per pixel of the training images, recorded in the model "
                                         "and its exports; leave it empty if unknown (lengths stay in voxels).")
    try:
        voxel_size = check_voxel_size(voxel_size, "The voxel size")
    except ValueError:
        problem = problem or (f"The voxel size must be a positive number of micrometres (got {voxel_size:g}); "
                              "correct it, or clear the field if it is unknown.")
    threads = right.number_input("CPU threads (0 = automatic: the cores other programs leave free)", 0, 64,
                                 min(64, max(0, defaults.get("threads", 0))), key="threads", persist_state="session")
    most, unit = jobs.max_processes()
    processes = middle.number_input("Processes", 1, most, 1, key="processes", persist_state="session",
                                    help=f"Training processes, one per {unit} (up to {most}); the batch is split "
                                         "among them (torchrun).")

    data = None
    if problem is None and not datasets:
        problem = "Add at least one dataset (upload an image or stack)."
    if problem is None:
        try:  # validate with the data module before anything is written; synthetic volumes go through a file
            with tempfile.TemporaryDirectory() as folder:
                specs = []
                for spec, array in datasets:
                    if array is not None:
                        np.save(Path(folder) / spec.paths[0], array)
                        spec = DatasetSpec((str(Path(folder) / spec.paths[0]),), spec.attrs)
                    specs.append(spec)
                data = load_training_data(specs, image_type=image_type, patch_size=patch_size)
        except ValueError as error:
            problem = str(error)
    if problem:
        st.error(problem, icon=":material/error:")
    else:
        st.markdown(f"**Patches the critics will see** ({patch_size}×{patch_size}, one per axis and dataset)")
        rng = np.random.default_rng(0)
        kinds = [d["kind"] for d in data.describe()["datasets"]]
        for index in range(len(data)):
            attrs_text = ", ".join(f"{k} = {v:g}" for k, v in datasets[index][0].attrs.items()) or "no attribute"
            columns = st.columns([1, 1, 1, 2], vertical_alignment="center")
            for axis, column in enumerate(columns[:3]):
                patch = data.sample(np.array([index]), axis, rng)[0].numpy()
                column.image(scene.patch_image(patch, image_type), caption=f"⊥ {'xyz'[axis]}", width="stretch")
            fractions = data.phase_fractions()[index]    # {grey value: fraction}; phase i is the i-th value
            columns[3].markdown(f"Dataset {index + 1}: {attrs_text}  \n"
                                + ", ".join(f"phase {i} (grey {v}): {fractions[v]:.0%}"
                                            for i, v in enumerate(data.phase_values) if v in fractions))
            if kinds[index] == "image":
                columns[3].caption(ISOTROPY_NOTE)

    if "run_name" not in st.session_state:
        st.session_state.run_name = time.strftime("run-%Y%m%d-%H%M%S")
    name = st.text_input("Run name", key="run_name")
    try:
        jobs.validate_run_name(name)
        name_problem = None
    except ValueError as error:
        name_problem = str(error)
        st.error(name_problem, icon=":material/error:")
    if st.button("Launch training", type="primary", disabled=bool(problem or name_problem),
                 icon=":material/rocket_launch:"):
        st.session_state.pop("launch_error", None)
        run_dir = None
        try:
            run_dir = jobs.new_run_dir(RUNS_DIR, name)
            (run_dir / "data").mkdir()
            specs = []
            for index, (spec, array) in enumerate(datasets):
                if array is not None:  # synthetic: write the volume into the run so it is self-contained
                    target = run_dir / "data" / spec.paths[0]
                    np.save(target, array)
                    specs.append(DatasetSpec((str(target),), spec.attrs))
                else:  # uploads: copy next to the run (staged files go when the uploader or session lets go)
                    copies = [shutil.copy(p, run_dir / "data" / f"d{index + 1}_{Path(p).name}") for p in spec.paths]
                    specs.append(DatasetSpec(tuple(copies), spec.attrs))
            if synthetic:
                jobs.save_recipe(run_dir, synthetic)
            jobs.start_training(run_dir, specs, preset=preset, steps=int(steps), image_type=image_type,
                                voxel_size_um=voxel_size or None,
                                options={"threads": int(threads)} if threads else None,
                                processes=int(processes))
            st.session_state.selected_run = str(run_dir)
            del st.session_state.run_name  # the next run gets a fresh name
            st.rerun()
        except (ValueError, OSError) as error:
            if run_dir is not None:  # free the name for the retry; the uploads are still in their uploaders
                jobs.discard_unlaunched_run(run_dir)
            st.session_state.launch_error = True
            st.error(str(error) if isinstance(error, ValueError) else
                     f"Could not write the run's files ({error.strerror or error}); free disk space or check "
                     f"that {RUNS_DIR} is writable, then launch again.", icon=":material/error:")

# ---- page: runs ----------------------------------------------------------------------------------------------

runs_area.subheader("Runs")
if not runs:
    runs_area.info(f"No runs yet in {RUNS_DIR}. Launch one below; it keeps running if you close this tab.")
    st.stop()
paths = [str(r.run_dir) for r in runs]
# An active run's step changes every second, and the list is drawn once per page run: its label names the state
# only (the progress bar below shows the step, live); the monitor reruns the page when the state changes.
labels = {str(r.run_dir): f"{r.name} · {r.state}" + ("" if r.active else f" · step {r.step}/{r.steps}")
          for r in runs}
if st.session_state.get("selected_run") not in paths:
    st.session_state.selected_run = next((str(r.run_dir) for r in runs if r.active), paths[0])
selected = Path(runs_area.selectbox("Run", paths, format_func=labels.get, key="selected_run"))
listed = next(r for r in runs if str(r.run_dir) == str(selected))
listed_state, was_active = listed.state, listed.active
was_calibrating = jobs.calibration_progress(selected).state == "running"


def curves(events: list[dict]) -> go.Figure:
    steps = [e["step"] for e in events]
    figure = go.Figure()
    for key, label in (("loss_d", "critic loss"), ("loss_g", "generator loss"), ("wasserstein", "Wasserstein")):
        figure.add_trace(go.Scatter(x=steps, y=[e.get(key) for e in events], name=label, mode="lines"))
    figure.update_layout(height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10}, xaxis_title="step",
                         legend={"orientation": "h", "y": 1.12})
    return figure


FIDELITY_LABELS = {"vf": "area fraction", "mean_chord": "mean chord (px)", "perimeter": "perimeter per area",
                   "islands": "small islands per million", "s2": "largest |ΔS2|"}


def fidelity_curves(series: list[dict]) -> go.Figure:
    """One panel per statistic: the generated value of each phase against step (first dataset), the training
    image's value as a dashed line of the same colour (S2: the difference, against 0)."""
    from plotly.subplots import make_subplots
    names = list(FIDELITY_LABELS)
    figure = make_subplots(rows=1, cols=len(names), subplot_titles=[FIDELITY_LABELS[n] for n in names])
    steps = [e["step"] for e in series]
    keys = list(series[-1]["datasets"][0]["values"])
    phases = sorted({k.split("/")[1] for k in keys}, key=int)
    colours = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
    for col, name in enumerate(names, start=1):
        for i, phase in enumerate(phases):
            key, colour = f"{name}/{phase}", colours[i % len(colours)]
            values = [e["datasets"][0]["values"].get(key, [None, None]) for e in series]
            figure.add_trace(go.Scatter(x=steps, y=[v[0] for v in values], mode="lines+markers", line={"color": colour},
                                        name=f"phase {phase}", legendgroup=phase, showlegend=col == 1), 1, col)
            figure.add_trace(go.Scatter(x=steps, y=[v[1] for v in values], mode="lines", showlegend=False,
                                        line={"color": colour, "dash": "dash"}, legendgroup=phase), 1, col)
        if name == "islands":
            figure.update_yaxes(type="log", row=1, col=col)
    figure.update_layout(height=260, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         legend={"orientation": "h", "y": -0.25})
    figure.update_annotations(font_size=12)
    return figure


def calibration_row(run_dir: Path) -> None:
    """Calibrate a stopped or finished run's model for matching (a background process, like training) and
    show where its calibration stands; the monitor polls while it runs."""
    calibration = jobs.calibration_progress(run_dir)
    if (calibration.state == "running") != was_calibrating:       # started or ended: poll, or stop polling
        st.rerun(scope="app")
    if calibration.state == "no attributes":
        return
    if calibration.state == "running":
        st.progress(calibration.done / calibration.total if calibration.total else 0.0,
                    text=f"Calibrating for matching: {calibration.done} of {calibration.total or '?'} sweep points")
        return
    left, right = st.columns([1, 3], vertical_alignment="center")
    label = {"none": "Calibrate for matching", "failed": "Calibrate again"}.get(calibration.state,
                                                                                "Recalibrate for matching")
    if calibration.state == "done":
        right.caption(f":material/check_circle: Calibrated for matching at step {calibration.step}: drop a "
                      "micrograph under **Match an image** in Explore.")
    else:
        if left.button(label, icon=":material/straighten:", key=f"calibrate_{run_dir.name}"):
            try:
                jobs.start_calibration(run_dir)
                st.rerun(scope="app")
            except ValueError as error:
                st.error(str(error), icon=":material/error:")
        right.caption({"none": "", "stale": f"The calibration was measured at step {calibration.step}; the "
                                            "weights have changed since. ",
                       "failed": ""}.get(calibration.state, "")
                      + "Measures how each attribute changes the statistics of generated slices, so that Explore "
                        "can match a micrograph to the model. Runs in the background: seconds for small models, "
                        "minutes for large ones.")
        if calibration.state == "failed":
            st.error(f"The calibration failed: {calibration.error}", icon=":material/error:")


@st.fragment(run_every=2 if was_active or was_calibrating else None)
def monitor(run_dir: Path):
    """Status, controls, curves and samples of one run; polls the run directory while it is active."""
    status = jobs.run_status(run_dir)
    if status.active != was_active or status.state != listed_state:   # the run list's label is stale: redraw it
        st.rerun(scope="app")
    progress = status.step / status.steps if status.steps else 0.0
    eta = f" · about {status.eta_s / 60:.1f} min left" if status.active and status.eta_s else ""
    st.progress(min(1.0, progress), text=f":{STATE_COLOURS.get(status.state, 'gray')}-badge[{status.state}] step "
                f"{status.step} of {status.steps or '?'}{eta}")
    buttons = st.columns([1, 1.3, 1.7, 2], vertical_alignment="bottom")
    try:
        if status.active:
            if buttons[0].button("Stop", icon=":material/stop:", help="Checkpoint, then end the run",
                                 disabled=status.state == "stopping"):
                jobs.stop_training(run_dir)
                st.rerun(scope="app")
        elif (run_dir / "config.json").is_file() and status.state != "failed":
            more = buttons[1].number_input("Total steps", status.step + 1, 1_000_000,
                                           max(status.steps, status.step + 1), key=f"resume_steps_{run_dir.name}")
            most, unit = jobs.max_processes()
            processes = buttons[3].number_input("Processes", 1, most, 1, key=f"resume_processes_{run_dir.name}",
                                                help=f"One per {unit}; any number, whatever the run used before.")
            if buttons[0].button("Resume", icon=":material/play_arrow:"):
                jobs.resume_training(run_dir, steps=int(more) if more != status.steps else None,
                                     processes=int(processes))
                st.rerun(scope="app")
    except ValueError as error:
        st.error(str(error), icon=":material/error:")
    if status.has_model and buttons[2].button("Open in Explore", icon=":material/view_in_ar:"):
        st.session_state.open_model = str(run_dir / "model")
        st.switch_page("app_pages/explore.py")
    if status.has_model and not status.active:
        calibration_row(run_dir)
    if status.state in ("crashed", "failed"):
        st.error(f"The run {status.state}." if status.state == "crashed" else status.error.splitlines()[-1],
                 icon=":material/error:")
        if status.error:
            st.code(status.error, language=None)

    events = jobs.read_events(run_dir)
    samples = jobs.latest_samples(run_dir)
    left, right = st.columns([3, 2])
    with left:
        if events:
            st.plotly_chart(curves(events), key="curves")
        else:
            st.caption("Loss curves appear after the first logged steps.")
    with right:
        for label, path in samples.items():
            st.image(scene.enlarge(Image.open(path).convert("RGB"), 192), caption=f"{label}: x, y, z centre slices",
                     width="stretch")
        if not samples:
            st.caption("Sample slices appear at the first checkpoint.")
    series = jobs.read_fidelity(run_dir)
    if series:
        latest = series[-1]
        verdict = "within every tolerance" if latest["pass"] else "outside tolerance"
        st.markdown(f"**Fidelity** at step {latest['step']}: distance {latest['distance']}, {verdict}. Solid: "
                    "generated slices; dashed: the training image (docs/fidelity.md says what is measured).")
        st.plotly_chart(fidelity_curves(series), key="fidelity")
    with st.expander("Log"):
        st.code(jobs.log_tail(run_dir, lines=30) or "(empty)", language=None)


with runs_area:
    monitor(selected)
