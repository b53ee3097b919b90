"""Model directories: round trip, one clear ValueError per kind of damage, and no pickle anywhere."""
import json
import re
from pathlib import Path

import pytest
import torch

import slicegan_core
from slicegan_core.config import ModelConfig, preset
from slicegan_core.generate import load_model
from slicegan_core.modelfile import INFO_FILE, MODEL_FORMAT, WEIGHTS_FILE, default_phases, read_model, save_model
from slicegan_core.networks import Generator

INFO = {"phases": default_phases([0, 128, 255]),
        "attributes": {"alpha": {"trained_values": [0.2, 0.5], "range": [0.2, 0.5]}},
        "voxel_size_um": 0.25, "training_data": {"datasets": []}, "training": {"steps": 3}}


def tiny_config(**fields) -> ModelConfig:
    return ModelConfig(**preset("tiny", attribute_ranges=((0.2, 0.5),), **fields)[0])


@pytest.fixture
def model_dir(tmp_path) -> Path:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        generator = Generator(tiny_config())
    return save_model(tmp_path / "model", generator, tiny_config(), INFO)


def test_round_trip_keeps_config_weights_and_card(model_dir):
    config, weights, info = read_model(model_dir)
    assert config == tiny_config()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        expected = Generator(tiny_config()).state_dict()
    assert set(weights) == set(expected)
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert info["format_version"] == MODEL_FORMAT and info["package_version"] == slicegan_core.__version__
    assert info["voxel_size_um"] == 0.25 and info["phases"][2] == {"value": 255, "name": "phase 255",
                                                                    "colour": "#009E73"}
    model = load_model(model_dir, device="cpu")
    assert model.phase_values == (0, 128, 255) and model.trained_values == {"alpha": [0.2, 0.5]}
    assert set(model.generate(seed=0, shape=(8, 8, 8)).ravel()) <= {0, 128, 255}


def test_missing_directory(tmp_path):
    with pytest.raises(ValueError, match="Model directory .*nowhere does not exist"):
        read_model(tmp_path / "nowhere")


@pytest.mark.parametrize("name", [INFO_FILE, WEIGHTS_FILE])
def test_missing_file(model_dir, name):
    (model_dir / name).unlink()
    with pytest.raises(ValueError, match=f"has no {re.escape(name)}; it is not a SliceGAN Studio model"):
        read_model(model_dir)


def test_bad_json(model_dir):
    (model_dir / INFO_FILE).write_text('{"format_version": 1, "architecture": ')
    with pytest.raises(ValueError, match="model.json is not valid JSON"):
        read_model(model_dir)


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_wrong_format_version(model_dir, version):
    info = json.loads((model_dir / INFO_FILE).read_text())
    if version is None:
        del info["format_version"]
    else:
        info["format_version"] = version
    (model_dir / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match=f"has format_version {re.escape(repr(version))}; .* reads format 1"):
        read_model(model_dir)


@pytest.mark.parametrize("architecture", [None, {"patch_size": 48}, {"critic_conditioning": "film"}])
def test_invalid_architecture(model_dir, architecture):
    info = json.loads((model_dir / INFO_FILE).read_text())
    if architecture is None:
        del info["architecture"]
    else:
        info["architecture"].update(architecture)
    (model_dir / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match="has an invalid architecture section"):
        read_model(model_dir)


@pytest.mark.parametrize("change", [{"g_widths": (32, 16, 4)}, {"z_channels": 4}, {"mlp_layers": 2}])
def test_weights_that_do_not_match_the_architecture(model_dir, change):
    info = json.loads((model_dir / INFO_FILE).read_text())
    info["architecture"].update(change)
    (model_dir / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(ValueError, match="The weights do not match the architecture in model.json"):
        load_model(model_dir, device="cpu")


def test_truncated_weights(model_dir):
    weights = model_dir / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_model(model_dir, device="cpu")


def test_no_pickle_anywhere_in_the_package():
    """Models, checkpoints and data are never unpickled: no pickle module, no torch.load, no pickled numpy."""
    package = Path(slicegan_core.__file__).parent
    sources = sorted(package.rglob("*.py"))
    assert len(sources) >= 10
    forbidden = re.compile(r"import pickle|from pickle|pickle\.load|torch\.load|joblib|dill|"
                           r"allow_pickle\s*=\s*True|weights_only\s*=\s*False|cloudpickle")
    offending = [f"{path.name}:{n}: {line.strip()}" for path in sources
                 for n, line in enumerate(path.read_text().splitlines(), 1) if forbidden.search(line)]
    assert offending == []
    # every np.load passes allow_pickle=False explicitly (its default was True in old numpy)
    for path in sources:
        for line in path.read_text().splitlines():
            if "np.load(" in line:
                assert "allow_pickle=False" in line, f"{path.name}: {line.strip()}"
