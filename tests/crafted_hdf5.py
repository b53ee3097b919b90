"""Crafted .dream3d files whose data lives outside them, and a trap that tells whether anything opened that
outside file: Linux's inotify reports every open of a watched file, by any process, so "not one byte read"
can be checked, not guessed."""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import h5py
import numpy as np

from slicegan_core.dream3d import dream3d_bytes

SHAPE = (16, 16, 16, 1)
ATTACKS = ("external raw storage", "relative external raw storage", "external link", "virtual dataset")
IN_ACCESS, IN_OPEN = 0x1, 0x20


class OutsideFileTrap:
    """``folder/secret.h5``: an HDF5 file holding ``data`` (SHAPE bytes of "SECRET..."), watched once
    :meth:`arm` is called; ``opened`` is True once anything opened or read it after that."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / "secret.h5"
        secret = np.frombuffer((b"SECRET" * 1000)[:int(np.prod(SHAPE))], np.uint8).reshape(SHAPE)
        with h5py.File(self.path, "w") as f:
            f["data"] = secret
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._seen = False

    def arm(self) -> None:
        if self._libc.inotify_add_watch(self._fd, bytes(self.path), IN_OPEN | IN_ACCESS) < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch failed")

    @property
    def opened(self) -> bool:
        try:
            self._seen |= bool(os.read(self._fd, 65536))
        except BlockingIOError:      # no event waiting
            pass
        return self._seen

    def close(self) -> None:
        os.close(self._fd)


def crafted_dream3d(path: Path, attack: str, outside: Path) -> Path:
    """A valid-looking DREAM3D file (SliceGAN container, 16^3 Phases) whose Phases array is taken from
    ``outside`` by ``attack`` (one of ATTACKS)."""
    volume = np.random.default_rng(0).integers(0, 3, SHAPE[:3]).astype(np.uint8)
    path.write_bytes(dream3d_bytes(volume, 1.0))
    with h5py.File(path, "a") as f:
        cells = f["DataContainers/SliceGAN/CellData"]
        del cells["Phases"]
        if attack == "external raw storage":
            cells.create_dataset("Phases", shape=SHAPE, dtype="u1", external=[(str(outside), 0, int(np.prod(SHAPE)))])
        elif attack == "relative external raw storage":
            relative = os.path.relpath(outside, path.parent)
            cells.create_dataset("Phases", shape=SHAPE, dtype="u1", external=[(relative, 0, int(np.prod(SHAPE)))])
        elif attack == "external link":
            cells["Phases"] = h5py.ExternalLink(str(outside), "/data")
        elif attack == "virtual dataset":
            layout = h5py.VirtualLayout(shape=SHAPE, dtype="u1")
            layout[:] = h5py.VirtualSource(str(outside), "data", shape=SHAPE)
            cells.create_virtual_dataset("Phases", layout)
        else:
            raise ValueError(attack)
    return path
