"""Tests for slicegan_core.synthetic: realised size law, phase fractions, determinism, periodicity, argument
checks, the size-law bound and the up-front memory check."""

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from slicegan_core import synthetic
from slicegan_core.synthetic import SyntheticVolume, check_memory, grain_esd, synthesis_bytes, synthesize

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
        ({"shape": (True, 16, 16)}, "shape must be three integers of at least 8"),
        ({"shape": (np.float64(16), 16, 16)}, "shape must be three integers of at least 8"),
        ({"sigma": -0.1}, r"sigma must be a finite number from 0 to 2, got -0.1; use e.g. 0.35"),
        ({"sigma": 1e9}, r"sigma must be a finite number from 0 to 2, got 1000000000.0"),
        ({"sigma": 2.5}, "sigma must be a finite number from 0 to 2"),
        ({"sigma": float("nan")}, "sigma must be a finite number from 0 to 2, got nan"),
        ({"sigma": float("inf")}, "sigma must be a finite number from 0 to 2, got inf"),
        ({"sigma": True}, "sigma must be a finite number from 0 to 2, got True"),
        ({"sigma": "0.3"}, "sigma must be a finite number from 0 to 2"),
        ({"median_esd": 1.0}, "median_esd must be a number of voxels greater than 1"),
        ({"median_esd": -3.0}, "median_esd must be a number of voxels greater than 1"),
        ({"median_esd": float("inf")}, "median_esd must be a number of voxels greater than 1, got inf"),
        ({"median_esd": 1e9}, r"median_esd=1000000000.0 is too large for a \(32, 32, 32\) volume with sigma=0.35: "
                              r"use a value above 1 and at most 13.9 voxels"),
        ({"median_esd": 14.0}, r"median_esd=14.0 is too large .* at most 13.9 voxels"),
        ({"sigma": 1.9}, r"sigma=1.9 is too wide for a \(32, 32, 32\) volume"),
        ({"phase_fractions": (0.5, 0.6)}, "phase_fractions must be 1 to 255 positive numbers summing to 1"),
        ({"phase_fractions": (1.5, -0.5)}, "phase_fractions must be 1 to 255 positive numbers summing to 1"),
        ({"phase_fractions": (True,)}, r"phase_fractions must be .*, got \(True,\)"),
        ({"phase_fractions": ("0.5", "0.5")}, "phase_fractions must be 1 to 255 positive numbers summing to 1"),
        ({"phase_fractions": (float("nan"), 1.0)}, "phase_fractions must be 1 to 255 positive numbers"),
        ({"phase_fractions": (float("inf"), 1.0)}, "phase_fractions must be 1 to 255 positive numbers"),
        ({"phase_fractions": (0.0, 1.0)}, "phase_fractions must be 1 to 255 positive numbers"),
        ({"phase_fractions": ()}, "phase_fractions must be 1 to 255 positive numbers"),
        ({"phase_fractions": 1.0}, "phase_fractions must be 1 to 255 positive numbers"),
        ({"periodic": "yes"}, "periodic must be True or False"),
        ({"seed": -1}, "seed must be a non-negative integer below 2\\*\\*64"),
        ({"seed": 1.5}, "seed must be a non-negative integer"),
        ({"seed": True}, "seed must be a non-negative integer"),
        ({"seed": 2**64}, "seed must be a non-negative integer below 2\\*\\*64, got 18446744073709551616"),
        ({"seed": np.float64(2)}, "seed must be a non-negative integer"),
        ({"truncate_sigmas": 0.0}, "truncate_sigmas must be a finite number above 0 and at most 6"),
        ({"truncate_sigmas": 7.0}, "truncate_sigmas must be a finite number above 0 and at most 6, got 7.0"),
        ({"truncate_sigmas": float("inf")}, "truncate_sigmas must be a finite number above 0 and at most 6"),
    ],
)
def test_synthesize_rejects_bad_arguments(kwargs, match):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=match):
        synthesize(**{"shape": (32, 32, 32), **kwargs})
    assert time.perf_counter() - started < 0.5                  # refused before any work


def test_numpy_integers_and_the_largest_seed_are_accepted():
    vol = synthesize(shape=(np.int64(16), np.int32(16), 16), median_esd=4.0, seed=np.uint64(3))
    assert vol.recipe["shape"] == [16, 16, 16] and vol.recipe["seed"] == 3
    assert json.dumps(vol.recipe)                               # plain ints, still JSON
    np.testing.assert_array_equal(vol.grain_ids, synthesize(shape=(16, 16, 16), median_esd=4.0, seed=3).grain_ids)
    assert synthesize(shape=(8, 8, 8), median_esd=2.0, seed=2**64 - 1).labels.shape == (8, 8, 8)


@pytest.mark.parametrize("sigma", [0.0, 0.35, 1.0, 1.5])
def test_the_largest_allowed_median_finishes_quickly(sigma):
    """At the bound a few grains fill the volume; the growth must not fall into its slow fallback (a law
    whose largest grain could hold 8 box volumes once took 56 s at 128^3)."""
    shape = (64, 64, 64)
    largest = synthetic._largest_median_esd(shape, sigma, 3.0)
    if largest <= 1:
        with pytest.raises(ValueError, match=f"sigma={sigma:g} is too wide for a \\(64, 64, 64\\) volume"):
            synthesize(shape=shape, sigma=sigma, median_esd=1.01)
        return
    with pytest.raises(ValueError, match="is too large"):
        synthesize(shape=shape, sigma=sigma, median_esd=largest * 1.01)
    for seed in range(3):
        started = time.perf_counter()
        vol = synthesize(shape=shape, sigma=sigma, median_esd=largest, seed=seed)
        assert time.perf_counter() - started < 5.0
        assert vol.grain_phase.size >= 1
    # the largest grain the law can draw is no larger than the volume
    biggest = largest * math.exp(3.0 * sigma)
    assert math.pi / 6 * biggest**3 <= math.prod(shape) * (1 + 1e-9)


# ---- memory ----------------------------------------------------------------------------------------------

GIB = 2**30


def test_a_volume_that_does_not_fit_is_refused_up_front(monkeypatch):
    monkeypatch.setattr(synthetic, "available_memory", lambda: 2 * GIB)
    started = time.perf_counter()
    with pytest.raises(ValueError) as error:
        synthesize(shape=(1024, 1024, 1024))
    assert time.perf_counter() - started < 0.5
    match = re.fullmatch(r"A 1024\^3 volume needs ([\d.,]+) GiB of memory but 2\.0 GiB is available; generate at "
                         r"most about (\d+)\^3, or free memory or use a machine with more\.", str(error.value))
    assert match, str(error.value)
    assert float(match[1]) == pytest.approx(synthesis_bytes((1024,) * 3) / GIB, abs=0.06)
    side = int(match[2])
    assert synthesis_bytes((side,) * 3) <= 2 * GIB < synthesis_bytes((int(side * 1.15),) * 3)
    assert synthesize(shape=(16, 16, 16), median_esd=4.0).labels.shape == (16, 16, 16)   # small ones still run


@pytest.mark.parametrize("shape", [(100_000,) * 3, (10**7, 10**4, 16)])
def test_absurd_shapes_are_refused_with_the_real_memory(shape):
    with pytest.raises(ValueError, match=r"volume needs [\d.e+]+ GiB of memory but [\d.]+ GiB is available"):
        synthesize(shape=shape)


def test_many_small_grains_count_in_the_estimate():
    # each grain's packing candidates (~9 kB) outweigh its voxels when grains are a few voxels across
    assert synthesis_bytes((128,) * 3, median_esd=2.0) > 20 * synthesis_bytes((128,) * 3, median_esd=8.0) / 2
    assert synthesis_bytes((128,) * 3, periodic=False) > synthesis_bytes((128,) * 3, periodic=True)


def test_check_memory_with_the_available_bytes_given():
    need = lambda side: 10 * side**3                         # noqa: E731
    check_memory((100, 100, 100), need(100), need, available=10 * 100**3)       # fits exactly: no error
    with pytest.raises(ValueError, match=r"A 100\^3 volume needs .* generate at most about 46\^3"):
        check_memory((100, 100, 100), need(100), need, available=10**6)
    with pytest.raises(ValueError, match=r"A 100x50x20 volume needs .* about 40\^3"):
        check_memory((100, 50, 20), need(60), need, available=10**6, multiple=8)
    with pytest.raises(ValueError, match="not even the smallest volume fits"):
        check_memory((100, 100, 100), need(100), need, available=10, smallest=8)


def test_no_check_when_the_available_memory_is_unknown(monkeypatch):
    monkeypatch.setattr(synthetic, "available_memory", lambda: None)
    check_memory((10**6,) * 3, 10**30, lambda side: 10**30)


def test_memory_estimate_covers_the_measured_peak():
    """Peak RSS of a real run (a fresh process) stays below the estimate, and not far below it."""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to measure the peak memory")
    script = """
import json
from slicegan_core.synthetic import synthesis_bytes, synthesize
def rss(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
synthesize(shape=(8, 8, 8), median_esd=2.0)
base = rss("VmRSS")
synthesize(shape=(96, 96, 96), median_esd=4.0, periodic=False)
print(json.dumps({"measured": rss("VmHWM") - base,
                  "estimate": synthesis_bytes((96, 96, 96), median_esd=4.0, periodic=False)}))
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert numbers["measured"] <= numbers["estimate"] <= 2.0 * numbers["measured"], numbers
