"""Write generated volumes larger than memory: tiles streamed to OME-Zarr, TIFF or .npy as they are made.

:func:`generate_to` runs :meth:`Model.generate_tiles` and hands every tile to the file as soon as it exists, so
peak memory is the generator's working memory for one tile plus one tile (Zarr) or one slab of whole planes
(TIFF, .npy; at most ``SLAB_BYTES``), whatever the size of the volume. The voxels are those of
:meth:`Model.generate` for the same seed, shape and attributes.

* ``.zarr``: OME-Zarr 0.4 (Zarr v2 arrays, ``/`` chunk keys, Blosc-zstd), the most widely read version (napari,
  Fiji's N5/MoBIE readers, neuroglancer, ome-zarr-py, dask). The full-resolution volume is dataset ``0`` of
  the root group's one multiscale, axes z, y, x (colour: c, z, y, x) in micrometres, the voxel size as its
  ``scale``; the provenance is under the group attribute ``slicegan``. Chunks (at most ``CHUNK_EDGE`` voxels
  per edge) divide the tile core, so each tile writes whole chunks of its own: under torchrun the processes
  split the tiles and write one store together, without locks.
* ``.tif`` / ``.tiff``: written page by page from slabs of whole planes along axis 0. Up to
  ``IMAGEJ_MAX_BYTES`` of voxels (classic TIFF's 4 GiB limit) an ImageJ hyperstack, as the in-memory export
  writes (Fiji reads its calibration natively); above it BigTIFF with OME-XML metadata (PhysicalSizeX/Y/Z in
  µm, also a resolution in pixels per cm), which Fiji opens through Bio-Formats and napari and tifffile read.
  ImageJ hyperstacks cannot be BigTIFF.
* ``.npy``: the header, then the slabs in C order (a memory map (``numpy.load`` with ``mmap_mode="r"``) opens it without reading).

Atomic like every export: TIFF and .npy go to a temporary file in the output folder and ``NAME.zarr`` is
built as ``NAME.zarr.partial``; each is renamed to its name only when complete, so a failure never leaves half
a volume under the final name. A JSON provenance sidecar ``<name>.json`` is written beside it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import tifffile

from .config import check_voxel_size
from .export import imagej_calibration, provenance, write_sidecar
from .storage import check_writable, os_error_sentence, temporary_beside

STREAMED = (".zarr", ".tif", ".tiff", ".npy")
SLAB_BYTES = 512 * 2**20          # the most one TIFF/.npy slab may hold (axis 0 tiles get thinner to fit)
CHUNK_EDGE = 128                  # the most voxels per edge of a Zarr chunk
IMAGEJ_MAX_BYTES = 2**32 - 2**25  # voxel bytes above which a TIFF is BigTIFF + OME (tifffile's own limit)
OME_ZARR_VERSION = "0.4"


def generate_to(model, path: str | Path, attrs: dict[str, float] | None = None, seed: int = 0,
                shape=(128, 128, 128), periodic: bool = False, max_tile_voxels: int = 40_000_000,
                progress: bool = False, voxel_size_um: float | None = None, ranks=None) -> Path:
    """Generate a volume with ``model`` straight into ``path`` (``.zarr``, ``.tif``/``.tiff`` or ``.npy``), tile by
    tile, plus the provenance sidecar ``<path>.json``.

    Parameters
    ----------
    model : a :class:`~slicegan_core.generate.Model`.
    path : the output; its extension picks the format (module docstring). An existing file, or an existing
        Zarr folder, is replaced when the new one is complete.
    attrs, seed, shape, periodic, max_tile_voxels, progress : as for :meth:`Model.generate`.
    voxel_size_um : micrometres per voxel in the file's metadata; default the model's. When neither is known the
        scale is 1 (Zarr: without a unit; OME-TIFF: no physical size; ImageJ: no calibration, as the in-memory export).
    ranks : :class:`~slicegan_core.distributed.Ranks` sharing the work; default the joined torch.distributed
        group (one process without torchrun). Several processes write one ``.zarr`` (each a share of the tiles);
        TIFF and .npy are refused for more than one.

    Returns the path written. Raises ``ValueError`` (one sentence) for a bad path or arguments, and before
    generating anything when a tile's working memory does not fit, or a TIFF/.npy does not fit on the disk.

    >>> generate_to(load_model("default"), "big.zarr", {"alpha": 0.35}, seed=7, shape=1024)  # doctest: +SKIP
    """
    from .distributed import current

    check_voxel_size(voxel_size_um)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in STREAMED:
        raise ValueError(f"Streamed generation writes {', '.join(STREAMED)} files (got {str(path)!r}); "
                         "use Model.generate and export.save_volume for other formats.")
    if not path.parent.is_dir():
        raise ValueError(f"Output folder {path.parent} does not exist; create it or choose another path.")
    ranks = current() if ranks is None else ranks
    if ranks.size > 1 and suffix != ".zarr":
        raise ValueError(f"A {suffix} file is written by one process, but {ranks.size} processes were started; "
                         "write a .zarr to share the work, or run without torchrun.")
    if suffix == ".zarr":
        _check_zarr_target(path)
    elif path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name such as {path / ('volume' + suffix)}.")
    check_writable(path.with_name(path.name + ".json"))     # the sidecar's place, before any voxel is made
    slab_bytes = None if suffix == ".zarr" else SLAB_BYTES
    tiles = model.generate_tiles(attrs, seed=seed, shape=shape, periodic=periodic,
                                 max_tile_voxels=max_tile_voxels, slab_bytes=slab_bytes,
                                 part=(ranks.rank, ranks.size), progress=progress and ranks.main)
    record = provenance(model, model._check_attrs(attrs), seed, tiles.shape, periodic)
    voxel_size = model.voxel_size_um if voxel_size_um is None else float(voxel_size_um)
    if suffix == ".zarr":
        fmt = _write_zarr(path, tiles, voxel_size, record, ranks)
    else:
        nbytes = tiles.dtype.itemsize * int(np.prod(tiles.shape)) * (3 if tiles.colour else 1)
        free = shutil.disk_usage(path.parent).free
        # Headers and the sidecar take kilobytes; the margin grows with the file, so a small volume fits a
        # nearly full disk and a large one leaves the disk some room.
        if nbytes + 2**20 + nbytes // 100 > free:
            raise ValueError(f"The {'x'.join(map(str, tiles.shape))} volume takes {_size(nbytes)} on disk but "
                             f"{path.parent} has {_size(free)} free; choose another folder or a .zarr "
                             "(compressed).")
        if suffix == ".npy":
            fmt = _atomic_file(path, lambda file: _write_npy(file, tiles))
        else:
            ome = nbytes > IMAGEJ_MAX_BYTES
            fmt = _atomic_file(path, lambda file: _write_tiff(file, tiles, voxel_size, ome))
    if ranks.main:
        shape_out = (*tiles.shape, 3) if tiles.colour else tiles.shape
        write_sidecar(path, shape_out, tiles.dtype, voxel_size, {**record, "format": fmt})
    return path


def save_zarr(path: str | Path, volume: np.ndarray, voxel_size_um: float | None = None,
              provenance: dict | None = None) -> Path:
    """Write an in-memory ``volume`` ((D, H, W), or (D, H, W, 3) colour) as the same OME-Zarr 0.4 store that
    :func:`generate_to` streams, plus the sidecar ``<path>.json``; what :func:`export.save_volume` does for a
    ``.zarr``. ``voxel_size_um`` (micrometres) is the axes' ``scale`` with unit ``micrometer``; None writes a
    scale of 1 and no unit. Returns the path written."""
    from .distributed import Ranks
    from .generate import Tiles

    voxel_size_um = check_voxel_size(voxel_size_um)
    path = Path(path)
    if path.suffix.lower() != ".zarr":
        raise ValueError(f"save_zarr writes a .zarr folder (got {str(path)!r}).")
    if not path.parent.is_dir():
        raise ValueError(f"Output folder {path.parent} does not exist; create it or choose another path.")
    _check_zarr_target(path)
    check_writable(path.with_name(path.name + ".json"))
    colour = volume.ndim == 4
    shape = tuple(int(n) for n in volume.shape[:3])
    everything = (slice(0, shape[0]), slice(0, shape[1]), slice(0, shape[2]))
    tiles = Tiles(shape, shape, volume.dtype, colour, 1, iter([(everything, volume)]))
    record = dict(provenance or {})
    fmt = _write_zarr(path, tiles, voxel_size_um, record, Ranks())
    write_sidecar(path, volume.shape, volume.dtype, voxel_size_um, {**record, "format": fmt})
    return path


# ---- slabs: TIFF and .npy ----------------------------------------------------------------------------------
def _slabs(tiles):
    """Yield the volume as consecutive slabs of whole planes ((d, H, W) or (d, H, W, 3)) assembled from the tiles,
    in one reused buffer: a slab is valid until the next is asked for."""
    buffer, first, depth = None, None, 0
    for where, block in tiles:
        if first is not None and where[0].start != first:
            yield buffer[:depth]
            first = None
        if buffer is None:
            buffer = np.empty((tiles.core[0], *tiles.shape[1:], *((3,) if tiles.colour else ())), tiles.dtype)
        if first is None:
            first, depth = where[0].start, where[0].stop - where[0].start
        buffer[(slice(0, depth), where[1], where[2])] = block
    if first is not None:
        yield buffer[:depth]


def _planes(tiles):
    for slab in _slabs(tiles):
        yield from slab


def _write_npy(file: str, tiles) -> str:
    shape = (*tiles.shape, 3) if tiles.colour else tiles.shape
    with open(file, "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": np.lib.format.dtype_to_descr(tiles.dtype),
                                                      "fortran_order": False, "shape": tuple(shape)})
        for slab in _slabs(tiles):
            handle.write(memoryview(np.ascontiguousarray(slab)).cast("B"))
    return "NumPy .npy"


def _write_tiff(file: str, tiles, voxel_size_um: float | None, ome: bool) -> str:
    spacing = float(voxel_size_um or 1.0)
    shape = (*tiles.shape, 3) if tiles.colour else tiles.shape
    if not ome:    # as export.volume_bytes: an ImageJ hyperstack, calibrated only when the voxel size is known
        tifffile.imwrite(file, _planes(tiles), shape=shape, dtype=tiles.dtype, imagej=True,
                         **imagej_calibration(voxel_size_um, tiles.colour))
        return "ImageJ TIFF"
    metadata = {"axes": "ZYXS" if tiles.colour else "ZYX"}
    resolution = {}
    if voxel_size_um:
        for axis in "XYZ":
            metadata.update({f"PhysicalSize{axis}": spacing, f"PhysicalSize{axis}Unit": "µm"})
        resolution = {"resolution": (1e4 / spacing, 1e4 / spacing), "resolutionunit": "CENTIMETER"}
    with tifffile.TiffWriter(file, bigtiff=True, ome=True) as tif:
        tif.write(_planes(tiles), shape=shape, dtype=tiles.dtype, photometric="rgb" if tiles.colour else "minisblack",
                  metadata=metadata, **resolution)
    return "OME-TIFF (BigTIFF)"


def _atomic_file(path: Path, write) -> str:
    """``write(temporary_path)`` beside ``path``, fsync, rename; the temporary file is removed on any failure."""
    with temporary_beside(path) as tmp:
        fmt = write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    return fmt


def _size(nbytes: int) -> str:
    """Bytes as people read them: '4.0 KB', '12.3 MB', '1.5 GiB'."""
    for unit, scale in (("GiB", 2**30), ("MB", 10**6), ("KB", 10**3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


# ---- OME-Zarr ------------------------------------------------------------------------------------------------
def _is_zarr(path: Path) -> bool:
    return any((path / name).exists() for name in (".zgroup", ".zarray", "zarr.json"))


def _check_zarr_target(path: Path) -> None:
    if path.exists() and not (path.is_dir() and _is_zarr(path)):
        raise ValueError(f"{path} exists and is not a Zarr folder; choose another name (only a Zarr store is "
                         "replaced).")


def zarr_chunks(shape, core, edge: int = CHUNK_EDGE) -> tuple[int, int, int]:
    """Chunk edges for a volume of ``shape`` generated in tiles of ``core``: per axis the largest divisor of the
    core up to ``edge`` (any edge up to ``edge`` where one tile spans the axis), so no chunk straddles two tiles."""
    chunks = []
    for n, c in zip(shape, core):
        if c >= n:
            chunks.append(min(n, edge))
        else:
            chunks.append(max(d for d in range(1, min(c, edge) + 1) if c % d == 0))
    return tuple(chunks)


def ome_multiscale(name: str, voxel_size_um: float | None, colour: bool = False) -> dict:
    """The OME-Zarr 0.4 ``multiscales`` entry of one full-resolution level ``0`` (axes z, y, x in micrometres)."""
    space = [{"name": axis, "type": "space", **({"unit": "micrometer"} if voxel_size_um else {})}
             for axis in "zyx"]
    scale = [float(voxel_size_um or 1.0)] * 3
    axes = ([{"name": "c", "type": "channel"}] if colour else []) + space
    return {"version": OME_ZARR_VERSION, "name": name, "axes": axes,
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": ([1.0] if colour else []) + scale}]}]}


def _finish_zarr_writes(timeout_s: float = 60.0) -> None:
    """Wait for the chunk writes zarr still has in flight after one of them failed: zarr writes chunks
    concurrently on its own event loop and stops waiting at the first error, and a write finishing later would
    re-create the folders of a store that was just removed."""
    import asyncio
    from zarr.core.sync import sync

    async def the_others():
        current = asyncio.current_task()
        await asyncio.gather(*(t for t in asyncio.all_tasks() if t is not current), return_exceptions=True)
    try:
        sync(the_others(), timeout=timeout_s)
    except Exception:      # noqa: BLE001 - best effort: the caller removes the store either way
        pass


def _write_zarr(path: Path, tiles, voxel_size_um, record: dict, ranks) -> str:
    """Every process writes its tiles into ``NAME.zarr.partial`` (created by process 0); when all have finished
    without error, process 0 renames it to ``NAME.zarr`` (an old store of that name is replaced)."""
    import numcodecs
    import torch
    import zarr

    partial = path.with_name(path.name + ".partial")
    colour = (3,) if tiles.colour else ()
    chunks = zarr_chunks(tiles.shape, tiles.core)

    def create():
        if partial.exists():                     # left by a killed run of the same command
            shutil.rmtree(partial)
        try:
            start_store()
        except BaseException as error:           # a full disk while creating: nothing half-made is left
            shutil.rmtree(partial, ignore_errors=True)
            if isinstance(error, OSError):
                raise ValueError(os_error_sentence(error, path)) from None
            raise

    def start_store():
        root = zarr.open_group(str(partial), mode="w", zarr_format=2)
        root.create_array("0", shape=(*colour, *tiles.shape), chunks=(*colour, *chunks), dtype=tiles.dtype,
                          fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"},
                          compressors=numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE))
        root.attrs.update({"multiscales": [ome_multiscale(path.stem, voxel_size_um, bool(colour))],
                           "slicegan": record})

    ranks.from_main(create)
    error = None
    try:
        array = zarr.open_array(str(partial / "0"), mode="r+", zarr_format=2)
        for where, block in tiles:
            if colour:
                array[(slice(None), *where)] = np.moveaxis(block, -1, 0)
            else:
                array[where] = block
    except BaseException as caught:            # noqa: BLE001 - re-raised below, after the others are told
        error = caught
    if error is not None:
        _finish_zarr_writes()
    if ranks.any(error is not None, torch.device("cpu")):
        if ranks.main:
            shutil.rmtree(partial, ignore_errors=True)
        if isinstance(error, OSError):
            raise ValueError(os_error_sentence(error, path)) from None
        if error is not None:
            raise error
        raise ValueError(f"Another process failed while writing {path}; nothing was kept.")

    def finish():
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(partial, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(partial, path)

    ranks.from_main(finish)
    return f"OME-Zarr {OME_ZARR_VERSION}"
