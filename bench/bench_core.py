"""Benchmark the core: one training block per preset (bf16 off/on) and generation time / peak memory per size.

Run: ``.venv/bin/python bench/bench_core.py [--skip-paper] [--quick] [--model models/default] [--threads N]``.

1. Training: the time of one block (``critic_steps`` critic updates + 1 generator update) of the
   :class:`slicegan_core.train.Run` loop, after one warm-up block, on two synthetic 72^3 volumes
   (``synthesize``), for the "paper" preset (batch 8, all 64 slices per axis: heavy on a CPU) and the "cpu"
   preset, each with bf16 autocast off and on. Checkpoints and logs are switched off for the timing.
2. Generation: ``Model.generate`` at 64^3, 128^3, 256^3, 512^3 for a random-init "cpu"-preset generator (and
   ``--model`` if given), float32 and bfloat16, each size in a fresh subprocess so its peak RSS
   (/proc/self/status VmHWM, process start included) is its own. The time is one call after a 16^3 warm-up.

Targets (printed with the table): 128^3 <= 0.3 s, 256^3 <= 2 s, 512^3 peak RSS <= 3 GB. No assertions.
``--quick`` skips the paper preset and the two largest sizes.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

from slicegan_core import __version__  # noqa: E402
from slicegan_core.config import ModelConfig, TrainConfig, preset, to_dict  # noqa: E402
from slicegan_core.generate import Model, cpu_has_fast_bf16, load_model  # noqa: E402
from slicegan_core.networks import Generator  # noqa: E402

TARGET_TIME_S = {128: 0.3, 256: 2.0}
TARGET_RSS_GB = {512: 3.0}
ALPHAS = (0.15, 0.6)


# ---- 1. training blocks ---------------------------------------------------------------------------------

def make_data(folder: Path) -> list[dict]:
    from slicegan_core.synthetic import synthesize

    datasets = []
    for seed, alpha in enumerate(ALPHAS):
        path = folder / f"synthetic_{alpha:g}.npy"
        np.save(path, synthesize(shape=(72, 72, 72), sigma=alpha, median_esd=8.0, seed=seed).labels)
        datasets.append({"paths": [str(path)], "attrs": {"alpha": alpha}})
    return datasets


def block_time(preset_name: str, bf16: bool, datasets: list[dict], folder: Path, threads: int,
               settings: dict | None = None) -> float:
    """Seconds for one training block (critic_steps critic updates + 1 generator update) after a warm-up."""
    train_module = importlib.import_module("slicegan_core.train")   # the package exports a train() too
    model_fields, train_fields = preset(preset_name, bf16=bf16, device="cpu", threads=threads,
                                        steps=1, checkpoint_every=10 ** 9, log_every=10 ** 9,
                                        **(settings or {}))
    model_config = ModelConfig(**{**model_fields, "attribute_ranges": ((min(ALPHAS), max(ALPHAS)),)})
    config = {"package_version": __version__, "preset": preset_name, "model": to_dict(model_config),
              "train": to_dict(TrainConfig(**train_fields)),
              "data": {"image_type": "n-phase", "voxel_size_um": None, "datasets": datasets}}
    run_dir = folder / f"run_{preset_name}_{int(bf16)}"
    run_dir.mkdir()
    run = train_module.Run(run_dir, config)
    run.checkpoint = lambda: None                      # time the loop, not the disk
    run.log = lambda **event: None
    run.G.train()
    train_module._train_loop(run)                      # warm-up block: step 0 -> 1
    run.train_config = dataclasses.replace(run.train_config, steps=2)
    start = time.perf_counter()
    train_module._train_loop(run)                      # the measured block: step 1 -> 2
    return time.perf_counter() - start


def bench_training(presets: list[str], threads: int, settings: dict | None = None):
    print(f"\n1. Training block = critic_steps critic updates + 1 generator update (CPU, {torch.get_num_threads()} "
          f"threads, fast bf16 on this CPU: {cpu_has_fast_bf16()}){f', settings {settings}' if settings else ''}")
    header = (f"{'preset':<8}{'batch':>6}{'critic':>7}{'slices/axis':>12}{'bf16':>6}{'block_s':>10}"
              f"{'h/1000 steps':>14}")
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        datasets = make_data(Path(tmp))
        for name in presets:
            _, fields = preset(name)
            slices = fields["slices_per_axis"] or preset(name)[0]["patch_size"]
            for bf16 in (False, True):
                seconds = block_time(name, bf16, datasets, Path(tmp), threads, settings)
                print(f"{name:<8}{fields['batch_size']:>6}{fields['critic_steps']:>7}{slices:>12}"
                      f"{'on' if bf16 else 'off':>6}{seconds:>10.2f}{seconds * 1000 / 3600:>14.2f}", flush=True)


# ---- 2. generation --------------------------------------------------------------------------------------

def random_cpu_model(precision: str) -> Model:
    config = ModelConfig(**preset("cpu")[0])
    generator = Generator(config)                     # global seed set by the caller (a fresh child process)
    return Model(config, generator.state_dict(), {}, device="cpu", precision=precision)


def child_generate(size: int, precision: str, model_path: str | None) -> dict:
    """Runs in a fresh process: one warm-up, one timed generate, then the process's peak RSS."""
    torch.manual_seed(0)
    model = load_model(model_path, device="cpu", precision=precision) if model_path else random_cpu_model(precision)
    model.generate(seed=1, shape=16)
    before_gb = _vm_kb("VmRSS") / 2 ** 20
    start = time.perf_counter()
    volume = model.generate(seed=0, shape=(size,) * 3)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_before_gb": before_gb, "peak_rss_gb": _vm_kb("VmHWM") / 2 ** 20,
            "shape": list(volume.shape)}


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def bench_generation(sizes: list[int], model_paths: list[str | None], threads: int):
    print(f"\n2. Generation (CPU, one fresh process per row, {threads or 'default'} threads; "
          f"peak RSS includes the Python/torch start-up, 'before' is the RSS just before the call)")
    header = (f"{'model':<22}{'size':>6}{'precision':>10}{'time_s':>9}{'target_s':>9}{'before_GB':>10}"
              f"{'peak_GB':>9}{'target_GB':>10}")
    print(header)
    print("-" * len(header))
    for model_path in model_paths:
        label = Path(model_path).name if model_path else "random cpu preset"
        for size in sizes:
            for precision in ("float32", "bfloat16"):
                command = [sys.executable, __file__, "--child-generate", str(size), "--precision", precision,
                           "--threads", str(threads)]
                if model_path:
                    command += ["--model", model_path]
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    tail = (result.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{label:<22}{size:>6}{precision:>10}  failed: {tail}", flush=True)
                    continue
                row = json.loads(result.stdout.strip().splitlines()[-1])
                target_s = f"{TARGET_TIME_S[size]:.1f}" if size in TARGET_TIME_S else "-"
                target_gb = f"{TARGET_RSS_GB[size]:.1f}" if size in TARGET_RSS_GB else "-"
                print(f"{label:<22}{size:>6}{precision:>10}{row['seconds']:>9.2f}{target_s:>9}"
                      f"{row['rss_before_gb']:>10.2f}{row['peak_rss_gb']:>9.2f}{target_gb:>10}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-paper", action="store_true", help="leave out the heavy paper-preset block")
    parser.add_argument("--quick", action="store_true", help="no paper preset, generation at 64^3 and 128^3 only")
    parser.add_argument("--skip-train", action="store_true", help="generation table only")
    parser.add_argument("--model", help="also time this trained model directory")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                        help='training-block variant, e.g. --set output_layer=\'"upsample"\' --set ema_decay=0')
    parser.add_argument("--child-generate", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_generate:
        print(json.dumps(child_generate(args.child_generate, args.precision, args.model)))
        return
    print(f"slicegan_core {__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs")
    if not args.skip_train:
        settings = {key: json.loads(value) for key, _, value in (item.partition("=") for item in args.set)}
        bench_training(["cpu"] if (args.skip_paper or args.quick) else ["paper", "cpu"], args.threads, settings)
    sizes = [64, 128] if args.quick else [64, 128, 256, 512]
    bench_generation(sizes, [None] + ([args.model] if args.model else []), args.threads)
    print("\nTargets: 128^3 <= 0.3 s, 256^3 <= 2 s, 512^3 peak RSS <= 3 GB.")


if __name__ == "__main__":
    main()
