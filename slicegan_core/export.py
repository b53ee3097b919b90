"""Write generated volumes as files that open in ImageJ/Fiji, ParaView and DREAM3D, each atomically.

Axes: a volume ``(D, H, W)`` is stored as ImageJ ``ZYX`` and as VTK ImageData with x = W, y = H, z = D.
Voxel sizes are in micrometres. Every export gets a JSON sidecar ``<file>.json`` with its provenance.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from . import __version__
from .storage import atomic_write_bytes, atomic_write_text

FORMATS = (".tif", ".tiff", ".npy", ".vti")


def volume_bytes(volume: np.ndarray, suffix: str, voxel_size_um: float | None = None) -> bytes:
    """Encode ``volume`` ((D, H, W) labels/intensities or (D, H, W, 3) colour) in the format of ``suffix``."""
    suffix = suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"Unknown export format {suffix!r}; use one of {', '.join(FORMATS)}.")
    spacing = float(voxel_size_um or 1.0)
    if suffix in (".tif", ".tiff"):
        buffer = io.BytesIO()
        axes = "ZYXS" if volume.ndim == 4 else "ZYX"
        # ImageJ hyperstack: calibration in pixels per micrometre, z spacing in the metadata.
        tifffile.imwrite(buffer, volume, imagej=True, resolution=(1 / spacing, 1 / spacing),
                         metadata={"spacing": spacing, "unit": "um", "axes": axes})
        return buffer.getvalue()
    if suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, volume, allow_pickle=False)
        return buffer.getvalue()
    return _vti_bytes(volume, spacing)


def _vti_bytes(volume: np.ndarray, spacing: float) -> bytes:
    import pyvista as pv  # heavy (VTK): only when asked for

    depth, height, width = volume.shape[:3]
    grid = pv.ImageData(dimensions=(width, height, depth), spacing=(spacing,) * 3)
    values = volume.reshape(depth * height * width, -1) if volume.ndim == 4 else volume.ravel(order="C")
    grid.point_data["phase" if volume.dtype == np.uint8 and volume.ndim == 3 else "intensity"] = values
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.vti"
        grid.save(path)
        return path.read_bytes()


def save_volume(path: str | Path, volume: np.ndarray, voxel_size_um: float | None = None,
                provenance: dict | None = None) -> Path:
    """Write ``volume`` to ``path`` (.tif/.tiff/.npy/.vti by extension) plus ``<path>.json`` provenance.

    Returns the path written. Both files are written atomically (temp file + rename)."""
    path = Path(path)
    data = volume_bytes(volume, path.suffix, voxel_size_um)
    if not path.parent.exists():
        raise ValueError(f"Output folder {path.parent} does not exist; create it or choose another path.")
    atomic_write_bytes(path, data)
    sidecar = {"file": path.name, "shape": list(volume.shape), "dtype": str(volume.dtype),
               "voxel_size_um": voxel_size_um, "axes": "ZYX" if volume.ndim == 3 else "ZYXC",
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "package_version": __version__,
               **(provenance or {})}
    atomic_write_text(path.with_name(path.name + ".json"), json.dumps(sidecar, indent=2))
    return path


def provenance(model, attrs: dict, seed: int, shape, periodic: bool) -> dict:
    """The provenance record of a generated volume (what a sidecar and a re-run need)."""
    return {"model": os.path.abspath(model.path) if model.path else None,
            "model_name": Path(model.path).name if model.path else None,
            "attrs": attrs, "seed": int(seed), "shape": list(shape), "periodic": bool(periodic),
            "phases": model.phases if model.image_type == "n-phase" else None}
