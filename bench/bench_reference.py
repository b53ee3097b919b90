"""Yardstick: the seed's own code against our ``paper`` preset, in one sitting on this machine.

    REF_DIR=/path/to/SliceGAN_AdaIN python bench/bench_reference.py [--batches 2 8] [--steps 3] [--threads N]

``REF_DIR`` is a checkout of HJ-harry/SliceGAN_AdaIN (the AdaIN-SliceGAN seed; the search tool's ``fetch``
brings it). Nothing of it is copied into this project: its ``slicegan/networks.py`` and ``slicegan/util.py``
are imported from ``REF_DIR`` at run time.

What is timed, per batch size B (each configuration in a fresh process, after one warm-up block):

* **seed**: its ``slicegan_nets_disentangle`` networks (the run script's widths: G 16-512-256-128-64-3,
  D 3-64-128-256-512-1, kernel 4, stride 2) in its training loop's batch rules, float32: per critic
  iteration B fake volumes, all 64 slices per axis scored, B real patches per axis, the gradient penalty
  (its ``calc_gradient_penalty``) on B real/fake pairs, one critic shared by the three axes with an Adam step
  per axis; 5 critic iterations, then a generator step on B volumes through all slices of every axis.
  (The seed's script itself uses 8 fake volumes for the critic and 32 for the generator and the real patches;
  B stands for all of them here, as in our preset.) Seconds per block, the median of ``--steps`` blocks.
* **ours**: ``python -m slicegan_core train --preset paper --set batch_size=B --set log_every=1``, float32 and
  bf16 autocast; the time is the ``sec_per_step`` that ``events.jsonl`` reports (median over steps 2..N), so
  everything the loop does per step counts.

Prints one table with the ratios ours / seed float32. Targets (issue "Training and generation cost"): float32
<= 1.0x and bf16 <= 0.7x the seed's float32 block, at B = 2 and 8.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PATCH, Z_CHANNELS, N_PHASES, CODE_DIM = 64, 16, 3, 128
ALPHAS = (0.15, 0.6)   # as bench_core.make_data


def make_data(folder: Path) -> list[str]:
    """The two synthetic 72^3 volumes of bench_core's training block (alpha 0.15 and 0.6), as paths."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_core import make_data as datasets
    return [d["paths"][0] for d in datasets(folder)]


# ---- the seed's code --------------------------------------------------------------------------------------

def _load(ref_dir: Path, name: str):
    spec = importlib.util.spec_from_file_location(f"seed_{name}", ref_dir / "slicegan" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_blocks(ref_dir: Path, batch: int, steps: int, data_paths: list[str], threads: int) -> list[float]:
    """Seconds per block (5 critic iterations + 1 generator step) of the seed's networks and batch rules."""
    import torch
    if threads:
        torch.set_num_threads(threads)
    networks, util = _load(ref_dir, "networks"), _load(ref_dir, "util")
    layers = 6
    with tempfile.TemporaryDirectory() as tmp:   # its constructor writes a params file next to the run
        Disc, Gen = networks.slicegan_nets_disentangle(
            str(Path(tmp) / "ref"), True, "threephase", [4] * layers, [2] * layers,
            [N_PHASES, 64, 128, 256, 512, 1], [1, 1, 1, 1, 0], [4] * layers, [2] * layers,
            [Z_CHANNELS, 512, 256, 128, 64, N_PHASES], [2, 2, 2, 2, 3])
    torch.manual_seed(0)
    generator, critic = Gen(), Disc()
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9))
    volumes = [np.load(p) for p in data_paths]
    rng = np.random.default_rng(0)

    def real_patches(axis: int) -> torch.Tensor:
        """B random one-hot 64^2 patches perpendicular to ``axis`` (the seed's loader cuts them the same way)."""
        out = np.empty((batch, PATCH, PATCH), np.int64)
        for k in range(batch):
            volume = volumes[rng.integers(len(volumes))]
            start = rng.integers(0, np.array(volume.shape) - PATCH + 1)
            index = [slice(s, s + PATCH) for s in start]
            index[axis] = int(start[axis])
            out[k] = volume[tuple(index)]
        return torch.nn.functional.one_hot(torch.from_numpy(out), N_PHASES).permute(0, 3, 1, 2).float()

    code = torch.full((batch, CODE_DIM), 0.35)
    permutations = ((2, 3, 4), (3, 2, 4), (4, 2, 3))   # slice axis first, then the two in-plane axes

    def block():
        for _ in range(5):
            noise = torch.randn(batch, Z_CHANNELS, 4, 4, 4)
            fake = generator(noise, code).detach()
            for axis, (d1, d2, d3) in enumerate(permutations):
                critic.zero_grad()
                real = real_patches(axis)
                out_real = critic(real).view(-1).mean()
                fake_slices = fake.permute(0, d1, 1, d2, d3).reshape(PATCH * batch, N_PHASES, PATCH, PATCH)
                out_fake = critic(fake_slices).mean()
                penalty = util.calc_gradient_penalty(critic, real, fake_slices[:batch], batch, PATCH, "cpu", 10,
                                                     N_PHASES)
                (out_fake - out_real + penalty).backward()
                opt_d.step()
        generator.zero_grad()
        fake = generator(torch.randn(batch, Z_CHANNELS, 4, 4, 4), code)
        loss = 0
        for d1, d2, d3 in permutations:
            loss = loss - critic(fake.permute(0, d1, 1, d2, d3).reshape(PATCH * batch, N_PHASES, PATCH, PATCH)).mean()
        loss.backward()
        opt_g.step()

    block()                                  # warm-up
    times = []
    for _ in range(steps - 1):
        start = time.perf_counter()
        block()
        times.append(time.perf_counter() - start)
    return times


# ---- ours -------------------------------------------------------------------------------------------------

def our_blocks(batch: int, bf16: bool, steps: int, data_paths: list[str], folder: Path, threads: int) -> list[float]:
    """``sec_per_step`` of steps 2..steps from events.jsonl of a real ``train --preset paper`` run."""
    run_dir = folder / f"ours_b{batch}_{'bf16' if bf16 else 'fp32'}"
    command = [sys.executable, "-m", "slicegan_core", "train", "--preset", "paper", "--run-dir", str(run_dir),
               "--steps", str(steps), "--device", "cpu", "--set", f"batch_size={batch}", "--set", "log_every=1",
               "--set", "checkpoint_every=100000", "--set", f"threads={threads}"]
    for path, alpha in zip(data_paths, ALPHAS):
        command += ["--data", path, "--attr", f"alpha={alpha}"]
    command += ["--set", f"bf16={'true' if bf16 else 'false'}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "train failed")
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    return [e["sec_per_step"] for e in events if e["step"] >= 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref-dir", default=os.environ.get("REF_DIR"), help="checkout of HJ-harry/SliceGAN_AdaIN")
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--steps", type=int, default=3, help="blocks per configuration, the first a warm-up")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--child-seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.ref_dir or not (Path(args.ref_dir) / "slicegan" / "networks.py").is_file():
        parser.exit(2, "error: set REF_DIR (or --ref-dir) to a checkout of HJ-harry/SliceGAN_AdaIN "
                       "(it must hold slicegan/networks.py).\n")
    ref_dir = Path(args.ref_dir)
    if args.child_seed:
        print(json.dumps(seed_blocks(ref_dir, args.child_seed, args.steps, args.data, args.threads)))
        return

    import torch
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {args.threads or torch.get_num_threads()}, "
          f"{args.steps - 1} timed blocks per row after a warm-up")
    header = f"{'code':<8}{'batch':>6}{'precision':>11}{'block_s':>10}{'all blocks':>24}{'vs seed fp32':>14}{'target':>8}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data_paths = make_data(folder)
        for batch in args.batches:
            result = subprocess.run([sys.executable, __file__, "--ref-dir", str(ref_dir), "--child-seed", str(batch),
                                     "--steps", str(args.steps), "--threads", str(args.threads), "--data", *data_paths],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                print(f"seed failed at batch {batch}: {result.stderr.strip().splitlines()[-1]}")
                continue
            seed_times = json.loads(result.stdout.strip().splitlines()[-1])
            seed_s = statistics.median(seed_times)
            print(f"{'seed':<8}{batch:>6}{'float32':>11}{seed_s:>10.2f}{_list(seed_times):>24}{'1.00':>14}{'':>8}",
                  flush=True)
            for bf16, target in ((False, 1.0), (True, 0.7)):
                times = our_blocks(batch, bf16, args.steps, data_paths, folder, args.threads)
                ours = statistics.median(times)
                print(f"{'ours':<8}{batch:>6}{'bf16' if bf16 else 'float32':>11}{ours:>10.2f}{_list(times):>24}"
                      f"{ours / seed_s:>14.2f}{target:>8.1f}", flush=True)


def _list(values) -> str:
    return " ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
