"""Small phase islands (speckle): face-connected single-phase pieces of at most a few voxels.

A generator's speckle is the error a user sees first: one-voxel islands inflate the measured grain-size
spread and cut transport paths. Two views are counted:

* 3D (:func:`island_density` on a (D, H, W) volume): face-connected (6-neighbour) components of at most
  ``max_size`` voxels, per million voxels.
* 2D (:func:`island_density` on an (H, W) image, or :func:`slice_island_density` over every slice of a volume
  along the three axes, which is what the 2D critics see): edge-connected (4-neighbour) blobs of at most
  ``max_size`` pixels, per million pixels. :func:`tiled_island_density` counts a large image in tiles of a
  smaller image's size, so that the two can be compared.

Pieces cut by the image's faces are counted like any other (a grain whose corner pokes into the field of view
is small there), so truth and generated must be measured on images of the same size to be comparable.
Labelling is :func:`scipy.ndimage.label`.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._checks import as_labels, as_phases
from .tiles import image_tiles

DEFAULT_MAX_SIZE = 4


def _max_size(max_size) -> int:
    if isinstance(max_size, bool) or not isinstance(max_size, (int, np.integer)) or max_size < 1:
        raise ValueError(f"max_size must be a positive whole number of voxels, got {max_size!r}.")
    return int(max_size)


def _small_components(mask: np.ndarray, max_size: int) -> int:
    """Number of face-connected components of ``mask`` with at most ``max_size`` elements."""
    labels, count = ndimage.label(mask)   # default structure: face (2D: edge) connectivity
    if count == 0:
        return 0
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes <= max_size).sum())


def island_density(labels, phases=None, *, max_size: int = DEFAULT_MAX_SIZE) -> dict[int, float]:
    """Small single-phase islands per million voxels (3D) or pixels (2D), per phase.

    Parameters
    ----------
    labels : array_like of int, shape (H, W) or (D, H, W)
        Label image or volume.
    phases : sequence of int, optional
        Phase values to count; default every value present.
    max_size : int, default 4
        Largest island counted, in voxels (3D, face-connected) or pixels (2D, edge-connected).

    Returns
    -------
    dict[int, float]
        Phase value -> islands of at most ``max_size`` per 10^6 voxels (pixels) of the whole image.

    Examples
    --------
    >>> image = np.zeros((10, 10), np.uint8); image[2, 2] = 1; image[6:9, 6:9] = 1
    >>> island_density(image, [1])          # one 1-pixel island per 100 pixels
    {1: 10000.0}
    """
    arr = as_labels(labels)
    size = _max_size(max_size)
    return {p: 1e6 * _small_components(arr == p, size) / arr.size for p in as_phases(arr, phases)}


def tiled_island_density(image, tile: int, phases=None, *,
                         max_size: int = DEFAULT_MAX_SIZE) -> dict[int, float]:
    """Small 2D islands of ``image`` counted in ``tile`` x ``tile`` tiles, per million tile pixels, per phase.

    Pieces cut by an image's edges count, and there are more of them per pixel the smaller the image: a
    micrograph of 2,286 x 1,326 pixels measured whole shows about half the small islands per million pixels of
    its own 128 x 128 tiles. To compare a micrograph with slices of a generated volume, count it in tiles of the
    slices' size.

    Parameters
    ----------
    image : array_like of int, shape (H, W)
    tile : int
        Tile edge in pixels, at most min(H, W). The tiles are the image's non-overlapping grid, centred (the
        remainder is cut off evenly at the edges).
    phases : sequence of int, optional
    max_size : int, default 4

    Returns
    -------
    dict[int, float]
        Phase value -> blobs of at most ``max_size`` pixels per 10^6 pixels, pooled over the tiles.
    """
    arr = as_labels(image)
    if arr.ndim != 2:
        raise ValueError(f"image must be 2D (H, W), got shape {arr.shape}.")
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or not 1 <= tile <= min(arr.shape):
        raise ValueError(f"tile must be a whole number of pixels from 1 to {min(arr.shape)} "
                         f"(the image's smaller side), got {tile!r}.")
    size = _max_size(max_size)
    tiles = image_tiles(arr, tile, limit=None)
    pixels = len(tiles) * tile * tile
    return {p: 1e6 * sum(_small_components(t == p, size) for t in tiles) / pixels
            for p in as_phases(arr, phases)}


def slice_island_density(volume, phases=None, *, max_size: int = DEFAULT_MAX_SIZE,
                         axes=(0, 1, 2)) -> dict[int, float]:
    """2D islands of every slice of a volume along ``axes``, per million slice pixels, per phase.

    This is the speckle the 2D critics can see, and what a generated volume is compared with a 2D
    micrograph on (:func:`island_density` of the micrograph).

    Parameters
    ----------
    volume : array_like of int, shape (D, H, W)
    phases : sequence of int, optional
    max_size : int, default 4
        Largest blob counted, in pixels (edge-connected).
    axes : sequence of int, default (0, 1, 2)
        Slicing axes; all slices of each are counted.

    Returns
    -------
    dict[int, float]
        Phase value -> blobs of at most ``max_size`` pixels per 10^6 slice pixels, pooled over the axes.
    """
    arr = as_labels(volume)
    if arr.ndim != 3:
        raise ValueError(f"volume must be 3D (D, H, W), got shape {arr.shape}; use island_density for an image.")
    size = _max_size(max_size)
    # Label all slices of an axis at once: a structure without links along the slicing axis keeps them apart.
    counts, pixels = {p: 0 for p in as_phases(arr, phases)}, 0
    for axis in axes:
        structure = ndimage.generate_binary_structure(3, 1)
        for side in (0, 2):                     # no neighbour along `axis`, on either side
            index = [1, 1, 1]
            index[axis] = side
            structure[tuple(index)] = False
        for p in counts:
            labels, count = ndimage.label(arr == p, structure=structure)
            if count:
                counts[p] += int((np.bincount(labels.ravel())[1:] <= size).sum())
        pixels += arr.size
    return {p: 1e6 * c / pixels for p, c in counts.items()}
