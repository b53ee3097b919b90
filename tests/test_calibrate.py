"""slicegan_core.calibrate: tile statistics, the calibration sweep, storing it with the model, predictions."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from slicegan_core.calibrate import (STATISTICS, calibrate, calibrate_model_dir, calibration_status, describe_value,
                                     image_tiles, predict, save_calibration, tile_statistics, volume_tiles,
                                     weights_fingerprint)
from slicegan_core.generate import load_model

SMALL = dict(values=3, seeds=2, tile=32, slices_per_axis=2, progress=False)


def stripes(period_0: int = 8, period_1: int = 8, size: int = 32) -> np.ndarray:
    image = np.zeros((size, size), np.uint8)
    x = 0
    while x < size:
        image[:, x + period_0: x + period_0 + period_1] = 1
        x += period_0 + period_1
    return image


def test_tile_statistics_of_stripes_are_exact():
    s = tile_statistics(stripes(), [0, 1], voxel_size=0.5)
    assert s["vf"] == {0: 0.5, 1: 0.5}
    # Phase 0: chords of 8 px across the stripes (the first, at the border, is cut) = 4 um, none along them.
    assert s["ln_chord_mean"][0] == pytest.approx(math.log(4.0))
    assert s["ln_chord_sigma"][0] == 0.0
    assert s["islands"] == {0: 0.0, 1: 0.0}
    assert set(s) == set(STATISTICS)


def test_tile_statistics_nan_for_an_absent_phase_and_refuse_3d():
    s = tile_statistics(stripes(), [0, 1, 2])
    assert s["vf"][2] == 0.0 and math.isnan(s["ln_chord_sigma"][2]) and math.isnan(s["ln_ecd_sigma"][2])
    with pytest.raises(ValueError, match="2D"):
        tile_statistics(np.zeros((4, 4, 4), np.uint8), [0])


def test_image_tiles_are_centred_and_limited():
    image = np.arange(100 * 70).reshape(100, 70)
    tiles = image_tiles(image, 32)
    assert len(tiles) == 3 * 2 and all(t.shape == (32, 32) for t in tiles)
    assert tiles[0][0, 0] == image[2, 3]                          # (100 - 96) / 2, (70 - 64) / 2
    assert len(image_tiles(image, 32, limit=2)) == 2
    assert image_tiles(image, 128) == []
    assert len(volume_tiles(np.zeros((40, 40, 40), np.uint8), 32, 3)) == 9


def test_calibrate_sweeps_the_trained_range(tiny_model):
    calibration = calibrate(tiny_model, **SMALL)
    sweep = calibration["attributes"]["alpha"]
    assert sweep["values"] == pytest.approx([0.2, 0.35, 0.5])
    assert calibration["tile"] == 32 and calibration["phases"] == [0, 1, 2]
    assert calibration["weights"] == weights_fingerprint(tiny_model)
    curve = sweep["curves"]["vf"]["0"]
    assert set(curve) == {"mean", "sd", "q10", "q90", "seed_low", "seed_high"}
    assert all(len(v) == 3 for v in curve.values())
    json.dumps(calibration, allow_nan=False)                    # JSON-ready, NaN stored as null
    fractions = [sweep["curves"]["vf"][str(p)]["mean"][0] for p in (0, 1, 2)]
    assert sum(fractions) == pytest.approx(1.0)


def test_calibrate_refuses_bad_settings(tiny_model, make_random_model):
    with pytest.raises(ValueError, match="seeds"):
        calibrate(tiny_model, seeds=1, progress=False)
    with pytest.raises(ValueError, match="values"):
        calibrate(tiny_model, values=1, progress=False)
    with pytest.raises(ValueError, match="unknown attribute"):
        calibrate(tiny_model, values={"beta": [0, 1]}, progress=False)
    no_attributes = make_random_model("tiny", attribute_names=(), attribute_ranges=())
    with pytest.raises(ValueError, match="no attributes"):
        calibrate(no_attributes, progress=False)


def test_stored_calibration_is_found_and_goes_stale_when_the_weights_change(trained_run, tmp_path):
    model_dir = shutil.copytree(trained_run / "model", tmp_path / "model")
    weights_before = (model_dir / "model.safetensors").read_bytes()
    assert calibration_status(load_model(model_dir, device="cpu"))[0] is None
    calibration = calibrate_model_dir(model_dir, progress=False, **{k: v for k, v in SMALL.items() if k != "progress"})
    assert (model_dir / "model.safetensors").read_bytes() == weights_before
    model = load_model(model_dir, device="cpu")
    stored, note = calibration_status(model)
    assert stored == calibration and note is None
    with torch.no_grad():
        next(model.generator.parameters()).add_(1.0)
    stored, note = calibration_status(model)
    assert stored is not None and "recalibrate" in note
    with pytest.raises(ValueError, match="no model.json"):
        save_calibration(tmp_path, calibration)


def _fake_calibration(values=(0.0, 1.0), means=(1.0, 3.0)):
    curve = {"mean": list(means), "sd": [0.1, 0.3], "q10": [m - 0.1 for m in means], "q90": [m + 0.1 for m in means],
             "seed_low": [m - 0.05 for m in means], "seed_high": [m + 0.05 for m in means]}
    return {"tile": 128, "statistics": ["ln_chord_sigma"], "phases": [0],
            "attributes": {"alpha": {"values": list(values), "other_attributes": {},
                                     "curves": {"ln_chord_sigma": {"0": curve}}}}}


def test_predict_interpolates_and_clamps():
    calibration = _fake_calibration()
    assert predict(calibration, {"alpha": 0.25})["ln_chord_sigma"]["0"]["mean"] == pytest.approx(1.5)
    assert predict(calibration, {"alpha": 0.5})["ln_chord_sigma"]["0"]["sd"] == pytest.approx(0.2)
    assert predict(calibration, {"alpha": 7.0})["ln_chord_sigma"]["0"]["mean"] == pytest.approx(3.0)
    many = predict(calibration, {"alpha": np.array([0.0, 0.5, 1.0])})["ln_chord_sigma"]["0"]["mean"]
    assert many.tolist() == pytest.approx([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="each calibrated attribute"):
        predict(calibration, {"beta": 1.0})


def test_describe_value_gives_the_prediction_and_seed_band():
    text = describe_value(_fake_calibration(), "alpha", 0.5)
    assert text == "σ ln chord 2.000 (seeds 1.950–2.050; 128² slice)"
    assert describe_value(_fake_calibration(), "beta", 0.5) == ""


def test_export_keeps_the_calibration(trained_run, tmp_path):
    from slicegan_core.train import Run

    run_dir = shutil.copytree(trained_run, tmp_path / "run")
    calibration = {"version": 1, "weights": "x", "step": 2}
    save_calibration(run_dir / "model", calibration)
    run = Run(run_dir, json.loads((run_dir / "config.json").read_text()))
    run.restore()
    run.export_model(run_dir / "model")
    assert json.loads((run_dir / "model" / "model.json").read_text())["calibration"] == calibration


def test_train_with_calibrate_calibrates_the_finished_model(tiny_specs, tmp_path):
    from slicegan_core.train import train

    run_dir = train(tiny_specs, tmp_path / "run", preset_name="tiny", steps=1,
                    calibrate={k: v for k, v in SMALL.items() if k != "progress"})
    model = load_model(run_dir / "model", device="cpu")
    calibration, note = calibration_status(model)
    assert note is None and calibration["tile"] == 32
    assert json.loads((run_dir / "config.json").read_text())["calibrate"]["seeds"] == 2
