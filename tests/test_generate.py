"""Generation: determinism, any shape, attribute checks, exact seamless tiling, the generator's reach, and
periodic volumes.

``tiny_model`` is a 4-step trained "tiny" model (voxels_per_latent 16); ``smooth_model`` is a random-init one
with linear-upsampling kernels whose output varies smoothly in space, so seams would show as jumps.
"""
import numpy as np
import pytest
import torch

from slicegan_core.generate import HALO, load_model

ALPHA = {"alpha": 0.35}
A = torch.tensor([[0.35]])


# ---- model card, determinism, shapes ------------------------------------------------------------------

def test_model_card(tiny_model):
    assert tiny_model.attribute_names == ("alpha",)
    assert tiny_model.trained_values == {"alpha": [0.2, 0.5]}
    assert tiny_model.trained_range == {"alpha": (0.2, 0.5)}
    assert tiny_model.phase_values == (0, 1, 2) and tiny_model.voxel_size_um == 0.5
    assert tiny_model.voxels_per_latent == 16 and tiny_model.image_type == "n-phase"


def test_same_inputs_give_identical_volumes_and_each_input_matters(tiny_model):
    volume = tiny_model.generate(ALPHA, seed=3, shape=(32, 32, 32))
    assert np.array_equal(volume, tiny_model.generate(ALPHA, seed=3, shape=(32, 32, 32)))
    assert (volume != tiny_model.generate(ALPHA, seed=4, shape=(32, 32, 32))).mean() > 0.1
    other_alpha = tiny_model.generate({"alpha": 0.5}, seed=3, shape=(32, 32, 32), probabilities=True)
    probs = tiny_model.generate(ALPHA, seed=3, shape=(32, 32, 32), probabilities=True)
    assert np.abs(other_alpha - probs).max() > 1e-3


def test_a_fresh_load_generates_the_same_volume(tiny_model, trained_run):
    again = load_model(trained_run / "model", device="cpu", precision="float32")
    assert np.array_equal(again.generate(ALPHA, seed=9, shape=24), tiny_model.generate(ALPHA, seed=9, shape=24))


def test_generation_leaves_global_random_state_alone(tiny_model):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    tiny_model.generate(ALPHA, seed=1, shape=16)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state)


@pytest.mark.parametrize("shape", [(40, 30, 20), (1, 17, 33), (16, 16, 16)])
def test_any_shape_works(tiny_model, shape):
    volume = tiny_model.generate(ALPHA, seed=0, shape=shape)
    assert volume.shape == shape and volume.dtype == np.uint8
    assert set(np.unique(volume)) <= {0, 1, 2}
    probs = tiny_model.generate(ALPHA, seed=0, shape=shape, probabilities=True)
    assert probs.shape == (3, *shape) and probs.dtype == np.float32
    assert np.allclose(probs.sum(0), 1, atol=1e-5)
    assert np.array_equal(probs.argmax(0), volume)


def test_an_int_shape_is_a_cube(tiny_model):
    assert tiny_model.generate(ALPHA, seed=0, shape=20).shape == (20, 20, 20)


@pytest.mark.parametrize("shape", [(0, 5, 5), (5, 5), (5, 5, 5, 5), "big", (-4, 8, 8), None])
def test_bad_shape_is_a_value_error(tiny_model, shape):
    with pytest.raises(ValueError, match="shape must be three"):
        tiny_model.generate(ALPHA, shape=shape)


# ---- attributes --------------------------------------------------------------------------------------

def test_default_attributes_are_the_middle_of_the_trained_range(tiny_model):
    assert np.array_equal(tiny_model.generate(None, seed=2, shape=16),
                          tiny_model.generate({"alpha": 0.35}, seed=2, shape=16))


def test_out_of_range_attribute_warns_but_generates(tiny_model):
    with pytest.warns(UserWarning, match=r"alpha=0\.9 is outside the trained range \[0\.2, 0\.5\]"):
        volume = tiny_model.generate({"alpha": 0.9}, seed=0, shape=16)
    assert volume.shape == (16, 16, 16)


def test_in_range_attribute_does_not_warn(tiny_model, recwarn):
    tiny_model.generate({"alpha": 0.2}, seed=0, shape=16)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_float32_rounded_ranges_of_older_models_keep_trained_values_in_range(make_random_model, recwarn):
    model = make_random_model("tiny", attribute_ranges=((0.15000000596046448, 0.6000000238418579),))
    model.generate({"alpha": 0.15}, seed=0, shape=8)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    with pytest.warns(UserWarning, match="alpha=0.149 is outside"):
        model.generate({"alpha": 0.149}, seed=0, shape=8)


@pytest.mark.parametrize("attrs, message", [
    ({"alpha": 0.3, "beta": 1.0}, r"Unknown attribute\(s\) \['beta'\]; this model is steered by \['alpha'\]"),
    ({"sigma": 0.3}, r"Unknown attribute\(s\) \['sigma'\]"),
    ({}, r"Missing attribute value\(s\) for \['alpha'\]"),
    ({"alpha": "wide"}, "Attribute alpha must be a number"),
    ({"alpha": float("nan")}, "Attribute alpha must be finite"),
])
def test_unknown_missing_or_bad_attribute_is_a_value_error(tiny_model, attrs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.generate(attrs, shape=16)


def test_bad_precision_and_device(trained_run):
    with pytest.raises(ValueError, match="precision must be 'auto', 'float32' or 'bfloat16'"):
        load_model(trained_run / "model", device="cpu", precision="float16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            load_model(trained_run / "model", device="cuda")


# ---- tiling --------------------------------------------------------------------------------------------

def capture_frozen_stats(model, monkeypatch) -> dict:
    """Record the statistics (and tile core) that tiled generation freezes."""
    captured = {}
    original = model._frozen_stats

    def recording(z, attrs, core):
        captured["stats"], captured["core"] = original(z, attrs, core), list(core)
        return captured["stats"]
    monkeypatch.setattr(model, "_frozen_stats", recording)
    return captured


@pytest.mark.parametrize("output_layer", ["transposed", "upsample"])
@pytest.mark.parametrize("shape, periodic", [((70, 50, 40), False), ((64, 48, 32), True)])
def test_tiled_volume_equals_a_single_pass_with_the_frozen_statistics_exactly(tiny_model, make_random_model,
                                                                              monkeypatch, shape, periodic,
                                                                              output_layer):
    if output_layer == "upsample":
        tiny_model = make_random_model("tiny", output_layer=output_layer)
    captured = capture_frozen_stats(tiny_model, monkeypatch)
    tiled = tiny_model.generate(ALPHA, seed=3, shape=shape, periodic=periodic, max_tile_voxels=60_000,
                                probabilities=True)
    assert max(captured["core"]) < max(shape)                  # it really was tiled (several tiles per axis)
    assert sum(s // c for s, c in zip(shape, captured["core"])) >= 6
    z = tiny_model.latent(3, shape, periodic)
    single = tiny_model._forward(z, A, stats=captured["stats"])
    window = (slice(None), *(slice(0, n) for n in shape))
    assert np.array_equal(tiled, single[window].numpy())
    labels = tiny_model.generate(ALPHA, seed=3, shape=shape, periodic=periodic, max_tile_voxels=60_000)
    assert np.array_equal(labels, tiled.argmax(0))


def test_tiling_happens_only_above_the_voxel_budget(tiny_model, monkeypatch):
    captured = capture_frozen_stats(tiny_model, monkeypatch)
    tiny_model.generate(ALPHA, seed=3, shape=(40, 30, 20))
    assert captured == {}


def seam_and_interior(jumps_along_axis: np.ndarray, borders) -> tuple[float, float]:
    """(mean label change across the given plane pairs, largest change across all other plane pairs)."""
    return float(jumps_along_axis[borders].mean()), float(np.delete(jumps_along_axis, borders).max())


def test_no_seams_at_tile_borders(smooth_model, monkeypatch, jumps):
    captured = capture_frozen_stats(smooth_model, monkeypatch)
    shape = (96, 96, 96)
    tiled = smooth_model.generate(ALPHA, seed=5, shape=shape, max_tile_voxels=200_000)
    core = captured["core"]
    # Control: tiles normalised with their own statistics do show seams, so this measure can see them.
    monkeypatch.setattr(smooth_model, "_frozen_stats", lambda z, attrs, core: None)
    seamed = smooth_model.generate(ALPHA, seed=5, shape=shape, max_tile_voxels=200_000)
    fractions = [(tiled == phase).mean() for phase in (0, 1, 2)]
    assert min(fractions) > 0.005                              # a structured volume, not one phase
    for axis in range(3):
        borders = [b - 1 for b in range(core[axis], shape[axis], core[axis])]   # plane pair (b-1, b)
        assert borders
        seam, interior = seam_and_interior(jumps(tiled, axis), borders)
        assert interior < 0.15                                 # adjacent planes are similar: seams would show
        assert seam <= 1.5 * interior, (axis, seam, interior)
        bad_seam, bad_interior = seam_and_interior(jumps(seamed, axis), borders)
        assert bad_seam > 1.5 * bad_interior, (axis, bad_seam, bad_interior)
        # phase fractions of the border planes lie within the spread of all planes
        plane_fraction = (tiled == 0).mean(axis=tuple(a for a in range(3) if a != axis))
        border_planes = [b for b in range(core[axis], shape[axis], core[axis])]
        assert plane_fraction.min() <= plane_fraction[border_planes].min()
        assert plane_fraction[border_planes].max() <= plane_fraction.max()


@pytest.mark.parametrize("output_layer", ["transposed", "upsample"])
def test_generator_reach_is_three_latent_cells(tiny_model, make_random_model, output_layer):
    """Perturbing latent cell j changes only voxels in [vpl*(j-2), vpl*(j+1)), which is why HALO=0 is exact."""
    assert HALO == 0
    model = tiny_model if output_layer == "transposed" else make_random_model("tiny", output_layer=output_layer)
    vpl = model.voxels_per_latent
    z = torch.randn((1, model.config.z_channels, 8, 4, 4), generator=torch.Generator().manual_seed(0))
    stats = []
    base = model._forward(z, A, collect=stats)
    assert base.shape[1] == vpl * 6
    for j in range(8):
        perturbed = z.clone()
        perturbed[:, :, j] += 1.0
        changed = ((model._forward(perturbed, A, stats=stats) - base).abs().amax(dim=(0, 2, 3)) > 0)
        planes = torch.nonzero(changed).flatten()
        low, high = max(0, vpl * (j - 2)), min(base.shape[1], vpl * (j + 1))
        assert planes.min() >= low and planes.max() < high, (j, planes.min(), planes.max())
        # ... and the reach is that wide: both end blocks of the window change
        if j >= 2:
            assert planes.min() < low + vpl
        if j + 1 <= 6:
            assert planes.max() >= high - vpl


# ---- periodic volumes ------------------------------------------------------------------------------------

def test_periodic_volume_continues_exactly_into_its_next_period(tiny_model):
    """Generating two periods from the same periodic latent: the wrapped faces are then interior planes,
    and the second period repeats the first voxel for voxel."""
    shape = (32, 48, 64)
    periodic = tiny_model.generate(ALPHA, seed=5, shape=shape, periodic=True, probabilities=True)
    z = tiny_model.latent(5, shape, periodic=True)
    stats = []
    assert np.array_equal(tiny_model._forward(z, A, collect=stats).numpy(), periodic)
    edges = [n // tiny_model.voxels_per_latent for n in shape]
    base = z[:, :, :edges[0], :edges[1], :edges[2]]
    for axis, edge in enumerate(edges):
        base = base.index_select(2 + axis, torch.arange(0, 2 * edge + 2) % edge)
    two_periods = tiny_model._forward(base, A, stats=stats).numpy()
    assert two_periods.shape == (3, 64, 96, 128)
    for corner in [(0, 0, 0), (32, 0, 0), (0, 48, 0), (0, 0, 64), (32, 48, 64)]:
        window = (slice(None), *(slice(c, c + n) for c, n in zip(corner, shape)))
        assert np.array_equal(two_periods[window], periodic), corner


def test_periodic_faces_have_no_seam_when_rolled_to_the_middle(smooth_model, jumps):
    shape = (64, 64, 64)
    for seed in (0, 1):
        periodic = smooth_model.generate(ALPHA, seed=seed, shape=shape, periodic=True)
        plain = smooth_model.generate(ALPHA, seed=seed, shape=shape)        # control: not periodic
        for axis in range(3):
            wrap = [shape[axis] // 2 - 1]                     # after rolling, the old faces meet here
            seam, interior = seam_and_interior(jumps(np.roll(periodic, shape[axis] // 2, axis), axis), wrap)
            assert interior < 0.15
            assert seam <= 1.5 * interior, (seed, axis, seam, interior)
            bad_seam, bad_interior = seam_and_interior(jumps(np.roll(plain, shape[axis] // 2, axis), axis), wrap)
            assert bad_seam > 1.5 * bad_interior, (seed, axis, bad_seam, bad_interior)


@pytest.mark.parametrize("shape, suggestion", [((44, 32, 32), r"\(48, 32, 32\)"), (20, r"\(16, 16, 16\)"),
                                               ((8, 16, 16), r"\(16, 16, 16\)")])
def test_periodic_needs_multiples_of_voxels_per_latent(tiny_model, shape, suggestion):
    with pytest.raises(ValueError, match=f"Periodic volumes need sides that are multiples of 16 .*try {suggestion}"):
        tiny_model.generate(ALPHA, shape=shape, periodic=True)


def test_periodic_and_plain_volumes_differ(tiny_model):
    assert tiny_model.latent(0, (32, 32, 32), periodic=True).shape[2:] == (4, 4, 4)
    assert tiny_model.latent(0, (32, 32, 32)).shape[2:] == (4, 4, 4)
    assert not np.array_equal(tiny_model.generate(ALPHA, seed=0, shape=32, periodic=True),
                              tiny_model.generate(ALPHA, seed=0, shape=32))


def test_progress_bar_only_when_asked(tiny_model, capsys):
    tiny_model.generate(ALPHA, seed=0, shape=(64, 48, 32), max_tile_voxels=60_000)
    assert capsys.readouterr().err == ""
    tiny_model.generate(ALPHA, seed=0, shape=(64, 48, 32), max_tile_voxels=60_000, progress=True)
    assert "generating tiles" in capsys.readouterr().err


def test_warm_up_runs_in_the_background_and_leaves_results_unchanged(tiny_model):
    before = tiny_model.generate({"alpha": 0.3}, seed=5, shape=40)
    thread = tiny_model.warm_up((24, 40))
    volume_during = tiny_model.generate({"alpha": 0.3}, seed=5, shape=40)   # concurrent use is safe
    thread.join(timeout=60)
    assert not thread.is_alive() and thread.daemon
    assert tiny_model.warm_up((16,), background=False) is None
    assert np.array_equal(before, volume_during)
    assert np.array_equal(before, tiny_model.generate({"alpha": 0.3}, seed=5, shape=40))
