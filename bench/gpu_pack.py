"""Pack the runs made on a lent GPU machine for the trip back (bench/gpu_runs.sh calls it; see there).

    python bench/gpu_pack.py pack RUNS... --out DIR      # on the GPU machine: models, logs, events -> DIR/part-*
    python bench/gpu_pack.py unpack DIR... --to runs/gpu_back  # here: join, untar, restore float32 weights

The device tool brings back at most 8 files of 16 MiB: each run's model (model.json + model.safetensors,
float16 when larger than 1 MB: the paper-width generator is 47 MB in float32, and all of them must fit in 64 MiB), its config, status and events,
and the logs go into one tar split into 15 MiB parts. Unpacking casts float16 weights back to float32 (the
model was trained and exported in float32; float16 keeps 11 significant bits of each weight).
"""
from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path

PART = 15 * 2 ** 20
KEEP = ("config.json", "status.json", "events.jsonl", "fidelity.jsonl", "model/model.json", "model/model.safetensors")


def _halved(path: Path) -> bytes:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return save({k: v.half() if v.is_floating_point() else v for k, v in tensors.items()},
                metadata={**(metadata or {}), "transport": "float16"})


def pack(runs: list[Path], out: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for run in runs:
            if run.is_file():
                tar.add(run, arcname=run.name)
                continue
            for name in KEEP:
                path = run / name
                if not path.is_file():
                    continue
                arcname = f"{run.name}/{name}"
                if name.endswith(".safetensors") and path.stat().st_size > 1e6:
                    data = _halved(path)
                    info = tarfile.TarInfo(arcname)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
                else:
                    tar.add(path, arcname=arcname)
    data = buffer.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    for index in range(0, len(data), PART):
        (out / f"part-{index // PART}").write_bytes(data[index:index + PART])
    print(f"packed {len(runs)} runs, {len(data) / 2 ** 20:.1f} MiB in {-(-len(data) // PART)} parts")


def unpack(folders: list[Path], target: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file
    parts = sorted((p for folder in folders for p in folder.glob("part-*")), key=lambda p: int(p.name[5:]))
    data = b"".join(p.read_bytes() for p in parts)
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(target, filter="data")
    for path in target.glob("*/model/model.safetensors"):
        with safe_open(str(path), "pt") as f:
            metadata = f.metadata() or {}
            if metadata.pop("transport", None) != "float16":
                continue
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        save_file({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, str(path),
                  metadata=metadata)
        print(f"restored float32 weights of {path}")
    print(f"unpacked {len(parts)} parts into {target}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("pack", "unpack"))
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_out"))
    parser.add_argument("--to", type=Path, default=Path("runs/gpu_back"))
    args = parser.parse_args(argv)
    if args.action == "pack":
        pack(args.paths, args.out)
    else:
        unpack(args.paths, args.to)


if __name__ == "__main__":
    main()
