"""Safe files: atomic writes, and tensors + JSON in one safetensors file (never pickle).

A checkpoint is one ``.safetensors`` file: tensors (weights, optimiser moments, torch RNG state) plus a JSON
document in its metadata (step, config, optimiser hyper-parameters, numpy RNG state, package version). It is
written to a temporary file in the same directory, fsynced, then renamed over the old one, so a crash or a
kill at any moment leaves either the old or the new checkpoint, never half of one.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

META_KEY = "json"
MAX_HEADER_BYTES = 100 * 2**20    # safetensors itself refuses headers over 100 MB
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + fsync + rename)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name to write to.")
    path.parent.mkdir(parents=True, exist_ok=True)
    with temporary_beside(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


@contextlib.contextmanager
def temporary_beside(path: Path):
    """A temporary file name beside ``path`` (``.NAME.PID.XXXX.tmp``, readable like any file), removed if the
    body fails; OS errors (no space, read-only folder) become one sentence naming ``path``. Temporary files that
    killed writers left in the same folder (their pid is gone) are removed first."""
    remove_orphaned_temp_files(path.parent)
    try:
        handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise ValueError(os_error_sentence(error, path)) from None
    os.close(handle)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; exports should be readable like any file
        yield tmp
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise ValueError(os_error_sentence(error, path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_orphaned_temp_files(folder: Path) -> None:
    """Delete ``.NAME.PID.XXXX.tmp`` files in ``folder`` whose writer (PID) is no longer running."""
    try:
        leftovers = list(Path(folder).glob(".*.tmp"))
    except OSError:
        return
    for leftover in leftovers:
        parts = leftover.name.split(".")
        if len(parts) >= 5 and parts[-3].isdigit() and not _pid_running(int(parts[-3])):
            try:
                leftover.unlink()
            except OSError:
                pass


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def os_error_sentence(error: OSError, path: str | Path, action: str = "write") -> str:
    """One sentence for an OS error while working on ``path`` (``action``: "write", "read", "use"): what
    happened and what to do."""
    advice = {errno.ENOSPC: "the disk is full; free some space or choose a folder on another disk",
              errno.EDQUOT: "the disk quota is used up; free some space or choose another folder",
              errno.EROFS: "the file system is read-only; choose a writable folder",
              errno.EACCES: "permission denied; choose a folder you can write to",
              errno.EPERM: "permission denied; choose a folder you can write to",
              errno.ENOENT: "it or its folder does not exist; check the path",
              errno.ENOTDIR: "part of the path is a file, not a folder; choose another path",
              errno.EISDIR: "it is a directory; give a file name"}.get(error.errno)
    return f"Could not {action} {path}: {advice or (error.strerror or str(error))}."


def check_writable(*paths: str | Path) -> None:
    """Refuse, before any work, targets that cannot be written: a directory in a file's place or a folder that is
    missing or read-only (one sentence naming the path)."""
    for path in map(Path, paths):
        if path.is_dir():
            raise ValueError(f"{path} is a directory; give a file name to write to (or move the directory away).")
        if not path.parent.is_dir():
            raise ValueError(f"Output folder {path.parent} does not exist; create it or choose another path.")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise ValueError(f"Could not write {path}: the folder {path.parent} is read-only or not yours; "
                             "choose a folder you can write to.")


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
    meta = load_meta(path)             # the header checked before the file is read
    try:
        tensors = st_load(path.read_bytes())
    except (SafetensorError, ValueError) as error:
        raise ValueError(f"{path} is not a valid safetensors file ({error}); it may be truncated or corrupt.") from None
    return tensors, meta


def load_meta(path: str | Path) -> dict:
    """The JSON ``meta`` of a file written by :func:`save_tensors`, from its header alone (no tensor is read)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header_length = int.from_bytes(f.read(8), "little")
            # The header must lie inside the file (and be of a sane size) before it is read: a crafted length
            # of 2^64 - 1 must not become an allocation.
            if not 0 < header_length <= min(os.fstat(f.fileno()).st_size - 8, MAX_HEADER_BYTES):
                raise ValueError(f"its header length {header_length} does not fit the file")
            header = json.loads(f.read(header_length))
        meta = json.loads((header.get("__metadata__") or {}).get(META_KEY, "{}"))
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a JSON object")
        return meta
    except FileNotFoundError:
        raise ValueError(f"File {path} does not exist.") from None
    except IsADirectoryError:
        raise ValueError(f"{path} is a directory, not a safetensors file.") from None
    except (ValueError, AttributeError, OSError, RecursionError) as error:
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
