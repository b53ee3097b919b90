"""DREAM3D 6 (SIMPL) ``.dream3d`` files: read an image-geometry cell array, write a generated volume.

Layout (read from a genuine DREAM3D 6 file): root attributes ``FileVersion`` "7.0" and ``DREAM3D Version``;
``DataContainers/<name>/_SIMPL_GEOMETRY`` with ``DIMENSIONS`` (x, y, z), ``SPACING``, ``ORIGIN`` and
``GeometryType`` 0 (image); ``DataContainers/<name>/CellData`` holds the arrays, each stored
``(z, y, x, components)``. Phase arrays (``Phases``) are int32 and 1-based (0 = unknown).
``DataContainers/<name>/CellEnsembleData`` (attribute matrix type 11) holds one tuple per phase, index 0
reserved: ``CrystalStructures`` and ``PhaseTypes`` (uint32; 999 = unknown) and ``PhaseName`` (strings), which
DREAM3D's statistics filters look for. The reader needs only ``CellData`` and ignores the rest.

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
UNKNOWN = 999                                    # DREAM3D's UnknownCrystalStructure / UnknownPhaseType
CUBIC_HIGH = 1                                   # crystal structure written for every phase (a placeholder)
PRIMARY_PHASE = 0                                # phase type written for every phase
ARRAY_SEPARATOR = "#"                            # "file.dream3d#Container/CellData/Array" names one array


def split_path(path) -> tuple[Path, str | None]:
    """``"a.dream3d#Box/CellData/Phases"`` -> (Path("a.dream3d"), "Box/CellData/Phases")."""
    text = str(path)
    if ARRAY_SEPARATOR in text and text.split(ARRAY_SEPARATOR)[0].lower().endswith(".dream3d"):
        file, _, array = text.partition(ARRAY_SEPARATOR)
        return Path(file), array or None
    return Path(text), None


# ---- reading: one access policy for every object of an uploaded file ------------------------------------
# An HDF5 file can keep a dataset's bytes in another file (external raw storage), link to an object in another
# file (external link) or assemble a dataset from other files (virtual dataset); a soft link can loop. An
# uploaded file must never make the server read anything but itself, so every object is reached through
# hard links only, every dataset is checked for external and virtual storage, and its declared size is
# checked against memory, all before a byte of it is read.

MAX_LABEL_VALUES = 256      # a provenance lists one value per phase; more is not a file we wrote


class _Reader:
    """An open ``.dream3d`` file read under the access policy above; every error is one sentence naming it."""

    def __init__(self, file: Path):
        import h5py
        self.file = file
        if not file.is_file():
            raise ValueError(f"DREAM3D file '{file}' does not exist; check the path.")
        try:
            self.f = h5py.File(file, "r")
        except OSError as error:
            raise ValueError(f"DREAM3D file '{file}' could not be read as HDF5 ({error}).") from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def refuse(self, what: str, advice: str) -> ValueError:
        return ValueError(f"DREAM3D file '{self.file}' {what}; {advice}.")

    def child(self, group, name: str):
        """``group[name]`` if it is stored in this file under a hard link, else None (absent) or a refusal."""
        import h5py
        try:
            link = group.get(name, getlink=True)
        except (KeyError, OSError, RuntimeError, ValueError):
            link = None
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            kind = {h5py.ExternalLink: "an external link to another file",
                    h5py.SoftLink: "a soft link"}.get(type(link), "a link of an unknown kind")
            raise self.refuse(f"reaches '{group.name.rstrip('/')}/{name}' through {kind}",
                              "SliceGAN Studio reads only objects stored inside the uploaded file, so save the "
                              "structure again from DREAM3D without links")
        try:
            return group[name]
        except (KeyError, OSError, RuntimeError, ValueError) as error:
            raise self.refuse(f"has a damaged object '{group.name.rstrip('/')}/{name}' ({error})",
                              "export the structure again from DREAM3D") from None

    def members(self, group) -> list[str]:
        import h5py
        if not isinstance(group, h5py.Group):
            return []
        try:
            return list(group.keys())     # names only: no link is followed
        except (OSError, RuntimeError) as error:
            raise self.refuse(f"has a damaged group '{group.name}' ({error})",
                              "export the structure again from DREAM3D") from None

    def dataset(self, obj, where: str, max_values: int | None = None):
        """``obj`` checked as a numeric dataset whose bytes lie in this file and fit in memory."""
        import h5py
        if not isinstance(obj, h5py.Dataset):
            raise self.refuse(f"has no dataset at '{where}'", "export the structure again from DREAM3D")
        if obj.is_virtual:
            raise self.refuse(f"makes '{where}' a virtual dataset that takes its values from other files",
                              "SliceGAN Studio reads only data stored inside the uploaded file")
        if obj.id.get_create_plist().get_external_count() > 0:
            raise self.refuse(f"keeps the values of '{where}' in an external file",
                              "SliceGAN Studio reads only data stored inside the uploaded file")
        kind = obj.dtype.kind
        if kind not in "biuf" or obj.dtype.names is not None:
            what = {"c": "complex numbers", "S": "text", "U": "text", "O": "variable-length values",
                    "V": "compound records"}.get(kind, f"{obj.dtype} values")
            raise self.refuse(f"holds {what} in '{where}'", "give integer or floating-point values")
        if obj.ndim > 4:
            raise self.refuse(f"has a {obj.ndim}-dimensional array '{where}' (shape {obj.shape})",
                              "give a (z, y, x) or (z, y, x, 1) cell array")
        if max_values is not None and obj.size > max_values:
            raise self.refuse(f"has {obj.size} values in '{where}' where at most {max_values} belong",
                              "export the structure again from DREAM3D")
        if max_values is None:
            from .synthetic import available_memory
            needed = float(np.prod(obj.shape, dtype=np.float64)) * (obj.dtype.itemsize + 1)
            available = available_memory()
            if available is not None and needed > available:
                raise self.refuse(
                    f"declares a {' x '.join(map(str, obj.shape))} {obj.dtype} array '{where}' that needs "
                    f"{needed / 2**30:.1f} GiB to load, but {available / 2**30:.1f} GiB of memory is available",
                    "crop or downsample it")
            if obj.size > 0 and obj.id.get_storage_size() == 0:
                raise self.refuse(f"declares the array '{where}' (shape {obj.shape}) but stores none of its values",
                                  "export the structure again from DREAM3D")
        return obj

    def read(self, obj, where: str, max_values: int | None = None) -> np.ndarray:
        dataset = self.dataset(obj, where, max_values)
        try:
            return np.asarray(dataset[()])
        except MemoryError:
            raise self.refuse(f"has an array '{where}' that does not fit in memory", "crop or downsample it") \
                from None
        except (OSError, RuntimeError, ValueError, TypeError) as error:
            raise self.refuse(f"has a damaged array '{where}' ({error})",
                              "export the structure again from DREAM3D") from None

    def containers(self) -> dict[str, object]:
        """Image-geometry data containers by name (others, and damaged geometry tags, are skipped)."""
        root = self.child(self.f, "DataContainers")
        found = {}
        for name in self.members(root):
            group = self.child(root, name)
            geometry = self.child(group, "_SIMPL_GEOMETRY") if group is not None else None
            if geometry is None:
                continue
            try:
                geometry_type = int(np.ravel(geometry.attrs.get("GeometryType", [-1]))[0])
            except (ValueError, TypeError, IndexError, OSError, OverflowError):
                continue
            if geometry_type == 0:
                found[name] = group
        if not found:
            raise self.refuse("has no image-geometry data container",
                              "export the structure on an image geometry in DREAM3D")
        return found

    def cell_arrays(self) -> dict[str, object]:
        """Every cell array name of every image container, ``<container>/CellData/<array>`` -> its group. Only
        names are listed: a link among them is refused when the array is read."""
        arrays = {}
        for container, group in self.containers().items():
            cells = self.child(group, "CellData")
            for name in self.members(cells):
                arrays[f"{container}/CellData/{name}"] = cells
        return arrays

    def spacing(self, container: str, group) -> tuple[float, float, float]:
        where = f"DataContainers/{container}/_SIMPL_GEOMETRY/SPACING"
        geometry = self.child(group, "_SIMPL_GEOMETRY")
        obj = self.child(geometry, "SPACING")
        if obj is None:
            raise self.refuse(f"has no voxel spacing ('{where}')", "set the spacing in DREAM3D and export again")
        values = np.ravel(self.read(obj, where, max_values=16)).astype(np.float64)
        if values.size != 3 or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise self.refuse(f"has SPACING {values.tolist()}",
                              "it needs three positive, finite voxel edge lengths (x, y, z)")
        return tuple(float(v) for v in values)


def list_arrays(path) -> list[str]:
    """Every cell array of every image container, as ``<container>/CellData/<array>``."""
    with _Reader(split_path(path)[0]) as reader:
        return list(reader.cell_arrays())


def read_spacing(path) -> tuple[float, float, float]:
    """``SPACING`` (x, y, z) of the first image container, without reading any array."""
    with _Reader(split_path(path)[0]) as reader:
        name, group = next(iter(reader.containers().items()))
        return reader.spacing(name, group)


def read_dream3d(path, array: str | None = None) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read one cell array of an image geometry.

    Only objects stored inside the file are read: external links, soft links, external raw storage and
    virtual datasets are refused, and an array's declared size is checked against memory before it is read.

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
        ``spacing`` (x, y, z) from ``SPACING``, positive and finite.

    Raises
    ------
    ValueError
        Missing, unreadable or damaged file, an object outside the file, no such array (the message lists the
        arrays there are), not an image geometry, or an array too large for memory; one sentence naming it.
    """
    file, named = split_path(path)
    array = array or named
    with _Reader(file) as reader:
        available = reader.cell_arrays()
        if array is None:
            array = next((a for a in available if a.endswith("/CellData/Phases")), None)
            if array is None:
                raise reader.refuse("has no Phases array",
                                    f"choose one with --dream3d-array (arrays: {', '.join(available) or 'none'})")
        if array not in available:
            raise reader.refuse(f"has no cell array '{array}'", f"arrays: {', '.join(available) or 'none'}")
        container = array.split("/")[0]
        spacing = reader.spacing(container, reader.containers()[container])
        dataset = reader.dataset(reader.child(available[array], array.split("/")[-1]), array)
        try:
            provenance = dataset.attrs.get(PROVENANCE_ATTRIBUTE)
        except (OSError, RuntimeError, ValueError, TypeError) as error:
            raise reader.refuse(f"has a damaged '{PROVENANCE_ATTRIBUTE}' attribute on '{array}' ({error})",
                                "export the structure again") from None
        volume = reader.read(dataset, array)
        phase_values = None if provenance is None else _provenance_phase_values(provenance, reader, array)
    if volume.ndim == 4 and volume.shape[-1] == 1:
        volume = volume[..., 0]
    if phase_values is not None:   # our own file: Phases = phase index + 1 -> the model's phase values
        if volume.dtype.kind not in "iu" or (volume.size and (volume.min() < 1 or volume.max() > len(phase_values))):
            low, high = (volume.min(), volume.max()) if volume.size else (None, None)
            raise ValueError(f"DREAM3D file '{file}' holds Phases values {low}..{high} in '{array}' where its "
                             f"SliceGAN provenance lists phases 1..{len(phase_values)}; export the volume again.")
        volume = phase_values[volume.astype(np.intp) - 1]
    return np.ascontiguousarray(volume), spacing


def _provenance_phase_values(text, reader: _Reader, array: str) -> np.ndarray:
    """The phase values our writer stored on a Phases array, validated (distinct integers, at most 256)."""
    problem = f"has a damaged '{PROVENANCE_ATTRIBUTE}' attribute on '{array}'"
    advice = "export the volume again, or delete the attribute in HDFView to read the stored values as they are"
    try:
        if isinstance(text, np.ndarray):
            text = text.item() if text.size == 1 else None
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        document = json.loads(text) if isinstance(text, str) and len(text) < 1_000_000 else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        document = None
    values = document.get("phase_values") if isinstance(document, dict) else None
    if (not isinstance(values, list) or not 0 < len(values) <= MAX_LABEL_VALUES
            or not all(isinstance(v, int) and not isinstance(v, bool) and -2**31 <= v < 2**31 for v in values)
            or len(set(values)) != len(values)):
        raise reader.refuse(problem, advice)
    return np.asarray(values, dtype=np.int64)


def isotropic_voxel_size(spacing, file="the file") -> float:
    """The cube edge of ``spacing`` (x, y, z), or a ValueError: the generator's voxels are cubes."""
    spacing = [float(s) for s in spacing]
    if max(spacing) - min(spacing) > 1e-6 * max(spacing):
        raise ValueError(f"{file} has anisotropic voxels (spacing x, y, z = {spacing}); the generator makes "
                         "cubic voxels, so resample it to equal spacing first (e.g. DREAM3D's Resample Data).")
    return spacing[0]


def dream3d_bytes(volume: np.ndarray, voxel_size_um: float | None, phase_values=None,
                  provenance: dict | None = None, phase_names=None) -> bytes:
    """A DREAM3D 6 file holding ``volume`` (D, H, W) labels as ``DataContainers/SliceGAN/CellData/Phases``
    (int32, phase index + 1, so 0 stays "unknown"), spacing = ``voxel_size_um`` in x, y, z.

    ``phase_values`` (sorted label values; default those present) fixes the index; it is stored with the
    provenance on the array so :func:`read_dream3d` maps ``Phases`` back to the labels. An unknown voxel size
    (None) is written as SPACING 1 (DREAM3D files carry no unit) and as ``"voxel_size_um": null`` in that
    provenance. ``CellEnsembleData`` gets one tuple per phase after DREAM3D's reserved index 0:
    ``PhaseTypes`` primary (0), ``CrystalStructures`` cubic (1; a placeholder, as the volume has no
    orientations), ``PhaseName`` from ``phase_names`` (default "phase <value>"); index 0 is 999 / "Invalid Phase".
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
        dataset.attrs[PROVENANCE_ATTRIBUTE] = json.dumps({"phase_values": values.tolist(),
                                                          "voxel_size_um": voxel_size_um, **(provenance or {})})
        names = list(phase_names) if phase_names is not None else [f"phase {v}" for v in values.tolist()]
        if len(names) != len(values):
            raise ValueError(f"phase_names has {len(names)} names for {len(values)} phase values; give one per phase.")
        _ensemble_data(container, len(values), names)
    return buffer.getvalue()


def _ensemble_data(container, n_phases: int, names: list[str]) -> None:
    """``CellEnsembleData`` of ``n_phases`` phases (n_phases + 1 tuples, index 0 reserved), with the attributes
    DREAM3D 6 writes on every data array."""
    import h5py
    ensemble = container.create_group("CellEnsembleData")
    ensemble.attrs["AttributeMatrixType"] = np.uint32([11])                 # CellEnsemble
    ensemble.attrs["TupleDimensions"] = np.uint64([n_phases + 1])
    arrays = (("CrystalStructures", np.uint32([UNKNOWN] + [CUBIC_HIGH] * n_phases), "DataArray<uint32_t>"),
              ("PhaseTypes", np.uint32([UNKNOWN] + [PRIMARY_PHASE] * n_phases), "DataArray<uint32_t>"),
              ("PhaseName", np.array(["Invalid Phase", *map(str, names)], dtype=object), "StringDataArray"))
    for name, data, object_type in arrays:
        if object_type == "StringDataArray":     # DREAM3D: a 1-D dataset of variable-length strings
            dataset = ensemble.create_dataset(name, data=data, dtype=h5py.string_dtype())
        else:
            dataset = ensemble.create_dataset(name, data=data[:, None])          # (tuples, 1 component)
        for key, value in (("ComponentDimensions", np.uint64([1])), ("DataArrayVersion", np.int32([2])),
                           ("ObjectType", np.bytes_(object_type)), ("TupleDimensions", np.uint64([n_phases + 1])),
                           ("Tuple Axis Dimensions", np.bytes_(f"x={n_phases + 1}"))):
            dataset.attrs[key] = value


def xdmf_text(hdf5_name: str, shape, voxel_size_um: float | None) -> str:
    """An XDMF 2 sidecar that lets ParaView open ``hdf5_name``'s Phases array directly (cell data: the grid's
    point dimensions are the cell counts + 1). Spacing = the voxel size, or 1 (one voxel) when it is unknown, as
    a comment in the file says."""
    depth, height, width = shape
    spacing = float(voxel_size_um or 1.0)
    unit = (f"spacing = voxel size {spacing:g} micrometres" if voxel_size_um else
            "voxel size unknown: spacing 1 = one voxel, no physical unit")
    return f"""<?xml version="1.0"?>
<!DOCTYPE Xdmf SYSTEM "Xdmf.dtd"[]>
<!-- SliceGAN Studio: {unit} -->
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
