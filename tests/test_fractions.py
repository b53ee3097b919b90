"""Phase-fraction calibration: per-phase offsets on the output logits that give the training images' fractions,
saved with an exported model and read back by load_model (older models without them load as before)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import random_model
from slicegan_core import fractions
from slicegan_core.generate import load_model
from slicegan_core.train import train


def _labels_fractions(logits: torch.Tensor, offsets) -> np.ndarray:
    labels = (logits + torch.as_tensor(offsets, dtype=logits.dtype).view(1, -1, 1, 1, 1)).argmax(1)
    return np.bincount(labels.flatten().numpy(), minlength=logits.shape[1]) / labels.numel()


def test_phase_offsets_give_the_target_fractions_pooled_over_datasets():
    generator = torch.Generator().manual_seed(0)
    # three phases, phase 0 favoured by +1 logit: far from the targets before calibration
    first = torch.randn((2, 3, 16, 16, 16), generator=generator) + torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1, 1)
    second = torch.randn((2, 3, 16, 16, 16), generator=generator)
    targets = np.array([[0.2, 0.5, 0.3], [0.3, 0.3, 0.4]])
    offsets = fractions.phase_offsets(torch.cat([first, second]), targets)
    assert offsets.shape == (3,) and abs(offsets.mean()) < 1e-5            # centred
    pooled = (_labels_fractions(first, offsets) + _labels_fractions(second, offsets)) / 2
    assert np.abs(pooled - targets.mean(axis=0)).max() <= 2 * fractions.CALIBRATION_TOLERANCE
    assert np.abs(_labels_fractions(first, np.zeros(3)) - targets[0]).max() > 0.2    # it had work to do
    # already right: nothing moves
    assert np.abs(fractions.phase_offsets(second, _labels_fractions(second, np.zeros(3)))).max() < 0.05
    # a phase with no share at all ends up with no voxels
    offsets = fractions.phase_offsets(second, [0.6, 0.4, 0.0])
    assert np.allclose(_labels_fractions(second, offsets), [0.6, 0.4, 0.0], atol=2 * fractions.CALIBRATION_TOLERANCE)
    with pytest.raises(ValueError, match="2 phases, the logits 3"):
        fractions.phase_offsets(first, [0.5, 0.5])


def test_calibration_targets_leave_a_phase_within_the_deadband_alone():
    band = fractions.CALIBRATION_DEADBAND
    assert np.allclose(fractions.calibration_targets([0.5, 0.3, 0.2], [0.5 + band / 2, 0.3, 0.2 - band / 2]),
                       [0.5, 0.3, 0.2])                           # all within: no change at all
    # a rare phase within the band keeps its fraction; the two others move, in the targets' proportions
    out = fractions.calibration_targets([0.52, 0.47, 0.01], [[0.55, 0.44, 0.012], [0.55, 0.44, 0.008]])
    assert out[2] == 0.01 and out.sum() == pytest.approx(1.0) and out[0] / out[1] == pytest.approx(0.55 / 0.44)


def test_calibrate_measures_a_generator_without_its_current_offset_and_leaves_it_unchanged():
    model = random_model("tiny", seed=3)
    generator = model.generator
    generator.phase_offset.copy_(torch.tensor([5.0, -5.0, 0.0]))
    offsets = fractions.calibrate(generator, [[0.3]], [[0.5, 0.3, 0.2]], volumes=2)
    # (a random generator is far from these fractions: every phase is outside the deadband)
    assert torch.equal(generator.phase_offset, torch.tensor([5.0, -5.0, 0.0]))
    assert not np.allclose(offsets, [5.0, -5.0, 0.0])
    # the same noise as the calibration's, on the voxels it reads: exactly the target fractions
    noise = torch.Generator().manual_seed(0)
    z = torch.randn((2, generator.config.z_channels, *(fractions.CALIBRATION_LATENT,) * 3), generator=noise)
    step = fractions.CALIBRATION_STRIDE
    with torch.no_grad():
        generator.phase_offset.zero_()
        logits = torch.cat([generator(z[i:i + 1], torch.tensor([[0.3]]), activate=False)[..., ::step, ::step, ::step]
                            for i in range(2)])
    assert np.abs(_labels_fractions(logits, offsets) - [0.5, 0.3, 0.2]).max() <= 2 * fractions.CALIBRATION_TOLERANCE


class NoiseGenerator(torch.nn.Module):
    """Two phases, each voxel's logits plain noise: every dataset's raw fractions are 0.5 / 0.5."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"z_channels": 1})()
        self.register_buffer("phase_offset", torch.zeros(2))

    def forward(self, z, attrs, activate=True):
        logits = torch.randn((1, 2, 32, 32, 32), generator=torch.Generator().manual_seed(int(z.abs().sum() * 1e4)))
        return logits + self.phase_offset.view(1, -1, 1, 1, 1)


def test_one_offset_for_several_datasets_is_kept_only_if_it_helps_the_worst_of_them():
    generator = NoiseGenerator()
    # datasets pulling the same way: the pooled offset helps each
    helps = fractions.calibrate(generator, [[0.1], [0.2]], [[0.56, 0.44], [0.56, 0.44]], volumes=2)
    assert helps[0] > 0
    # one dataset 0.07 under, two 0.06 over: the pooled shift (+0.017) would take the first to 0.087 off
    hurts = fractions.calibrate(generator, [[0.1], [0.2], [0.3]], [[0.43, 0.57], [0.56, 0.44], [0.56, 0.44]],
                                volumes=2)
    assert not hurts.any()


def test_a_run_exports_its_calibration_and_load_model_applies_it(tiny_specs, tmp_path, capsys):
    run_dir = train(tiny_specs, tmp_path / "run", preset_name="tiny", steps=4, checkpoint_every=2,
                    fidelity_seeds=1, fraction_calibration=True)
    info = json.loads((run_dir / "model" / "model.json").read_text())
    offsets = info["fraction_calibration"]["phase_offset"]
    assert len(offsets) == 3 and any(abs(x) > 0 for x in offsets)
    model = load_model(run_dir / "model", device="cpu", precision="float32")
    assert np.allclose(model.generator.phase_offset.numpy(), offsets, atol=1e-4)
    from slicegan_core.cli import main
    assert main(["info", str(run_dir / "model")]) == 0
    assert "fractions   calibrated to the training images' (phase offsets on the logits: " in capsys.readouterr().out
    # the Train page's sample images show the exported (calibrated) model's labels, not the uncalibrated G's
    from PIL import Image
    from slicegan_core.train import SAMPLE_SEED, _slices_to_rgb
    z = torch.randn((1, model.config.z_channels, 4, 4, 4), generator=torch.Generator().manual_seed(SAMPLE_SEED))
    differs = []
    for spec in tiny_specs:
        alpha = spec.attrs["alpha"]
        with torch.no_grad():
            exported = model.generator(z, torch.tensor([[alpha]]), activate=False)[0]
            uncalibrated = exported - model.generator.phase_offset.view(-1, 1, 1, 1)
        sample = np.asarray(Image.open(run_dir / "samples" / f"latest_alpha={alpha:g}.png").convert("RGB"))
        assert np.array_equal(sample, _slices_to_rgb(exported, "n-phase"))
        differs.append(not np.array_equal(sample, _slices_to_rgb(uncalibrated, "n-phase")))
    assert any(differs)
    # the checkpoint's generators stay uncalibrated: training never sees the offset
    from slicegan_core.storage import load_tensors
    tensors, _ = load_tensors(run_dir / "checkpoint.safetensors")
    stored = [v for k, v in tensors.items() if k.endswith("phase_offset")]    # G (and G_average with ema_decay)
    assert stored and not any(v.any() for v in stored)
    # a model written before the calibration existed (no phase_offset in its weights) loads with zeros
    from safetensors.torch import load_file, save_file
    weights = load_file(run_dir / "model" / "model.safetensors")
    del weights["phase_offset"]
    save_file(weights, run_dir / "model" / "model.safetensors", metadata={"format_version": str(info["format_version"])})
    older = load_model(run_dir / "model", device="cpu", precision="float32")
    assert not older.generator.phase_offset.any()
    a, b = model.generate({"alpha": 0.5}, seed=1, shape=(32,) * 3), older.generate({"alpha": 0.5}, seed=1, shape=(32,) * 3)
    assert a.shape == b.shape and not np.array_equal(a, b)
    # a matching calibration belongs to the weights and the offsets; zero offsets keep an older model's fingerprint
    from slicegan_core.calibrate import weights_fingerprint
    assert weights_fingerprint(older) != weights_fingerprint(model)
    older.generator.phase_offset.copy_(model.generator.phase_offset)
    assert weights_fingerprint(older) == weights_fingerprint(model)
