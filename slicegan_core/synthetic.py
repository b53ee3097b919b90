"""DREAM3D-style synthetic ground-truth microstructures: packed equiaxed grains with a log-normal size law.

A volume is built in four steps:

1. **Sizes.** Equivalent-sphere diameters (ESD, voxels) are drawn from a truncated log-normal,
   ``ln(ESD) ~ N(ln(median_esd), sigma)`` cut at ``+-truncate_sigmas * sigma``, until the summed sphere
   volume fills the box.
2. **Packing.** Grains are placed largest first; each is put at the best of several random candidate
   positions, the one furthest from the surfaces of the spheres already placed (least overlap;
   minimum-image distances when periodic).
3. **Growth.** Every voxel goes to the grain with the smallest ``distance / weight`` (a multiplicatively
   weighted Voronoi tessellation, wrapped when periodic). The weights start as the sphere radii and are
   then *calibrated*: the tessellation is recomputed and each weight multiplied by
   ``(target_volume / realised_volume) ** (1 / 3)`` until the rms of ln(realised ESD / target ESD) is
   below 0.01 (at most 8 passes; a larger step oscillates). Without this the tessellation distorts the
   realised size law because a cell depends on where its neighbours landed: measured at 128^3, the std
   of ln(ESD) comes out 0.052 / 0.174 / 0.352 / 0.583 for sigma 0 / 0.15 / 0.35 / 0.6 (small grains
   too big and vice versa at low sigma, big grains squeezed at high sigma). After calibration it is
   0.009 / 0.150 / 0.348 / 0.601, i.e. the *realised* ESDs (from voxel counts) follow the requested law.
4. **Phases.** Grains are visited in a random order and their volumes stacked until each target phase
   fraction is reached, then single grains are moved between phases while that reduces the error, so
   phases are independent of grain size and position and the volume fractions are met to a fraction
   of a grain.

Notes on the realised law: ``sigma`` is the parameter of the untruncated normal, so with the default
3-sigma cut the std of ln(ESD) is about 1.3 % smaller (0.592 for sigma=0.6); grains below a few voxels
are quantised (one voxel has an ESD of 1.24), and grains that lose every voxel are dropped. With
``periodic=False`` the box is the whole sample: grains touching a face are whole grains flattened
against it (their volumes still follow the law), not grains cut from a larger volume.

Limits. Placing or growing a grain scans a box about twice its diameter wide (wrapped round a periodic volume
as often as it reaches across), and a grain much larger than the volume leaves most voxels to the growth's
slow exact fallback: ``median_esd=1e9`` never finished, and a law whose largest grain could hold 8 volumes
took 56 s at 128^3. :func:`synthesize` therefore refuses a size law whose largest possible grain,
``median_esd * exp(truncate_sigmas * sigma)``, has a sphere volume larger than the box, or whose mean grain
does not fit in the box (at that bound, 128^3 volumes with sigma 0.35-1.5 take under 1 s); ``sigma`` is at
most 2 and ``truncate_sigmas`` at most 6. It also refuses, before allocating anything, a volume that needs more
memory than is available (:func:`synthesis_bytes`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
from scipy import spatial, special

__all__ = ["SyntheticVolume", "synthesize", "grain_esd"]

_CANDIDATES = 128  # candidate positions tried per grain during packing
_MAX_SIGMA = 2.0  # sigma of ln(ESD) at most: at 2 the volume-weighted median ESD is e^12 = 1.6e5 medians
_MAX_TRUNCATE = 6.0  # a cut beyond 6 sigma removes under 2e-9 of the grains, i.e. none
# The largest grain the law can draw, median * e^(truncate_sigmas * sigma), may hold at most this many box
# volumes. Larger ones leave the weighted tessellation's far voxels to the slow KD-tree fallback: at the
# median_esd this allows, 8 seeds of 128^3 with sigma 0.35-1.5 each took under 1 s; allowing 8 box volumes,
# one took 56 s (and a median of 1e9 voxels never finished).
_MAX_GRAIN_VOLUMES = 1.0
_SEED_LIMIT = 2**64  # torch.Generator.manual_seed takes seeds below 2**64; synthesize follows the same rule
_REACH = 1.6  # box half-width of a grain during growth, in units of its weight (exactness fallback beyond)
_MAX_PASSES = 8  # growth passes at most (one plain Voronoi + calibration passes)
_TOLERANCE = 0.01  # stop when the rms of ln(realised ESD / target ESD) is below this


@dataclass(frozen=True)
class SyntheticVolume:
    """A synthetic labelled microstructure and the recipe that made it.

    Attributes
    ----------
    labels : np.ndarray
        (D, H, W) uint8 phase index, 0..n_phases-1.
    grain_ids : np.ndarray
        (D, H, W) int32 grain index, 0..n_grains-1, every id present at least once.
    grain_phase : np.ndarray
        (n_grains,) uint8 phase of each grain, so ``labels == grain_phase[grain_ids]``.
    recipe : dict
        JSON-serialisable arguments of :func:`synthesize` (and its qualified name under ``"function"``);
        ``synthesize(**{k: v for k, v in recipe.items() if k != "function"})`` rebuilds the volume.
    """

    labels: np.ndarray
    grain_ids: np.ndarray
    grain_phase: np.ndarray
    recipe: dict


def synthesize(
    shape=(128, 128, 128),
    sigma=0.35,
    median_esd=8.0,
    phase_fractions=(0.35, 0.35, 0.30),
    periodic=True,
    seed=0,
    truncate_sigmas=3.0,
) -> SyntheticVolume:
    """Generate packed equiaxed grains with log-normal sizes and assign them to phases.

    Parameters
    ----------
    shape : tuple of 3 int, default (128, 128, 128)
        (D, H, W) size of the volume in voxels, each at least 8. A volume that needs more memory than is
        available (:func:`synthesis_bytes`) is refused before anything is allocated.
    sigma : float, default 0.35
        Standard deviation of ln(ESD) ("alpha" = ln of the geometric standard deviation), 0 to 2; 0 gives
        monodisperse grains.
    median_esd : float, default 8.0
        Median equivalent-sphere diameter in voxels, > 1 and small enough that the volume holds a mean-sized
        grain and the largest grain the law can draw, ``median_esd * exp(truncate_sigmas * sigma)``, is no
        larger than the volume (see "Limits" in the module docstring).
    phase_fractions : sequence of float, default (0.35, 0.35, 0.30)
        Target volume fraction of each phase (1 to 255 phases), positive and summing to 1.
    periodic : bool, default True
        Whether grains wrap across opposite faces (the volume tiles space).
    seed : int, default 0
        Seed of ``np.random.default_rng``, 0 to 2**64 - 1; the global random state is never touched.
    truncate_sigmas : float, default 3.0
        ln(ESD) is cut at ``+-truncate_sigmas * sigma`` around ln(median_esd), > 0 and at most 6.

    Returns
    -------
    SyntheticVolume
        ``labels`` (D, H, W) uint8, ``grain_ids`` (D, H, W) int32, ``grain_phase`` (n_grains,) uint8 and
        the ``recipe``. The realised ESDs (``grain_esd(grain_ids)``) follow the requested law: see the
        module docstring for the calibration that makes them do so.

    Examples
    --------
    >>> vol = synthesize(shape=(32, 32, 32), median_esd=6.0, seed=1)
    >>> vol.labels.shape, vol.labels.dtype.name, int(vol.labels.max()) <= 2
    ((32, 32, 32), 'uint8', True)
    """
    shape, sigma, median_esd, fractions, truncate_sigmas = _validate(
        shape, sigma, median_esd, phase_fractions, periodic, seed, truncate_sigmas
    )
    check_memory(shape, synthesis_bytes(shape, sigma, median_esd, truncate_sigmas, periodic),
                 lambda side: synthesis_bytes((side,) * 3, sigma, median_esd, truncate_sigmas, periodic), smallest=8)
    periodic = bool(periodic)
    rng = np.random.default_rng(int(seed))
    n_voxels = math.prod(shape)

    esd = _sample_esd(rng, n_voxels, sigma, median_esd, truncate_sigmas)  # descending
    sphere_volumes = np.pi / 6.0 * esd**3
    # Scale the targets so that they tile the box exactly (the last sampled grain over- or undershoots).
    target_volumes = sphere_volumes * (n_voxels / sphere_volumes.sum())

    centres = _pack_centres(rng, shape, esd / 2.0, periodic)
    grain_ids = _grow_to_volumes(shape, centres, esd / 2.0, target_volumes, periodic)

    # Drop grains that lost every voxel, and shuffle ids so that they do not encode size.
    volumes = np.bincount(grain_ids.ravel(), minlength=len(esd))
    kept = np.flatnonzero(volumes > 0)
    new_id = np.full(len(esd), -1, dtype=np.int32)
    new_id[kept[rng.permutation(len(kept))]] = np.arange(len(kept), dtype=np.int32)
    grain_ids = new_id[grain_ids]
    volumes = np.bincount(grain_ids.ravel(), minlength=len(kept))

    grain_phase = _assign_phases(rng, volumes, fractions)
    recipe = {
        "function": "slicegan_core.synthetic.synthesize",
        "shape": list(shape),
        "sigma": sigma,
        "median_esd": median_esd,
        "phase_fractions": list(fractions),
        "periodic": periodic,
        "seed": int(seed),
        "truncate_sigmas": truncate_sigmas,
    }
    return SyntheticVolume(
        labels=grain_phase[grain_ids], grain_ids=grain_ids, grain_phase=grain_phase, recipe=recipe
    )


def grain_esd(grain_ids: np.ndarray) -> np.ndarray:
    """Equivalent diameter of every grain from its voxel count.

    Parameters
    ----------
    grain_ids : np.ndarray
        (D, H, W) or (H, W) non-negative integer grain index.

    Returns
    -------
    np.ndarray
        (n_grains,) float64 diameter in voxels, ``n_grains = grain_ids.max() + 1``: the equivalent-sphere
        diameter ``(6 V / pi) ** (1/3)`` for 3D input, the equivalent-circle diameter
        ``(4 A / pi) ** (1/2)`` for 2D input; 0 for an id with no voxels.

    Examples
    --------
    >>> grain_esd(np.zeros((4, 4), dtype=np.int32)).round(3)
    array([4.514])
    """
    grain_ids = np.asarray(grain_ids)
    if grain_ids.ndim not in (2, 3) or grain_ids.size == 0:
        raise ValueError(
            f"grain_ids must be a non-empty 2D or 3D array, got shape {grain_ids.shape}; "
            "pass a (D, H, W) or (H, W) label volume."
        )
    if not np.issubdtype(grain_ids.dtype, np.integer):
        raise ValueError(f"grain_ids must hold integers, got dtype {grain_ids.dtype}; pass integer grain labels.")
    if grain_ids.min() < 0:
        raise ValueError(
            f"grain_ids must be non-negative, got a minimum of {grain_ids.min()}; relabel grains from 0."
        )
    counts = np.bincount(grain_ids.ravel()).astype(np.float64)
    if grain_ids.ndim == 3:
        return np.cbrt(6.0 * counts / np.pi)
    return np.sqrt(4.0 * counts / np.pi)


def _validate(shape, sigma, median_esd, phase_fractions, periodic, seed, truncate_sigmas):
    """Check the user arguments of :func:`synthesize` and return them normalised."""
    try:
        dims = tuple(shape)
    except TypeError:
        dims = ()
    if len(dims) != 3 or not all(_is_int(s) and s >= 8 for s in dims):
        raise ValueError(
            f"shape must be three integers of at least 8 voxels, got {shape!r}; pass e.g. (128, 128, 128)."
        )
    dims = tuple(int(s) for s in dims)
    if not _is_real(sigma) or not 0 <= sigma <= _MAX_SIGMA:
        raise ValueError(
            f"sigma must be a finite number from 0 to {_MAX_SIGMA:g}, got {sigma!r}; use e.g. 0.35 (0 for "
            f"equal-sized grains; above {_MAX_SIGMA:g} a few giant grains would hold nearly all the volume)."
        )
    if not _is_real(truncate_sigmas) or not 0 < truncate_sigmas <= _MAX_TRUNCATE:
        raise ValueError(
            f"truncate_sigmas must be a finite number above 0 and at most {_MAX_TRUNCATE:g}, got "
            f"{truncate_sigmas!r}; use e.g. 3.0."
        )
    if not _is_real(median_esd) or median_esd <= 1:
        raise ValueError(
            f"median_esd must be a number of voxels greater than 1, got {median_esd!r}; use e.g. 8.0."
        )
    largest = _largest_median_esd(dims, float(sigma), float(truncate_sigmas))
    if largest <= 1:
        raise ValueError(
            f"sigma={sigma:g} is too wide for a {dims} volume: even with median_esd just above 1 voxel the "
            f"largest grain the size law can draw (median_esd * exp(truncate_sigmas * sigma)) would be larger than "
            f"the volume, so lower sigma or truncate_sigmas or enlarge the volume."
        )
    if median_esd > largest:
        raise ValueError(
            f"median_esd={median_esd!r} is too large for a {dims} volume with sigma={sigma:g}: use a value "
            f"above 1 and at most {largest:.3g} voxels, so that the volume holds a mean-sized grain and the "
            f"largest grain the size law can draw (median_esd * exp(truncate_sigmas * sigma)) is no larger than it."
        )
    try:
        fractions = tuple(phase_fractions)
    except TypeError:
        fractions = ()
    positive = all(_is_real(f) and f > 0 for f in fractions)   # numbers, not True or "0.3"
    fractions = tuple(float(f) for f in fractions) if positive else ()
    if not 1 <= len(fractions) <= 255 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(
            f"phase_fractions must be 1 to 255 positive numbers summing to 1, got {phase_fractions!r}; "
            "pass e.g. (0.35, 0.35, 0.30)."
        )
    if not isinstance(periodic, (bool, np.bool_)):
        raise ValueError(f"periodic must be True or False, got {periodic!r}.")
    check_seed(seed)
    return dims, float(sigma), float(median_esd), fractions, float(truncate_sigmas)


def _is_int(value) -> bool:
    """An int or numpy int, not a bool (True is an Integral to Python but never a size or seed)."""
    return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    """A finite int or float (numpy included), not a bool or a string."""
    return isinstance(value, Real) and not isinstance(value, (bool, np.bool_)) and math.isfinite(value)


def check_seed(seed) -> int:
    """``seed`` as an int when it is a non-negative integer below 2**64 (numpy ints accepted), else
    ``ValueError``; shared by :func:`synthesize` and ``Model.generate``."""
    if not _is_int(seed) or not 0 <= seed < _SEED_LIMIT:
        raise ValueError(f"seed must be a non-negative integer below 2**64, got {seed!r}; pass e.g. seed=0.")
    return int(seed)


def _mean_sphere_volume(median_esd, sigma, truncate_sigmas) -> float:
    """Mean of pi/6 ESD^3 (voxels) under the truncated log-normal law of :func:`synthesize`."""
    # E[exp(3 sigma X)] for X ~ N(0, 1) cut at +-t: exp(4.5 sigma^2) times the mass the shift keeps.
    kept = special.ndtr(truncate_sigmas - 3 * sigma) - special.ndtr(-truncate_sigmas - 3 * sigma)
    total = special.ndtr(truncate_sigmas) - special.ndtr(-truncate_sigmas)
    return np.pi / 6.0 * median_esd**3 * math.exp(4.5 * sigma**2) * kept / total


def _largest_median_esd(shape, sigma, truncate_sigmas) -> float:
    """Largest median ESD (voxels) for which a volume of ``shape`` holds a mean-sized grain and the largest
    grain the law can draw holds at most ``_MAX_GRAIN_VOLUMES`` volumes of the box."""
    n_voxels = math.prod(shape)
    one_grain = (n_voxels / _mean_sphere_volume(1.0, sigma, truncate_sigmas)) ** (1 / 3)
    largest_grain = (6.0 / np.pi * _MAX_GRAIN_VOLUMES * n_voxels) ** (1 / 3) / math.exp(truncate_sigmas * sigma)
    return float(min(one_grain, largest_grain))


def synthesis_bytes(shape, sigma=0.35, median_esd=8.0, truncate_sigmas=3.0, periodic=True) -> int:
    """Estimated peak bytes of :func:`synthesize`, 10 % above the peak RSS measured at 64^3-192^3.

    Packing holds the float32 gap field and, per grain, ``_CANDIDATES`` float64 and int64 position triples
    with a temporary (9.2 kB a grain: the larger part when grains are small); growth holds float32 distance
    ratios and two passes' int32 grain ids, plus KD-tree queries for voxels far from every centre (more of
    them without wrap-around: 30 rather than 16 bytes a voxel).
    """
    n_voxels = math.prod(shape)
    n_grains = n_voxels / _mean_sphere_volume(median_esd, sigma, truncate_sigmas) + 16
    packing = 4 * n_voxels + 3 * _CANDIDATES * 3 * 8 * n_grains
    growth = (16 if periodic else 30) * n_voxels
    return int(1.1 * (max(packing, growth) + 64 * n_grains))


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation: ``MemAvailable`` of /proc/meminfo, else psutil's
    estimate, else the free pages from ``os.sysconf``; None when none of them can tell."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024    # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil
        return int(psutil.virtual_memory().available)
    except (ImportError, AttributeError, OSError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(shape, needed: int, needed_for_cube, available: int | None = None, multiple: int = 1,
                 smallest: int = 1) -> None:
    """Raise ``ValueError`` when ``needed`` bytes for a volume of ``shape`` exceed ``available`` (default
    :func:`available_memory`; no check when unknown). The message suggests the largest cube side, a multiple of
    ``multiple`` and at least ``smallest``, whose ``needed_for_cube(side)`` bytes fit."""
    if available is None:
        available = available_memory()
    if available is None or needed <= available:
        return
    # Sides a few % apart, not a bisection: the need is not monotonic in the side (tile shapes jump). No
    # machine holds a 10^7 cube (10^21 voxels), so the search stops there.
    top = min(max(max(shape), smallest, 1), 10**7)
    grid = np.unique(np.geomspace(max(smallest, 1), top, 1000).astype(np.int64))
    fitting = [int(side) for side in grid if needed_for_cube(int(side)) <= available]
    low = max(fitting, default=0)
    # "about 2600": two significant digits, rounded down, then down to the multiple.
    side = low if low < 100 else int(str(low)[:2]) * 10 ** (len(str(low)) - 2)
    side = side // multiple * multiple
    what = f"{shape[0]}^3" if len(set(shape)) == 1 else "x".join(map(str, shape))
    if side < max(smallest, multiple, 1):
        advice = "not even the smallest volume fits, so free memory or use a machine with more"
    else:
        advice = f"generate at most about {side}^3, or free memory or use a machine with more"
    raise ValueError(f"A {what} volume needs {_gib(needed)} of memory but {_gib(available)} is available; "
                     f"{advice}.")


def _gib(n_bytes: int) -> str:
    """Bytes as GiB for a message: 25.1 GiB, 0.012 GiB, 9.3e+05 GiB."""
    gib = n_bytes / 2**30
    return f"{gib:.1f} GiB" if 0.1 <= gib < 1e4 else f"{gib:.2g} GiB"


def _sample_esd(rng, n_voxels, sigma, median_esd, truncate_sigmas):
    """(n_grains,) ESDs in voxels, sorted descending, whose sphere volumes just fill ``n_voxels``."""
    mean_volume = np.pi / 6.0 * median_esd**3 * math.exp(4.5 * sigma**2)
    batch = int(1.2 * n_voxels / mean_volume) + 16
    # Inverse-CDF sampling of the truncated normal: exact, vectorised, no rejection loop.
    cdf_edge = special.ndtr(-truncate_sigmas)
    esd = np.empty(0)
    while True:
        u = rng.uniform(cdf_edge, 1.0 - cdf_edge, size=batch)
        esd = np.concatenate([esd, median_esd * np.exp(sigma * special.ndtri(u))])
        filled = np.cumsum(np.pi / 6.0 * esd**3)
        if filled[-1] >= n_voxels:
            break
    n = int(np.searchsorted(filled, n_voxels)) + 1  # first count that fills the box
    if n > 1 and n_voxels - filled[n - 2] < filled[n - 1] - n_voxels:
        n -= 1  # stopping one short is closer to the box volume
    return np.sort(esd[:n])[::-1].copy()


def _box_pieces(centre, half_width, n, periodic):
    """Split the box [centre - half_width, centre + half_width] along one axis of length n into pieces.

    Returns a list of ``(slice of the axis, float32 squared offsets (voxel - centre) ** 2)``; when
    periodic the box wraps (one piece per image it touches), otherwise it is clipped to the axis.
    """
    lo = math.ceil(centre - half_width)
    hi = math.floor(centre + half_width) + 1
    if not periodic:
        lo, hi = max(lo, 0), min(hi, n)
    elif 0 <= lo and hi <= n:
        pass  # the common case: no wrap
    else:
        pieces = []
        for image in range(lo // n, (hi - 1) // n + 1):
            a, b = max(lo, image * n), min(hi, (image + 1) * n)
            offsets = np.arange(a, b, dtype=np.float32) - np.float32(centre)
            pieces.append((slice(a - image * n, b - image * n), offsets * offsets))
        return pieces
    if lo >= hi:
        return []
    offsets = np.arange(lo, hi, dtype=np.float32) - np.float32(centre)
    return [(slice(lo, hi), offsets * offsets)]


def _box_views(shape, centre, half_width, periodic):
    """Yield ``(index, dz2, dy2, dx2)`` for the (wrapped) box around ``centre``.

    ``index`` is a tuple of 3 slices and ``dz2``, ``dy2``, ``dx2`` the float32 squared offsets along
    each axis, so the squared distance is ``dz2[:, None, None] + dy2[None, :, None] + dx2``.
    """
    pieces_z = _box_pieces(centre[0], half_width, shape[0], periodic)
    pieces_y = _box_pieces(centre[1], half_width, shape[1], periodic)
    pieces_x = _box_pieces(centre[2], half_width, shape[2], periodic)
    for sz, dz2 in pieces_z:
        for sy, dy2 in pieces_y:
            for sx, dx2 in pieces_x:
                yield (sz, sy, sx), dz2, dy2, dx2


def _pack_centres(rng, shape, radii, periodic):
    """(n_grains, 3) centres in voxel coordinates, placing the (descending) radii with least overlap.

    A gap field holds, for each voxel, the distance to the nearest placed sphere surface. Every later
    grain is no larger, so it only needs to be exact within twice the current radius of a sphere.
    """
    dims = np.array(shape)
    gap = np.full(shape, np.inf, dtype=np.float32)
    offset = 0.0 if periodic else -0.5  # non-periodic centres cover the voxels [-0.5, n - 0.5)
    candidates = rng.random((len(radii), _CANDIDATES, 3)) * dims + offset
    voxels = np.rint(candidates).astype(np.int64)
    voxels = voxels % dims if periodic else np.clip(voxels, 0, dims - 1)
    centres = np.empty((len(radii), 3))
    for j, radius in enumerate(radii.tolist()):
        v = voxels[j]
        # Candidates clear of every sphere tie at `radius`; argmax then takes the first (a random one).
        score = np.minimum(gap[v[:, 0], v[:, 1], v[:, 2]], radius)
        centre = candidates[j, int(np.argmax(score))]
        centres[j] = centre
        for index, dz2, dy2, dx2 in _box_views(shape, centre.tolist(), 2.0 * radius, periodic):
            surface_gap = np.sqrt((dz2[:, None] + dy2[None, :])[:, :, None] + dx2) - np.float32(radius)
            view = gap[index]
            np.minimum(view, surface_gap, out=view)
    return centres


def _weighted_voronoi(shape, centres, weights, periodic):
    """(D, H, W) int32 index of the grain minimising distance / weight at every voxel (exact).

    Each grain only scans a box of half-width ``_REACH * weight``; a voxel whose best ratio is within
    ``_REACH`` is then exact (every grain that could beat it has been scanned), the rest go to a KD-tree.
    """
    ratio2 = np.full(shape, np.inf, dtype=np.float32)
    ids = np.zeros(shape, dtype=np.int32)
    for j, (centre, weight) in enumerate(zip(centres.tolist(), weights.tolist())):
        inv_w2 = np.float32(1.0 / weight**2)
        for index, dz2, dy2, dx2 in _box_views(shape, centre, _REACH * weight, periodic):
            q = ((dz2[:, None] + dy2[None, :]) * inv_w2)[:, :, None] + dx2 * inv_w2
            view = ratio2[index]
            closer = q < view
            view[closer] = q[closer]
            ids[index][closer] = j
    far = np.flatnonzero(ratio2.ravel() > np.float32(_REACH**2))
    if far.size:
        ids.ravel()[far] = _exact_nearest(far, shape, centres, weights, periodic)
    return ids


def _exact_nearest(flat_index, shape, centres, weights, periodic):
    """Weighted-Voronoi owner of the voxels at ``flat_index``, exact, for voxels far from every grain.

    Among the ``k`` Euclidean-nearest centres (KD-tree) the best ratio is exact where it is at most
    ``d_k / max(weights)`` (any other grain is further than ``d_k``); the others retry with a larger
    ``k`` and, failing that, against every grain.
    """
    dims = np.array(shape, dtype=np.float64)
    coords = np.stack(np.unravel_index(flat_index, shape), axis=1).astype(np.float64)
    tree = spatial.cKDTree(centres, boxsize=dims if periodic else None)
    owners = np.empty(len(coords), dtype=np.int32)
    unsure = np.arange(len(coords))
    for k in (16, 128):
        k = min(k, len(centres))
        dist, near = tree.query(coords[unsure], k=k, workers=-1)
        dist, near = dist.reshape(len(unsure), k), near.reshape(len(unsure), k)
        ratio = dist / weights[near]
        best = np.argmin(ratio, axis=1)
        rows = np.arange(len(unsure))
        owners[unsure] = near[rows, best]
        unsure = unsure[ratio[rows, best] > dist[:, -1] / weights.max()]
        if unsure.size == 0 or k == len(centres):
            return owners
    chunk = max(1, 2_000_000 // len(centres))
    for start in range(0, len(unsure), chunk):
        rows = unsure[start : start + chunk]
        diff = coords[rows, None, :] - centres[None, :, :]
        if periodic:
            diff -= dims * np.round(diff / dims)  # minimum image
        owners[rows] = np.argmin(np.einsum("vgi,vgi->vg", diff, diff) / weights**2, axis=1)
    return owners


def _grow_to_volumes(shape, centres, radii, target_volumes, periodic):
    """(D, H, W) int32 grain index whose per-grain voxel counts match ``target_volumes``.

    Weighted-Voronoi growth with weights calibrated multiplicatively from the volume error (see the
    module docstring); returns the tessellation of the last pass.
    """
    weights = radii.astype(np.float64).copy()
    for _ in range(_MAX_PASSES):
        ids = _weighted_voronoi(shape, centres, weights, periodic)
        volumes = np.bincount(ids.ravel(), minlength=len(radii))
        # A vanished grain counts as half a voxel, so it regrows at a bounded rate.
        log_error = np.log(np.maximum(volumes, 0.5) / target_volumes)
        if np.sqrt(np.mean((log_error / 3.0) ** 2)) < _TOLERANCE:
            break
        weights *= np.exp(-np.clip(log_error, -3.0, 3.0) / 3.0)
        # The tessellation ignores a common scale; keep weights near the radii so the scan boxes stay apt.
        weights *= np.exp(-np.median(np.log(weights / radii)))
    return ids


def _assign_phases(rng, volumes, fractions):
    """(n_grains,) uint8 phase per grain meeting the volume ``fractions``, independent of grain size."""
    total = float(volumes.sum())
    order = rng.permutation(len(volumes))
    midpoints = np.cumsum(volumes[order]) - volumes[order] / 2.0
    cuts = np.cumsum(fractions)[:-1] * total
    phase = np.empty(len(volumes), dtype=np.uint8)
    phase[order] = np.searchsorted(cuts, midpoints, side="right")
    targets = np.asarray(fractions) * total
    # Greedy clean-up: move the single best-fitting grain from the fullest to the emptiest phase.
    for _ in range(4 * len(fractions)):
        excess = np.bincount(phase, weights=volumes, minlength=len(fractions)) - targets
        src, dst = int(np.argmax(excess)), int(np.argmin(excess))
        members = np.flatnonzero(phase == src)
        if members.size == 0:
            break
        pick = members[np.argmin(np.abs(volumes[members] - min(excess[src], -excess[dst])))]
        if volumes[pick] >= excess[src] - excess[dst]:  # the move would not reduce the squared error
            break
        phase[pick] = dst
    return phase
