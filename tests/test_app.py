"""The Streamlit app through AppTest: Explore (steer, view, measure, export) and Train (data, launch, stop, resume).

Explore runs on the shipped default model (models/default); one test also opens a training run's model. Runs
live in a temporary folder (SLICEGAN_RUNS_DIR), so the tests never see or touch the repository's runs/.
"""
import base64
import io
import json
import os
import re
import shutil
import signal
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
import tifffile
import zarr
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.testing.v1 import AppTest

from slicegan_core import jobs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = ROOT / "models" / "default"
COMPOSITE = ROOT / "tests" / "data" / "composite_3phase_256.npy"
pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL / "model.json").is_file(),
                                reason="the shipped model models/default is missing")


@pytest.fixture
def runs_dir(tmp_path, monkeypatch):
    """An empty runs folder for the app; processes started in it are killed at the end of the test."""
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("SLICEGAN_RUNS_DIR", str(folder))
    yield folder
    for run in jobs.list_runs(folder):
        if run.active and run.pid:
            os.kill(run.pid, signal.SIGKILL)


@pytest.fixture
def app(runs_dir, request):
    """The app after its first run: on Explore, or on Train for tests marked ``train_page`` (which then skip
    Explore's generation and 3D scene, ~0.6 s each)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    if request.node.get_closest_marker("train_page"):
        at.switch_page("app_pages/train.py")
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def downloads(monkeypatch):
    """{file name: bytes} of every file handed to a download button (AppTest keeps no media after a run)."""
    captured = {}
    original = MediaFileManager.add

    def add(self, path_or_data, mimetype, coordinates, file_name=None, is_for_static_download=False):
        if file_name:
            captured[file_name] = path_or_data
        return original(self, path_or_data, mimetype, coordinates, file_name, is_for_static_download)

    monkeypatch.setattr(MediaFileManager, "add", add)
    return captured


def views(at) -> list[str]:
    """The exported vtk.js HTML of every 3D view on the page."""
    return [json.loads(e.proto.json)["_html"] for e in at.get("bidi_component")]


def scene_arrays(html: str) -> set[str]:
    """Content hashes of the data arrays in a vtk.js scene: equal sets = the same geometry and colours."""
    packed = re.search(r'const base64Str = "([^"]+)"', html).group(1)
    index = zipfile.ZipFile(io.BytesIO(base64.b64decode(packed))).read("index.json")
    return set(json.loads(index)["hashes"])


def rerun(at):
    at.run()
    assert not at.exception, at.exception
    return at


# ---- Explore ------------------------------------------------------------------------------------------------

def test_explore_opens_on_the_default_model(app):
    assert app.selectbox(key="model_path").value == str(DEFAULT_MODEL)
    assert app.slider(key="attr_alpha").value == pytest.approx(0.35)
    # Its verdict: within every tolerance at alpha 0.15 and 0.35, not at 0.6 (docs/fidelity.md).
    assert any("It passes at alpha 0.15; alpha 0.35 and fails at alpha 0.6" in i.value for i in app.info)
    (html,) = views(app)
    assert "vtk" in html and len(html) > 500_000 and len(scene_arrays(html)) >= 6
    assert len(app.image) == 2                                   # the x-y and y-z cuts
    assert any("default" in m.value and "seed 7" in m.value for m in app.markdown)
    table = app.dataframe[0].value
    assert set(table["volume"]) == {"generated", "synthetic truth"} and len(table) == 6
    assert abs(table["fraction"][table["volume"] == "generated"].sum() - 1) < 0.01
    assert any(m.label.startswith("σ of ln ESD, synthetic truth") for m in app.metric)
    # the headline: the field measure with the all-features value beside it, and a verdict against the truth
    assert sum(c.value.startswith("field measure, ≥ 8 voxels · all features: ") for c in app.caption) == 2
    assert any(re.search(r"Generated\*\* [\d.]+ is :\w+-badge\[(within|outside)\] the synthetic truth's seed "
                         r"band [\d.]+ to [\d.]+", m.value) for m in app.markdown)
    assert not app.warning
    # the histograms: log axes with every tick labelled in full, bins drawn as exact steps; a hint at few grains
    (histograms,) = [json.loads(c.proto.spec) for c in app.get("plotly_chart")]
    axes = [a for name, a in histograms["layout"].items() if name.startswith("xaxis")]
    assert len(axes) == 6 and all(a["type"] == "log" and a["ticktext"] == [f"{v:g}" for v in a["tickvals"]]
                                  for a in axes)
    assert any(a["tickvals"][:5] == [1, 2, 5, 10, 20] for a in axes)
    assert {trace["line"]["shape"] for trace in histograms["data"]} == {"hv"}
    assert any(c.value.startswith(":material/info: Few grains at this volume size") and "larger volume in the "
               "sidebar" in c.value for c in app.caption)
    assert any(c.value.startswith("Axes: x (orange), y (green), z (blue), each arrow 20 voxels long. The volume "
                                  "is 64 voxels per edge") for c in app.caption)


def test_slider_and_seed_changes_regenerate(app):
    first = scene_arrays(views(app)[0])
    app.slider(key="attr_alpha").set_value(0.6)
    changed_alpha = scene_arrays(views(rerun(app))[0])
    assert changed_alpha != first
    app.number_input(key="seed").set_value(8)
    changed_seed = scene_arrays(views(rerun(app))[0])
    assert changed_seed not in (first, changed_alpha)
    app.slider(key="attr_alpha").set_value(0.35)
    app.number_input(key="seed").set_value(7)
    assert scene_arrays(views(rerun(app))[0]) == first                # same model, attrs, seed, shape: same volume
    app.button[[b.label for b in app.button].index("New seed")].click()
    rerun(app)
    assert app.number_input(key="seed").value != 7 and scene_arrays(views(app)[0]) != first


def test_out_of_range_values_are_allowed_with_a_warning(app):
    app.slider(key="attr_alpha").set_value(0.8)
    rerun(app)
    assert len(views(app)) == 1
    assert "outside the trained range" in app.warning[0].value


def test_trained_value_pills_move_the_slider(app):
    app.pills(key="attr_alpha_jump").set_value(0.6)
    rerun(app)
    assert app.slider(key="attr_alpha").value == pytest.approx(0.6)
    assert app.pills(key="attr_alpha_jump").value is None


def test_phase_toggles_and_slab_change_the_scene(app):
    everything = scene_arrays(views(app)[0])
    app.pills(key="shown_0_1_2").set_value([0, 2])
    one_hidden = scene_arrays(views(rerun(app))[0])
    assert one_hidden != everything
    app.selectbox(key="slab_axis").set_value("x")
    rerun(app)
    assert app.slider(key="slab_x_64").value == (0, 42)
    assert scene_arrays(views(app)[0]) not in (everything, one_hidden)
    app.slider(key="cut_z_64").set_value(3)
    rerun(app)
    assert "x-y cut at z = 3" in app.image[0].captions


def test_export_tiff_npy_vti_with_provenance(app, downloads):
    def exported(suffix):
        (name,) = [n for n in downloads if n.endswith(f"{suffix.replace('.', '_')}.zip") and f"_64x64x64" in n]
        archive = zipfile.ZipFile(io.BytesIO(downloads.pop(name)))
        (volume_name,) = [n for n in archive.namelist() if n.endswith(suffix)]
        sidecar = json.loads(archive.read(volume_name + ".json"))
        return archive.read(volume_name), sidecar

    rerun(app)
    data, sidecar = exported(".tif")
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        assert tif.is_imagej and tif.asarray().shape == (64, 64, 64)
        assert set(np.unique(tif.asarray())) <= {0, 1, 2}
    assert sidecar["attrs"] == {"alpha": 0.35} and sidecar["seed"] == 7 and sidecar["shape"] == [64, 64, 64]
    assert sidecar["model_name"] == "default" and sidecar["periodic"] is False

    app.selectbox(key="export_format").set_value(".npy")
    rerun(app)
    data, _ = exported(".npy")
    volume = np.load(io.BytesIO(data))
    assert volume.shape == (64, 64, 64) and volume.dtype == np.uint8

    app.selectbox(key="export_format").set_value(".vti")
    rerun(app)
    data, _ = exported(".vti")
    path = Path(os.environ["SLICEGAN_RUNS_DIR"]) / "export.vti"
    path.write_bytes(data)
    grid = pv.read(path)
    assert grid.dimensions == (65, 65, 65) and grid.cell_data["phase"].size == 64**3   # voxels = cells


def test_export_voxel_size_field_sets_the_unit_of_every_file(app, downloads, tmp_path):
    """The default model has no voxel size: the field starts empty and the TIFF claims no unit; 0.5 makes every
    file 0.5 um (TIFF calibration, OME-Zarr scale, sidecar); 0 is refused with one sentence and no download."""
    def exported(suffix):
        (name,) = [n for n in downloads if n.endswith(f"_{suffix.lstrip('.')}.zip")]
        return zipfile.ZipFile(io.BytesIO(downloads.pop(name)))

    def tiff(archive):
        (volume_name,) = [n for n in archive.namelist() if n.endswith(".tif")]
        sidecar = json.loads(archive.read(volume_name + ".json"))
        with tifffile.TiffFile(io.BytesIO(archive.read(volume_name))) as tif:
            return tif.imagej_metadata, sidecar

    field = app.number_input(key="export_voxel_size")
    assert field.label == "Voxel size (µm)" and field.value is None
    rerun(app)
    meta, sidecar = tiff(exported(".tif"))
    assert "unit" not in meta and "spacing" not in meta and sidecar["voxel_size_um"] is None
    app.number_input(key="export_voxel_size").set_value(0.5)
    app.selectbox(key="export_format").set_value(".zarr")
    rerun(app)
    archive = exported(".zarr")
    archive.extractall(tmp_path)
    (store,) = tmp_path.glob("*.zarr")
    multiscale = zarr.open_group(str(store), mode="r").attrs["multiscales"][0]
    assert multiscale["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5] * 3
    assert {a["unit"] for a in multiscale["axes"]} == {"micrometer"}
    assert zarr.open_array(str(store / "0"), mode="r").shape == (64, 64, 64)
    assert json.loads((tmp_path / f"{store.name}.json").read_text())["voxel_size_um"] == 0.5
    app.selectbox(key="export_format").set_value(".tif")
    rerun(app)
    meta, sidecar = tiff(exported(".tif"))
    assert meta["unit"] == "um" and meta["spacing"] == pytest.approx(0.5) and sidecar["voxel_size_um"] == 0.5
    app.number_input(key="export_voxel_size").set_value(0.0)
    rerun(app)
    assert [e.value for e in app.error] == ["The voxel size must be a positive number of micrometres (got 0); "
                                           "correct it, or clear the field if it is unknown."]
    assert not downloads                                   # no download button for a refused voxel size


def test_a_bigger_export_is_generated_with_progress(app, downloads):
    app.selectbox(key="export_format").set_value(".npy")
    app.selectbox(key="export_size_64").set_value(128)
    rerun(app)
    app.button[[b.label for b in app.button].index("Generate 128³ for export")].click()
    rerun(app)
    assert app.download_button(key="download").label == "Download 128³ NumPy .npy"
    (name,) = [n for n in downloads if "_128x128x128" in n]
    archive = zipfile.ZipFile(io.BytesIO(downloads[name]))
    (volume_name,) = [n for n in archive.namelist() if n.endswith(".npy")]
    assert np.load(io.BytesIO(archive.read(volume_name))).shape == (128, 128, 128)


def test_ab_mode_shows_two_volumes_from_the_same_seed(app):
    toggle = [t for t in app.toggle if t.label.startswith("A/B")][0]
    toggle.set_value(True)
    rerun(app)
    assert app.slider(key="attr_alpha_b").value == pytest.approx(0.6)
    a, b = views(app)
    assert scene_arrays(a) != scene_arrays(b)
    assert set(app.dataframe[0].value["volume"]) == {"generated A", "truth A", "generated B", "truth B"}
    assert len(app.image) == 4


def test_explore_opens_a_training_runs_model(trained_run, runs_dir):
    shutil.copytree(trained_run, runs_dir / "tiny")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    rerun(at)
    assert at.selectbox(key="model_path").options == ["default (shipped)", "run tiny (finished, step 4)"]
    at.selectbox(key="model_path").set_value(str(runs_dir / "tiny" / "model"))
    rerun(at)
    assert len(views(at)) == 1
    assert at.slider(key="attr_alpha").value == pytest.approx(0.35)     # kept: inside this model's slider too
    assert at.number_input(key="export_voxel_size").value == 0.5      # the export states the run's voxel size
    jump = at.pills(key="attr_alpha_jump")
    assert jump.label == "Trained alpha values (click to jump)" and jump.options == ["0.2", "0.5"]
    assert any("no synthetic recipe" in c.value for c in at.caption)
    assert set(at.dataframe[0].value["volume"]) == {"generated"}       # 0.35 is no training dataset's value
    at.pills(key="attr_alpha_jump").set_value(0.2)
    rerun(at)                                                # the 40^3 training volume at alpha 0.2 is overlaid
    table = at.dataframe[0].value
    assert set(table["volume"]) == {"generated", "training data"} and table["grains"].notna().all()
    jobs.save_recipe(runs_dir / "tiny", {"median_esd": 6.0, "phase_fractions": [0.35, 0.35, 0.30]})
    rerun(at)                                                # a run made from synthetic data shows its truth
    assert set(at.dataframe[0].value["volume"]) == {"generated", "synthetic truth"}


def test_a_match_shows_its_verdict_the_slider_value_and_both_pictures_at_one_scale(app):
    """A match result (as the uploader's callback leaves it) is drawn: the message names the slider's value, a
    verdict with the band, pictures of one calibration tile each, and z as "—" where a statistic is not fitted.
    The first run's loading message is gone."""
    from slicegan_core import load_model
    from slicegan_core.match import match
    from slicegan_core.synthetic import synthesize

    assert not any("Loading SliceGAN Studio" in element.value for element in app.info)
    image = synthesize(shape=(160, 160, 8), sigma=0.475, median_esd=8.0, seed=105).labels[:, :, 4]
    result = match(load_model(DEFAULT_MODEL), image, step=0.005)
    app.session_state["match_result"] = (app.selectbox(key="model_path").value, "micrograph.png", result)
    app.session_state["attr_alpha"] = result["match"]["alpha"]
    rerun(app)
    value = app.slider(key="attr_alpha").value
    assert any(f"Matched alpha = {value:.3f} (set on the slider" in s.value for s in app.success)
    assert any("the model's own images of this size (1 tile of 128²) reach" in m.value for m in app.markdown)
    captions = [c.value for c in app.caption]
    assert any(c.startswith("Same scale: 1 pixel = 1 voxel") for c in captions)
    assert result["image_tile"].shape == result["generated_slice"].shape == (128, 128)
    table = app.dataframe[0].value
    assert set(table.loc[table["statistic"] == "area fraction", "z"]) == {"—"}
    assert table.loc[table["fitted"], "z"].str.match(r"^[+-]\d+\.\d\d$").all()


# ---- Train --------------------------------------------------------------------------------------------------

def open_train(at):
    at.switch_page("app_pages/train.py")
    return rerun(at)


def use_uploads(at):
    at.radio(key="source").set_value("Upload images or stacks")
    return rerun(at)


@pytest.mark.train_page
def test_bad_uploads_show_the_data_modules_message(app, tmp_path):
    use_uploads(open_train(app))
    assert "Add at least one dataset" in app.error[0].value
    app.file_uploader(key="files_0").set_value(("scan.png", b"this is not a PNG", "image/png"))
    rerun(app)
    assert "could not be read" in app.error[0].value and "scan.png" in app.error[0].value
    flat = io.BytesIO()
    np.save(flat, np.zeros((64, 64), np.uint8))
    app.file_uploader(key="files_0").set_value(("flat.npy", flat.getvalue(), "application/octet-stream"))
    rerun(app)
    assert app.error[0].value == ("'flat.npy' has only one value (0); a training image needs structure, so check "
                                  "that the right file or segmentation was saved.")
    assert [b for b in app.button if b.label == "Launch training"][0].disabled


@pytest.mark.parametrize("attack", ["external raw storage", "external link", "virtual dataset"])
@pytest.mark.train_page
def test_a_dream3d_upload_pointing_outside_itself_is_refused_and_nothing_outside_is_read(app, attack, tmp_path):
    from crafted_hdf5 import OutsideFileTrap, crafted_dream3d
    trap = OutsideFileTrap(tmp_path)
    try:
        crafted = crafted_dream3d(tmp_path / "crafted.dream3d", attack, trap.path)
        trap.arm()
        use_uploads(open_train(app))
        app.file_uploader(key="files_0").set_value(("crafted.dream3d", crafted.read_bytes(),
                                                    "application/octet-stream"))
        rerun(app)
        assert "inside the uploaded file" in app.error[0].value and "crafted.dream3d" in app.error[0].value
        assert not app.image                           # no patch preview
        assert not trap.opened
    finally:
        trap.close()


@pytest.mark.train_page
def test_uploads_stay_in_staging_and_bad_run_names_or_launches_leave_nothing(app, runs_dir, monkeypatch):
    use_uploads(open_train(app))
    escaped = f"escaped-{os.getpid()}-{time.time_ns()}.npy"
    app.file_uploader(key="files_0").set_value((f"../../{escaped}", COMPOSITE.read_bytes(), "application/octet-stream"))
    rerun(app)                                    # a hand-made request can name any path; only its base name is kept
    assert not app.error
    staging = app.session_state["upload_staging"].path
    assert [p.relative_to(staging).parts[1:] for p in staging.rglob("*.npy")] == [(escaped,)]
    assert not (staging.parent / escaped).exists() and not (staging.parent.parent / escaped).exists()
    app.file_uploader(key="files_0").set_value(("second.npy", COMPOSITE.read_bytes(), "application/octet-stream"))
    rerun(app)                                    # the replaced upload's staged copy goes
    assert [p.name for p in staging.rglob("*.npy")] == ["second.npy"]

    app.text_input(key="run_name").set_value("x" * 300)
    rerun(app)
    assert [e.value for e in app.error] == ["The run name is 300 characters long; shorten it to at most 100."]
    assert [b for b in app.button if b.label == "Launch training"][0].disabled

    def refuse(*args, **kwargs):
        raise ValueError("Launch refused for the test.")

    monkeypatch.setattr(jobs, "start_training", refuse)
    app.text_input(key="run_name").set_value("retry")
    assert not rerun(app).error
    app.button[[b.label for b in app.button].index("Launch training")].click()
    rerun(app)
    assert [e.value for e in app.error] == ["Launch refused for the test."]
    assert list(runs_dir.iterdir()) == []          # the half-made run is gone, so its name is free for the retry
    assert [p.name for p in staging.rglob("*.npy")] == ["second.npy"]       # still in its uploader
    monkeypatch.undo()
    app.radio(key="source").set_value("Synthetic grains (known truth)")
    rerun(app)                                    # the uploaders are gone, and their staged files with them
    assert list(staging.rglob("*.npy")) == []


@pytest.mark.train_page
def test_synthetic_data_previews_patches_checks_values_and_launches_with_its_recipe(app, runs_dir):
    open_train(app)
    assert not app.error
    assert len(app.image) == 9                                # 3 datasets x 3 axes
    app.text_input(key="sigmas").set_value("0.2, lots")
    rerun(app)
    assert "alpha values must be numbers" in app.error[0].value
    app.text_input(key="sigmas").set_value("0.2, 0.5")
    app.select_slider(key="synth_side").set_value(48)
    app.selectbox(key="preset").set_value("tiny")
    app.text_input(key="run_name").set_value("synthetic-run")
    rerun(app)
    assert len(app.image) == 6 and not app.error
    app.button[[b.label for b in app.button].index("Launch training")].click()
    rerun(app)
    run_dir = runs_dir / "synthetic-run"
    assert sorted(p.name for p in (run_dir / "data").iterdir()) == ["synthetic_alpha0.2.npy", "synthetic_alpha0.5.npy"]
    assert np.load(run_dir / "data" / "synthetic_alpha0.5.npy").shape == (48, 48, 48)
    recipe = json.loads((run_dir / jobs.RECIPE_FILE).read_text())
    assert recipe["sigmas"] == [0.2, 0.5] and recipe["median_esd"] == 8.0 and recipe["shape"] == [48, 48, 48]
    assert app.selectbox(key="selected_run").value == str(run_dir)
    assert app.text_input(key="run_name").value != "synthetic-run"     # a fresh name for the next run


@pytest.mark.train_page
def test_the_voxel_size_starts_unknown_and_refuses_zero(app, runs_dir):
    open_train(app)
    field = app.number_input(key="voxel")
    assert field.label == "Voxel size (µm)" and field.value is None
    assert not [b for b in app.button if b.label == "Launch training"][0].disabled
    field.set_value(0.0)
    rerun(app)
    assert "The voxel size must be a positive number of micrometres (got 0)" in app.error[0].value
    assert [b for b in app.button if b.label == "Launch training"][0].disabled


def test_the_new_run_form_keeps_its_values_and_a_new_session_starts_from_the_last_run(app, runs_dir):
    open_train(app)
    app.selectbox(key="preset").set_value("tiny")
    rerun(app)
    app.number_input(key="steps_tiny").set_value(123)
    app.text_input(key="sigmas").set_value("0.2, 0.5")
    app.number_input(key="voxel").set_value(0.25)
    rerun(app)
    rerun(app)                                    # a rerun (as after Stop) keeps every choice
    app.switch_page("app_pages/explore.py")
    open_train(rerun(app))                        # and so does a visit to another page
    assert app.selectbox(key="preset").value == "tiny" and app.number_input(key="steps_tiny").value == 123
    assert app.text_input(key="sigmas").value == "0.2, 0.5" and app.number_input(key="voxel").value == 0.25
    assert len(app.image) == 6

    run_dir = runs_dir / "last"                   # a reloaded page (a new session) starts from the newest run
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({
        "preset": "tiny", "train": {"steps": 77, "threads": 1},
        "data": {"image_type": "n-phase", "voxel_size_um": 0.5, "datasets": [{"paths": ["a.npy"], "attrs": {}}]}}))
    jobs.save_recipe(run_dir, {"sigmas": [0.3], "shape": [48, 48, 48], "median_esd": 6.0,
                               "phase_fractions": [0.5, 0.5], "periodic": True})
    (run_dir / "status.json").write_text(json.dumps({"state": "stopped", "step": 20, "steps": 77}))
    at = open_train(rerun(AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)))
    assert at.selectbox(key="preset").value == "tiny" and at.number_input(key="steps_tiny").value == 77
    assert at.text_input(key="sigmas").value == "0.3" and at.select_slider(key="synth_side").value == 48
    assert at.number_input(key="median_esd").value == 6.0 and at.text_input(key="fractions").value == "0.5, 0.5"
    assert at.number_input(key="voxel").value == 0.5 and at.number_input(key="threads").value == 1
    # the runs come first: the list is above the form, which a stopped run leaves open
    assert [s.value for s in at.subheader][:1] == ["Runs"] and at.selectbox[0].key == "selected_run"


@pytest.mark.train_page
def test_one_micrograph_trains_without_an_attribute_and_the_form_explains_attributes(app, runs_dir, monkeypatch):
    use_uploads(open_train(app))
    assert any(c.value.startswith("An **attribute** is a number") and "Leave the names empty" in c.value
               for c in app.caption)
    assert app.text_input(key="attr_names").value == ""
    app.file_uploader(key="files_0").set_value(("composite.npy", COMPOSITE.read_bytes(), "application/octet-stream"))
    rerun(app)
    assert not app.error
    assert any(m.value.startswith("Dataset 1: no attribute") and "phase 0 (grey 0): " in m.value
               and "phase 2 (grey 2): " in m.value for m in app.markdown)
    assert any("isotropic, so the same image stands for the x, y and z" in c.value for c in app.caption)
    launched = {}
    monkeypatch.setattr(jobs, "start_training", lambda run_dir, specs, **kwargs: launched.update(specs=specs))
    app.text_input(key="run_name").set_value("one-image")
    app.button[[b.label for b in app.button].index("Launch training")].click()
    rerun(app)
    assert [spec.attrs for spec in launched["specs"]] == [{}]


def test_explore_shows_a_model_without_attributes(runs_dir, tmp_path):
    from slicegan_core.data import DatasetSpec
    from slicegan_core.train import train

    np.save(tmp_path / "image.npy", np.load(COMPOSITE)[:128, :128])
    train([DatasetSpec((str(tmp_path / "image.npy"),), {})], runs_dir / "plain", preset_name="tiny", steps=2,
          checkpoint_every=2)
    at = rerun(AppTest.from_file(str(ROOT / "app.py"), default_timeout=180))
    at.selectbox(key="model_path").set_value(str(runs_dir / "plain" / "model"))
    rerun(at)
    assert len(views(at)) == 1 and not [s for s in at.slider if s.key.startswith("attr_")]
    assert any(m.value.startswith("#### plain · no attribute · seed 7") for m in at.markdown)
    assert set(at.dataframe[0].value["volume"]) == {"generated", "training data"}     # the one image, overlaid


@pytest.mark.train_page
def test_a_finished_runs_model_is_calibrated_for_matching_from_a_button(app, runs_dir, trained_run, monkeypatch):
    shutil.copytree(trained_run, runs_dir / "tiny")
    original = jobs.start_calibration
    monkeypatch.setattr(jobs, "start_calibration",           # the command's small settings, for a quick test
                        lambda run_dir: original(run_dir, {"values": 3, "seeds": 2, "tile": 32, "slices": 2}))
    open_train(app)
    assert any("so that Explore can match a micrograph" in c.value for c in app.caption)
    app.button(key="calibrate_tiny").click()
    rerun(app)
    deadline = time.monotonic() + 120
    while jobs.calibration_progress(runs_dir / "tiny").state == "running" and time.monotonic() < deadline:
        time.sleep(0.3)
    rerun(app)                                       # as the polling monitor would
    assert any(c.value.startswith(":material/check_circle: Calibrated for matching at step 4") for c in app.caption)
    assert "calibration" in json.loads((runs_dir / "tiny" / "model" / "model.json").read_text())


@pytest.mark.train_page
def test_a_crashed_run_shows_its_error_tail(app, runs_dir):
    run_dir = runs_dir / "broken"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"train": {"steps": 50}}))
    (run_dir / "status.json").write_text(json.dumps({
        "state": "crashed", "pid": 999_999, "step": 20, "steps": 50, "updated": time.time(),
        "error": "Traceback (most recent call last):\n  File \"train.py\"\nRuntimeError: CUDA out of memory"}))
    open_train(app)
    assert app.selectbox(key="selected_run").value == str(run_dir)
    assert app.error[0].value == "The run crashed." and "RuntimeError: CUDA out of memory" in app.code[0].value
    assert "Resume" in [b.label for b in app.button] and "Stop" not in [b.label for b in app.button]


@pytest.mark.train_page
def test_launch_progress_stop_resume_and_open_in_explore(app, runs_dir):
    use_uploads(open_train(app))
    app.file_uploader(key="files_0").set_value(("composite.npy", COMPOSITE.read_bytes(), "application/octet-stream"))
    app.text_input(key="attr_names").set_value("alpha")        # one attribute, at its default value 0.15
    app.selectbox(key="preset").set_value("tiny")
    rerun(app)
    app.number_input(key="steps_tiny").set_value(100_000)
    app.number_input(key="threads").set_value(1)
    app.text_input(key="run_name").set_value("ui-run")
    app.button[[b.label for b in app.button].index("Launch training")].click()
    rerun(app)
    run_dir = runs_dir / "ui-run"
    assert (run_dir / "job.json").is_file() and (run_dir / "data" / "d1_composite.npy").is_file()

    def poll(predicate, timeout=120.0):
        """Rerun the page (as its polling fragment would) until the run directory satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(jobs.run_status(run_dir)):
                return rerun(app)
            rerun(app)
            time.sleep(0.2)
        pytest.fail(f"the run did not get there: {jobs.run_status(run_dir)}\n{jobs.log_tail(run_dir)}")

    # the model is exported just before the samples are drawn, so wait for both
    poll(lambda s: s.state == "running" and s.has_model and jobs.latest_samples(run_dir)
         and len(jobs.read_events(run_dir)) >= 2)
    assert "running" in app.progress[0].proto.text
    assert app.get("plotly_chart") and any("x, y, z centre slices" in c for e in app.image for c in e.captions)
    assert len(app.get("plotly_chart")) == 2 and any("**Fidelity** at step" in m.value for m in app.markdown)
    labels = [b.label for b in app.button]
    assert "Stop" in labels and "Open in Explore" in labels and "Resume" not in labels

    app.button[labels.index("Stop")].click()
    poll(lambda s: s.state == "stopped")
    assert "stopped" in app.progress[0].proto.text
    stopped_at = jobs.run_status(run_dir).step
    app.button[[b.label for b in app.button].index("Resume")].click()
    poll(lambda s: s.state == "running" and s.step > stopped_at)
    app.button[[b.label for b in app.button].index("Stop")].click()
    poll(lambda s: s.state == "stopped")
    log = (run_dir / jobs.LOG_FILE).read_text()
    assert "slicegan_core train" in log and "slicegan_core resume" in log

    app.button[[b.label for b in app.button].index("Open in Explore")].click()
    rerun(app)
    assert app.selectbox(key="model_path").value == str(run_dir / "model")
    assert len(views(app)) == 1 and app.slider(key="attr_alpha").value == pytest.approx(0.15)
    assert any(w.value.startswith("Fidelity verdict at step") and "train longer" in w.value for w in app.warning)
    table = app.dataframe[0].value          # the 2D training image: chords compare, circle diameters do not
    training = table[table["volume"] == "training data"]
    assert len(training) == 3 and training["grains"].isna().all() and training["σ fit chords"].notna().all()
