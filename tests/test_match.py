"""slicegan_core.match: phase mapping, refusals, and a closed loop on a stand-in model whose generator is the
synthetic grain generator itself (so the true alpha of an image is known)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from slicegan_core.calibrate import calibrate, save_calibration
from slicegan_core.cli import main
from slicegan_core.generate import load_model
from slicegan_core.match import (as_label_image, format_match, load_micrograph, map_phases, match,
                                 micrograph_tiles)
from slicegan_core.synthetic import synthesize

TILE = 48


class Synthetic:
    """A model-like stand-in: alpha is the synthetic generator's sigma (median ESD 5 voxels)."""
    attribute_names, phase_values, image_type, voxel_size_um, path = ("alpha",), (0, 1, 2), "n-phase", None, "synthetic"
    trained_values, trained_range = {"alpha": [0.1, 0.6]}, {"alpha": (0.1, 0.6)}
    generator = torch.nn.Identity()
    info: dict = {}

    def generate(self, attrs, seed, shape, periodic=False):
        return synthesize(shape=shape, sigma=attrs["alpha"], median_esd=5.0, seed=seed, periodic=periodic).labels


@pytest.fixture(scope="module")
def synthetic_model():
    model = Synthetic()
    model.info = {"calibration": calibrate(model, values=3, seeds=3, tile=TILE, slices_per_axis=2, progress=False)}
    return model


def truth_image(sigma: float, seed: int = 50, size: int = 96) -> np.ndarray:
    return synthesize(shape=(size, size, 8), sigma=sigma, median_esd=5.0, seed=seed, periodic=False).labels[:, :, 4]


def test_map_phases_in_sorted_order():
    image = np.array([[10, 200], [50, 10]])
    mapped, mapping = map_phases(image, (2, 0, 1))
    assert mapping == {10: 0, 50: 1, 200: 2}
    assert mapped.tolist() == [[0, 2], [1, 0]]
    with pytest.raises(ValueError, match=r"2 phase\(s\) \(values \[0, 255\]\) but the model makes 3"):
        map_phases(np.array([[0, 255]]), (0, 1, 2))


def test_as_label_image_refuses_photos():
    with pytest.raises(ValueError, match="not a segmented image"):
        as_label_image(np.arange(400).reshape(20, 20))
    with pytest.raises(ValueError, match="2D image"):
        as_label_image(np.zeros(5))
    assert as_label_image(np.array([[0.0, 1.0]])).dtype == np.int64


def test_load_micrograph_reads_grey_rgb_as_labels(tmp_path):
    from PIL import Image

    labels = (np.indices((16, 16)).sum(0) % 3 * 100).astype(np.uint8)
    Image.fromarray(np.stack([labels] * 3, -1)).save(tmp_path / "grey.png")
    assert np.array_equal(load_micrograph(tmp_path / "grey.png"), labels)
    colour = np.zeros((16, 16, 3), np.uint8)
    colour[:8, :, 0] = 255
    Image.fromarray(colour).save(tmp_path / "colour.png")
    with pytest.raises(ValueError, match="colour image"):
        load_micrograph(tmp_path / "colour.png")


def test_micrograph_tiles_of_images_and_stacks():
    assert len(micrograph_tiles(np.zeros((100, 100), np.uint8), 48)) == 4
    assert len(micrograph_tiles(np.zeros((48, 48, 48), np.uint8), 48)) == 12   # 4 slices per axis
    with pytest.raises(ValueError, match="at least that large"):
        micrograph_tiles(np.zeros((40, 100), np.uint8), 48)


@pytest.mark.parametrize("sigma", [0.15, 0.5])
def test_match_recovers_the_synthetic_sigma(synthetic_model, sigma):
    result = match(synthetic_model, truth_image(sigma, size=144), confirm=False)
    assert abs(result["match"]["alpha"] - sigma) < 0.12, result["match"]
    assert result["distance"] < 2 and not result["outside"]


def test_match_reports_comparison_and_confirms(synthetic_model):
    result = match(synthetic_model, truth_image(0.35), seed=7)
    assert set(result["statistics"]) == {"vf", "ln_chord_mean", "ln_chord_sigma", "ln_ecd_sigma", "islands"}
    row = result["statistics"]["ln_chord_sigma"]["1"]
    assert row["fitted"] and row["generated"] is not None and row["z"] is not None
    assert result["statistics"]["islands"]["0"]["fitted"] is False
    assert result["generated_slice"].shape == (TILE, TILE)
    assert result["confirmed_distance"] >= 0 and result["image"]["tiles"] == 4
    assert "match: alpha = " in format_match(result)


def test_match_with_other_phase_values_and_a_stack(synthetic_model):
    image = truth_image(0.35)
    relabelled = np.choose(image, [3, 7, 9])
    plain = match(synthetic_model, image, confirm=False)
    assert match(synthetic_model, relabelled, confirm=False)["match"] == plain["match"]
    stack = synthesize(shape=(48, 48, 48), sigma=0.35, median_esd=5.0, seed=3, periodic=False).labels
    assert match(synthetic_model, stack, confirm=False)["image"]["tiles"] == 12


def test_match_warns_when_the_image_is_outside_what_the_model_makes(synthetic_model):
    image = np.zeros((96, 96), np.uint8)
    image[:, 32:64] = 1
    image[:, 64:] = 2
    image[::2, ::2] = np.roll(image[::2, ::2], 1, axis=1)     # fine checkerboard stripes: nothing like grains
    result = match(synthetic_model, image, confirm=False)
    assert result["outside"] and any("outside what the model makes" in w for w in result["warnings"])


def test_match_refuses_fractions_far_from_the_model(synthetic_model):
    image = truth_image(0.35)
    image = np.where(image == 2, 0, image)          # phase 2 merged into 0: fractions ~0.65 / 0.35 / tiny
    image[0, 0] = 2
    with pytest.raises(ValueError, match="tolerance"):
        match(synthetic_model, image, confirm=False)


def test_match_refusals(synthetic_model, tiny_model, make_random_model):
    with pytest.raises(ValueError, match="no attributes"):
        match(make_random_model("tiny", attribute_names=(), attribute_ranges=()), truth_image(0.3))
    with pytest.raises(ValueError, match="calibrate"):
        match(tiny_model, truth_image(0.3))
    with pytest.raises(ValueError, match="voxel size"):
        match(synthetic_model, truth_image(0.3), pixel_size=0.5)
    with pytest.raises(ValueError, match="statistics must be"):
        match(synthetic_model, truth_image(0.3), statistics=("colour",))


def test_cli_calibrate_then_match_writes_json(trained_run, tmp_path, capsys):
    model_dir = shutil.copytree(trained_run / "model", tmp_path / "model")
    assert main(["calibrate", str(model_dir), "--values", "2", "--seeds", "2", "--tile", "32", "--slices", "1",
                 "--quiet"]) == 0
    volume = load_model(model_dir, device="cpu").generate({"alpha": 0.3}, seed=5, shape=(8, 64, 64))
    np.save(tmp_path / "image.npy", volume[4])
    assert main(["match", "--model", str(model_dir), "--image", str(tmp_path / "image.npy"),
                 "--json", str(tmp_path / "out.json"), "--pixel-size", "0.5"]) == 0
    report = json.loads((tmp_path / "out.json").read_text())
    assert set(report["match"]) == {"alpha"} and 0.2 <= report["match"]["alpha"] <= 0.5
    assert report["distance"] >= 0 and "ln_chord_sigma" in report["statistics"]
    assert "match: alpha" in capsys.readouterr().out


def test_stored_calibration_is_used_by_match(trained_run, tmp_path):
    model_dir = shutil.copytree(trained_run / "model", tmp_path / "model")
    model = load_model(model_dir, device="cpu")
    save_calibration(model_dir, calibrate(model, values=2, seeds=2, tile=32, slices_per_axis=1, progress=False))
    image = model.generate({"alpha": 0.3}, seed=5, shape=(8, 64, 64))[4]
    assert "alpha" in match(load_model(model_dir, device="cpu"), image, confirm=False)["match"]
