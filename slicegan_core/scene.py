"""PyVista scenes and 2D cut images of label volumes, for the app's 3D view (the app's only PyVista code).

Voxels are drawn exactly, as cubes, one mesh per phase in that phase's colour. Only the faces that can be
seen are built: a face between two *shown* voxels lies inside opaque material and is never visible, so each
shown phase gets the faces where one of its voxels meets a hidden phase, a clipped-away voxel or the outside
of the volume. This is the same picture as ``ImageData -> threshold(phase) -> extract_surface`` (tested)
at a fraction of the geometry: with every phase shown a 64^3 volume has 6 x 64^2 visible faces instead of
~2 x 10^5, and runs of same-phase faces along a row are merged into one rectangle (a few thousand quads).
The vtk.js scene stays small (about 1.3 MB, of which 1.05 MB is the viewer itself) and is built in tens of
milliseconds; every phase mesh shares one points array, which the export stores once.

Axes: a volume ``(D, H, W)`` is shown with x = W, y = H, z = D, as in :mod:`slicegan_core.export` (VTK
ImageData). Coordinates are in micrometres when a voxel size is known, else in voxels.
"""
from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

# Headless servers: render off-screen through EGL instead of trying (and warning about) an X display.
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
# The trame server behind Plotter.trame.export_html also sets up trame-vtklocal, which downloads a VTK
# WebAssembly build from gitlab.kitware.com unless given a local folder. The vtk.js export needs none of it,
# so point it at an empty folder: no network access, no download.
_NO_WASM = Path(tempfile.gettempdir()) / "slicegan_studio_no_vtk_wasm"
_NO_WASM.mkdir(exist_ok=True)
os.environ.setdefault("VTK_WASM_DIR_OVERRIDE", str(_NO_WASM))

import pyvista as pv  # noqa: E402

AXES = ("z", "y", "x")  # name of each array axis of a (D, H, W) volume
AXIS_COLOURS = {"x": "#D55E00", "y": "#009E73", "z": "#0072B2"}   # the axes triad: red-orange, green, blue
BACKGROUND = "#ffffff"


def hex_to_rgb(colour: str) -> tuple[int, int, int]:
    """'#E69F00' -> (230, 159, 0)."""
    text = str(colour).lstrip("#")
    if len(text) != 6 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"Colour {colour!r} is not a #RRGGBB hex string; use e.g. '#E69F00'.")
    return tuple(int(text[i:i + 2], 16) for i in (0, 2, 4))


def _check_volume(volume) -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3 or volume.size == 0 or volume.dtype.kind not in "iub":
        raise ValueError(f"volume must be a non-empty (D, H, W) integer label array (got shape {volume.shape}, "
                         f"dtype {volume.dtype}).")
    return volume


def _check_crop(shape, crop) -> tuple[slice, slice, slice]:
    """``crop`` {axis (0, 1, 2): (first, last) voxel, inclusive} -> one slice per axis."""
    slices = [slice(0, n) for n in shape]
    for axis, bounds in (crop or {}).items():
        if axis not in (0, 1, 2):
            raise ValueError(f"crop keys must be array axes 0, 1 or 2 (z, y, x), got {axis!r}.")
        first, last = (int(b) for b in bounds)
        if not 0 <= first <= last < shape[axis]:
            raise ValueError(f"crop along {AXES[axis]} must satisfy 0 <= first <= last < {shape[axis]} "
                             f"(got {bounds!r}).")
        slices[axis] = slice(first, last + 1)
    return tuple(slices)


def preload_web_export():
    """Import the trame modules behind ``Plotter.trame.export_html`` (about 1 s, once per process).

    stpyvista exports every view in a freshly forked process; forked children inherit these modules, which
    saves about 0.3 s per view.
    """
    import trame_pyvista.components  # noqa: F401
    import trame_pyvista.jupyter  # noqa: F401
    import trame_pyvista.widgets  # noqa: F401
    import trame_vtk.tools.vtksz2html  # noqa: F401


def visible_faces(volume, phase_values, shown=None, crop=None, merge: bool = True) -> dict[int, np.ndarray]:
    """The voxel faces that can be seen, as quads of lattice-corner indices, per shown phase.

    Parameters
    ----------
    volume : (D, H, W) integer phase labels.
    phase_values : the phase values to consider (values not listed are treated as hidden).
    shown : phase values to draw; default all of ``phase_values``.
    crop : {axis: (first, last)} inclusive voxel range kept along array axes 0/1/2 (z/y/x); default all.
    merge : join runs of faces of one phase that follow each other in a row of a plane into one rectangle
        (the same surface with a fraction of the quads, hence a smaller and faster vtk.js scene).

    Returns
    -------
    {phase value: (n_quads, 4) int64}: corner ids in the (D + 1, H + 1, W + 1) lattice of voxel corners,
    C order (id = k * (H + 1) * (W + 1) + j * (W + 1) + i for corner (z=k, y=j, x=i)). Every shown phase
    has an entry (possibly empty). Without ``merge`` every quad is one voxel face.
    """
    volume = _check_volume(volume)
    shown = list(phase_values) if shown is None else [int(v) for v in shown]
    window = _check_crop(volume.shape, crop)
    offset = np.array([s.start for s in window])
    labels = volume[window]
    drawn = np.isin(labels, shown)
    depth, height, width = volume.shape
    strides = np.array([(height + 1) * (width + 1), width + 1, 1])  # corner lattice strides (z, y, x)
    unit = np.eye(3, dtype=np.int64)
    faces = {int(v): [] for v in shown}
    for axis in range(3):
        # Pad with "not drawn" on both ends of the axis: a change along the axis is a visible face.
        padded = np.pad(drawn, [(1, 1) if a == axis else (0, 0) for a in range(3)])
        before = (slice(None),) * axis
        lower, upper = padded[before + (slice(None, -1),)], padded[before + (slice(1, None),)]
        boundary = lower != upper                                   # face at plane n between cells n-1 and n
        plane, p, q = np.nonzero(np.moveaxis(boundary, axis, 0))     # sorted by plane, then p, then q
        if plane.size == 0:
            continue
        # The drawn cell on either side of the face decides its phase.
        others = [a for a in range(3) if a != axis]
        upper_drawn = np.moveaxis(upper, axis, 0)[plane, p, q]
        cell = np.zeros((plane.size, 3), np.int64)
        cell[:, axis] = plane - ~upper_drawn                          # the drawn voxel is below the plane
        cell[:, others[0]], cell[:, others[1]] = p, q
        phase = labels[cell[:, 0], cell[:, 1], cell[:, 2]]
        first = np.arange(plane.size)
        if merge:  # a run starts where the plane, the row p or the phase changes, or q skips
            starts = np.ones(plane.size, bool)
            starts[1:] = (plane[1:] != plane[:-1]) | (p[1:] != p[:-1]) | (phase[1:] != phase[:-1]) \
                | (q[1:] != q[:-1] + 1)
            first = np.flatnonzero(starts)
        length = np.diff(np.append(first, plane.size))[:, None]       # faces per run (1 without merge)
        corner = np.zeros((first.size, 3), np.int64)
        corner[:, axis] = plane[first]
        corner[:, others[0]], corner[:, others[1]] = p[first], q[first]
        corner += offset
        step_a, step_b = unit[others[0]], unit[others[1]] * length
        quad = np.stack([corner, corner + step_a, corner + step_a + step_b, corner + step_b], axis=1)
        ids = quad @ strides                                        # (n, 4) lattice ids
        for value in faces:
            faces[value].append(ids[phase[first] == value])
    return {v: (np.concatenate(f) if f else np.empty((0, 4), np.int64)) for v, f in faces.items()}


def phase_surfaces(volume, phase_values, shown=None, crop=None, voxel_size_um: float | None = None,
                   merge: bool = True) -> dict[int, pv.PolyData]:
    """One surface mesh of visible voxel faces per shown phase (see :func:`visible_faces`).

    All meshes share one points array (the corners any of them uses), which vtk.js stores once. Points are
    voxel corners in (x, y, z) = (W, H, D) order, scaled by ``voxel_size_um`` (micrometres) when given, else
    in voxels. Phases with nothing visible get an empty mesh.
    """
    volume = _check_volume(volume)
    depth, height, width = volume.shape
    quads = visible_faces(volume, phase_values, shown, crop, merge)
    used = np.unique(np.concatenate([q.ravel() for q in quads.values()] + [np.empty(0, np.int64)]))
    k, rest = np.divmod(used, (height + 1) * (width + 1))
    j, i = np.divmod(rest, width + 1)
    points = np.column_stack([i, j, k]).astype(np.float32) * np.float32(voxel_size_um or 1.0)
    return {value: pv.PolyData.from_regular_faces(points, np.searchsorted(used, q)) if q.size else pv.PolyData()
            for value, q in quads.items()}


def triad_length(shape, voxel_size_um: float | None = None) -> float:
    """Length of the axes arrows of :func:`volume_plotter` for a ``(D, H, W)`` volume: a round number (1, 2 or
    5 x 10^k) of micrometres when ``voxel_size_um`` is given, else of voxels, at most a third of the longest
    edge, so an arrow doubles as a scale bar.

    >>> triad_length((64, 64, 64)), triad_length((64, 64, 64), voxel_size_um=0.5)
    (20.0, 10.0)
    """
    longest = max(int(n) for n in shape) * float(voxel_size_um or 1.0)
    exponent = math.floor(math.log10(longest / 3))
    return max(m * 10.0 ** exponent for m in (1, 2, 5) if m * 10.0 ** exponent <= longest / 3)


def axes_triad(origin, length: float) -> dict[str, pv.PolyData]:
    """Arrows along +x, +y and +z of ``length`` from ``origin`` with the letters x, y, z at their tips, as
    meshes (geometry, so they reach the vtk.js web export, which leaves VTK's 2D orientation widgets out).

    Returns {"x arrow", "y arrow", "z arrow", "x", "y", "z": mesh}; the letters face the isometric camera.
    """
    origin = np.asarray(origin, dtype=float)
    meshes = {}
    for axis, name in enumerate("xyz"):
        direction = np.eye(3)[axis]
        meshes[f"{name} arrow"] = pv.Arrow(start=origin, direction=direction, tip_length=0.2, tip_radius=0.07,
                                           shaft_radius=0.025, tip_resolution=12, shaft_resolution=12, scale=length)
        meshes[name] = pv.Text3D(name, depth=0.0, height=0.35 * length, center=origin + direction * 1.3 * length,
                                 normal=(1.0, 1.0, 1.0))
    return meshes


def volume_plotter(volume, phases, shown=None, crop=None, voxel_size_um: float | None = None,
                   window_size=(640, 480), axes: bool = True) -> pv.Plotter:
    """An off-screen plotter showing a label volume as coloured voxels.

    Parameters
    ----------
    volume : (D, H, W) integer phase labels.
    phases : [{"value", "name", "colour"}], e.g. ``Model.phases``.
    shown : phase values to draw; default all.
    crop : {axis: (first, last)} inclusive voxel range along array axes 0/1/2 (z/y/x): a slab, or a clipping
        plane when it starts at 0 or ends at the last voxel.
    voxel_size_um : voxel edge in micrometres (coordinates in voxels when None).
    window_size : (width, height) pixels of the view.
    axes : draw an axes triad beside the volume (:func:`axes_triad`): x, y, z arrows of
        :func:`triad_length` (micrometres or voxels) from just outside the corner x = W, y = 0, z = 0.

    Returns
    -------
    pyvista.Plotter with one mesh per phase (flat-shaded voxel faces), the outline of the whole volume and the
    axes triad (x red, y green, z blue), seen from an isometric camera.
    """
    volume = _check_volume(volume)
    pl = pv.Plotter(off_screen=True, window_size=list(window_size))
    pl.set_background(BACKGROUND)
    meshes = phase_surfaces(volume, [p["value"] for p in phases], shown, crop, voxel_size_um)
    for phase in phases:
        mesh = meshes.get(int(phase["value"]))
        if mesh is not None and mesh.n_cells:
            pl.add_mesh(mesh, color=phase["colour"], name=phase["name"], show_edges=False, lighting=True,
                        ambient=0.35, diffuse=0.7, specular=0.0)
    spacing = float(voxel_size_um or 1.0)
    depth, height, width = volume.shape
    box = pv.Box(bounds=(0, width * spacing, 0, height * spacing, 0, depth * spacing))
    pl.add_mesh(box.extract_all_edges(), color="#555555", line_width=1)
    if axes:   # outside the box at x > W, so no voxel hides it from the isometric camera
        length = triad_length(volume.shape, voxel_size_um)
        origin = (width * spacing + 0.4 * length, -0.4 * length, 0.0)
        for name, mesh in axes_triad(origin, length).items():
            pl.add_mesh(mesh, color=AXIS_COLOURS[name[0]], name=f"axis {name}", lighting=False)
    pl.camera_position = "iso"
    pl.camera.zoom(1.15)
    return pl


def cut_image(volume, phases, axis: int, index: int, min_pixels: int = 256) -> np.ndarray:
    """An RGB picture of one cut through a label volume, in the phases' colours.

    Parameters
    ----------
    volume : (D, H, W) integer phase labels.
    phases : [{"value", "colour"}]; voxels of other values are drawn grey.
    axis : 0 for an x-y cut (at z = index), 2 for a y-z cut (at x = index); 1 for an x-z cut (at y = index).
    index : the voxel index of the cut along ``axis``.
    min_pixels : the picture is enlarged by a whole factor (nearest neighbour, so voxels stay sharp) until
        its shorter side has at least this many pixels.

    Returns
    -------
    (rows, columns, 3) uint8. x-y cut: rows = y (upwards), columns = x. y-z cut: rows = z (upwards),
    columns = y. x-z cut: rows = z (upwards), columns = x.
    """
    volume = _check_volume(volume)
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0 (x-y cut), 1 (x-z cut) or 2 (y-z cut), got {axis!r}.")
    if not 0 <= int(index) < volume.shape[axis]:
        raise ValueError(f"index must be in [0, {volume.shape[axis] - 1}] for a cut along {AXES[axis]} "
                         f"(got {index!r}).")
    plane = np.take(volume, int(index), axis=axis)[::-1]            # first row at the top -> flip so up is +
    lookup = np.full((max(int(plane.max()), max(int(p["value"]) for p in phases)) + 1, 3), 128, np.uint8)
    for phase in phases:
        lookup[int(phase["value"])] = hex_to_rgb(phase["colour"])
    return enlarge(lookup[plane], min_pixels)


def patch_image(patch, image_type: str = "n-phase", phases=None, min_pixels: int = 128) -> np.ndarray:
    """An RGB picture of one training patch as the critic sees it.

    Parameters
    ----------
    patch : (C, P, P) array: one-hot phases (n-phase, channel i = phase i), or intensities in [0, 1]
        (grayscale C = 1, colour C = 3), as returned by ``TrainingData.sample`` for one dataset.
    image_type : "n-phase", "grayscale" or "colour".
    phases : [{"colour"}] per channel for n-phase; default the package's default colours.
    min_pixels : enlarged by a whole factor (nearest neighbour) to at least this many pixels per side.

    Returns
    -------
    (rows, columns, 3) uint8.
    """
    patch = np.asarray(patch, dtype=np.float32)
    if patch.ndim != 3:
        raise ValueError(f"patch must be a (C, P, P) array (got shape {patch.shape}).")
    if image_type == "n-phase":
        from .modelfile import default_phases
        colours = [p["colour"] for p in (phases or default_phases(range(patch.shape[0])))]
        lookup = np.array([hex_to_rgb(c) for c in colours], np.uint8)
        image = lookup[patch.argmax(0)]
    elif image_type in ("grayscale", "colour"):
        image = np.rint(np.clip(patch, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)
        image = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    else:
        raise ValueError(f"image_type must be 'n-phase', 'grayscale' or 'colour' (got {image_type!r}).")
    return enlarge(image, min_pixels)


def enlarge(image, min_pixels: int = 256) -> np.ndarray:
    """Repeat every pixel of an (rows, columns[, 3]) image by the smallest whole factor that makes its shorter
    side at least ``min_pixels``, so that browsers do not blur voxels when they scale the picture."""
    image = np.asarray(image)
    factor = max(1, -(-int(min_pixels) // min(image.shape[:2])))
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
