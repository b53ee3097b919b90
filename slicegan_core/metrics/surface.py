"""Interface areas between phases and specific surface area of each phase.

Two estimators:

- ``"faces"`` counts the voxel faces (pixel edges in 2D) shared by two different phases. It is exact for
  surfaces aligned with the grid (lamellae, boxes) but a staircase over-counts a smooth surface of random
  orientation by the mean of ``|n_x| + |n_y| + |n_z|`` over the unit sphere: **3/2 in 3D** (4/pi in 2D).
- ``"faces_corrected"`` divides those counts by 3/2 (3D) or 4/pi (2D): unbiased for smooth, isotropically
  oriented interfaces (grains, pores), 1/3 too low for grid-aligned ones.
- ``"marching_cubes"`` (3D, specific surface area only) meshes each phase with ``skimage.measure.
  marching_cubes`` at the 0.5 iso-level of the phase indicator blurred by a Gaussian of 0.7 voxel, and sums
  the triangle areas. The blur removes the staircase: unblurred, the mesh over-estimates a sphere by 8.5 %;
  blurred, spheres of radius 5 to 20 voxels come out within -4 % .. +1 %. Slower (~0.5 s per phase at 128^3).

Faces on the array border are not interfaces (the material goes on) and are never counted, unless
``periodic`` wraps the volume. Areas are in um^2 (um in 2D) for ``voxel_size`` in um; the specific surface
area S_v is the interface area of a phase per unit *total* volume, in 1/um (divide by the phase fraction
for the area per unit phase volume).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import measure

from ._checks import as_labels, as_phases, as_voxel_size

METHODS = ("faces", "faces_corrected", "marching_cubes")
_STAIRCASE = {2: 4.0 / np.pi, 3: 1.5}     # mean face-count over-estimate of a smooth isotropic surface
_MESH_BLUR = 0.7                            # voxels; see the module notes


def interface_areas(labels, phases=None, *, voxel_size: float = 1.0, method: str = "faces",
                    periodic: bool = False) -> dict[tuple[int, int], float]:
    """Area of the interface between every pair of phases, by voxel-face counting.

    Parameters
    ----------
    labels : array_like of int, shape (H, W) or (D, H, W)
        Label image or volume.
    phases : sequence of int, optional
        Report only pairs of these phases; default every value present.
    voxel_size : float, default 1.0
        Voxel edge in micrometres.
    method : {"faces", "faces_corrected"}, default "faces"
        Raw face count, or divided by the staircase factor (3/2 in 3D, 4/pi in 2D); see the module notes.
    periodic : bool, default False
        Also count faces between opposite sides of the array.

    Returns
    -------
    dict[tuple[int, int], float]
        (phase_a, phase_b) with phase_a < phase_b -> interface area in um^2 (3D) or um (2D).

    Examples
    --------
    >>> interface_areas(np.array([[0, 0, 1, 1]] * 3))     # 3 rows, one 0|1 edge each
    {(0, 1): 3.0}
    """
    arr = as_labels(labels)
    dx = as_voxel_size(voxel_size)
    if method not in METHODS[:2]:
        raise ValueError(f"method must be 'faces' or 'faces_corrected' for interface areas, got {method!r}.")
    wanted = as_phases(arr, phases)
    values, index = np.unique(arr, return_inverse=True)
    index = index.reshape(arr.shape)
    k = len(values)
    pair_counts = np.zeros(k * k, dtype=np.int64)
    for axis in range(arr.ndim):
        a = index
        b = np.roll(index, -1, axis=axis) if periodic else None
        if not periodic:
            a = np.take(index, np.arange(arr.shape[axis] - 1), axis=axis)
            b = np.take(index, np.arange(1, arr.shape[axis]), axis=axis)
        differ = a != b
        lo = np.minimum(a[differ], b[differ])
        hi = np.maximum(a[differ], b[differ])
        pair_counts += np.bincount(lo * k + hi, minlength=k * k)
    scale = dx ** (arr.ndim - 1) / (_STAIRCASE[arr.ndim] if method == "faces_corrected" else 1.0)
    out = {}
    for i, pa in enumerate(values.tolist()):
        for j in range(i + 1, k):
            pb = int(values[j])
            if pa in wanted and pb in wanted:
                out[(pa, pb)] = float(pair_counts[i * k + j] * scale)
    for pa in wanted:                       # requested pairs that never meet
        for pb in wanted:
            if pa < pb:
                out.setdefault((pa, pb), 0.0)
    return dict(sorted(out.items()))


def specific_surface_area(labels, phases=None, *, voxel_size: float = 1.0, method: str = "faces",
                          periodic: bool = False) -> dict[int, float]:
    """Specific surface area S_v of each phase: its interface area per unit total volume, in 1/um.

    Parameters
    ----------
    labels : array_like of int, shape (H, W) or (D, H, W)
        Label image or volume.
    phases : sequence of int, optional
        Phase values to measure; default every value present.
    voxel_size : float, default 1.0
        Voxel edge in micrometres; the result is in 1/um (1/voxel when 1.0).
    method : {"faces", "faces_corrected", "marching_cubes"}, default "faces"
        See the module notes; "marching_cubes" needs a 3D volume and ignores ``periodic``.
    periodic : bool, default False
        Also count faces between opposite sides of the array.

    Returns
    -------
    dict[int, float]
        Phase value -> S_v in 1/um (area per volume in 3D, perimeter per area in 2D).

    Examples
    --------
    >>> lam = np.zeros((8, 4, 4), np.uint8); lam[4:] = 1                  # one flat interface
    >>> specific_surface_area(lam, voxel_size=0.5)                      # 16 faces * 0.25 um^2 / 16 um^3
    {0: 0.25, 1: 0.25}
    """
    arr = as_labels(labels)
    dx = as_voxel_size(voxel_size)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    wanted = as_phases(arr, phases)
    total = arr.size * dx ** arr.ndim
    if method == "marching_cubes":
        if arr.ndim != 3:
            raise ValueError("method 'marching_cubes' needs a 3D (D, H, W) volume; use 'faces_corrected' for 2D.")
        return {p: _marching_cubes_area(arr == p) * dx ** 2 / total for p in wanted}
    pairs = interface_areas(arr, None, voxel_size=dx, method=method, periodic=periodic)
    return {p: sum(area for pair, area in pairs.items() if p in pair) / total for p in wanted}


def _marching_cubes_area(mask: np.ndarray) -> float:
    """Iso-surface area (voxel units) of a (D, H, W) boolean mask inside the array, border excluded.

    The mask is edge-padded by one voxel so that the mesh reaches the array faces, then only triangles whose
    centroid lies inside the array's extent [-0.5, n - 0.5] are summed (the padded border adds no area).
    """
    if not mask.any() or mask.all():
        return 0.0
    field = ndi.gaussian_filter(np.pad(mask.astype(np.float32), 1, mode="edge"), _MESH_BLUR, mode="nearest")
    verts, faces, _, _ = measure.marching_cubes(field, level=0.5)
    verts -= 1.0                                            # back to the unpadded voxel-centre coordinates
    tri = verts[faces]                                      # (n_triangles, 3 vertices, 3 coordinates)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    centroid = tri.mean(axis=1)
    inside = np.all((centroid >= -0.5) & (centroid <= np.array(mask.shape) - 0.5), axis=1)
    return float(area[inside].sum())
