"""Safe files: atomic writes, and tensors + JSON in one safetensors file (never pickle).

A checkpoint is one ``.safetensors`` file: tensors (weights, optimiser moments, torch RNG state) plus a JSON
document in its metadata (step, config, optimiser hyper-parameters, numpy RNG state, package version). It is
written to a temporary file in the same directory, fsynced, then renamed over the old one, so a crash or a
kill at any moment leaves either the old or the new checkpoint, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

META_KEY = "json"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + fsync + rename)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name to write to.")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; exports should be readable like any file
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Atomically write tensors plus a JSON-serialisable ``meta`` dict into one safetensors file."""
    flat = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, st_save(flat, metadata={META_KEY: json.dumps(meta)}))


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a file written by :func:`save_tensors` -> (tensors on CPU, meta). Raises ValueError when the
    file is missing or is not a valid safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"File {path} does not exist.")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        meta = json.loads((header.get("__metadata__") or {}).get(META_KEY, "{}"))
    except (SafetensorError, ValueError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a valid safetensors file ({error}); it may be truncated or corrupt.") from None
    return tensors, meta


def load_meta(path: str | Path) -> dict:
    """The JSON ``meta`` of a file written by :func:`save_tensors`, from its header alone (no tensor is read)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        return json.loads((header.get("__metadata__") or {}).get(META_KEY, "{}"))
    except FileNotFoundError:
        raise ValueError(f"File {path} does not exist.") from None
    except (ValueError, AttributeError, OSError) as error:
        raise ValueError(f"{path} is not a valid safetensors file ({error}); it may be truncated or corrupt.") from None


def optimizer_to_flat(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state_dict into tensors (for safetensors) and JSON (hyper-parameters, scalars)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_flat(prefix: str, optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Inverse of :func:`optimizer_to_flat`: load the saved state into ``optimizer``."""
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            index, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
