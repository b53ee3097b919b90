"""The shipped default model (models/default): it loads, is deterministic, and alpha steers it.

Fast (no training): a few 64^3 volumes. The full fidelity / steering report is bench/report_default_model.py.
"""
import json
from pathlib import Path

import numpy as np
import pytest

from slicegan_core import load_model
from slicegan_core.evaluate import measure_volume

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "default"


@pytest.fixture(scope="module")
def model():
    return load_model(MODEL_DIR)


def test_model_card_describes_the_recipe(model):
    info = json.loads((MODEL_DIR / "model.json").read_text())
    assert model.attribute_names == ("alpha",)
    assert model.trained_values["alpha"] == [0.15, 0.35, 0.6]
    assert model.trained_range["alpha"] == pytest.approx((0.15, 0.6))
    assert model.image_type == "n-phase" and model.phase_values == (0, 1, 2)
    recipe = info["recipe"]
    assert recipe["sigmas"] == [0.15, 0.35, 0.6] and recipe["periodic"] is True
    assert info["training"]["steps"] > 0 and info["training"]["wall_time_s"] > 0
    assert (MODEL_DIR / "model.safetensors").stat().st_size < 20e6   # small enough to ship


def test_deterministic_and_seed_dependent(model):
    a = model.generate({"alpha": 0.35}, seed=3, shape=(48, 40, 32))
    b = model.generate({"alpha": 0.35}, seed=3, shape=(48, 40, 32))
    c = model.generate({"alpha": 0.35}, seed=4, shape=(48, 40, 32))
    assert a.shape == (48, 40, 32) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert np.mean(a != c) > 0.2


def test_all_phases_present_at_trained_fractions(model):
    volume = model.generate({"alpha": 0.35}, seed=0, shape=(64, 64, 64))
    fractions = np.bincount(volume.ravel(), minlength=3) / volume.size
    np.testing.assert_allclose(fractions, [0.35, 0.35, 0.30], atol=0.06)


def test_alpha_steers_grain_size_spread(model):
    """Measured width of ln(grain size) at alpha=0.15 is below that at alpha=0.60 (same seeds)."""
    def spread(alpha):
        values = []
        for seed in (0, 1):
            stats = measure_volume(model.generate({"alpha": alpha}, seed=seed, shape=(64, 64, 64)), [0, 1, 2], 1.0)
            values += [stats[p]["ln_esd_sigma"] for p in (0, 1, 2)] + [stats[p]["ln_chord_sigma"] for p in (0, 1, 2)]
        return float(np.nanmean(values))

    assert spread(0.15) < spread(0.60)
