"""Networks: AdaIN known answers, generator/critic shapes per preset, outputs, conditioning, steering."""
import pytest
import torch

from slicegan_core.config import ModelConfig, preset
from slicegan_core.networks import AdaIN, Critic, Generator, StyleMLP, build_critics, normalise_attributes


def config_of(name="tiny", **fields) -> ModelConfig:
    return ModelConfig(**preset(name, **fields)[0])


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def build(cls, config, seed=0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return cls(config).eval()


# ---- AdaIN and the style MLP --------------------------------------------------------------------------

def test_adain_gives_each_channel_the_requested_mean_and_std():
    x = torch.randn((2, 3, 5, 6, 7), generator=seeded()) * 4 + 9
    mu_y = torch.tensor([[0.0, 1.0, -2.0], [3.0, 0.5, 0.0]])
    sigma_y = torch.tensor([[1.0, 2.0, 0.5], [0.1, 1.0, 3.0]])
    y = AdaIN()(x, mu_y, sigma_y)
    assert torch.allclose(y.mean(dim=(2, 3, 4)), mu_y, atol=1e-5)
    assert torch.allclose(y.std(dim=(2, 3, 4), unbiased=False), sigma_y, atol=1e-4)


def test_adain_uses_given_statistics_instead_of_its_own():
    x = torch.randn((1, 2, 4, 4, 4), generator=seeded())
    mean = torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1)
    std = torch.tensor([2.0, 0.5]).view(1, 2, 1, 1, 1)
    y = AdaIN()(x, torch.zeros(1, 2), torch.ones(1, 2), stats=(mean, std))
    assert torch.allclose(y, (x - mean) / std)


def test_attribute_range_maps_to_minus_one_one():
    config = config_of(attribute_ranges=((0.15, 0.6),))
    attrs = torch.tensor([[0.15], [0.375], [0.6], [0.825]])
    assert torch.allclose(normalise_attributes(attrs, config).flatten(), torch.tensor([-1.0, 0.0, 1.0, 2.0]),
                          atol=1e-6)
    raw = config_of(code_normalisation="none")
    assert torch.equal(normalise_attributes(attrs, raw), attrs)


def test_style_mlp_gives_one_nonnegative_scale_and_shift_per_adain_layer():
    config = config_of()
    mlp = StyleMLP(config, list(config.g_widths))
    styles = mlp(torch.tensor([[-1.0], [0.0], [1.0]]))
    assert [tuple(mu.shape) for mu, _ in styles] == [(3, w) for w in config.g_widths]
    assert all((sigma >= 0).all() for _, sigma in styles)
    assert len(StyleMLP(config, [4, 5])(torch.zeros(1, 0))) == 2   # an unconditioned model: constant code


# ---- generator -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "cpu", "paper"])
def test_generator_turns_a_4_cubed_latent_into_a_patch(name):
    config = config_of(name)
    generator = build(Generator, config)
    z = torch.randn((2, config.z_channels, 4, 4, 4), generator=seeded())
    with torch.no_grad():
        out = generator(z, torch.tensor([[0.2], [0.5]]))
    P = config.patch_size
    assert out.shape == (2, config.n_channels, P, P, P)
    assert Generator.output_edge(4, config) == P
    assert torch.allclose(out.sum(dim=1), torch.ones(()), atol=1e-5) and (out >= 0).all()


@pytest.mark.parametrize("output_layer", ["transposed", "upsample", "upsample_conv"])
def test_every_output_layer_makes_a_patch_of_probabilities(output_layer):
    config = config_of("cpu", output_layer=output_layer)
    generator = build(Generator, config)
    z = torch.randn((1, config.z_channels, 5, 4, 6), generator=seeded())
    with torch.no_grad():
        out = generator(z, torch.tensor([[0.3]]))
    assert out.shape == (1, config.n_channels, 96, 64, 128)
    assert torch.allclose(out.sum(dim=1), torch.ones(()), atol=1e-5)


def test_upsampled_output_has_no_two_voxel_checkerboard():
    """At random init the transposed conv's logits alternate between even and odd voxels; trilinear logits
    vary smoothly, so the second difference along an axis is far smaller."""
    roughness = {}
    for output_layer in ("transposed", "upsample"):
        config = config_of("cpu", output_layer=output_layer)
        generator = build(Generator, config)
        z = torch.randn((1, config.z_channels, 4, 4, 4), generator=seeded())
        with torch.no_grad():
            logits = generator(z, torch.tensor([[0.3]]), activate=False)[0, 0]
        second_difference = (logits[2:] - 2 * logits[1:-1] + logits[:-2]).abs().mean()
        roughness[output_layer] = float(second_difference / logits.std())
    assert roughness["upsample"] < 0.5 * roughness["transposed"], roughness


def test_unknown_output_layer_is_refused():
    with pytest.raises(ValueError, match="output_layer must be one of"):
        config_of("tiny", output_layer="pixelshuffle")


def test_output_edge_formula_holds_for_non_cubic_latents():
    config = config_of()
    generator = build(Generator, config)
    z = torch.randn((1, config.z_channels, 3, 5, 7), generator=seeded())
    with torch.no_grad():
        out = generator(z, torch.tensor([[0.3]]))
    assert out.shape[2:] == tuple(Generator.output_edge(e, config) for e in (3, 5, 7)) == (16, 48, 80)


@pytest.mark.parametrize("image_type, channels", [("grayscale", 1), ("colour", 3)])
def test_intensity_images_use_a_sigmoid(image_type, channels):
    config = config_of(image_type=image_type, n_channels=channels)
    with torch.no_grad():
        out = build(Generator, config)(torch.randn((1, config.z_channels, 4, 4, 4), generator=seeded()),
                                       torch.tensor([[0.3]]))
    assert out.shape[1] == channels and (out > 0).all() and (out < 1).all()
    assert not torch.allclose(out.sum(dim=1), torch.ones(()))


def test_adain_steers_a_random_init_generator():
    config = config_of()
    generator = build(Generator, config)
    z = torch.randn((1, config.z_channels, 4, 4, 4), generator=seeded())
    low_code, high_code = (normalise_attributes(torch.tensor([[a]]), config) for a in (0.15, 0.6))
    with torch.no_grad():
        low, low_again, high = (generator(z, torch.tensor([[a]])) for a in (0.15, 0.15, 0.6))
        for (mu_low, sigma_low), (mu_high, sigma_high) in zip(generator.style(low_code),
                                                              generator.style(high_code)):
            assert (mu_low - mu_high).abs().max() > 1e-3 and (sigma_low - sigma_high).abs().max() > 1e-3
    assert torch.equal(low, low_again)
    assert (low - high).abs().max() > 1e-3
    assert (low.argmax(1) != high.argmax(1)).any()   # some labels change, not only the decimals


def test_collected_statistics_reproduce_the_output():
    config = config_of()
    generator = build(Generator, config)
    z = torch.randn((1, config.z_channels, 4, 4, 4), generator=seeded())
    attrs = torch.tensor([[0.3]])
    collected = []
    with torch.no_grad():
        out = generator(z, attrs, collect_stats=collected)
        again = generator(z, attrs, stats=collected)
    assert len(collected) == len(config.g_widths)
    assert torch.equal(out, again)


def test_unconditioned_model_runs():
    config = config_of(attribute_names=(), attribute_ranges=())
    with torch.no_grad():
        out = build(Generator, config)(torch.randn((1, config.z_channels, 4, 4, 4), generator=seeded()),
                                       torch.zeros((1, 0)))
        score = build(Critic, config)(out[:, :, 0], torch.zeros((1, 0)))
    assert out.shape == (1, 3, 32, 32, 32) and score.shape == (1,)


# ---- critics -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "cpu", "paper"])
def test_critic_scores_one_number_per_slice(name):
    config = config_of(name)
    P = config.patch_size
    images = torch.rand((5, config.n_channels, P, P), generator=seeded())
    with torch.no_grad():
        scores = build(Critic, config)(images, torch.full((5, 1), 0.3))
    assert scores.shape == (5,) and scores.dtype == torch.float32 and torch.isfinite(scores).all()


def test_one_critic_when_isotropic_three_otherwise():
    assert len(build_critics(config_of(isotropic=True))) == 1
    critics = build_critics(config_of(isotropic=False))
    assert len(critics) == 3
    assert not torch.equal(critics[0].convs[0].weight, critics[1].convs[0].weight)   # independent critics


@pytest.mark.parametrize("conditioning, depends_on_attrs", [("none", False), ("channel", True),
                                                           ("projection", True)])
def test_critic_conditioning_variants(conditioning, depends_on_attrs):
    config = config_of(critic_conditioning=conditioning, attribute_ranges=((0.15, 0.6),))
    critic = build(Critic, config)
    extra = 1 if conditioning == "channel" else 0
    assert critic.convs[0].in_channels == config.n_channels + extra
    assert (critic.embed is not None) == (conditioning == "projection")
    images = torch.rand((4, config.n_channels, 32, 32), generator=seeded())
    with torch.no_grad():
        low = critic(images, torch.full((4, 1), 0.15))
        high = critic(images, torch.full((4, 1), 0.6))
    if depends_on_attrs:
        assert (low - high).abs().min() > 1e-6
    else:
        assert torch.equal(low, high)


def test_adain_statistics_match_var_mean():
    x = torch.randn(2, 5, 6, 7, 8, generator=torch.Generator().manual_seed(1)) * 3 + 2
    mean, std = AdaIN().statistics(x)
    var, expected_mean = torch.var_mean(x.double(), dim=(2, 3, 4), keepdim=True, correction=0)
    assert mean.shape == std.shape == (2, 5, 1, 1, 1)
    assert torch.allclose(mean.double(), expected_mean, rtol=1e-6, atol=1e-6)
    assert torch.allclose(std.double(), (var + AdaIN.eps).sqrt(), rtol=1e-6)


def test_logit_upsampling_is_trilinear_and_the_same_bits_in_tiles_and_under_autograd():
    import torch.nn.functional as F
    from slicegan_core.networks import _upsample_logits
    logits = torch.randn(2, 3, 12, 13, 14, generator=torch.Generator().manual_seed(2))
    expected = F.interpolate(logits, scale_factor=2, mode="trilinear", align_corners=False)[:, :, 2:-2, 2:-2, 2:-2]
    up = _upsample_logits(logits)
    assert up.shape == expected.shape == (2, 3, 20, 22, 24)
    assert torch.allclose(up, expected, atol=1e-5)
    # a block of the grid gives exactly the matching block of the whole: tiled generation stays exact
    block = _upsample_logits(logits[:, :, 3:10, 2:9, 4:12])
    assert torch.equal(block, up[:, :, 6:6 + block.shape[2], 4:4 + block.shape[3], 8:8 + block.shape[4]])
    leaf = logits.clone().requires_grad_()
    with_grad = _upsample_logits(leaf)
    assert torch.equal(with_grad.detach(), up)
    with_grad.sum().backward()
    reference = logits.clone().requires_grad_()
    F.interpolate(reference, scale_factor=2, mode="trilinear", align_corners=False)[:, :, 2:-2, 2:-2, 2:-2].sum().backward()
    assert torch.allclose(leaf.grad, reference.grad, atol=1e-5)
    assert _upsample_logits(logits.bfloat16()).dtype == torch.bfloat16
