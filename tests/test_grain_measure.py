"""The field's grain-size width: minimum feature size, IQR sigma, and generated vs truth measured alike."""
import numpy as np
import pytest

from slicegan_core.evaluate import compare
from slicegan_core.metrics import (DEFAULT_MIN_VOXELS, FeatureSizes, compare_size_spread, feature_sizes,
                                   phase_statistics, size_spread)
from slicegan_core.metrics import spread as spread_module
from slicegan_core.synthetic import synthesize

SIZES = [1, 2, 4, 7, 8, 9, 27]          # voxels of the isolated features below


def pieces() -> np.ndarray:
    """Phase-1 features of exactly SIZES voxels, isolated in phase 0 and clear of the border."""
    labels = np.zeros((12, 12, 48), np.uint8)
    x = 1
    for n in SIZES:
        if n == 27:
            labels[2:5, 2:5, x:x + 3] = 1                       # a 3 x 3 x 3 cube
            x += 5
        else:
            labels[5, 5, x:x + n] = 1                           # a rod of n voxels
            x += n + 1
    return labels


def lognormal_features(sigma: float, n: int, fragments: int, seed: int) -> FeatureSizes:
    """FeatureSizes of a log-normal sample of ESDs (median 8 voxels) plus single-voxel fragments."""
    esd = np.exp(np.random.default_rng(seed).normal(np.log(8.0), sigma, n))
    voxels = np.concatenate([np.maximum(1, np.round(np.pi / 6 * esd ** 3)), np.ones(fragments)]).astype(np.int64)
    return FeatureSizes(diameters=np.cbrt(6 * voxels / np.pi), volumes=voxels.astype(float), n_features=voxels.size,
                        n_border=0, voxels=voxels)


def test_the_minimum_size_drops_exactly_the_features_below_it():
    features = feature_sizes(pieces(), phases=[1])[1]
    assert sorted(features.voxels.tolist()) == SIZES
    np.testing.assert_allclose(np.sort(features.diameters), np.cbrt(6 * np.array(SIZES) / np.pi))
    kept = features.at_least(8)
    assert sorted(kept.voxels.tolist()) == [8, 9, 27]
    np.testing.assert_allclose(np.sort(kept.diameters), np.cbrt(6 * np.array([8, 9, 27]) / np.pi))
    assert (kept.n_features, kept.n_border) == (features.n_features, features.n_border)
    spread = size_spread(features, n_boot=0)
    assert (spread.min_voxels, spread.n, spread.n_small) == (DEFAULT_MIN_VOXELS, 3, 4)
    assert spread.small_share == pytest.approx(4 / 7)
    assert spread.sigma == pytest.approx(np.log(kept.diameters).std(ddof=1))
    assert spread.sigma_all == pytest.approx(np.log(features.diameters).std(ddof=1))
    assert size_spread(features, min_voxels=1, n_boot=0).n_small == 0


def test_minimum_size_is_in_voxels_whatever_the_voxel_size():
    coarse = feature_sizes(pieces(), phases=[1], voxel_size=0.5)[1]
    assert sorted(coarse.at_least(8).voxels.tolist()) == [8, 9, 27]


def test_iqr_sigma_of_a_known_lognormal_sample_ignores_a_fragment_tail():
    features = lognormal_features(0.3, 20000, fragments=2000, seed=3)      # 9 % single-voxel fragments
    spread = size_spread(features, n_boot=100, seed=1)
    assert spread.n_small == 2000
    assert spread.sigma_robust == pytest.approx(0.3, abs=0.015)
    assert spread.sigma == pytest.approx(0.3, abs=0.015)
    assert spread.sigma_ci[0] < spread.sigma < spread.sigma_ci[1]
    assert spread.sigma_all > 0.5                         # the fragments are what inflates the all-features width
    assert spread.sigma_robust_all > spread.sigma_robust


def test_generated_and_truth_go_through_the_same_measurement(monkeypatch):
    truth, generated = lognormal_features(0.3, 3000, 50, seed=1), lognormal_features(0.3, 3000, 300, seed=2)
    calls = []
    original = spread_module.size_spread

    def spy(sizes, **options):
        calls.append(options)
        return original(sizes, **options)
    monkeypatch.setattr(spread_module, "size_spread", spy)
    verdict = compare_size_spread(generated, truth, min_voxels=9, n_boot=50, seed=4)
    assert len(calls) == 2 and calls[0] == calls[1] == {"min_voxels": 9, "n_boot": 50, "ci": 0.95, "seed": 4}
    assert verdict.generated == original(generated, min_voxels=9, n_boot=50, seed=4)
    assert verdict.truth == original(truth, min_voxels=9, n_boot=50, seed=4)


def test_verdict_within_the_truths_seed_band_or_outside_it():
    truth = lognormal_features(0.3, 3000, 20, seed=1)
    same = compare_size_spread(lognormal_features(0.3, 3000, 20, seed=2), truth, n_boot=200)
    low, high = same.band
    assert low < same.truth.sigma < high and same.within is True
    ci_low, ci_high = same.truth.sigma_ci
    assert high - low == pytest.approx(np.sqrt(2) * (ci_high - ci_low))
    wider = compare_size_spread(lognormal_features(0.4, 3000, 20, seed=2), truth, n_boot=200)
    assert wider.within is False and wider.difference > 0.05
    # a fragment tail alone moves the all-features width, not the field measure
    tail = compare_size_spread(lognormal_features(0.3, 3000, 400, seed=2), truth, n_boot=200)
    assert tail.within is True and tail.difference_all > 0.2
    assert compare_size_spread(lognormal_features(0.3, 1, 0, seed=2), truth, n_boot=200).within is None


def test_pools_phases_and_phase_statistics():
    labels = synthesize(shape=(40, 40, 40), sigma=0.35, median_esd=6.0, seed=1).labels
    stats = phase_statistics(labels, s2=False, n_boot=0)
    sizes = feature_sizes(labels)
    pooled = size_spread(sizes, n_boot=10)
    assert size_spread(stats, n_boot=10) == pooled == size_spread(list(sizes.values()), n_boot=10)
    assert pooled.n + pooled.n_small == sum(s.diameters.size for s in sizes.values())


def test_compare_report_measures_both_sides_alike():
    labels = synthesize(shape=(40, 40, 40), sigma=0.35, median_esd=6.0, seed=1).labels
    report = compare(labels, labels, n_boot=20)
    assert report["esd_min_voxels"] == DEFAULT_MIN_VOXELS
    for entry in report["phases"].values():
        assert entry["ln_esd_sigma_field_real"] == entry["ln_esd_sigma_field_generated"]
        assert entry["ln_esd_sigma_field_diff"] == 0
        assert entry["n_small_features_real"] == entry["n_small_features_generated"]
        assert entry["ln_esd_sigma_field_ci_real"] == entry["ln_esd_sigma_field_ci_generated"]


def test_bad_minimum_sizes_and_sizes_without_voxel_counts_are_refused():
    features = feature_sizes(pieces(), phases=[1])[1]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="min_voxels"):
            features.at_least(bad)
    bare = FeatureSizes(features.diameters, features.volumes, features.n_features, features.n_border)
    with pytest.raises(ValueError, match="voxel counts"):
        size_spread(bare)
    with pytest.raises(TypeError):
        size_spread(3.0)
