"""Tests for slicegan_core.synthetic: realised size law, phase fractions, determinism, periodicity."""

import json
import math

import numpy as np
import pytest

from slicegan_core.synthetic import SyntheticVolume, grain_esd, synthesize

FRACTIONS = (0.35, 0.35, 0.30)


@pytest.fixture(scope="module")
def volumes_128():
    """sigma -> 128^3 volume (median_esd=8), generated once for the module."""
    return {
        sigma: synthesize(shape=(128, 128, 128), sigma=sigma, median_esd=8.0, seed=0) for sigma in (0.15, 0.35, 0.6)
    }


@pytest.mark.parametrize("sigma", [0.15, 0.35, 0.6])
def test_realised_size_law_matches_request(volumes_128, sigma):
    esd = grain_esd(volumes_128[sigma].grain_ids)
    assert abs(np.log(esd).std() - sigma) < 0.03
    assert abs(np.median(esd) / 8.0 - 1.0) < 0.10


@pytest.mark.parametrize("sigma", [0.15, 0.35, 0.6])
def test_realised_phase_fractions_match_targets(volumes_128, sigma):
    labels = volumes_128[sigma].labels
    realised = np.bincount(labels.ravel(), minlength=3) / labels.size
    np.testing.assert_allclose(realised, FRACTIONS, atol=0.01)


def test_phase_is_independent_of_grain_size(volumes_128):
    vol = volumes_128[0.35]
    log_esd = np.log(grain_esd(vol.grain_ids))
    mean_per_phase = [log_esd[vol.grain_phase == p].mean() for p in range(3)]
    # ~1500 grains per phase: the standard error of each mean is about 0.01.
    assert max(mean_per_phase) - min(mean_per_phase) < 0.05


def test_monodisperse_when_sigma_is_zero():
    esd = grain_esd(synthesize(shape=(64, 64, 64), sigma=0.0, median_esd=8.0, seed=2).grain_ids)
    # Without the volume calibration the tessellation alone spreads ln(ESD) by about 0.05.
    assert np.log(esd).std() < 0.03
    assert abs(np.median(esd) / 8.0 - 1.0) < 0.05


def test_truncation_narrows_the_law_as_a_truncated_normal():
    # ln(ESD) cut at +-1 sigma has std sigma * sqrt(1 - 2 phi(1) / (2 Phi(1) - 1)) = 0.5395 sigma.
    sigma = 0.35
    vol = synthesize(shape=(64, 64, 64), sigma=sigma, median_esd=8.0, seed=4, truncate_sigmas=1.0)
    log_esd = np.log(grain_esd(vol.grain_ids))
    assert abs(log_esd.std() - 0.5395 * sigma) < 0.02
    assert log_esd.max() < math.log(8.0) + sigma + 0.05


def test_api_contract_and_recipe_round_trip():
    vol = synthesize(shape=(32, 40, 24), sigma=0.3, median_esd=6.0, phase_fractions=(0.2, 0.8), seed=5)
    assert isinstance(vol, SyntheticVolume)
    assert vol.labels.shape == vol.grain_ids.shape == (32, 40, 24)
    assert vol.labels.dtype == np.uint8 and vol.grain_phase.dtype == np.uint8
    assert vol.grain_ids.dtype == np.int32
    n_grains = int(vol.grain_ids.max()) + 1
    assert vol.grain_ids.min() == 0 and np.all(np.bincount(vol.grain_ids.ravel()) > 0)  # compact ids
    assert vol.grain_phase.shape == (n_grains,) and set(np.unique(vol.labels)) == {0, 1}
    np.testing.assert_array_equal(vol.labels, vol.grain_phase[vol.grain_ids])

    recipe = json.loads(json.dumps(vol.recipe))
    assert recipe["function"] == "slicegan_core.synthetic.synthesize"
    assert recipe["shape"] == [32, 40, 24] and recipe["seed"] == 5 and recipe["truncate_sigmas"] == 3.0
    rebuilt = synthesize(**{k: v for k, v in recipe.items() if k != "function"})
    np.testing.assert_array_equal(rebuilt.grain_ids, vol.grain_ids)


def test_deterministic_per_seed_and_leaves_global_state_alone():
    state = np.random.get_state()[1].copy()
    a = synthesize(shape=(32, 32, 32), seed=7)
    b = synthesize(shape=(32, 32, 32), seed=7)
    c = synthesize(shape=(32, 32, 32), seed=8)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.grain_ids, b.grain_ids)
    np.testing.assert_array_equal(a.grain_phase, b.grain_phase)
    assert not np.array_equal(a.grain_ids, c.grain_ids)
    assert np.mean(a.labels != c.labels) > 0.3
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_periodic_volume_wraps_across_faces():
    periodic = synthesize(shape=(48, 48, 48), periodic=True, seed=1)
    bounded = synthesize(shape=(48, 48, 48), periodic=False, seed=1)
    for axis in range(3):
        first = np.take(periodic.grain_ids, 0, axis=axis)
        last = np.take(periodic.grain_ids, -1, axis=axis)
        # Opposite faces are neighbouring slices of the tiled volume: most voxels share a grain.
        assert np.mean(first == last) > 0.6
        assert np.mean(np.take(periodic.labels, 0, axis=axis) == np.take(periodic.labels, -1, axis=axis)) > 0.7
        # Without wrap, faces 47 voxels apart (about 6 grains) never share one. (Their labels agree by
        # chance, ~0.35 on average, but with only a few dozen grains per face that is too noisy to test.)
        bounded_first = np.take(bounded.grain_ids, 0, axis=axis)
        assert np.mean(bounded_first == np.take(bounded.grain_ids, -1, axis=axis)) == 0.0


def test_grain_esd_known_answers():
    cube = np.zeros((6, 6, 6), dtype=np.int32)
    cube[:4, :4, :4] = 2  # 64 voxels; id 1 has none
    esd = grain_esd(cube)
    np.testing.assert_allclose(esd, [(6 * 152 / np.pi) ** (1 / 3), 0.0, (6 * 64 / np.pi) ** (1 / 3)])
    square = np.ones((10, 10), dtype=np.uint8)
    np.testing.assert_allclose(grain_esd(square), [0.0, math.sqrt(400 / np.pi)])


@pytest.mark.parametrize(
    "grain_ids, match",
    [
        (np.zeros(5, dtype=np.int32), "grain_ids must be a non-empty 2D or 3D array"),
        (np.zeros((3, 3), dtype=np.float32), "grain_ids must hold integers"),
        (-np.ones((3, 3), dtype=np.int32), "grain_ids must be non-negative"),
    ],
)
def test_grain_esd_rejects_bad_input(grain_ids, match):
    with pytest.raises(ValueError, match=match):
        grain_esd(grain_ids)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"shape": (7, 8, 8)}, "shape must be three integers of at least 8"),
        ({"shape": (16, 16)}, "shape must be three integers of at least 8"),
        ({"shape": (16.0, 16, 16)}, "shape must be three integers of at least 8"),
        ({"sigma": -0.1}, "sigma must be a finite number >= 0"),
        ({"median_esd": 1.0}, "median_esd must be a number of voxels greater than 1"),
        ({"phase_fractions": (0.5, 0.6)}, "phase_fractions must be 1 to 255 positive numbers summing to 1"),
        ({"phase_fractions": (1.5, -0.5)}, "phase_fractions must be 1 to 255 positive numbers summing to 1"),
        ({"periodic": "yes"}, "periodic must be True or False"),
        ({"seed": -1}, "seed must be a non-negative integer"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
        ({"truncate_sigmas": 0.0}, "truncate_sigmas must be a finite number > 0"),
    ],
)
def test_synthesize_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        synthesize(**{"shape": (16, 16, 16), **kwargs})
