"""Config dataclasses and presets: valid presets, overrides routed to the right part, JSON round trip."""
import dataclasses
import json

import pytest

from slicegan_core.config import PRESETS, ModelConfig, TrainConfig, from_dict, preset, to_dict


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_valid_configs(name):
    model_fields, train_fields = preset(name)
    model, train = ModelConfig(**model_fields), TrainConfig(**train_fields)
    assert model.n_layers == len(model.g_widths) + 1 == len(model.d_widths) + 1
    assert model.voxels_per_latent == 2 ** model.n_layers
    assert train.steps > 0 and train.batch_size > 0


def test_layer_counts_follow_patch_size():
    tiny = ModelConfig(**preset("tiny")[0])
    cpu = ModelConfig(**preset("cpu")[0])
    assert (tiny.patch_size, tiny.n_layers, tiny.voxels_per_latent) == (32, 4, 16)
    assert (cpu.patch_size, cpu.n_layers, cpu.voxels_per_latent) == (64, 5, 32)


def test_paper_preset_is_the_seed_configuration():
    model_fields, train_fields = preset("paper")
    assert model_fields["g_widths"] == (512, 256, 128, 64) and model_fields["d_widths"] == (64, 128, 256, 512)
    assert model_fields["critic_conditioning"] == "none" and model_fields["code_normalisation"] == "none"
    assert model_fields["sigma_activation"] == "relu"
    assert (train_fields["batch_size"], train_fields["critic_steps"], train_fields["slices_per_axis"]) == (8, 5, None)


def test_overrides_go_to_the_right_part_and_none_is_ignored():
    model_fields, train_fields = preset("cpu", steps=7, z_channels=4, lr_g=None, critic_conditioning="projection")
    assert train_fields["steps"] == 7 and model_fields["z_channels"] == 4
    assert model_fields["critic_conditioning"] == "projection"
    assert train_fields["lr_g"] == 5e-4                    # None leaves the preset's value
    assert preset("cpu")[1]["steps"] == 3000               # the preset table itself is unchanged


def test_unknown_preset_and_option_are_refused():
    with pytest.raises(ValueError, match="Unknown preset 'huge'"):
        preset("huge")
    with pytest.raises(ValueError, match="Unknown option 'learning_rate'"):
        preset("cpu", learning_rate=1e-3)


def test_none_sets_a_field_whose_none_is_a_setting_and_leaves_the_others():
    # --set slices_per_axis=null on the cpu preset (4) means all slices; --set island_penalty=null on the
    # paper preset (0) the automatic weights; steps=None (an option not given) keeps the preset's 3,000
    _, fields = preset("cpu", slices_per_axis=None, steps=None)
    assert fields["slices_per_axis"] is None and fields["steps"] == 3000
    assert preset("paper", island_penalty=None)[1]["island_penalty"] is None
    assert TrainConfig(**preset("paper", island_penalty=None)[1]).island_penalty is None


@pytest.mark.parametrize("patch_size", [8, 48, 100])
def test_patch_size_must_be_a_power_of_two_of_at_least_16(patch_size):
    with pytest.raises(ValueError, match=f"patch_size must be a power of two >= 16 \\(got {patch_size}\\)"):
        ModelConfig(patch_size=patch_size)


def test_inconsistent_model_fields_are_refused():
    with pytest.raises(ValueError, match="patch_size 32 needs 3 generator and critic widths"):
        ModelConfig(patch_size=32)                         # the default widths are for 64
    with pytest.raises(ValueError, match="critic_conditioning must be one of"):
        ModelConfig(critic_conditioning="film")
    with pytest.raises(ValueError, match="one \\(low, high\\) pair per attribute"):
        ModelConfig(attribute_names=("alpha", "beta"))


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ModelConfig().patch_size = 32


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_json_round_trip_restores_equal_configs(name):
    model_fields, train_fields = preset(name)
    model = ModelConfig(**model_fields, attribute_names=("alpha", "beta"), attribute_ranges=((0.1, 0.6), (1, 2)))
    train = TrainConfig(**train_fields)
    for config in (model, train):
        text = json.dumps(to_dict(config))
        assert from_dict(type(config), json.loads(text)) == config


def test_from_dict_ignores_keys_of_newer_versions():
    data = to_dict(TrainConfig(steps=12))
    data["a_future_option"] = 3
    assert from_dict(TrainConfig, data) == TrainConfig(steps=12)


def test_bf16_defaults_to_where_it_is_fast():
    import torch

    from slicegan_core.generate import cpu_has_fast_bf16
    from slicegan_core.train import resolve_bf16
    assert TrainConfig().bf16 is None
    assert resolve_bf16(None, torch.device("cpu")) == cpu_has_fast_bf16()
    assert resolve_bf16(None, torch.device("cuda")) is True
    assert resolve_bf16(False, torch.device("cuda")) is False and resolve_bf16(True, torch.device("cpu")) is True
