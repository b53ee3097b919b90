"""Tests of slicegan_core.evaluate: the compare report, closed-loop steering on the synthetic generator,
the plots and the two CLI entry points."""
from __future__ import annotations

import json

import numpy as np
import pytest

from slicegan_core.evaluate import (SCHEMA_VERSION, compare, compare_figures, evaluate, evaluate_main,
                                    save_figures, steering, steering_figures, steering_main)
from slicegan_core.evaluate.cli import parse_values
from slicegan_core.synthetic import synthesize

REQUIRED_PHASE_KEYS = {"vf_real", "vf_generated", "s2_max_abs_diff", "ln_chord_wasserstein",
                       "ln_esd_sigma_real", "ln_esd_sigma_generated"}


class SyntheticModel:
    """A stand-in for slicegan_core.Model whose 'generator' is the synthetic generator at sigma = alpha."""

    attribute_names = ("alpha",)
    trained_values = {"alpha": [0.05, 0.6]}
    trained_range = {"alpha": (0.05, 0.6)}
    phase_values = (0, 1, 2)
    image_type = "n-phase"
    voxel_size_um = None

    def __init__(self):
        self.calls = []

    def generate(self, attrs=None, seed=0, shape=(64, 64, 64), periodic=False):
        self.calls.append((dict(attrs), seed, tuple(shape), periodic))
        return synthesize(shape=shape, sigma=attrs["alpha"], median_esd=5.0, seed=seed, periodic=periodic).labels


def synthetic_truth(value, seed):
    # Other seeds than the model's, so truth and "generated" are independent samples of the same law.
    return synthesize(shape=(48, 48, 48), sigma=value, median_esd=5.0, seed=1000 + seed, periodic=False).labels


@pytest.fixture(scope="module")
def pair():
    """Two independent 48^3 synthetic volumes at sigma 0.15 and one at 0.6 (median ESD 6)."""
    make = lambda sigma, seed: synthesize(shape=(48, 48, 48), sigma=sigma, median_esd=6.0, seed=seed,
                                          periodic=False).labels
    return make(0.15, 1), make(0.15, 2), make(0.6, 3)


# ---- compare --------------------------------------------------------------------------------------------
def test_compare_of_a_volume_with_itself_has_zero_distances_and_the_documented_schema(pair):
    real = pair[0]
    report = compare(real, real.copy(), voxel_size=0.5, n_boot=50)
    assert report["schema_version"] == SCHEMA_VERSION and report["kind"] == "compare"
    assert report["mode"] == "3d" and report["size_measure"] == "esd" and report["voxel_size_um"] == 0.5
    assert sorted(report["phases"]) == ["0", "1", "2"]
    for entry in report["phases"].values():
        assert REQUIRED_PHASE_KEYS <= set(entry)
        assert entry["vf_abs_diff"] == 0 and entry["s2_max_abs_diff"] == 0
        assert entry["ln_chord_wasserstein"] == 0 and entry["ln_esd_wasserstein"] == 0 and entry["ln_esd_ks"] == 0
        assert entry["ln_esd_sigma_real"] == entry["ln_esd_sigma_generated"] > 0
        lo, hi = entry["ln_esd_sigma_ci_real"]
        assert lo < entry["ln_esd_sigma_real"] < hi
        assert entry["tortuosity_real"] is None
    json.dumps(report, allow_nan=False)                   # strictly valid JSON as returned


def test_compare_ranks_a_wider_size_distribution_as_further_away(pair):
    same_law = compare(pair[0], pair[1], n_boot=0)["phases"]
    wider = compare(pair[0], pair[2], n_boot=0)["phases"]
    for p in ("0", "1", "2"):
        assert wider[p]["ln_esd_sigma_generated"] > same_law[p]["ln_esd_sigma_generated"]
        assert wider[p]["ln_chord_wasserstein"] > 2 * same_law[p]["ln_chord_wasserstein"]
        assert abs(same_law[p]["ln_esd_sigma_diff"]) < 0.15


def test_2d_real_data_is_compared_with_slices_of_the_generated_volume(pair):
    real_2d = pair[1][24]
    report = compare(real_2d, pair[0], n_slices=4, n_boot=0)
    assert report["mode"] == "2d_slices" and report["size_measure"] == "ecd"
    for entry in report["phases"].values():
        assert entry["s2_max_abs_diff"] < 0.05 and entry["vf_abs_diff"] < 0.05
        assert entry["n_features_generated"] > entry["n_features_real"] > 0      # 12 slices vs one image
    assert len(report["curves"]["0"]["s2"]["r"]) == len(report["curves"]["0"]["s2"]["real"])


def test_compare_with_tortuosity_reports_a_ratio():
    channels = np.zeros((16, 12, 12), np.uint8)
    channels[:, 4:8, 4:8] = 1
    report = compare(channels, channels, phases=[1], tortuosity_factor=True, n_boot=0)
    entry = report["phases"]["1"]
    assert entry["tortuosity_real"] == pytest.approx(1.0, abs=1e-3) and entry["tortuosity_ratio"] == pytest.approx(1.0)


def test_compare_refuses_a_2d_generated_image_for_3d_real_data(pair):
    with pytest.raises(ValueError, match="generated is a 2D image"):
        compare(pair[0], pair[0][0])
    with pytest.raises(ValueError, match="n_slices"):
        compare(pair[0][0], pair[0], n_slices=0)


def test_evaluate_generates_from_a_model_or_takes_a_volume(pair, tmp_path):
    model = SyntheticModel()
    report = evaluate(model, pair[0], attrs={"alpha": 0.15}, seed=3, shape=(48, 48, 48))
    assert model.calls == [({"alpha": 0.15}, 3, (48, 48, 48), False)]
    assert report["generated"]["attrs"] == {"alpha": 0.15} and report["generated"]["seed"] == 3
    path = tmp_path / "real.npy"
    np.save(path, pair[0])
    assert evaluate(pair[1], path)["phases"]["1"]["vf_abs_diff"] < 0.05


# ---- steering ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def synthetic_steering():
    model = SyntheticModel()
    report = steering(model, "alpha", [0.05, 0.3, 0.6], seeds=2, shape=(48, 48, 48), truth=synthetic_truth,
                      progress=False)
    return model, report


def test_steering_the_synthetic_generator_is_monotone_with_spearman_one(synthetic_steering):
    _, report = synthetic_steering
    assert report["kind"] == "steering" and report["schema_version"] == SCHEMA_VERSION
    assert report["values"] == [0.05, 0.3, 0.6] and report["seeds"] == [0, 1]
    for p in ("0", "1", "2"):
        for measure in ("ln_esd_sigma", "ln_esd_sigma_field", "ln_chord_sigma"):
            entry = report["phases"][p][measure]
            assert entry["spearman"] == pytest.approx(1.0), (p, measure, entry["generated"]["median"])
            assert entry["truth_spearman"] == pytest.approx(1.0)
            band = entry["generated"]
            assert all(lo <= med <= hi for lo, med, hi in zip(band["min"], band["median"], band["max"]))
            assert np.shape(band["per_seed"]) == (3, 2)
    assert report["summary"]["ln_esd_sigma"]["monotone_increasing"] is True


def test_steering_reports_the_error_between_trained_values_against_truth(synthetic_steering):
    _, report = synthetic_steering
    assert report["is_trained_value"] == [True, False, True] and report["in_trained_range"] == [True] * 3
    (row,) = report["phases"]["1"]["ln_esd_sigma"]["interpolation"]
    assert row["value"] == 0.3
    # The generator *is* the truth here, so only seed noise separates them (measured ~0.03 at 64^3).
    assert abs(row["error_vs_truth"]) < 0.15
    assert row["error_vs_trained"] == pytest.approx(row["measured"] - row["from_trained"])


def test_steering_generates_every_value_and_seed_non_periodic(synthetic_steering):
    model, _ = synthetic_steering
    assert sorted((a["alpha"], s) for a, s, _, _ in model.calls) == [(v, s) for v in (0.05, 0.3, 0.6) for s in (0, 1)]
    assert all(shape == (48, 48, 48) and periodic is False for _, _, shape, periodic in model.calls)


def test_steering_adds_the_trained_values_and_flags_extrapolation():
    class Flat(SyntheticModel):
        def generate(self, attrs=None, seed=0, shape=(16, 16, 16), periodic=False):
            return (np.indices(shape).sum(axis=0) % 3).astype(np.uint8)      # ignores alpha

    report = steering(Flat(), "alpha", [0.8], seeds=[5], shape=16, progress=False)
    assert report["values"] == [0.05, 0.6, 0.8] and report["seeds"] == [5]
    assert report["in_trained_range"] == [True, True, False]
    assert report["phases"]["0"]["vf"]["spearman"] is None                     # constant: undefined rho
    json.dumps(report, allow_nan=False)


@pytest.mark.parametrize("kwargs, match", [({"attribute": "beta"}, "attribute"), ({"values": []}, "values"),
                                           ({"values": ["a"]}, "values"), ({"seeds": 0}, "seeds"),
                                           ({"seeds": [-1]}, "seeds"), ({"shape": (8, 8, 8)}, "shape")])
def test_steering_input_is_validated(kwargs, match):
    args = {"attribute": "alpha", "values": [0.1], "seeds": 1, "shape": (32, 32, 32), **kwargs}
    with pytest.raises(ValueError, match=match):
        steering(SyntheticModel(), args.pop("attribute"), args.pop("values"), progress=False, **args)


# ---- plots ------------------------------------------------------------------------------------------------
def test_figures_are_built_from_the_reports_and_saved_as_html(pair, synthetic_steering, tmp_path):
    figures = compare_figures(compare(pair[0], pair[2], n_boot=0))
    assert set(figures) == {"s2", "chords", "sizes"}
    assert len(figures["s2"].data) == 2 * 3                                    # real + generated per phase
    steer = steering_figures(synthetic_steering[1])
    assert set(steer) == {"ln_esd_sigma", "ln_esd_sigma_field", "ln_chord_sigma", "ln_esd_median", "vf"}
    names = {trace.name for trace in steer["ln_esd_sigma"].data}
    assert {"phase 0 generated", "phase 0 truth", "measured = commanded"} <= names
    paths = save_figures(steer, tmp_path / "plots", "steering")
    assert all(p.stat().st_size > 1000 for p in paths) and (tmp_path / "plots" / "plotly.min.js").exists()


# ---- CLI ------------------------------------------------------------------------------------------------
def test_evaluate_main_writes_the_json_report_and_plots(pair, tmp_path, capsys):
    np.save(tmp_path / "real.npy", pair[0])
    np.save(tmp_path / "gen.npy", pair[2])
    out = tmp_path / "report.json"
    assert evaluate_main(["--real", str(tmp_path / "real.npy"), "--generated", str(tmp_path / "gen.npy"),
                          "--json", str(out), "--plots", str(tmp_path / "plots"), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["schema_version"] == SCHEMA_VERSION and REQUIRED_PHASE_KEYS <= set(report["phases"]["2"])
    assert report["real"]["source"].endswith("real.npy")
    assert (tmp_path / "plots" / "compare_s2.html").exists()
    assert "sig lnESD" in capsys.readouterr().out


def test_cli_errors_are_one_sentence_value_errors(tmp_path, capsys):
    with pytest.raises(ValueError, match="does not exist"):
        evaluate_main(["--real", str(tmp_path / "missing.npy"), "--generated", str(tmp_path / "x.npy")])
    with pytest.raises(ValueError, match="required"):
        evaluate_main(["--real", "a.npy"])
    with pytest.raises(ValueError, match="--values"):
        parse_values("0.1:0.7")
    with pytest.raises(SystemExit) as done:
        steering_main(["--help"])
    assert done.value.code == 0 and "--values" in capsys.readouterr().out


def test_values_spec_is_inclusive_linspace_or_a_list():
    assert parse_values("0.1:0.7:13")[::6] == [0.1, 0.4, 0.7] and len(parse_values("0.1:0.7:13")) == 13
    assert parse_values("0.2,0.4") == [0.2, 0.4]


def test_steering_main_runs_a_model_folder_with_synthetic_truth(monkeypatch, tmp_path, capsys):
    model = SyntheticModel()
    model.info = {"recipe": {"median_esd": 5.0, "phase_fractions": [0.35, 0.35, 0.3]}}
    monkeypatch.setattr("slicegan_core.generate.load_model", lambda path, device="auto": model)
    out = tmp_path / "steer.json"
    assert steering_main(["--model", "models/x", "--values", "0.1,0.6", "--seeds", "1", "--shape", "32",
                          "--truth", "synthetic", "--json", str(out), "--quiet"]) == 0
    report = json.loads(out.read_text())
    assert report["has_truth"] and report["model"] == "models/x" and report["shape"] == [32, 32, 32]
    assert report["values"] == [0.05, 0.1, 0.6]
    assert "spearman" in capsys.readouterr().out


def test_compare_counts_islands_on_both_sides_the_same_way(pair):
    speckled = pair[1].copy()
    rng = np.random.default_rng(0)
    for z, y, x in rng.integers(4, 44, (40, 3)):
        speckled[z, y, x] = (speckled[z, y, x] + 1) % 3      # single-voxel islands
    report = compare(pair[0], speckled, n_boot=0)
    assert report["islands_max_size"] == 4
    added = sum(e["islands_per_million_generated"] - e["islands_per_million_real"]
                for e in report["phases"].values())
    assert added > 0.5 * 40 * 1e6 / speckled.size
    same = compare(pair[0], pair[0][4:44, 4:44, 4:44], n_boot=0)   # real cropped centrally to 40^3: identical
    for entry in same["phases"].values():
        assert entry["islands_per_million_real"] == entry["islands_per_million_generated"]
    sliced = compare(pair[1][24], speckled, n_boot=0, n_slices=2)
    assert all(e["islands_per_million_generated"] > 0 for e in sliced["phases"].values())
    # a micrograph larger than the generated slices is counted in tiles of their size (pieces its edges cut)
    from slicegan_core.metrics import tiled_island_density
    large = np.concatenate([pair[1][24], pair[1][25]], axis=1)          # 48 x 96 against 48^3
    wide = compare(large, speckled, n_boot=0, n_slices=2)
    tiled = tiled_island_density(large, 48, [int(p) for p in wide["phases"]])
    assert {int(p): e["islands_per_million_real"] for p, e in wide["phases"].items()} == pytest.approx(tiled)
