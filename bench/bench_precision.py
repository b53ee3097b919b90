"""Is bf16 autocast within noise of float32? Gradient error against the batch-to-batch gradient noise.

    python bench/bench_precision.py [RUN_DIR ...] [--batches 4]

For each run directory (a trained checkpoint; without one, a fresh ``cpu`` and ``paper`` preset at
initialisation on two small synthetic volumes) the critic loss and the generator loss of the training loop
are differentiated on the same batch in float32 and under bf16 autocast, and on other batches in float32.
Printed per network: the relative error of the bf16 gradient, |g_bf16 - g_fp32| / |g_fp32|, against the
relative batch-to-batch spread, |g_fp32(batch a) - g_fp32(batch b)| / |g_fp32(a)| (medians over ``--batches``
batches). bf16 is within noise when its error is well below the spread: SGD already follows a gradient that
noisy.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
train_module = importlib.import_module("slicegan_core.train")


def _flat_grad(module) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def gradients(run, bf16: bool, rng_state) -> tuple[torch.Tensor, torch.Tensor]:
    """(critic gradient, generator gradient) of one critic step's and one generator step's loss, as the
    training loop computes them, with the run's random state set to ``rng_state`` first."""
    run.torch_rng.set_state(rng_state[0])
    run.rng.bit_generator.state = rng_state[1]
    run.bf16 = bf16
    critic = run.critics[0]
    # critic step
    dataset_index, attrs, fake = run.fake_batch(grad=False)
    run.critics.zero_grad(set_to_none=True)
    for axis in range(3):
        fake_slices, slice_attrs, slice_dataset = run.slices(fake, attrs, dataset_index, axis, run.slices_per_axis)
        real, real_attrs, paired = run.real_batch(fake_slices, slice_attrs, slice_dataset, axis)
        with run.autocast():
            loss = critic(fake_slices, slice_attrs).mean() - critic(real, real_attrs).mean()
        pairs = run.penalty_pairs
        penalty = train_module.gradient_penalty(critic, real[:pairs], paired[:pairs], real_attrs[:pairs],
                                                run.torch_rng)
        (loss + run.train_config.gp_lambda * penalty).backward()
    critic_grad = _flat_grad(run.critics).clone()
    # generator step
    dataset_index, attrs, fake = run.fake_batch(grad=True)
    run.G.zero_grad(set_to_none=True)
    loss_g = 0.0
    for axis in range(3):
        fake_slices, slice_attrs, _ = run.slices(fake, attrs, dataset_index, axis, run.generator_slices_per_axis)
        with run.autocast():
            loss_g = loss_g - critic(fake_slices, slice_attrs).mean()
    loss_g.backward()
    return critic_grad, _flat_grad(run.G).clone()


def measure(run, batches: int) -> dict:
    states = []
    for _ in range(batches + 1):       # distinct batches: advance the run's generators between them
        states.append((run.torch_rng.get_state(), dict(run.rng.bit_generator.state)))
        run.fake_batch(grad=False)
        run.rng.random(1000)
    errors, spreads = {"critic": [], "generator": []}, {"critic": [], "generator": []}
    for i in range(batches):
        fp32 = gradients(run, False, states[i])
        bf16 = gradients(run, True, states[i])
        other = gradients(run, False, states[i + 1])
        for k, name in enumerate(("critic", "generator")):
            norm = fp32[k].norm()
            errors[name].append(float((bf16[k] - fp32[k]).norm() / norm))
            spreads[name].append(float((other[k] - fp32[k]).norm() / norm))
    return {name: (float(np.median(errors[name])), float(np.median(spreads[name]))) for name in errors}


def fresh_run(preset_name: str, folder: Path):
    from slicegan_core.config import ModelConfig, TrainConfig, preset, to_dict
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_core import make_data
    datasets = make_data(folder)   # two synthetic 72^3 volumes, alpha 0.15 and 0.6
    model_fields, train_fields = preset(preset_name, device="cpu", batch_size=2 if preset_name == "paper" else 4)
    config = {"model": to_dict(ModelConfig(**{**model_fields, "attribute_ranges": ((0.15, 0.6),)})),
              "train": to_dict(TrainConfig(**train_fields)),
              "data": {"image_type": "n-phase", "datasets": datasets}}
    run_dir = folder / preset_name
    run_dir.mkdir()
    return train_module.Run(run_dir, config)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    print(f"{'network':<44}{'bf16 error':>12}{'batch spread':>14}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        for run_dir in args.runs:
            run = train_module.Run(Path(run_dir), json.loads((Path(run_dir) / "config.json").read_text()))
            run.restore()
            cases.append((f"{Path(run_dir).name} step {run.step}", run))
        if not cases:
            cases = [(f"{name} preset, initialisation", fresh_run(name, Path(tmp))) for name in ("cpu", "paper")]
        for label, run in cases:
            for name, (error, spread) in measure(run, args.batches).items():
                print(f"{label + ', ' + name:<34}{error:>12.4f}{spread:>14.4f}{error / spread:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
