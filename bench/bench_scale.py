"""Benchmark scaling out: training throughput at 1 and N processes (torchrun), and generation of large volumes
to files (time and peak memory).

Run: ``.venv/bin/python bench/bench_scale.py [--part training,generation] [--preset cpu] [--processes 1,2]
[--steps 3] [--warmup 1] [--threads 1] [--device cpu] [--sizes 512,1024,2048] [--formats zarr,tif]
[--out-dir DIR]``.

Training: the real command, ``python -m slicegan_core train --preset PRESET --nproc N`` (N = 1 runs without
torchrun), on two synthetic 72^3 volumes (``synthesize``, alpha 0.2 / 0.5), with a log line every step and no
checkpoint before the end. Throughput is ``batch_size`` (the global batch: N processes share it) divided by
the median seconds per step of the ``--steps`` steps after ``--warmup`` steps, from the run's events.jsonl
(rank 0's wall clock between steps, gradient all-reduce included). Start-up, data loading and the final
checkpoint are not counted. ``--threads`` is the torch threads of each process.

Generation: the real command, ``python -m slicegan_core generate --model default --shape N --seed 0 --out
DIR/volume_N.FORMAT --device cpu --voxel-size 0.5`` for each size and format (one process, ``--threads`` torch
threads), one at a time. Wall time (model loading included) and the peak resident memory of that process
(``os.wait4``'s ``ru_maxrss``); then the file is opened (zarr / tifffile) to check its shape and voxel size, and deleted. The
outputs need free disk in ``--out-dir`` (a 2048^3 TIFF is 8 GiB; the folder is checked first).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from slicegan_core.config import PRESETS  # noqa: E402
from slicegan_core.synthetic import synthesize  # noqa: E402


def training_data(folder: Path) -> list[tuple[Path, float]]:
    """Two synthetic 72^3 training volumes (as bench_core.py uses) -> [(path, alpha)]."""
    out = []
    for i, alpha in enumerate((0.2, 0.5)):
        path = folder / f"alpha{alpha:g}.npy"
        np.save(path, synthesize(shape=(72, 72, 72), sigma=alpha, seed=10 + i).labels)
        out.append((path, alpha))
    return out


def train_throughput(data, preset: str, processes: int, steps: int, warmup: int, threads: int,
                     device: str, folder: Path) -> dict:
    """Run ``warmup + steps`` training steps with ``processes`` processes; volumes per second after warm-up."""
    run_dir = folder / f"{preset}_{processes}"
    command = [sys.executable, "-m", "slicegan_core", "train", "--preset", preset, "--run-dir", str(run_dir),
               "--steps", str(warmup + steps), "--device", device, "--set", f"threads={threads}",
               "--set", "log_every=1", "--set", "checkpoint_every=100000"]
    for path, alpha in data:
        command += ["--data", str(path), "--attr", f"alpha={alpha}"]
    if processes > 1:
        command += ["--nproc", str(processes)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    timed = [e["sec_per_step"] for e in events if e["step"] > warmup]
    batch = PRESETS[preset][1]["batch_size"]
    seconds = statistics.median(timed)
    return {"processes": processes, "threads_each": threads, "batch_size": batch, "steps_timed": len(timed),
            "sec_per_step": seconds, "volumes_per_s": batch / seconds, "wall_s": wall}


VOXEL_SIZE_UM = 0.5   # the default model has none (trained on synthetic grains); the bench checks one is written


def generate_once(size: int, fmt: str, threads: int, folder: Path) -> dict:
    """``generate --shape SIZE --out folder/volume_SIZE.FMT`` in a child process: seconds, peak RSS, checks."""
    out = folder / f"volume_{size}.{fmt}"
    command = [sys.executable, "-m", "slicegan_core", "generate", "--model", "default", "--shape", str(size),
               "--seed", "0", "--device", "cpu", "--voxel-size", str(VOXEL_SIZE_UM), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    printed = child.stdout.read().strip()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"generate {size} {fmt} failed: {printed}")
    shape, voxel = read_back(out, fmt)
    if tuple(shape) != (size,) * 3 or voxel != VOXEL_SIZE_UM:
        raise RuntimeError(f"{out} reads back as shape {shape}, voxel size {voxel}")
    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    row = {"size": size, "format": sidecar["format"], "threads": threads, "seconds": seconds,
           "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9, "shape_read": list(shape), "voxel_size_read": voxel,
           "voxel_size_model": sidecar["voxel_size_um"], "bytes_on_disk": disk_bytes(out)}
    shutil.rmtree(out) if out.is_dir() else out.unlink()
    out.with_name(out.name + ".json").unlink()
    return row


def read_back(path: Path, fmt: str) -> tuple[tuple[int, ...], float | None]:
    """(shape, voxel size in micrometres) as a reader sees them: zarr's multiscale scale, OME PhysicalSizeX or
    ImageJ's spacing."""
    if fmt == "zarr":
        import zarr
        root = zarr.open_group(str(path), mode="r")
        scale = root.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
        return root["0"].shape, scale[-1]
    import tifffile
    with tifffile.TiffFile(path) as tif:
        shape = tif.series[0].shape
        if tif.is_ome:
            import xml.etree.ElementTree as ElementTree
            pixels = next(e for e in ElementTree.fromstring(tif.ome_metadata).iter() if e.tag.endswith("Pixels"))
            return shape, float(pixels.get("PhysicalSizeZ"))
        return shape, tif.imagej_metadata.get("spacing")


def disk_bytes(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size


def generation_table(sizes, formats, threads: int, folder: Path) -> list[dict]:
    needed = max(sizes) ** 3 * 1.05
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise SystemExit(f"{folder} has {free / 2**30:.1f} GiB free; the largest volume needs "
                         f"{needed / 2**30:.1f} GiB.")
    rows = []
    for size in sizes:
        for fmt in formats:
            rows.append(generate_once(size, fmt, threads, folder))
            print(f"  {size}^3 {fmt}: {rows[-1]['seconds']:.0f} s, {rows[-1]['peak_rss_gb']:.2f} GB", file=sys.stderr)
    print(f"\nGeneration with the default model to files, {threads} thread(s) "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores; wall time includes start-up and "
          "model loading; peak RSS in GB = 10^9 bytes)\n")
    print("| volume | file | seconds | s per 1024^3 | peak RSS (GB) | read back: shape, voxel size (um) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        per = row["seconds"] * 1024**3 / row["size"] ** 3
        print(f"| {row['size']}^3 | {row['format']} | {row['seconds']:.0f} | {per:.0f} | {row['peak_rss_gb']:.2f} | "
              f"{'x'.join(map(str, row['shape_read']))}, {row['voxel_size_read']} |")
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts (default 1,2)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"))
    parser.add_argument("--part", default="training,generation", help="training, generation or both (default)")
    parser.add_argument("--sizes", default="512,1024,2048", help="generated cube sides (default 512,1024,2048)")
    parser.add_argument("--formats", default="zarr,tif", help="generated file formats (default zarr,tif)")
    parser.add_argument("--out-dir", default=tempfile.gettempdir(), help="folder for the generated files")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)

    results = {}
    if "training" in args.part:
        results["training"] = training_table(args)
    if "generation" in args.part:
        with tempfile.TemporaryDirectory(prefix="bench_scale_", dir=args.out_dir) as tmp:
            results["generation"] = generation_table([int(n) for n in args.sizes.split(",")],
                                                     args.formats.split(","), args.threads, Path(tmp))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def training_table(args) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        folder = Path(tmp)
        data = training_data(folder)
        for processes in (int(p) for p in args.processes.split(",")):
            rows.append(train_throughput(data, args.preset, processes, args.steps, args.warmup, args.threads,
                                         args.device, folder))
            print(f"  {processes} process(es): {rows[-1]['sec_per_step']:.2f} s/step", file=sys.stderr)

    base = rows[0]["volumes_per_s"]
    print(f"Training throughput, preset {args.preset}, device {args.device}, {args.threads} thread(s) per process "
          f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores; median of {args.steps} steps "
          f"after {args.warmup} warm-up)\n")
    print("| processes | batch (global) | s / step | volumes / s | speed-up |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['processes']} | {row['batch_size']} | {row['sec_per_step']:.2f} | "
              f"{row['volumes_per_s']:.3f} | {row['volumes_per_s'] / base:.2f}x |")
    return rows


if __name__ == "__main__":
    sys.exit(main())
