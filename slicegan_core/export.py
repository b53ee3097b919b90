"""Write generated volumes as files that open in ImageJ/Fiji, ParaView and DREAM3D, each atomically.

Axes: a volume ``(D, H, W)`` is stored as ImageJ ``ZYX`` and as VTK ImageData with x = W, y = H, z = D.
Voxel sizes are in micrometres. Every export gets a JSON sidecar ``<file>.json`` with its provenance.

Units: a physical unit is written only when the voxel size is known. Without one, every format stores a
spacing of 1 (one voxel) and claims no unit: the TIFF has no ImageJ calibration, the .vti and .dream3d a spacing
of 1 (neither format has a unit field), the OME-Zarr axes no ``unit``, and the sidecar ``"voxel_size_um": null``.
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
from .config import check_voxel_size
from .storage import atomic_write_bytes, atomic_write_text, check_writable

FORMATS = (".tif", ".tiff", ".npy", ".vti", ".dream3d")   # encoded in memory by volume_bytes
SAVE_FORMATS = (*FORMATS, ".zarr")                          # save_volume also writes an OME-Zarr folder


def volume_bytes(volume: np.ndarray, suffix: str, voxel_size_um: float | None = None, phase_values=None,
                 provenance: dict | None = None, phase_names=None) -> bytes:
    """Encode ``volume`` ((D, H, W) labels/intensities or (D, H, W, 3) colour) in the format of ``suffix``.

    ``.dream3d`` (DREAM3D 6 / SIMPL, labels only) stores ``Phases`` = phase index + 1 over ``phase_values``
    (default: the values present), their ``phase_names`` and ``provenance``; see :mod:`slicegan_core.dream3d`."""
    suffix = suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"Unknown export format {suffix!r}; use one of {', '.join(SAVE_FORMATS)}.")
    voxel_size_um = check_voxel_size(voxel_size_um)
    if suffix in (".tif", ".tiff"):
        if volume.dtype.kind in "iu" and volume.dtype not in (np.uint8, np.uint16):
            # ImageJ holds 8- and 16-bit integers (and float32): wider ids (e.g. grain ids) are kept as 16 bit
            # when they fit, exactly; a value outside 0..65535 has no ImageJ type that keeps it.
            low, high = (int(volume.min()), int(volume.max())) if volume.size else (0, 0)
            if low < 0 or high > 65535:
                raise ValueError(f"Values {low}..{high} do not fit a TIFF that ImageJ reads (0..65535); write a "
                                 ".npy, .vti or .zarr instead.")
            volume = volume.astype(np.uint16)
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, volume, imagej=True, **imagej_calibration(voxel_size_um, volume.ndim == 4))
        return buffer.getvalue()
    if suffix == ".npy":
        buffer = io.BytesIO()
        np.save(buffer, volume, allow_pickle=False)
        return buffer.getvalue()
    if suffix == ".dream3d":
        from .dream3d import dream3d_bytes
        return dream3d_bytes(volume, voxel_size_um, phase_values, provenance, phase_names)
    return _vti_bytes(volume, voxel_size_um)


def imagej_calibration(voxel_size_um: float | None, colour: bool) -> dict:
    """tifffile.imwrite options of an ImageJ hyperstack: with a voxel size, its calibration (pixels per
    micrometre, z spacing, unit um); without one, no calibration at all, so ImageJ / Fiji shows pixels instead
    of a false 1 um."""
    metadata = {"axes": "ZYXS" if colour else "ZYX"}
    if not voxel_size_um:
        return {"metadata": metadata}
    spacing = float(voxel_size_um)
    return {"resolution": (1 / spacing, 1 / spacing), "metadata": {**metadata, "spacing": spacing, "unit": "um"}}


def sidecar_files(path: str | Path, volume: np.ndarray, voxel_size_um: float | None) -> dict[str, bytes]:
    """Extra files that belong with an export: for ``.dream3d`` an ``.xdmf`` that ParaView opens directly."""
    path = Path(path)
    if path.suffix.lower() != ".dream3d":
        return {}
    from .dream3d import xdmf_text
    return {path.with_suffix(".xdmf").name: xdmf_text(path.name, volume.shape[:3], voxel_size_um).encode()}


def _vti_bytes(volume: np.ndarray, voxel_size_um: float | None) -> bytes:
    """VTK ImageData whose N^3 *cells* are the voxels (point extent 0..N per axis), as the .xdmf of a .dream3d
    describes them: cell (i, j, k) is ``volume[k, j, i]`` and spans [i, i + 1] x spacing. The spacing is the
    voxel size, or 1 (one voxel; VTK files carry no unit) when it is unknown."""
    import pyvista as pv  # heavy (VTK): only when asked for

    depth, height, width = volume.shape[:3]
    spacing = float(voxel_size_um or 1.0)
    grid = pv.ImageData(dimensions=(width + 1, height + 1, depth + 1), spacing=(spacing,) * 3)
    values = volume.reshape(depth * height * width, -1) if volume.ndim == 4 else volume.ravel(order="C")
    grid.cell_data["phase" if volume.dtype == np.uint8 and volume.ndim == 3 else "intensity"] = values
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "volume.vti"
        grid.save(path)
        return path.read_bytes()


def save_volume(path: str | Path, volume: np.ndarray, voxel_size_um: float | None = None,
                provenance: dict | None = None) -> Path:
    """Write ``volume`` to ``path`` (.tif/.tiff/.npy/.vti/.dream3d/.zarr by extension) plus ``<path>.json``
    provenance (and, for .dream3d, an .xdmf for ParaView).

    ``voxel_size_um`` (micrometres, or None = unknown) goes into every format's metadata; see the module
    docstring for what an unknown one writes. Returns the path written. Every file is written atomically (temp
    file + rename; a .zarr folder is built beside its name and renamed when complete)."""
    path = Path(path)
    voxel_size_um = check_voxel_size(voxel_size_um)
    if path.suffix.lower() == ".zarr":
        from .stream import save_zarr   # stream imports this module
        return save_zarr(path, volume, voxel_size_um, provenance)
    phases = sorted((provenance or {}).get("phases") or [], key=lambda p: p["value"])
    phase_values = [p["value"] for p in phases] or None
    phase_names = [p.get("name") or f"phase {p['value']}" for p in phases] or None
    data = volume_bytes(volume, path.suffix, voxel_size_um, phase_values=phase_values, phase_names=phase_names,
                        provenance={k: v for k, v in (provenance or {}).items() if k in ("model_name", "attrs", "seed")})
    extras = sidecar_files(path, volume, voxel_size_um)
    # Every target checked before the first is written, so a sidecar that cannot be written leaves no volume.
    check_writable(path, path.with_name(path.name + ".json"), *(path.with_name(name) for name in extras))
    atomic_write_bytes(path, data)
    for name, extra in extras.items():
        atomic_write_bytes(path.with_name(name), extra)
    write_sidecar(path, volume.shape, volume.dtype, voxel_size_um, provenance)
    return path


def write_sidecar(path: str | Path, shape, dtype, voxel_size_um: float | None, provenance: dict | None = None) -> Path:
    """Write the JSON provenance sidecar ``<path>.json`` of an export of a ``shape`` (D, H, W) or (D, H, W, 3)
    volume (atomically); returns its path. Streamed exports (:mod:`slicegan_core.stream`) use it too."""
    path = Path(path)
    sidecar = {"file": path.name, "shape": [int(n) for n in shape], "dtype": str(np.dtype(dtype)),
               "voxel_size_um": voxel_size_um, "axes": "ZYX" if len(shape) == 3 else "ZYXC",
               "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "package_version": __version__,
               **(provenance or {})}
    target = path.with_name(path.name + ".json")
    atomic_write_text(target, json.dumps(sidecar, indent=2))
    return target


def provenance(model, attrs: dict, seed: int, shape, periodic: bool) -> dict:
    """The provenance record of a generated volume (what a sidecar and a re-run need)."""
    return {"model": os.path.abspath(model.path) if model.path else None,
            "model_name": Path(model.path).name if model.path else None,
            "attrs": attrs, "seed": int(seed), "shape": list(shape), "periodic": bool(periodic),
            "phases": model.phases if model.image_type == "n-phase" else None}
