"""The CUDA path of the shipped model, checked on a GPU machine (no effect without one).

    python bench/gpu_check.py [--model models/default] [--json FILE]

Per trained alpha, 3 seeds of 96^3 generated on the CPU and on the GPU at each one's default precision (bf16 on
both where fast), then at float32 on both: labels agreeing voxel for voxel, and small islands (<= 4 voxels per
million) from each; then the GPU's warm generation time for 128^3 to 512^3.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slicegan_core import load_model  # noqa: E402
from slicegan_core.metrics import island_density  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return {}
    result = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "agreement": [], "timing": []}
    print(f"torch {torch.__version__}, {result['device']}")
    print("| precision | alpha | labels equal CPU / GPU | islands/M CPU (phases) | islands/M GPU (phases) |")
    print("|---|---|---|---|---|")
    for precision in ("auto", "float32"):
        cpu, gpu = (load_model(args.model, device=d, precision=precision) for d in ("cpu", "cuda"))
        for alpha in (0.15, 0.35, 0.6):
            equal, islands = [], {"cpu": [], "gpu": []}
            for seed in range(3):
                volumes = {name: model.generate({"alpha": alpha}, seed=seed, shape=(96, 96, 96))
                           for name, model in (("cpu", cpu), ("gpu", gpu))}
                equal.append(float(np.mean(volumes["cpu"] == volumes["gpu"])))
                for name, volume in volumes.items():
                    islands[name].append(list(island_density(volume, max_size=4).values()))
            row = {"precision": precision, "alpha": alpha, "labels_equal": float(np.mean(equal)),
                   "islands_cpu": np.mean(islands["cpu"], axis=0).round(1).tolist(),
                   "islands_gpu": np.mean(islands["gpu"], axis=0).round(1).tolist()}
            result["agreement"].append(row)
            print(f"| {precision} | {alpha} | {row['labels_equal']:.4f} | {row['islands_cpu']} | {row['islands_gpu']} |",
                  flush=True)
    gpu = load_model(args.model, device="cuda")
    print("\n| edge | GPU generation (s, warm, median of 3) |\n|---|---|")
    for edge in (128, 256, 512):
        gpu.generate({"alpha": 0.35}, seed=0, shape=(edge,) * 3)
        times = []
        for seed in range(3):
            torch.cuda.synchronize()
            start = time.perf_counter()
            gpu.generate({"alpha": 0.35}, seed=seed, shape=(edge,) * 3)
            times.append(time.perf_counter() - start)
        result["timing"].append({"edge": edge, "seconds": float(np.median(times))})
        print(f"| {edge} | {np.median(times):.3f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
