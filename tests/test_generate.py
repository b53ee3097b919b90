"""Generation: determinism, any shape, argument checks, exact seamless tiling that no budget changes, the
generator's reach, periodic volumes, and the up-front memory check.

``tiny_model`` is a 4-step trained "tiny" model (voxels_per_latent 16); ``smooth_model`` is a random-init one
with linear-upsampling kernels whose output varies smoothly in space, so seams would show as jumps.
"""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from slicegan_core import synthetic
from slicegan_core.generate import HALO, STATS_WINDOW, load_model

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


@pytest.mark.parametrize("shape", [(0, 5, 5), (5, 5), (5, 5, 5, 5), "big", (-4, 8, 8), None, (16.7, 16, 16),
                                   (16.0, 16, 16), (True, 16, 16), True, np.float64(16), (np.float32(16), 16, 16)])
def test_bad_shape_is_a_value_error(tiny_model, shape):
    with pytest.raises(ValueError, match=r"shape must be three positive integers such as \(128, 128, 128\)"):
        tiny_model.generate(ALPHA, shape=shape)


def test_numpy_integer_shapes_and_seeds_are_accepted(tiny_model):
    volume = tiny_model.generate(ALPHA, seed=3, shape=(16, 24, 8))
    assert np.array_equal(tiny_model.generate(ALPHA, seed=np.int64(3), shape=(np.int32(16), np.int64(24), 8)), volume)
    assert np.array_equal(tiny_model.generate(ALPHA, seed=3, shape=np.array([16, 24, 8])), volume)
    assert tiny_model.generate(ALPHA, seed=2**64 - 1, shape=8).shape == (8, 8, 8)   # torch's largest seed


@pytest.mark.parametrize("seed", [1.5, 3.0, True, -1, 2**64, 10**30, "7", None, np.float64(3)])
def test_bad_seed_is_a_value_error(tiny_model, seed):
    message = r"seed must be a non-negative integer below 2\*\*64, got .*; pass e\.g\. seed=0"
    with pytest.raises(ValueError, match=message):
        tiny_model.generate(ALPHA, seed=seed, shape=8)


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
    ({"alpha": "0.3"}, r"Attribute alpha must be a number \(got '0.3'\); pass e.g. \{'alpha': 0.35\}"),
    ({"alpha": True}, r"Attribute alpha must be a number \(got True\)"),
    ({"alpha": np.bool_(False)}, "Attribute alpha must be a number"),
    ({"alpha": None}, "Attribute alpha must be a number"),
    ({"alpha": [0.3]}, "Attribute alpha must be a number"),
    ({"alpha": float("nan")}, "Attribute alpha must be finite"),
    ({"alpha": float("inf")}, "Attribute alpha must be finite"),
])
def test_unknown_missing_or_bad_attribute_is_a_value_error(tiny_model, attrs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.generate(attrs, shape=16)


def test_numpy_attribute_values_are_numbers(tiny_model):
    assert np.array_equal(tiny_model.generate({"alpha": np.float64(0.35)}, seed=1, shape=8),
                          tiny_model.generate({"alpha": 0.35}, seed=1, shape=8))
    assert tiny_model.generate({"alpha": np.float32(0.3)}, seed=1, shape=8).shape == (8, 8, 8)


@pytest.mark.parametrize("budget", [0, -5, 2.5e6, True, "1000"])
def test_bad_tile_budget_is_a_value_error(tiny_model, budget):
    with pytest.raises(ValueError, match="max_tile_voxels must be a positive integer"):
        tiny_model.generate(ALPHA, shape=8, max_tile_voxels=budget)


def test_bad_precision_and_device(trained_run):
    with pytest.raises(ValueError, match="precision must be 'auto', 'float32' or 'bfloat16'"):
        load_model(trained_run / "model", device="cpu", precision="float16")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is available"):
            load_model(trained_run / "model", device="cuda")


# ---- tiling --------------------------------------------------------------------------------------------

def capture_frozen_stats(model, monkeypatch) -> dict:
    """Record the statistics that generation freezes (and the latent window they come from)."""
    captured = {}
    original = model._frozen_stats

    def recording(z, attrs, window):
        captured["stats"], captured["window"] = original(z, attrs, window), window
        return captured["stats"]
    monkeypatch.setattr(model, "_frozen_stats", recording)
    return captured


# The tiny model has 16 voxels per latent cell: its statistics window is 14 cells (192 voxels) per axis, so a
# volume longer than 192 voxels along one axis uses window statistics.
WINDOWED = (208, 40, 24)


@pytest.mark.parametrize("output_layer", ["transposed", "upsample", "upsample_conv"])
@pytest.mark.parametrize("shape, periodic", [((208, 50, 40), False), ((224, 48, 32), True)])
def test_tiled_volume_equals_a_single_pass_with_the_frozen_statistics_exactly(tiny_model, make_random_model,
                                                                              monkeypatch, shape, periodic,
                                                                              output_layer):
    if output_layer != "transposed":
        tiny_model = make_random_model("tiny", output_layer=output_layer)
    captured = capture_frozen_stats(tiny_model, monkeypatch)
    tiled = tiny_model.generate(ALPHA, seed=3, shape=shape, periodic=periodic, max_tile_voxels=200_000,
                                probabilities=True)
    core = tiny_model._tile_core(shape, 200_000)
    assert max(core) < max(shape)                               # it really was tiled (several tiles per axis)
    assert sum(s // c for s, c in zip(shape, core)) >= 6
    z = tiny_model.latent(3, shape, periodic)
    single = tiny_model._forward(z, A, stats=captured["stats"])
    window = (slice(None), *(slice(0, n) for n in shape))
    if output_layer == "upsample_conv":
        # the same voxels from the same cells, but the 3x3x3 conv's summation order follows the tile's shape
        np.testing.assert_allclose(tiled, single[window].numpy(), rtol=0, atol=1e-6)
        return
    assert np.array_equal(tiled, single[window].numpy())
    labels = tiny_model.generate(ALPHA, seed=3, shape=shape, periodic=periodic, max_tile_voxels=200_000)
    assert np.array_equal(labels, tiled.argmax(0))


def test_every_budget_gives_the_same_volume(tiny_model, monkeypatch):
    """A single pass (the default budget) and two tilings of a volume larger than the statistics window agree
    voxel for voxel: all three use the statistics of the same fixed centre window."""
    captured = capture_frozen_stats(tiny_model, monkeypatch)
    single = tiny_model.generate(ALPHA, seed=6, shape=WINDOWED, probabilities=True)
    window = captured.pop("window")
    assert [w.stop - w.start for w in window] == [STATS_WINDOW // 16 + 2, 5, 4]   # the centre 14 of 15 cells
    for budget in (200_000, 60_000):
        assert tiny_model._tile_core(WINDOWED, budget) != list(WINDOWED)
        tiled = tiny_model.generate(ALPHA, seed=6, shape=WINDOWED, max_tile_voxels=budget, probabilities=True)
        assert captured.pop("window") == window
        assert np.array_equal(tiled, single), budget
        labels = tiny_model.generate(ALPHA, seed=6, shape=WINDOWED, max_tile_voxels=budget)
        assert np.array_equal(labels, single.argmax(0)), budget
    # ... and the window statistics are not the volume's own (which would need the whole volume at once)
    own = tiny_model._forward(tiny_model.latent(6, WINDOWED), A)[(slice(None), *(slice(0, n) for n in WINDOWED))]
    assert not np.array_equal(own.numpy(), single)


def test_a_volume_within_the_window_uses_its_own_statistics_whatever_the_budget(tiny_model, monkeypatch):
    captured = capture_frozen_stats(tiny_model, monkeypatch)
    shape = (STATS_WINDOW, 40, 30)
    own = tiny_model._forward(tiny_model.latent(4, shape), A)[(slice(None), *(slice(0, n) for n in shape))]
    for budget in (40_000_000, 60_000, 1):
        volume = tiny_model.generate(ALPHA, seed=4, shape=shape, max_tile_voxels=budget, probabilities=True)
        assert np.array_equal(volume, own.numpy()), budget
    assert captured == {}                                       # no window statistics were taken


def test_default_model_fractions_do_not_depend_on_the_budget():
    """The issue's case on the shipped model: a 300_000-voxel budget once moved the phase fractions by 0.1."""
    model = load_model("default", device="cpu", precision="float32")
    shape = (224, 128, 128)                                     # longer than the 192-voxel window along x
    assert model._stats_window(model._latent_edges(shape, False)) is not None
    single = model.generate({"alpha": 0.35}, seed=2, shape=shape)
    fractions = np.bincount(single.ravel(), minlength=3) / single.size
    assert np.abs(fractions - [0.35, 0.35, 0.30]).max() < 0.02
    for budget in (2_000_000, 300_000):
        assert model._tile_core(shape, budget) != list(shape)
        tiled = model.generate({"alpha": 0.35}, seed=2, shape=shape, max_tile_voxels=budget)
        assert np.array_equal(np.bincount(tiled.ravel(), minlength=3) / tiled.size, fractions)
        assert np.array_equal(tiled, single)


def seam_and_interior(jumps_along_axis: np.ndarray, borders) -> tuple[float, float]:
    """(mean label change across the given plane pairs, largest change across all other plane pairs)."""
    return float(jumps_along_axis[borders].mean()), float(np.delete(jumps_along_axis, borders).max())


def test_no_seams_at_tile_borders(smooth_model, monkeypatch, jumps):
    shape = (208, 96, 96)                                      # beyond the statistics window: tiles need it
    tiled = smooth_model.generate(ALPHA, seed=5, shape=shape, max_tile_voxels=400_000)
    core = smooth_model._tile_core(shape, 400_000)
    # Control: tiles normalised with their own statistics do show seams, so this measure can see them.
    monkeypatch.setattr(smooth_model, "_frozen_stats", lambda z, attrs, window: None)
    seamed = smooth_model.generate(ALPHA, seed=5, shape=shape, max_tile_voxels=400_000)
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


@pytest.mark.parametrize("output_layer", ["transposed", "upsample", "upsample_conv"])
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
    tiny_model.generate(ALPHA, seed=0, shape=WINDOWED, max_tile_voxels=200_000)
    assert capsys.readouterr().err == ""
    tiny_model.generate(ALPHA, seed=0, shape=WINDOWED, max_tile_voxels=200_000, progress=True)
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


# ---- memory ----------------------------------------------------------------------------------------------

GIB = 2**30


def test_a_volume_that_does_not_fit_is_refused_up_front(tiny_model, monkeypatch):
    monkeypatch.setattr(synthetic, "available_memory", lambda: 2 * GIB)
    started = time.perf_counter()
    with pytest.raises(ValueError) as error:
        tiny_model.generate(ALPHA, shape=3000)
    assert time.perf_counter() - started < 0.5                  # arithmetic only, no allocation attempt
    message = str(error.value)
    match = re.fullmatch(r"A 3000\^3 volume needs ([\d.,]+) GiB of memory but 2\.0 GiB is available; generate at "
                         r"most about (\d+)\^3, or free memory or use a machine with more; or write it to \.zarr, "
                         r"\.tif or \.npy, which are streamed to disk \(generate --out, Model\.generate_to\)\.",
                         message)
    assert match, message
    assert float(match[1].replace(",", "")) == pytest.approx(tiny_model.memory_needed((3000,) * 3) / GIB, abs=0.06)
    side = int(match[2])
    assert tiny_model.memory_needed((side,) * 3) <= 2 * GIB
    # "about": the need is not monotonic in the side (tile shapes change), but the suggestion is near the largest
    largest = max(n for n in range(16, 3000) if tiny_model.memory_needed((n,) * 3) <= 2 * GIB)
    assert 0.8 * largest <= side <= largest
    tiny_model.generate(ALPHA, shape=16)                        # small volumes still go through


@pytest.mark.parametrize("shape", [100_000, (10**7, 10**4, 16), (2**40, 2**40, 2**40)])
def test_absurd_shapes_are_refused_with_the_real_memory(tiny_model, shape):
    with pytest.raises(ValueError, match=r"volume needs [\d.e+]+ GiB of memory but [\d.]+ GiB is available"):
        tiny_model.generate(ALPHA, shape=shape)


def test_periodic_suggestion_is_a_multiple_of_the_latent_cell(tiny_model, monkeypatch):
    monkeypatch.setattr(synthetic, "available_memory", lambda: GIB // 2)
    with pytest.raises(ValueError, match=r"A 2048\^3 volume needs .* generate at most about (\d+)\^3") as error:
        tiny_model.generate(ALPHA, shape=2048, periodic=True)
    side = int(re.search(r"about (\d+)\^3", str(error.value))[1])
    assert side % 16 == 0 and tiny_model.memory_needed((side,) * 3, periodic=True) <= GIB // 2


def test_the_estimate_counts_the_probabilities_the_budget_and_the_window(tiny_model):
    labels = tiny_model.memory_needed((256,) * 3)
    assert tiny_model.memory_needed((256,) * 3, probabilities=True) >= labels + 11 * 256**3   # 12 B, not 1
    # tiles bound the working memory (down to the statistics window's pass), never the output array
    assert tiny_model.memory_needed((256,) * 3, max_tile_voxels=60_000) < labels
    assert tiny_model.memory_needed((256,) * 3, max_tile_voxels=60_000) > 256**3


def test_available_memory_reads_the_machine():
    available = synthetic.available_memory()
    assert available is None or available > 0


def test_memory_estimate_covers_the_measured_peak():
    """Peak RSS of a real pass (a fresh process, 'cpu' preset, float32) stays below the estimate, which is not
    wildly above it either. The peak of this pass varies from run to run between 246 and 440 MB (glibc's
    allocator; the working set is 230 MB), the estimate is 502 MB."""
    script = """
import json
import torch
from slicegan_core.config import ModelConfig, preset
from slicegan_core.generate import Model
from slicegan_core.networks import Generator
torch.set_num_threads(1)
def rss(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
config = ModelConfig(**preset("cpu")[0])
model = Model(config, Generator(config).state_dict(), {}, device="cpu", precision="float32")
model.generate(seed=0, shape=8)
base = rss("VmRSS")
model.generate(seed=0, shape=(224, 192, 192))
print(json.dumps({"measured": rss("VmHWM") - base, "estimate": model.memory_needed((224, 192, 192))}))
"""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc to measure the peak memory")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    numbers = json.loads(result.stdout.strip().splitlines()[-1])
    assert numbers["measured"] <= numbers["estimate"] <= 2.5 * numbers["measured"], numbers


# ---- tiles handed out one at a time (streaming) ---------------------------------------------------------

TILED = (224, 40, 36)      # beyond the statistics window along axis 0, so a small budget cuts it into tiles


def spans(where) -> tuple:
    return tuple((s.start, s.stop) for s in where)


def reassemble(tiles) -> np.ndarray:
    out = np.full(tiles.shape, 255, tiles.dtype)
    for where, voxels in tiles:
        out[where] = voxels
    return out


def test_tiles_reassemble_the_generated_volume_exactly(tiny_model):
    expected = tiny_model.generate(ALPHA, seed=5, shape=TILED, max_tile_voxels=60_000)
    tiles = tiny_model.generate_tiles(ALPHA, seed=5, shape=TILED, max_tile_voxels=60_000)
    assert tiles.count > 4 and tiles.shape == TILED and tiles.dtype == expected.dtype and not tiles.colour
    wheres = [spans(where) for where, _ in tiny_model.generate_tiles(ALPHA, seed=5, shape=TILED,
                                                                      max_tile_voxels=60_000)]
    assert len(wheres) == tiles.count == len(set(wheres))
    assert all(start % core == 0 for where in wheres for (start, _), core in zip(where, tiles.core))
    assert wheres == sorted(wheres)                                      # axis 0 slowest
    assert np.array_equal(reassemble(tiles), expected)


def test_parts_share_the_tiles_without_overlap(tiny_model):
    def wheres(part):
        return [spans(w) for w, _ in tiny_model.generate_tiles(ALPHA, seed=5, shape=TILED, max_tile_voxels=60_000,
                                                                part=part)]
    first, second, everything = wheres((0, 2)), wheres((1, 2)), wheres((0, 1))
    assert first and second and not set(first) & set(second)
    assert sorted(first + second) == everything
    # a volume that is one pass belongs to part 0
    assert len(list(tiny_model.generate_tiles(ALPHA, shape=16, part=(0, 2)))) == 1
    assert list(tiny_model.generate_tiles(ALPHA, shape=16, part=(1, 2))) == []


def test_thin_slabs_change_the_tiles_not_the_voxels(tiny_model):
    expected = tiny_model.generate(ALPHA, seed=5, shape=TILED, max_tile_voxels=60_000)
    plane = TILED[1] * TILED[2]
    tiles = tiny_model.generate_tiles(ALPHA, seed=5, shape=TILED, max_tile_voxels=60_000, slab_bytes=20 * plane)
    assert tiles.core[0] == 16                                            # halved to one latent cell's voxels
    assert np.array_equal(reassemble(tiles), expected)


@pytest.mark.parametrize("kwargs, message", [({"part": (2, 2)}, "part must be"), ({"part": [0, 1]}, "part must be"),
                                             ({"slab_bytes": 0}, "slab_bytes must be"),
                                             ({"max_tile_voxels": 0}, "max_tile_voxels must be")])
def test_bad_tile_arguments_are_value_errors(tiny_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.generate_tiles(ALPHA, shape=16, **kwargs)


def test_streamed_memory_does_not_grow_with_the_volume(tiny_model):
    streamed = [tiny_model.memory_needed((n,) * 3, streamed=True) for n in (1024, 2048)]
    assert streamed[1] < 0.2 * tiny_model.memory_needed((2048,) * 3)
    latent = 4 * tiny_model.config.z_channels * ((2048 // 16 + 2) ** 3 - (1024 // 16 + 2) ** 3)
    assert streamed[1] - streamed[0] <= latent                            # only the latent grows
    slab = tiny_model.memory_needed((2048,) * 3, streamed=True, slab_bytes=2**24)
    assert 2**24 <= slab < tiny_model.memory_needed((2048,) * 3)


def test_a_volume_beyond_memory_is_refused_in_memory_but_can_be_streamed(tiny_model, monkeypatch):
    monkeypatch.setattr(synthetic, "available_memory", lambda: 3 * GIB)
    with pytest.raises(ValueError, match=r"; or write it to \.zarr, \.tif or \.npy, which are streamed to disk"):
        tiny_model.generate(ALPHA, shape=3000)
    tiles = tiny_model.generate_tiles(ALPHA, shape=3000)       # fits: nothing is generated until iterated
    assert tiles.shape == (3000,) * 3 and tiles.count > 1000
    monkeypatch.setattr(synthetic, "available_memory", lambda: GIB // 8)
    with pytest.raises(ValueError, match=r"GiB of memory but 0\.1 GiB is available; generate at most about") as error:
        tiny_model.generate_tiles(ALPHA, shape=3000)
    assert "streamed" not in str(error.value)


def test_argmax_channels_is_torchs_argmax_with_ties_to_the_first_channel():
    from slicegan_core.generate import argmax_channels
    scores = torch.randn(3, 5, 6, 7, generator=torch.Generator().manual_seed(0))
    scores[:, 0, 0, :3] = torch.tensor([[1.0, 2.0, 2.0], [1.0, 2.0, 0.0], [0.0, 2.0, 2.0]])  # exact ties
    labels = argmax_channels(scores)
    assert labels.dtype == torch.uint8 and labels.shape == (5, 6, 7)
    assert torch.equal(labels.long(), scores.argmax(0))
    assert labels[0, 0, :3].tolist() == [0, 0, 0]
