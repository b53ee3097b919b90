"""DREAM3D 6 (SIMPL) ``.dream3d`` files: read an image-geometry cell array, write a generated volume.

Layout (read from a genuine DREAM3D 6 file): root attributes ``FileVersion`` "7.0" and ``DREAM3D Version``;
``DataContainers/<name>/_SIMPL_GEOMETRY`` with ``DIMENSIONS`` (x, y, z), ``SPACING``, ``ORIGIN`` and
``GeometryType`` 0 (image); ``DataContainers/<name>/CellData`` holds the arrays, each stored
``(z, y, x, components)``. Phase arrays (``Phases``) are int32 and 1-based (0 = unknown).

Axes: a stored ``(z, y, x)`` array is our ``(D, H, W)`` volume as it is (x = W, as in every other export).
The HDF5 library is h5py.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

CONTAINER = "SliceGAN"
PROVENANCE_ATTRIBUTE = "SliceGAN Provenance"    # JSON with the phase values, on the Phases array
ARRAY_SEPARATOR = "#"                            # "file.dream3d#Container/CellData/Array" names one array


def split_path(path) -> tuple[Path, str | None]:
    """``"a.dream3d#Box/CellData/Phases"`` -> (Path("a.dream3d"), "Box/CellData/Phases")."""
    text = str(path)
    if ARRAY_SEPARATOR in text and text.split(ARRAY_SEPARATOR)[0].lower().endswith(".dream3d"):
        file, _, array = text.partition(ARRAY_SEPARATOR)
        return Path(file), array or None
    return Path(text), None


def _image_containers(f) -> list[str]:
    names = []
    for name, group in f.get("DataContainers", {}).items():
        geometry = group.get("_SIMPL_GEOMETRY")
        if geometry is not None and int(np.ravel(geometry.attrs.get("GeometryType", [-1]))[0]) == 0:
            names.append(name)
    return names


def _cell_arrays(f) -> list[str]:
    """Every cell array of every image container of an open file, as ``<container>/CellData/<array>``."""
    import h5py
    return [f"{c}/CellData/{a}" for c in _image_containers(f)
            for a, item in f["DataContainers"][c].get("CellData", {}).items() if isinstance(item, h5py.Dataset)]


def list_arrays(path) -> list[str]:
    """Every cell array of every image container, as ``<container>/CellData/<array>``."""
    import h5py
    with h5py.File(split_path(path)[0], "r") as f:
        return _cell_arrays(f)


def read_spacing(path) -> tuple[float, float, float]:
    """``SPACING`` (x, y, z) of the first image container, without reading any array."""
    import h5py
    file = split_path(path)[0]
    if not file.is_file():
        raise ValueError(f"DREAM3D file '{file}' does not exist; check the path.")
    try:
        with h5py.File(file, "r") as f:
            containers = _image_containers(f)
            if not containers:
                raise ValueError(f"DREAM3D file '{file}' has no image-geometry data container; export the "
                                 "structure on an image geometry in DREAM3D.")
            return tuple(float(s) for s in f["DataContainers"][containers[0]]["_SIMPL_GEOMETRY"]["SPACING"][()])
    except OSError as error:
        raise ValueError(f"DREAM3D file '{file}' could not be read as HDF5 ({error}).") from None


def read_dream3d(path, array: str | None = None) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read one cell array of an image geometry.

    Parameters
    ----------
    path : str or Path
        The ``.dream3d`` file; ``"file.dream3d#<container>/CellData/<array>"`` also names the array.
    array : str, optional
        ``<container>/CellData/<array>``; default the ``Phases`` array of the first image container that has
        one.

    Returns
    -------
    (volume, spacing)
        ``volume`` (D, H, W) = stored (z, y, x) with the stored values (a trailing single component is dropped;
        a file written by :func:`dream3d_bytes` maps ``Phases`` back to the phase values it recorded), and
        ``spacing`` (x, y, z) from ``SPACING``.

    Raises
    ------
    ValueError
        Missing or unreadable file, no such array (the message lists the arrays there are), or not an image
        geometry.
    """
    import h5py
    file, named = split_path(path)
    array = array or named
    if not file.is_file():
        raise ValueError(f"DREAM3D file '{file}' does not exist; check the path.")
    try:
        f = h5py.File(file, "r")
    except OSError as error:
        raise ValueError(f"DREAM3D file '{file}' could not be read as HDF5 ({error}).") from None
    with f:
        containers = _image_containers(f)
        if not containers:
            raise ValueError(f"DREAM3D file '{file}' has no image-geometry data container; export the "
                             "structure on an image geometry in DREAM3D.")
        available = _cell_arrays(f)
        if array is None:
            array = next((a for a in available if a.endswith("/CellData/Phases")), None)
            if array is None:
                raise ValueError(f"DREAM3D file '{file}' has no Phases array; choose one with --dream3d-array "
                                 f"(arrays: {', '.join(available) or 'none'}).")
        if array not in available:
            raise ValueError(f"DREAM3D file '{file}' has no cell array '{array}'; arrays: "
                             f"{', '.join(available) or 'none'}.")
        dataset = f["DataContainers"][array]
        volume = np.asarray(dataset[()])
        container = array.split("/")[0]
        spacing = tuple(float(s) for s in f["DataContainers"][container]["_SIMPL_GEOMETRY"]["SPACING"][()])
        provenance = dataset.attrs.get(PROVENANCE_ATTRIBUTE)
    if volume.ndim == 4 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if provenance is not None:   # our own file: Phases = phase index + 1 -> the model's phase values
        values = np.asarray(json.loads(provenance)["phase_values"])
        lookup = np.zeros(max(len(values), int(volume.max(initial=0))) + 1, dtype=values.dtype)
        lookup[1:len(values) + 1] = values
        volume = lookup[volume]
    return np.ascontiguousarray(volume), spacing


def isotropic_voxel_size(spacing, file="the file") -> float:
    """The cube edge of ``spacing`` (x, y, z), or a ValueError: the generator's voxels are cubes."""
    spacing = [float(s) for s in spacing]
    if max(spacing) - min(spacing) > 1e-6 * max(spacing):
        raise ValueError(f"{file} has anisotropic voxels (spacing x, y, z = {spacing}); the generator makes "
                         "cubic voxels, so resample it to equal spacing first (e.g. DREAM3D's Resample Data).")
    return spacing[0]


def dream3d_bytes(volume: np.ndarray, voxel_size_um: float | None, phase_values=None,
                  provenance: dict | None = None) -> bytes:
    """A DREAM3D 6 file holding ``volume`` (D, H, W) labels as ``DataContainers/SliceGAN/CellData/Phases``
    (int32, phase index + 1, so 0 stays "unknown"), spacing = ``voxel_size_um`` in x, y, z.

    ``phase_values`` (sorted label values; default those present) fixes the index; it is stored with the
    provenance on the array so :func:`read_dream3d` maps ``Phases`` back to the labels.
    """
    import h5py
    if volume.ndim != 3 or volume.dtype.kind not in "iu":
        raise ValueError(f"DREAM3D export needs a (D, H, W) label volume, got shape {volume.shape} and dtype "
                         f"{volume.dtype}; export intensities as .tif or .vti.")
    values = np.asarray(sorted(int(v) for v in (phase_values if phase_values is not None else np.unique(volume))))
    index = np.searchsorted(values, volume)
    if np.any(index >= len(values)) or np.any(values[np.minimum(index, len(values) - 1)] != volume):
        raise ValueError("The volume holds label values that are not among phase_values; pass every phase value.")
    phases = (index + 1).astype(np.int32)[..., None]                         # (z, y, x, 1)
    depth, height, width = volume.shape
    spacing = float(voxel_size_um or 1.0)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        f.attrs["FileVersion"] = np.bytes_("7.0")
        f.attrs["DREAM3D Version"] = np.bytes_("6.5.171 (written by SliceGAN Studio)")
        f.create_group("DataContainerBundles")
        f.create_group("Pipeline").attrs["Pipeline Version"] = np.int32([2])
        container = f.create_group("DataContainers").create_group(CONTAINER)
        geometry = container.create_group("_SIMPL_GEOMETRY")
        for key, value in (("GeometryName", np.bytes_("ImageGeometry")), ("GeometryType", np.uint32([0])),
                           ("GeometryTypeName", np.bytes_("ImageGeometry")),
                           ("SpatialDimensionality", np.uint32([3])), ("UnitDimensionality", np.uint32([3]))):
            geometry.attrs[key] = value
        geometry["DIMENSIONS"] = np.int64([width, height, depth])
        geometry["SPACING"] = np.float32([spacing] * 3)
        geometry["ORIGIN"] = np.float32([0, 0, 0])
        cells = container.create_group("CellData")
        cells.attrs["AttributeMatrixType"] = np.uint32([3])
        cells.attrs["TupleDimensions"] = np.uint64([width, height, depth])
        dataset = cells.create_dataset("Phases", data=phases, compression="gzip", compression_opts=4)
        for key, value in (("ComponentDimensions", np.uint64([1])), ("DataArrayVersion", np.int32([2])),
                           ("ObjectType", np.bytes_("DataArray<int32_t>")),
                           ("TupleDimensions", np.uint64([width, height, depth])),
                           ("Tuple Axis Dimensions", np.bytes_(f"x={width},y={height},z={depth}"))):
            dataset.attrs[key] = value
        dataset.attrs[PROVENANCE_ATTRIBUTE] = json.dumps({"phase_values": values.tolist(), **(provenance or {})})
    return buffer.getvalue()


def xdmf_text(hdf5_name: str, shape, voxel_size_um: float | None) -> str:
    """An XDMF 2 sidecar that lets ParaView open ``hdf5_name``'s Phases array directly (cell data: the grid's
    point dimensions are the cell counts + 1)."""
    depth, height, width = shape
    spacing = float(voxel_size_um or 1.0)
    return f"""<?xml version="1.0"?>
<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd"[]>
<Xdmf xmlns:xi="http://www.w3.org/2003/XInclude" Version="2.2">
  <Domain>
    <Grid Name="{CONTAINER}" GridType="Uniform">
      <Time Value="0"/>
      <Topology TopologyType="3DCoRectMesh" Dimensions="{depth + 1} {height + 1} {width + 1}"></Topology>
      <Geometry Type="ORIGIN_DXDYDZ">
        <DataItem Format="XML" Dimensions="3">0 0 0</DataItem>
        <DataItem Format="XML" Dimensions="3">{spacing} {spacing} {spacing}</DataItem>
      </Geometry>
      <Attribute Name="Phases" AttributeType="Scalar" Center="Cell">
        <DataItem Format="HDF" Dimensions="{depth} {height} {width} 1" NumberType="Int" Precision="4">{hdf5_name}:/DataContainers/{CONTAINER}/CellData/Phases</DataItem>
      </Attribute>
    </Grid>
  </Domain>
</Xdmf>
"""
