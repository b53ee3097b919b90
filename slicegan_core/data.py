"""Training data for SliceGAN: load, validate, and sample 2D patches on the fly.

A dataset is one 2D image, three orthogonal 2D views of an anisotropic material (seen along x, y, z),
or one 3D stack. Each dataset carries attribute values (e.g. ``{"alpha": 0.35}``) that condition the
generator. Sources are kept in memory as compact ``uint8`` arrays only -- n-phase data as the phase
INDEX ``0..n-1`` -- and each batch is cut and one-hot encoded when asked for, so memory stays at one
byte per pixel instead of the ~28,800 preallocated float64 patches per axis of the reference SliceGAN.

Array conventions: a 2D image is ``(H, W)``, a 3D stack ``(D, H, W)`` (voxels), colour adds a trailing
RGB axis ``(..., 3)``. Axis 0, 1, 2 of a stack are x, y, z; a patch "for axis a" lies in a plane
perpendicular to axis a: axis 0 -> plane ``(H, W)``, axis 1 -> ``(D, W)``, axis 2 -> ``(D, H)``,
matching ``volume[i]``, ``volume[:, j]``, ``volume[:, :, k]`` on a generated volume.

Value conventions (documented here because the trainer and the reports rely on them):

- ``"n-phase"``: labels must be whole numbers; the sorted distinct values become ``phase_values`` and
  channel ``i`` of a sample is phase ``phase_values[i]`` (one-hot). An 8-bit RGB image whose three
  channels are equal is read as grey labels; a genuinely coloured label image (a few flat colours) is
  accepted with each colour coded as the integer ``0xRRGGBB``. Every file must hold the same values.
- ``"grayscale"`` / ``"colour"``: stored as ``uint8`` 0..255 and sampled as intensities in [0, 1].
  ``uint8`` is kept as is; ``bool`` maps to {0, 255}; floats already in [0, 1] are scaled by 255;
  integers already in 0..255 are kept; anything else (e.g. 16-bit or floats outside [0, 1]) is mapped
  linearly from the joint minimum..maximum over all such files to 0..255, so intensity differences
  between datasets survive.

Example
-------
>>> import numpy as np, tempfile, os
>>> folder = tempfile.mkdtemp()
>>> labels = np.random.default_rng(0).integers(0, 3, size=(32, 32)).astype(np.uint8)
>>> np.save(os.path.join(folder, "a.npy"), labels)
>>> data = load_training_data([DatasetSpec((os.path.join(folder, "a.npy"),), {"alpha": 0.5})],
...                           patch_size=16)
>>> data.sample(np.array([0, 0]), axis=0, rng=np.random.default_rng(1)).shape
torch.Size([2, 3, 16, 16])
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tifffile
import torch
from PIL import Image

IMAGE_TYPES = ("n-phase", "grayscale", "colour")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".dream3d")


@dataclass(frozen=True)
class DatasetSpec:
    """One training dataset: where its image(s) are and which attribute values it stands for.

    Parameters
    ----------
    paths : tuple of str
        One path (a 2D image or a 3D stack) or three paths (2D images seen along x, y, z, in that
        order). A single str or path is accepted and wrapped.
    attrs : dict of str to float
        Attribute values of this dataset, e.g. ``{"alpha": 0.35}``; every dataset of one training run
        must carry the same attribute names.
    """

    paths: tuple[str, ...]
    attrs: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        paths = (self.paths,) if isinstance(self.paths, (str, os.PathLike)) else tuple(self.paths)
        object.__setattr__(self, "paths", tuple(str(p) for p in paths))
        object.__setattr__(self, "attrs", dict(self.attrs or {}))


def load_image(path) -> np.ndarray:
    """Read one image file as it is stored, with only container quirks removed.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.png``, ``.jpg``/``.jpeg`` (PIL), ``.tif``/``.tiff`` (tifffile), ``.npy`` file
        (``np.load`` without pickles) or ``.dream3d`` file (h5py; its ``Phases`` array, or the array named
        as ``file.dream3d#<container>/CellData/<array>``; anisotropic spacing is refused).

    Returns
    -------
    numpy.ndarray
        ``(H, W)``, ``(D, H, W)``, colour ``(H, W, 3)`` or ``(D, H, W, 3)``, in the file's own dtype.
        A single-page ``(1, H, W)`` stack squeezes to 2D, a trailing single channel is dropped, an alpha
        channel is dropped, and palette / CMYK images are converted to RGB.

    Raises
    ------
    ValueError
        If the file is missing, has an unsupported extension, or cannot be read.
    """
    from .dream3d import isotropic_voxel_size, read_dream3d, split_path
    path, dream3d_array = split_path(path)
    extension = path.suffix.lower()
    if not path.is_file():
        raise ValueError(f"Image file '{path}' does not exist; check the path.")
    if extension not in IMAGE_EXTENSIONS:
        raise ValueError(f"Image file '{path}' has unsupported extension '{path.suffix}'; "
                         f"save it as one of {', '.join(IMAGE_EXTENSIONS)}.")
    if extension == ".dream3d":
        array, spacing = read_dream3d(path, dream3d_array)      # its own one-sentence errors
        isotropic_voxel_size(spacing, f"DREAM3D file '{path}'")
        return array
    try:
        if extension == ".npy":
            # The header first (a memory map reads no data), so a huge declared shape is refused unread.
            mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            _check_declared_size(path, mapped.shape, mapped.dtype)
            array = np.array(mapped)
            del mapped
        elif extension in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                _check_declared_size(path, series.shape, series.dtype)
                array = series.asarray()
        else:
            array = _read_with_pil(path)
    except MemoryError:
        raise ValueError(f"Image file '{path}' does not fit in memory; crop or downsample it.") from None
    except ValueError as error:
        if "allow_pickle" in str(error) or "Python objects" in str(error):
            raise ValueError(f"Image file '{path}' holds Python objects, which SliceGAN Studio never loads "
                             "(unpickling can run code); save the array with a numeric dtype such as "
                             "uint8.") from None
        if str(error).startswith("Image file"):
            raise
        raise ValueError(f"Image file '{path}' could not be read ({error}); "
                         f"check that it is a valid {extension} file.") from None
    except Exception as error:  # each reader raises its own types; the user only needs "unreadable"
        raise ValueError(f"Image file '{path}' could not be read ({error}); "
                         f"check that it is a valid {extension} file.") from error
    array = np.asarray(array)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"Image file '{path}' holds {array.dtype} values; save it as numbers "
                         "(integers or floats).")
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    stored_shape = array.shape
    if array.ndim >= 3 and array.shape[0] == 1:  # single-page TIFF / stack of one
        array = array[0]
    if array.ndim >= 3 and array.shape[-1] == 2:
        raise ValueError(f"Image file '{path}' has shape {stored_shape}, two values per pixel; give one value "
                         "per pixel or voxel, (H, W) or (D, H, W), or colour (..., 3).")
    if array.ndim >= 3 and array.shape[-1] == 1:  # a trailing single channel
        array = array[..., 0]
    elif array.ndim in (3, 4) and array.shape[-1] == 4:  # RGBA
        array = array[..., :3]
    if array.ndim > 4 or (array.ndim == 4 and array.shape[-1] != 3):
        raise ValueError(f"Image file '{path}' has {len(stored_shape)} dimensions (shape {stored_shape}); give "
                         "a 2D image (H, W), a 3D stack (D, H, W) or colour (..., 3).")
    return np.ascontiguousarray(array)


def available_memory_bytes() -> int:
    """Memory the system can give this process now, in bytes (see :func:`synthetic.available_memory`); a very
    large number when the system cannot tell, so that nothing is refused on a guess."""
    from .synthetic import available_memory
    available = available_memory()
    return (1 << 62) if available is None else available


def _check_declared_size(path: Path, shape, dtype) -> None:
    """Refuse a file whose declared array cannot be loaded: it needs its own bytes plus a one-byte-per-voxel
    phase index next to it while training data is prepared."""
    needed = int(np.prod(shape, dtype=np.float64) * (np.dtype(dtype).itemsize + 1))
    available = available_memory_bytes()
    if needed > available:
        raise ValueError(f"Image file '{path}' declares a {' x '.join(map(str, shape))} {np.dtype(dtype)} array "
                         f"that needs {needed / 2**30:.1f} GiB to load, but {available / 2**30:.1f} GiB of memory "
                         "is available; crop or downsample it.")


def _read_with_pil(path: Path) -> np.ndarray:
    # PIL warns of "decompression bombs" above 89 M pixels; the declared size is checked against memory here
    # instead, and its warning would only add lines to a one-line message.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            _check_declared_size(path, (image.height, image.width, len(image.getbands())), np.uint8)
            return _pil_array(image)


def _pil_array(image) -> np.ndarray:
    if image.mode in ("LA", "La"):
        image = image.convert("L")
    elif not (image.mode in ("1", "L", "F", "RGB", "RGBA") or image.mode.startswith("I")):
        image = image.convert("RGB")  # palette, CMYK, YCbCr, ...
    return np.array(image)


def mirrored_positions(extent: int, size: int) -> int:
    """How many patch positions ``mirrored_line`` spans along an ``extent``-pixel axis: from half a patch
    before the image to half a patch past it (at most the image's extent on each side)."""
    return extent - size + 1 + 2 * min(size // 2, extent)


def mirrored_line(extent: int, size: int, fraction: float) -> np.ndarray:
    """Pixel indices (size,) along one axis of an ``extent``-pixel image of the patch at ``fraction`` (in [0, 1))
    of the positions from half a patch before the image to half a patch past it, the image mirrored beyond
    its edges (pixel -1 is pixel 0). Over all positions a pixel less than size // 2 from an edge is in size + 1
    patches (directly or as its mirror image), any other in size: every pixel is seen about equally often."""
    start = int(fraction * mirrored_positions(extent, size)) - min(size // 2, extent)
    index = np.arange(start, start + size)
    index = np.where(index < 0, -1 - index, index)
    return np.where(index >= extent, 2 * extent - 1 - index, index)


class TrainingData:
    """Validated training datasets held as ``uint8`` sources, sampled into patches on demand.

    Build it with :func:`load_training_data`.

    Attributes
    ----------
    image_type : str
        One of ``IMAGE_TYPES``.
    n_channels : int
        Number of phases (n-phase), 1 (grayscale) or 3 (colour).
    phase_values : tuple of int
        Original label values in sorted order (n-phase); channel ``i`` is ``phase_values[i]``.
        Empty otherwise.
    attribute_names : tuple of str
        Attribute names in sorted order.
    attrs : numpy.ndarray
        ``(n_datasets, k)`` float32 attribute values in ``attribute_names`` order.
    isotropic : bool
        False when any dataset is given as three 2D views (then the trainer uses one critic per axis).
    patch_size : int
        Side of the square patches, in pixels.
    sources : tuple of tuple of numpy.ndarray
        Per dataset, its read-only ``uint8`` arrays: one ``(H, W)`` / ``(D, H, W)`` or three views
        (plus a trailing RGB axis for colour); n-phase arrays hold phase indices.
    """

    def __init__(self, *, image_type, phase_values, attribute_names, attrs, patch_size, names,
                 kinds, sources):
        self.image_type = image_type
        self.phase_values = tuple(int(v) for v in phase_values)
        self.n_channels = {"n-phase": len(self.phase_values), "grayscale": 1, "colour": 3}[image_type]
        self.attribute_names = tuple(attribute_names)
        self.attrs = np.asarray(attrs, dtype=np.float32).reshape(len(sources), len(attribute_names))
        self.patch_size = int(patch_size)
        self.isotropic = "views" not in kinds
        self.sources = tuple(tuple(arrays) for arrays in sources)
        self._names = tuple(tuple(n) for n in names)
        self._kinds = tuple(kinds)
        self._phase_fractions = [self._fractions(arrays) for arrays in self.sources]

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def nbytes(self) -> int:
        """Memory held by the sources, in bytes."""
        return sum(a.nbytes for arrays in self.sources for a in arrays)

    def sample(self, dataset_index, axis: int, rng: np.random.Generator, augment: bool = False,
               edges: str = "inside", planes: int = 1) -> torch.Tensor:
        """Cut one random ``P x P`` patch per requested dataset.

        Parameters
        ----------
        dataset_index : array_like of int, shape (N,)
            Which dataset each patch comes from, ``0 <= i < len(self)``.
        axis : int
            0, 1 or 2: patches lie perpendicular to x, y or z. A single 2D image ignores it (the same
            image serves every axis); three views use ``view[axis]``; a 3D stack takes a random slice
            perpendicular to ``axis``.
        rng : numpy.random.Generator
            The only source of randomness.
        augment : bool
            Turn each patch by a random one of the 8 flips and quarter turns of the square (isotropic data
            only: an anisotropic set's directions stay as they are). A small image then shows the critics 8
            times as many distinct patches.
        edges : str
            "inside": patches lie inside the image, so a pixel within a patch of its edge is in fewer of them
            than one in its centre, and on a small image the critics see the centre's phase fractions rather
            than the image's. "mirror": a patch may reach up to half a patch beyond an edge, where the image is
            mirrored; every pixel is then in as many patches (to within one in a patch size).
        planes : int
            1, or 3 for 3D stacks only: each patch with the patches of the two neighbouring slices along
            ``axis`` at the same place (turned and flipped alike), in slice order, as extra channels.

        Returns
        -------
        torch.Tensor
            float32 ``(N, planes x C, P, P)``: one-hot phases (n-phase) or intensities in [0, 1].
        """
        index = np.asarray(dataset_index)
        if index.ndim != 1 or (index.size and index.dtype.kind not in "iu"):
            raise ValueError(f"dataset_index must be a 1D array of integers, got shape {index.shape} "
                             f"and dtype {index.dtype}.")
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise ValueError(f"dataset_index holds {int(index.min())}..{int(index.max())} but there are "
                             f"{len(self)} datasets; use indices 0..{len(self) - 1}.")
        if isinstance(axis, bool) or axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2 (x, y or z), got {axis!r}.")
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                            f"got {type(rng).__name__}.")
        if edges not in ("inside", "mirror"):
            raise ValueError(f'edges must be "inside" or "mirror", got {edges!r}.')
        if planes != 1 and (planes != 3 or any(self._kinds[int(i)] != "stack" for i in np.unique(index))):
            raise ValueError(f"planes must be 1, or 3 with 3D stacks only (a 2D image has no neighbouring slices); "
                             f"got {planes!r}.")
        size = self.patch_size
        # one draw per patch: (slice position, row offset, column offset) as fractions of the range
        positions = rng.random((index.size, 3))
        channel_shape = (3,) if self.image_type == "colour" else ()
        patches = np.empty((index.size, planes, size, size) + channel_shape, dtype=np.uint8)
        for k, (i, position) in enumerate(zip(index, positions)):
            for plane in range(planes):
                patches[k, plane] = self._crop(int(i), axis, position, edges == "mirror", plane, planes)
        if augment and self.isotropic:
            # drawn after the positions, so a run without augmentation keeps its random stream
            for k, (turns, flip) in enumerate(zip(rng.integers(0, 4, index.size), rng.integers(0, 2, index.size))):
                patch = np.rot90(patches[k], turns, axes=(1, 2))
                patches[k] = patch[:, :, ::-1] if flip else patch
        patches = torch.from_numpy(patches)
        if self.image_type == "n-phase":
            one_hot = torch.zeros((index.size, planes, self.n_channels, size, size), dtype=torch.float32)
            return one_hot.scatter_(2, patches.long().unsqueeze(2), 1.0).reshape(index.size, -1, size, size)
        if self.image_type == "grayscale":
            return patches.float().div_(255.0)
        return patches.permute(0, 1, 4, 2, 3).reshape(index.size, -1, size, size).float().div_(255.0).contiguous()

    def _crop(self, i: int, axis: int, position: np.ndarray, mirror: bool = False, plane: int = 0,
              planes: int = 1) -> np.ndarray:
        """The patch at ``position`` (fractions: slice, row, column); of a stack, slice ``plane`` of ``planes``
        neighbouring slices."""
        arrays, kind, size = self.sources[i], self._kinds[i], self.patch_size
        if kind == "stack":
            volume = arrays[0]
            slice_index = int(position[0] * (volume.shape[axis] - planes + 1)) + plane
            plane = volume[(slice(None),) * axis + (slice_index,)]  # a view, not a copy
        else:
            plane = arrays[axis] if kind == "views" else arrays[0]
        if not mirror:
            row = int(position[1] * (plane.shape[0] - size + 1))
            column = int(position[2] * (plane.shape[1] - size + 1))
            return plane[row:row + size, column:column + size]
        return plane[np.ix_(*(mirrored_line(extent, size, fraction)
                               for extent, fraction in zip(plane.shape, position[1:])))]

    def _fractions(self, arrays) -> dict:
        if self.image_type != "n-phase":
            return {}
        # mean over views, so each view (direction) counts equally whatever its pixel count
        counts = [value_counts(a, self.n_channels)[:self.n_channels] / a.size for a in arrays]
        return {v: float(f) for v, f in zip(self.phase_values, np.mean(counts, axis=0))}

    def phase_fractions(self) -> list[dict]:
        """Per dataset, ``{phase_value: area/volume fraction}`` (n-phase); empty dicts otherwise."""
        return [dict(f) for f in self._phase_fractions]

    def island_densities(self) -> dict[int, float]:
        """n-phase: per phase value, small 2D islands (edge-connected blobs of <= 4 pixels) per million pixels
        *of that phase*, the largest over the training images (a 3D stack counts its three middle slices, each
        view its own image). How much real fine speckle the data has, for the island penalty's automatic
        weight (``train.island_phase_weights``); a phase absent from every image is left out."""
        from .metrics.islands import island_density
        densest: dict[int, float] = {}
        for arrays, kind in zip(self.sources, self._kinds):
            if kind == "stack":
                volume = arrays[0]
                images = [volume[(slice(None),) * axis + (volume.shape[axis] // 2,)] for axis in range(3)]
            else:
                images = list(arrays)
            for image in images:
                image = np.asarray(image)
                shares = value_counts(image, self.n_channels)[:self.n_channels] / image.size
                counts = island_density(image, range(self.n_channels))
                for index, value in enumerate(self.phase_values):
                    if shares[index] > 0:
                        density = counts[index] / shares[index]
                        densest[value] = max(densest.get(value, 0.0), density)
        return densest

    def describe(self) -> dict:
        """A JSON-serialisable summary: image type, phases, and per dataset files, shapes, attrs."""
        datasets = []
        for i, arrays in enumerate(self.sources):
            datasets.append({
                "paths": list(self._names[i]),
                "kind": self._kinds[i],
                "shapes": [list(a.shape) for a in arrays],
                "attrs": {n: float(v) for n, v in zip(self.attribute_names, self.attrs[i])},
                "phase_fractions": {str(v): f for v, f in self._phase_fractions[i].items()},
            })
        return {"image_type": self.image_type, "n_channels": self.n_channels,
                "phase_values": list(self.phase_values), "attribute_names": list(self.attribute_names),
                "isotropic": self.isotropic, "patch_size": self.patch_size, "nbytes": self.nbytes,
                "datasets": datasets}


def load_training_data(specs, image_type: str = "n-phase", patch_size: int = 64,
                       max_phases: int = 10) -> TrainingData:
    """Load and validate datasets into compact ``uint8`` sources ready for :meth:`TrainingData.sample`.

    Parameters
    ----------
    specs : sequence of DatasetSpec
        The datasets (a single DatasetSpec is accepted too).
    image_type : str, default "n-phase"
        One of ``IMAGE_TYPES``; see the module docstring for how values are converted.
    patch_size : int, default 64
        Side of the square training patches, in pixels; every used side of every image must be at
        least this long.
    max_phases : int, default 10
        n-phase data with more distinct values than this is rejected as probably grayscale.

    Returns
    -------
    TrainingData

    Raises
    ------
    ValueError
        With a one-sentence message naming the file or dataset at fault and what to do.
    """
    if image_type not in IMAGE_TYPES:
        raise ValueError(f"image_type {image_type!r} is not known; choose one of "
                         f"{', '.join(repr(t) for t in IMAGE_TYPES)}.")
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise ValueError(f"patch_size must be a positive whole number of pixels, got {patch_size!r}.")
    if isinstance(max_phases, bool) or not isinstance(max_phases, (int, np.integer)) \
            or not 2 <= max_phases <= 255:
        raise ValueError(f"max_phases must be a whole number from 2 to 255, got {max_phases!r}.")
    specs = [specs] if isinstance(specs, DatasetSpec) else list(specs)
    if not specs:
        raise ValueError("specs is empty; give at least one DatasetSpec.")
    for spec in specs:
        if not isinstance(spec, DatasetSpec):
            raise ValueError(f"Each dataset must be a DatasetSpec, got {type(spec).__name__}; "
                             "wrap paths and attributes as DatasetSpec(paths, attrs).")
    labels = [_dataset_label(spec) for spec in specs]
    attribute_names, attrs = _validate_attributes(specs, labels)

    raws, kinds = [], []
    for spec, label in zip(specs, labels):
        if len(spec.paths) not in (1, 3):
            raise ValueError(f"{label} has {len(spec.paths)} paths; give one path (a 2D image or a 3D "
                             "stack) or three paths (2D views along x, y, z).")
        arrays = [_validated_array(load_image(p), p, image_type) for p in spec.paths]
        kinds.append(_check_layout(arrays, spec.paths, label, patch_size))
        raws.append(arrays)

    if image_type == "n-phase":
        phase_values, sources = _to_phase_indices(raws, specs, max_phases)
    else:
        phase_values, sources = (), _to_uint8(raws, specs)
    for arrays in sources:
        for a in arrays:
            a.flags.writeable = False
    return TrainingData(image_type=image_type, phase_values=phase_values,
                        attribute_names=attribute_names, attrs=attrs, patch_size=patch_size,
                        names=[[os.path.basename(p) for p in spec.paths] for spec in specs],
                        kinds=kinds, sources=sources)


def _dataset_label(spec: DatasetSpec) -> str:
    return "dataset '" + " + ".join(os.path.basename(p) for p in spec.paths) + "'"


def _validate_attributes(specs, labels):
    names = sorted(specs[0].attrs)
    for spec, label in zip(specs, labels):
        for name in names:
            if name not in spec.attrs:
                raise ValueError(f"{label} is missing attribute '{name}' that {labels[0]} has; "
                                 "give every dataset the same attribute names.")
        for name in spec.attrs:
            if name not in names:
                raise ValueError(f"{labels[0]} is missing attribute '{name}' that {label} has; "
                                 "give every dataset the same attribute names.")
    values = np.zeros((len(specs), len(names)), dtype=np.float64)
    for i, (spec, label) in enumerate(zip(specs, labels)):
        for j, name in enumerate(names):
            value = spec.attrs[name]
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(value):
                raise ValueError(f"Attribute '{name}' of {label} is {value!r}; give a finite number.")
            values[i, j] = float(value)
    return tuple(names), values.astype(np.float32)


def _is_colour(array: np.ndarray) -> bool:
    return array.ndim in (3, 4) and array.shape[-1] == 3


def _validated_array(array: np.ndarray, path: str, image_type: str) -> np.ndarray:
    """Reject empty / non-finite / constant data and reconcile colour with ``image_type``."""
    name = os.path.basename(path)
    if array.size == 0:
        raise ValueError(f"'{name}' is empty (shape {array.shape}); give an image with pixels in it.")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"'{name}' contains NaN or infinite values; fill or crop them before training.")
    if _is_colour(array) and image_type != "colour" and \
            np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2]):
        array = np.ascontiguousarray(array[..., 0])  # an RGB file that only holds grey
    if image_type == "colour" and not _is_colour(array):
        raise ValueError(f"'{name}' has no colour channels (shape {array.shape}); choose image type "
                         "'grayscale' or 'n-phase' for it.")
    if image_type == "grayscale" and _is_colour(array):
        raise ValueError(f"'{name}' is a colour image; choose image type 'colour' or convert it to "
                         "grayscale first.")
    flat = array.reshape(-1, 3) if _is_colour(array) else array.reshape(-1, 1)
    if np.all(flat.min(axis=0) == flat.max(axis=0)):
        value = flat[0].tolist() if flat.shape[1] == 3 else flat[0, 0].item()
        raise ValueError(f"'{name}' has only one value ({value}); a training image needs "
                         "structure, so check that the right file or segmentation was saved.")
    return array


def _check_layout(arrays, paths, label: str, patch_size: int) -> str:
    """Check dimensions and sizes of one dataset's 1 or 3 arrays; return 'image', 'stack' or 'views'."""
    names = [os.path.basename(p) for p in paths]
    spatial = [a.shape[:-1] if _is_colour(a) else a.shape for a in arrays]
    if len(arrays) == 3:
        for name, shape in zip(names, spatial):
            if len(shape) != 2:
                raise ValueError(f"{label} gives three views, but '{name}' has shape {shape} instead "
                                 "of 2D; give three 2D images (x, y, z views) or one 3D stack.")
        kind = "views"
    else:
        if len(spatial[0]) not in (2, 3):
            dims = len(arrays[0].shape)
            raise ValueError(f"'{names[0]}' has {dims} dimension{'s' * (dims != 1)} (shape "
                             f"{arrays[0].shape}); give a 2D image (H, W), a 3D stack (D, H, W) or "
                             "a colour image (H, W, 3).")
        kind = "image" if len(spatial[0]) == 2 else "stack"
    for name, shape in zip(names, spatial):
        if min(shape) < patch_size:
            unit = "pixels" if len(shape) == 2 else "voxels"
            raise ValueError(f"'{name}' is {' x '.join(map(str, shape))} {unit}, smaller than the patch "
                             f"size {patch_size}; choose a patch size of at most {min(shape)} or a "
                             "bigger image.")
    return kind


def _labels_of(array: np.ndarray, name: str) -> np.ndarray:
    if not _is_colour(array):
        return array
    if array.dtype != np.uint8:
        raise ValueError(f"'{name}' is a {array.dtype} colour image; choose image type 'colour', or save "
                         "segmented labels as an 8-bit or single-channel image.")
    rgb = array.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]  # one int per colour, 0xRRGGBB


def value_counts(values: np.ndarray, minlength: int = 0) -> np.ndarray:
    """``np.bincount`` of a (u)int8/16 or bool array of any shape, in chunks: bincount casts its input to
    int64, and one wide copy of a 1 GB stack would cost 8 GB."""
    flat = values.reshape(-1)
    counts = np.zeros(max(minlength, 1 << (8 * values.dtype.itemsize)), np.int64)
    chunk = 1 << 24
    for start in range(0, flat.size, chunk):
        part = np.bincount(flat[start:start + chunk], minlength=counts.size)
        counts[:part.size] += part
    return counts


def _distinct(labels: np.ndarray) -> np.ndarray:
    if labels.dtype.kind in "bu" and labels.dtype.itemsize <= 2:  # bincount is far faster than sort
        return np.flatnonzero(value_counts(labels))
    return np.unique(labels)


def _to_phase_indices(raws, specs, max_phases: int):
    """Map labels to phase indices 0..n-1 (uint8), checking every file holds the same values."""
    reference = None  # (file name, phase values) of the first file
    sources = []
    for arrays, spec in zip(raws, specs):
        indices = []
        for array, path in zip(arrays, spec.paths):
            name = os.path.basename(path)
            labels = _labels_of(array, name)
            values = _distinct(labels)
            if values.size > max_phases:
                kind = "colour" if _is_colour(array) else "grayscale"
                jpeg = " (JPEG compression blurs labels, so save segmentations as PNG or TIFF)" \
                    if Path(path).suffix.lower() in (".jpg", ".jpeg") else ""
                raise ValueError(f"'{name}' has {values.size} distinct values, more than max_phases="
                                 f"{max_phases}, so it looks like a {kind} image{jpeg}; choose image "
                                 f"type '{kind}' or segment it into phases first.")
            if not np.all(values == np.round(values)):
                raise ValueError(f"'{name}' has non-integer values such as "
                                 f"{values[values != np.round(values)][0]}; n-phase labels must be whole "
                                 "numbers, so choose image type 'grayscale' or segment it first.")
            if values[0] < 0 or values[-1] > 2 ** 31 - 1:     # what a model card can carry as a phase value
                raise ValueError(f"'{name}' has labels from {int(values[0])} to {int(values[-1])}; n-phase labels "
                                 "must be whole numbers from 0 to 2^31 - 1, so relabel the phases (e.g. 0, 1, 2).")
            as_ints = tuple(int(v) for v in values)
            if reference is None:
                reference = (name, as_ints)
            elif as_ints != reference[1]:
                raise ValueError(f"Phase values disagree: '{reference[0]}' has {list(reference[1])} but "
                                 f"'{name}' has {list(as_ints)}; relabel the files to the same values.")
            if labels.dtype.kind in "bu" and labels.dtype.itemsize <= 2:   # a lookup table: no wide copy
                lookup = np.zeros(1 << (8 * labels.dtype.itemsize), dtype=np.uint8)
                lookup[values.astype(np.intp)] = np.arange(values.size)
                index = lookup[labels.view(np.uint8) if labels.dtype == bool else labels]
            else:   # searchsorted returns int64: in chunks, so the wide copy stays small
                index = np.empty(labels.shape, np.uint8)
                flat_labels, flat_index = labels.reshape(-1), index.reshape(-1)
                for start in range(0, flat_labels.size, 1 << 24):
                    part = slice(start, start + (1 << 24))
                    flat_index[part] = np.searchsorted(values, flat_labels[part])
            indices.append(np.ascontiguousarray(index))
        sources.append(indices)
    return reference[1], sources


def _to_uint8(raws, specs):
    """Convert grayscale / colour data to uint8 0..255 following the module's documented policy."""
    def needs_joint_range(a):
        if a.dtype in (np.uint8, bool):
            return False
        low, high = a.min(), a.max()
        return not (0 <= low and high <= (1 if a.dtype.kind == "f" else 255))

    joint = [a for arrays in raws for a in arrays if needs_joint_range(a)]
    joint_low = min((float(a.min()) for a in joint), default=0.0)
    joint_high = max((float(a.max()) for a in joint), default=1.0)
    sources = []
    for arrays in raws:
        converted = []
        for a in arrays:
            if a.dtype == np.uint8:
                out = a
            elif a.dtype == bool:
                out = a.astype(np.uint8) * np.uint8(255)
            elif needs_joint_range(a):
                scaled = (a.astype(np.float32) - joint_low) * (255.0 / (joint_high - joint_low))
                out = np.rint(scaled).astype(np.uint8)
            elif a.dtype.kind == "f":
                out = np.rint(a.astype(np.float32) * 255.0).astype(np.uint8)
            else:
                out = a.astype(np.uint8)
            converted.append(np.ascontiguousarray(out))
        sources.append(converted)
    return sources
