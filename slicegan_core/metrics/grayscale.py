"""Metrics of grayscale and colour images: intensity histogram and S2 of an Otsu threshold."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.color import rgb2gray
from skimage.filters import threshold_otsu

from .correlation import TwoPointCorrelation, two_point_correlation


@dataclass(frozen=True)
class IntensityHistogram:
    """Histogram of intensities.

    Attributes
    ----------
    edges : ndarray, shape (bins + 1,)
        Bin edges in the image's intensity unit.
    density : ndarray, shape (bins,) or (n_channels, bins)
        Probability density per bin (integrates to 1), one row per channel for colour images.
    """

    edges: np.ndarray
    density: np.ndarray


@dataclass(frozen=True)
class ThresholdCorrelation:
    """Otsu threshold of an intensity image and S2 of its bright phase (intensity > threshold)."""

    threshold: float
    s2: TwoPointCorrelation


def intensity_histogram(image, *, bins: int = 64, value_range=None, colour: bool = False) -> IntensityHistogram:
    """Histogram of a grayscale (H, W) / (D, H, W) or colour (H, W, 3) / (D, H, W, 3) image.

    Parameters
    ----------
    image : array_like of float or int
        Intensities; for colour the last axis holds the channels.
    bins : int, default 64
        Number of bins.
    value_range : (float, float), optional
        Histogram range; default the data's (min, max) (pass (0, 1) to compare two images on one scale).
    colour : bool, default False
        Treat the last axis as channels and return one histogram row per channel.

    Returns
    -------
    IntensityHistogram

    Examples
    --------
    >>> h = intensity_histogram(np.array([[0.0, 0.0], [1.0, 1.0]]), bins=2, value_range=(0, 1))
    >>> h.density.tolist()
    [1.0, 1.0]
    """
    arr = _as_intensity(image, colour)
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive whole number, got {bins!r}.")
    if value_range is None:
        value_range = (float(arr.min()), float(arr.max()) if arr.max() > arr.min() else float(arr.min()) + 1.0)
    lo, hi = (float(v) for v in value_range)
    if not hi > lo:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range!r}.")
    edges = np.linspace(lo, hi, bins + 1)
    if colour:
        density = np.stack([np.histogram(arr[..., c], bins=edges, density=True)[0] for c in range(arr.shape[-1])])
    else:
        density = np.histogram(arr, bins=edges, density=True)[0]
    return IntensityHistogram(edges=edges, density=density)


def otsu_two_point_correlation(image, *, colour: bool = False, periodic: bool = False, max_r: int | None = None,
                               voxel_size: float = 1.0) -> ThresholdCorrelation:
    """Threshold an intensity image with Otsu's method and return S2 of the bright phase.

    Parameters
    ----------
    image : array_like of float or int, shape (H, W), (D, H, W), or with a trailing channel axis if colour
        Intensities; colour images are converted to luminance (``skimage.color.rgb2gray``) first.
    colour : bool, default False
        Treat the last axis as RGB channels.
    periodic, max_r, voxel_size
        As in :func:`~slicegan_core.metrics.two_point_correlation`.

    Returns
    -------
    ThresholdCorrelation
        The threshold (intensity units) and S2 of the voxels above it (phase value 1).

    Examples
    --------
    >>> img = np.zeros((8, 8)); img[:, :4] = 0.9
    >>> otsu_two_point_correlation(img).s2.volume_fraction
    0.5
    """
    arr = _as_intensity(image, colour)
    gray = rgb2gray(arr[..., :3]) if colour else arr
    if gray.min() == gray.max():
        raise ValueError("image has a single intensity value, so it has no threshold; check the image.")
    threshold = float(threshold_otsu(gray))
    bright = (gray > threshold).astype(np.uint8)
    s2 = two_point_correlation(bright, [1], periodic=periodic, max_r=max_r, voxel_size=voxel_size)[1]
    return ThresholdCorrelation(threshold=threshold, s2=s2)


def _as_intensity(image, colour: bool) -> np.ndarray:
    arr = np.asarray(image)
    spatial = arr.ndim - 1 if colour else arr.ndim
    if spatial not in (2, 3) or arr.size == 0:
        kind = "(H, W, C) or (D, H, W, C)" if colour else "(H, W) or (D, H, W)"
        raise ValueError(f"image must be a non-empty {kind} array, got shape {arr.shape}.")
    if colour and arr.shape[-1] not in (3, 4):
        raise ValueError(f"a colour image needs 3 (RGB) or 4 (RGBA) channels on its last axis, got {arr.shape[-1]}.")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"image must hold real numbers, got dtype {arr.dtype}.")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or infinite values; clean or mask them first.")
    return arr
