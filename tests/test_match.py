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
from slicegan_core.match import (_expected_range, as_label_image, format_match, load_micrograph, map_phases,
                                 match, micrograph_tiles, model_distance_band)
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
    assert report["verdict"]["label"] in ("typical", "edge", "outside") and report["verdict"]["q99"] > 0
    out = capsys.readouterr().out
    assert "match: alpha" in out and "verdict: distance" in out


def test_stored_calibration_is_used_by_match(trained_run, tmp_path):
    model_dir = shutil.copytree(trained_run / "model", tmp_path / "model")
    model = load_model(model_dir, device="cpu")
    save_calibration(model_dir, calibrate(model, values=2, seeds=2, tile=32, slices_per_axis=1, progress=False))
    image = model.generate({"alpha": 0.3}, seed=5, shape=(8, 64, 64))[4]
    assert "alpha" in match(load_model(model_dir, device="cpu"), image, confirm=False)["match"]


def flat_calibration(k: int = 9, sd: float = 1.0, seed_range: float = 0.0) -> dict:
    """A hand-made calibration: k statistics (one phase each) that do not depend on alpha, each with one-tile
    standard deviation ``sd`` and a seed band ``seed_range`` wide (6 seeds, 12 tiles per volume)."""
    entry = {"mean": [1.0, 1.0], "sd": [sd, sd], "q10": [0.0, 0.0], "q90": [2.0, 2.0],
             "seed_low": [1.0 - seed_range / 2] * 2, "seed_high": [1.0 + seed_range / 2] * 2}
    stats = [f"s{i}" for i in range(k)]
    return {"tile": 32, "seeds": 6, "slices_per_axis": 4, "phases": [0], "statistics": stats,
            "attributes": {"alpha": {"values": [0.0, 1.0], "other_attributes": {},
                                     "curves": {s: {"0": dict(entry)} for s in stats}}}}


def test_expected_range_of_normal_draws():
    assert _expected_range(2) == pytest.approx(1.128, abs=0.002)
    assert _expected_range(6) == pytest.approx(2.534, abs=0.002)


@pytest.mark.parametrize("tiles", [1, 4])
def test_distance_band_of_independent_statistics_is_chi(tiles):
    """Flat curves, sd 1, no seed spread: an image of n tiles has 9 independent z ~ N(0, 1/n), so d^2 is
    chi^2_9 / (9 n): median sqrt(8.343 / 9n), 90 % sqrt(14.684 / 9n), 99 % sqrt(21.666 / 9n)."""
    calibration = flat_calibration()
    keys = [(s, "0") for s in calibration["statistics"]]
    band = model_distance_band(calibration, {"alpha": 0.5}, keys, {k: 1.0 for k in keys}, tiles,
                               {"alpha": np.linspace(0, 1, 11)}, draws=4000)
    for name, chi2 in (("median", 8.343), ("q90", 14.684), ("q99", 21.666)):
        assert band[name] == pytest.approx(np.sqrt(chi2 / 9 / tiles), rel=0.06), (name, band)
    assert band["share_z_over_2"] == pytest.approx(1 - (1 - 0.0455) ** 9 if tiles == 1 else 1 - (1 - 6.3e-5) ** 9,
                                                   abs=0.03)
    assert band["tiles"] == tiles and band["draws"] == 4000


def test_distance_band_keeps_the_volume_to_volume_spread():
    """A seed band wider than 12 independent tiles explain adds a floor that more tiles do not average away."""
    sd, seeds_sd = 1.0, 0.6               # 12 independent tiles would give a seed sd of 1 / sqrt(12) = 0.29
    calibration = flat_calibration(sd=sd, seed_range=seeds_sd * _expected_range(6))
    keys = [(s, "0") for s in calibration["statistics"]]
    band = model_distance_band(calibration, {"alpha": 0.5}, keys, {k: 1.0 for k in keys}, 10_000,
                               {"alpha": np.linspace(0, 1, 11)}, draws=4000)
    floor = np.sqrt(seeds_sd ** 2 - sd ** 2 / 12 + seeds_sd ** 2 / 6)      # between volumes + calibrated mean
    assert band["median"] == pytest.approx(floor * np.sqrt(8.343 / 9), rel=0.06)


def test_verdict_of_the_models_own_image_and_of_a_foreign_one(synthetic_model):
    own = match(synthetic_model, truth_image(0.35, size=144), confirm=False)
    verdict = own["verdict"]
    assert verdict["label"] == "typical" and verdict["distance"] <= verdict["q90"], verdict
    assert 0 < verdict["median"] < verdict["q90"] < verdict["q99"] and verdict["tiles"] == 9
    assert "typical of the model's own slices" in verdict["text"] and "9 tiles of 48²" in verdict["text"]
    assert "verdict: distance" in format_match(own)
    one_tile = match(synthetic_model, truth_image(0.35, size=48), confirm=False)["verdict"]
    assert one_tile["q99"] > 1.5 * verdict["q99"]        # one tile scatters more: the band is wider
    # Twice the grain size: chords are twice as long (mean ln chord + 0.69), fractions are unchanged
    coarse = np.kron(truth_image(0.35), np.ones((2, 2), np.uint8))
    result = match(synthetic_model, coarse, confirm=False)
    assert result["verdict"]["label"] == "outside" and result["outside"]
    assert any("outside what the model makes" in w for w in result["warnings"])


def test_a_fitted_statistic_beyond_two_standard_deviations_is_named(synthetic_model):
    coarse = np.kron(truth_image(0.35), np.ones((2, 2), np.uint8))
    result = match(synthetic_model, coarse, confirm=False)
    far = [w for w in result["warnings"] if "more than 2 one-slice standard deviations" in w]
    assert len(far) == 1 and "mean ln chord of phase 0 (z = " in far[0], result["warnings"]
    assert "of the model's own images of this size have at least one" in far[0]
    z = result["statistics"]["ln_chord_mean"]["0"]["z"]
    assert z > 2 and f"{z:+.2f}" in far[0]
    assert result["statistics"]["vf"]["0"]["z"] is None          # not fitted: no z
    quiet = match(synthetic_model, truth_image(0.35, size=144), confirm=False)
    assert all(abs(e["z"]) <= 2 for per in quiet["statistics"].values() for e in per.values() if e["fitted"]) == \
        (not any("one-slice standard deviations" in w for w in quiet["warnings"]))


def test_match_rounds_to_the_step_it_is_given(synthetic_model):
    result = match(synthetic_model, truth_image(0.35), seed=7, step=0.005)
    value, fit = result["match"]["alpha"], result["best_fit"]["alpha"]
    assert abs(value / 0.005 - round(value / 0.005)) < 1e-9 and abs(value - fit) <= 0.0025 + 1e-9
    assert result["image_tile"].shape == result["generated_slice"].shape == (TILE, TILE)   # shown at one scale
    with pytest.raises(ValueError, match="step must be a positive number"):
        match(synthetic_model, truth_image(0.35), step=0, confirm=False)
