"""Input checks shared by the metrics: one clear ``ValueError`` sentence at the public boundary."""
from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np


def as_labels(labels, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as a 2D (H, W) or 3D (D, H, W) integer array, or raise ``ValueError``.

    Float arrays are accepted when every value is a whole number (e.g. labels saved as float32).
    """
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be a 2D (H, W) image or a 3D (D, H, W) volume, got shape {arr.shape}; "
                         "pass one label image or one label volume.")
    if arr.size == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape}); pass a label image or volume with voxels in it.")
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must hold whole-number phase values, got non-integer {arr.dtype} data; "
                             "segment the image first or use the grayscale metrics.")
        arr = arr.astype(np.int64)
    elif not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label array, got dtype {arr.dtype}.")
    return arr


MAX_LABELS = 16   # more distinct values than this: a greyscale image, not segmented phases


def as_segmented(image, name: str = "image") -> np.ndarray:
    """``image`` as (H, W) / (D, H, W) labels of a segmented image (at most ``MAX_LABELS`` whole-number values),
    or ``ValueError`` naming what is wrong: for data a user brings, where a greyscale photo must be refused."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} has shape {arr.shape}; pass a 2D image (H, W) or a 3D stack (D, H, W) of labels.")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{name} has data type {arr.dtype}; pass whole-number phase labels.")
    values = np.unique(arr)
    whole = bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))
    if values.size > MAX_LABELS or not whole:
        raise ValueError(f"{name} has {values.size} distinct values{'' if whole else ', not all whole numbers'}, "
                         "so it is not a segmented image; segment it into phases first.")
    return arr.astype(np.int64) if arr.dtype.kind == "f" else arr


def as_phases(labels: np.ndarray, phases: Iterable[int] | None) -> list[int]:
    """The phase values to measure: ``phases`` as a list of ints, or every value present in ``labels``."""
    if phases is None:
        return [int(p) for p in np.unique(labels)]
    if isinstance(phases, (int, np.integer)):
        phases = [phases]
    out = []
    for p in phases:
        if isinstance(p, (bool, np.bool_)) or not float(p).is_integer():
            raise ValueError(f"phases must be whole-number phase values, got {p!r}; list the label values to measure.")
        out.append(int(p))
    if not out:
        raise ValueError("phases is empty; pass None to measure every phase present or list the label values.")
    if len(set(out)) != len(out):
        raise ValueError(f"phases lists a value twice ({out}); give each phase value once.")
    return out


def as_voxel_size(voxel_size) -> float:
    """Edge length of one (cubic) voxel in micrometres; must be a positive finite number."""
    try:
        value = float(voxel_size)
    except (TypeError, ValueError):
        raise ValueError(f"voxel_size must be a positive number of micrometres per voxel, "
                         f"got {voxel_size!r}.") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"voxel_size must be a positive number of micrometres per voxel, got {voxel_size!r}.")
    return value


def as_axes(ndim: int, axes) -> tuple[int, ...]:
    """Axes to measure along: all of them when ``axes`` is None, else validated and normalised to 0..ndim-1."""
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    out = []
    for a in axes:
        if not isinstance(a, (int, np.integer)) or not -ndim <= a < ndim:
            raise ValueError(f"axes must be integers in [{-ndim}, {ndim - 1}] for a {ndim}D array, got {axes!r}.")
        out.append(int(a) % ndim)
    return tuple(out)
