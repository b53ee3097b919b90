"""Shared fixtures: small 3-phase training volumes, one tiny trained run (built once), random-init models.

The CPU is shared with a training job and other people, so torch uses one thread and every network here is
the "tiny" preset (32^3 patches, voxels_per_latent 16) unless a test needs another preset's shapes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from slicegan_core.config import ModelConfig, preset
from slicegan_core.data import DatasetSpec
from slicegan_core.generate import Model
from slicegan_core.networks import Generator

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts at one thread: load_model's threads="auto" changes torch's count for the process, and
    a test must not inherit what another test's load left (tiles vs one pass are bit-equal at a fixed count)."""
    torch.set_num_threads(1)
    yield

ALPHAS = (0.2, 0.5)           # attribute values of the two training volumes
VOXEL_SIZE_UM = 0.5
TRAINED_STEPS = 4


def three_phase_field(shape, smoothing: float, seed: int) -> np.ndarray:
    """(D, H, W) uint8 labels 0/1/2 (fractions ~0.35/0.35/0.30) from a smoothed periodic Gaussian field."""
    field = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), smoothing, mode="wrap")
    return np.digitize(field, np.quantile(field, [0.35, 0.70])).astype(np.uint8)


@pytest.fixture(scope="session")
def training_volumes(tmp_path_factory) -> list:
    """[(path of a (40, 40, 40) 3-phase .npy volume, alpha)] for the two ALPHAS (coarser structure at 0.5)."""
    folder = tmp_path_factory.mktemp("volumes")
    out = []
    for i, alpha in enumerate(ALPHAS):
        path = folder / f"volume_alpha{alpha:g}.npy"
        np.save(path, three_phase_field((40, 40, 40), smoothing=1.5 + 2 * i, seed=i))
        out.append((path, alpha))
    return out


@pytest.fixture(scope="session")
def tiny_specs(training_volumes) -> list[DatasetSpec]:
    return [DatasetSpec((str(path),), {"alpha": alpha}) for path, alpha in training_volumes]


@pytest.fixture(scope="session")
def trained_run(tiny_specs, tmp_path_factory):
    """A finished TRAINED_STEPS-step "tiny" run. Shared: tests must only read it (copy it to change it)."""
    from slicegan_core.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_specs, run_dir, preset_name="tiny", steps=TRAINED_STEPS, checkpoint_every=2,
          voxel_size_um=VOXEL_SIZE_UM)
    return run_dir


@pytest.fixture(scope="session")
def tiny_model(trained_run) -> Model:
    """The trained run's model on the CPU in float32 (bit-exact comparisons need a fixed precision)."""
    from slicegan_core.generate import load_model

    return load_model(trained_run / "model", device="cpu", precision="float32")


def random_model(preset_name: str = "tiny", seed: int = 0, smooth: bool = False, **fields) -> Model:
    """A Model around a random-init generator of ``preset_name`` (global torch RNG left untouched).

    ``smooth=True`` gives every transposed conv the separable kernel (1, 3, 3, 1)/4 (linear upsampling)
    times a random channel mix, so the output varies smoothly in space: adjacent planes differ in only a
    few per cent of voxels, which makes seams (a tile or wrap-around discontinuity) measurable.
    """
    model_fields, _ = preset(preset_name, **fields)
    config = ModelConfig(**model_fields)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        generator = Generator(config)
        if smooth:
            kernel = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 4
            kernel3 = kernel[:, None, None] * kernel[None, :, None] * kernel[None, None, :]
            with torch.no_grad():
                for conv in generator.convs:
                    c_in, c_out = conv.weight.shape[:2]
                    mix = torch.randn(c_in, c_out) / c_in ** 0.5
                    conv.weight.copy_(mix[:, :, None, None, None] * kernel3)
    return Model(config, generator.state_dict(), {}, device="cpu", precision="float32")


@pytest.fixture(scope="session")
def smooth_model() -> Model:
    return random_model("tiny", seed=0, smooth=True)


@pytest.fixture
def make_random_model():
    """The :func:`random_model` factory, for tests that need a random-init model of some preset."""
    return random_model


def label_jumps(volume: np.ndarray, axis: int) -> np.ndarray:
    """(n - 1,) fraction of voxels whose label changes between plane i and i + 1 along ``axis``."""
    changed = np.diff(volume.astype(np.int16), axis=axis) != 0
    return changed.mean(axis=tuple(a for a in range(3) if a != axis))


@pytest.fixture
def jumps():
    return label_jumps
