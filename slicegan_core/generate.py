"""Load a model directory and generate volumes of any shape, one pass or in seamless tiles.

Statistics and tiling. AdaIN normalises every channel by statistics of the whole volume, so independently
normalised tiles would differ in contrast and show seams. A volume whose latent fits within the statistics
window (``STATS_WINDOW`` output voxels per edge, at least the training patch) is generated in one pass with its
own statistics. A larger volume is normalised with frozen per-layer, per-channel (mean, std) taken from that
fixed window at the centre of its latent, on every path: a single pass where the volume fits
``max_tile_voxels`` and every tile where it does not. The window depends only on the model, the shape and
``periodic``, never on the budget, so every budget gives the same volume. Because the networks are
translation-equivariant and each tile is computed with a halo of latent cells that is cropped away, a tiled
volume equals the single pass voxel for voxel (tested). It differs from a pass with the volume's own
statistics only by how far the window's statistics differ from the whole volume's: measured on the default
model at 320^3 over 6 seeds, the largest phase-fraction difference was 0.023 for a 128-voxel window, 0.010
for 160 and 0.008 for 192, and the 192^3 window pass takes 0.6-1.0 s on one CPU thread in bfloat16 (the
320^3 volume 3-5 s), hence ``STATS_WINDOW = 192``. Volumes up to 192 voxels per side (the default 128^3
included) keep their own statistics, as before.

Memory. :meth:`Model.generate` estimates the bytes a volume needs (latent, output array, the generator's
peak working memory for its pass or tile) and refuses, before allocating anything, one that does not fit in
the available memory. :meth:`Model.generate_tiles` hands out the same tiles one at a time instead of filling an
array, so a volume larger than memory can be written as it is made (:mod:`slicegan_core.stream`,
:meth:`Model.generate_to`); tiles are split among processes with ``part``.

Periodic volumes: the latent is made periodic (wrapped with a margin of cells) and one period of the output is
kept; opposite faces then continue into each other exactly. Sides must be multiples of ``voxels_per_latent``.
"""
from __future__ import annotations

import itertools
import math
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .config import ModelConfig
from .modelfile import default_phases, read_model, resolve_model_path
from .networks import Generator
# The memory check lives with synthesize (numpy only) so that the synth command need not import torch.
from .synthetic import check_memory, check_seed
from .threads import AutoThreads

HALO = 0  # extra latent cells around a tile; 0 suffices: voxel g depends only on latent cells g//vpl .. g//vpl+2 (tested)
STATS_WINDOW = 192  # output voxels per edge of the centre window whose statistics large volumes use (docstring)


@dataclass(frozen=True)
class Tiles:
    """A volume generated tile by tile (:meth:`Model.generate_tiles`). Iterate it once: it yields
    ``(where, voxels)`` pairs, ``where`` the three slices of the (D, H, W) volume that ``voxels`` fills
    ((d, h, w) labels/intensities, or (d, h, w, 3) colour), in tile order (axis 0 slowest).

    Attributes
    ----------
    shape : (D, H, W) voxels of the whole volume.
    core : voxels per axis of a tile; tile corners are multiples of it (tiles at the far faces are smaller).
        One pass (a single tile) when it equals ``shape``.
    dtype : numpy dtype of the voxels.
    colour : True when voxels carry a trailing RGB axis.
    count : tiles in the whole volume (this part yields every ``part[1]``-th of them, from ``part[0]``).
    """

    shape: tuple[int, int, int]
    core: tuple[int, int, int]
    dtype: np.dtype
    colour: bool
    count: int
    blocks: Iterator

    def __iter__(self):
        return self.blocks


def pick_device(device: str = "auto") -> torch.device:
    """CUDA when present (and asked for or 'auto'), else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use device 'cpu' or 'auto'.")
    return torch.device(device)


def cpu_has_fast_bf16() -> bool:
    """True when this CPU runs bfloat16 convolutions natively (AVX-512 BF16 / AMX)."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


class Model:
    """A trained generator ready for inference. Create it with :func:`load_model`."""

    def __init__(self, config: ModelConfig, weights: dict, info: dict, device: str = "auto",
                 precision: str = "auto", path: str | None = None, threads: int | str | None = None):
        self.config, self.info, self.path = config, info, path
        self.device = pick_device(device)
        # CPU threads: "auto" re-reads the machine's load before each volume (slicegan_core.threads); a number
        # fixes it; None leaves torch's setting alone.
        self.threads = None if threads is None or self.device.type != "cpu" else AutoThreads(threads)
        self.generator = Generator(config)
        try:
            self.generator.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            first = str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else str(error)
            raise ValueError(f"The weights do not match the architecture in model.json ({first}).") from None
        self.generator.to(self.device).eval()
        if precision == "auto":
            precision = "bfloat16" if (self.device.type == "cuda" or cpu_has_fast_bf16()) else "float32"
        if precision not in ("float32", "bfloat16"):
            raise ValueError(f"precision must be 'auto', 'float32' or 'bfloat16' (got {precision!r}).")
        self.precision = precision

    # ---- model card -------------------------------------------------------------------------------------
    @property
    def image_type(self) -> str:
        return self.config.image_type

    @property
    def attribute_names(self) -> tuple[str, ...]:
        return self.config.attribute_names

    @property
    def trained_values(self) -> dict[str, list[float]]:
        attrs = self.info.get("attributes", {})
        return {name: list(attrs.get(name, {}).get("trained_values", [])) for name in self.attribute_names}

    @property
    def trained_range(self) -> dict[str, tuple[float, float]]:
        return {name: tuple(rng) for name, rng in zip(self.attribute_names, self.config.attribute_ranges)}

    @property
    def phases(self) -> list[dict]:
        return self.info.get("phases") or default_phases(range(self.config.n_channels))

    @property
    def phase_values(self) -> tuple[int, ...]:
        return tuple(int(p["value"]) for p in self.phases)

    @property
    def voxel_size_um(self) -> float | None:
        return self.info.get("voxel_size_um")

    @property
    def voxels_per_latent(self) -> int:
        return self.config.voxels_per_latent

    def out_of_range(self, attrs: dict[str, float]) -> list[str]:
        """One message per attribute value outside its trained range (allowed, but the seed saw no
        extrapolation there)."""
        messages = []
        for name, (low, high) in self.trained_range.items():
            value = attrs[name]
            # Tolerance: older models store float32-rounded ranges (0.15 -> 0.15000000596), which must not
            # call the trained value 0.15 out of range.
            tolerance = 1e-6 * max(1.0, abs(low), abs(high))
            if not low - tolerance <= value <= high + tolerance:
                messages.append(f"{name}={value:g} is outside the trained range [{low:g}, {high:g}]; "
                                "the model extrapolates there and the result may not follow the attribute.")
        return messages

    # ---- generation -------------------------------------------------------------------------------------
    def _check_attrs(self, attrs: dict | None) -> dict[str, float]:
        if attrs is None:
            attrs = {}
            for name, (low, high) in self.trained_range.items():
                attrs[name] = (low + high) / 2
        unknown = set(attrs) - set(self.attribute_names)
        if unknown:
            raise ValueError(f"Unknown attribute(s) {sorted(unknown)}; this model is steered by "
                             f"{list(self.attribute_names)}.")
        missing = [n for n in self.attribute_names if n not in attrs]
        if missing:
            raise ValueError(f"Missing attribute value(s) for {missing}; pass e.g. attrs={{'{missing[0]}': "
                             f"{self.trained_range[missing[0]][0]:g}}}.")
        checked = {}
        for name in self.attribute_names:
            value = attrs[name]
            # bool is an int to Python, and float("0.3") would accept text: neither is a value the user meant.
            if not isinstance(value, Real) or isinstance(value, (bool, np.bool_)):
                raise ValueError(f"Attribute {name} must be a number (got {value!r}); pass e.g. "
                                 f"{{'{name}': {sum(self.trained_range[name]) / 2:g}}}.")
            checked[name] = float(value)
            if not math.isfinite(checked[name]):
                raise ValueError(f"Attribute {name} must be finite (got {value!r}).")
        return checked

    def _check_shape(self, shape, periodic: bool) -> tuple[int, int, int]:
        def is_int(value) -> bool:   # numpy ints are Integral; bool is too, but True is not a side
            return isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))

        if is_int(shape):
            shape = (shape,) * 3
        try:
            entries = tuple(shape)
        except TypeError:
            entries = ()
        if len(entries) != 3 or not all(is_int(s) and s >= 1 for s in entries):
            raise ValueError(f"shape must be three positive integers such as (128, 128, 128) (got {shape!r}).")
        shape = tuple(int(s) for s in entries)
        if periodic and any(s % self.voxels_per_latent for s in shape):
            nice = [max(self.voxels_per_latent, round(s / self.voxels_per_latent) * self.voxels_per_latent)
                    for s in shape]
            raise ValueError(f"Periodic volumes need sides that are multiples of {self.voxels_per_latent} voxels "
                             f"(got {shape}); try {tuple(nice)}.")
        return shape

    def _latent_edges(self, shape, periodic: bool) -> list[int]:
        """Cells per axis of the latent of a volume (periodic: one period, before wrapping)."""
        vpl = self.voxels_per_latent
        return [s // vpl if periodic else math.ceil(s / vpl) + 2 for s in shape]

    def latent(self, seed: int, shape, periodic: bool = False) -> torch.Tensor:
        """The noise z (1, z_channels, Lx, Ly, Lz) for a volume; it depends only on seed, shape and periodic."""
        edges = self._latent_edges(shape, periodic)
        rng = torch.Generator().manual_seed(check_seed(seed))
        z = torch.randn((1, self.config.z_channels, *edges), generator=rng)
        if periodic:
            # Wrap HALO cells before and HALO + 2 after, so the window [HALO*vpl, HALO*vpl + side) is one period.
            for axis in range(3):
                index = torch.arange(-HALO, edges[axis] + HALO + 2) % edges[axis]
                z = z.index_select(2 + axis, index)
        return z

    def generate(self, attrs: dict[str, float] | None = None, seed: int = 0, shape=(128, 128, 128),
                 periodic: bool = False, max_tile_voxels: int = 40_000_000, progress: bool = False,
                 probabilities: bool = False) -> np.ndarray:
        """Generate a volume.

        Parameters
        ----------
        attrs : dict, e.g. ``{"alpha": 0.35}``; default the middle of the trained range. Values outside the
            trained range are allowed and raise a ``UserWarning`` (see :meth:`out_of_range`).
        seed : int, the noise seed; same seed + attrs + shape (+ periodic) -> identical volume.
        shape : (D, H, W) voxels, or one int for a cube.
        periodic : make opposite faces continuous (sides must be multiples of ``voxels_per_latent``).
        max_tile_voxels : volumes whose generator output exceeds this are generated in tiles (bounded memory:
            the working memory is that of the larger of one tile and the ``STATS_WINDOW`` statistics pass). The
            result does not depend on it.
        probabilities : return the per-phase probabilities (C, D, H, W) float32 instead of labels.

        Returns
        -------
        (D, H, W) uint8 phase values (n-phase); (D, H, W) float32 in [0, 1] (grayscale); (D, H, W, 3) (colour).

        Raises ``ValueError`` for bad arguments and, before allocating anything, for a volume that needs more
        memory than is available (:meth:`memory_needed`).
        """
        attrs, shape = self._prepare(attrs, seed, shape, periodic, max_tile_voxels, probabilities)
        z = self.latent(seed, shape, periodic)
        start = [HALO * self.voxels_per_latent if periodic else 0] * 3
        attr_tensor = torch.tensor([[attrs[n] for n in self.attribute_names]], dtype=torch.float32)
        return self._render(z, attr_tensor, start, shape, max_tile_voxels, progress, probabilities)

    def generate_tiles(self, attrs: dict[str, float] | None = None, seed: int = 0, shape=(128, 128, 128),
                       periodic: bool = False, max_tile_voxels: int = 40_000_000, slab_bytes: int | None = None,
                       part: tuple[int, int] = (0, 1), progress: bool = False) -> Tiles:
        """Generate a volume tile by tile, without ever holding all of it: the tiles of :meth:`generate`, with the
        same voxels, handed out one at a time as a :class:`Tiles` (iterate it for ``(where, voxels)``).

        Parameters
        ----------
        attrs, seed, shape, periodic, max_tile_voxels : as for :meth:`generate`.
        slab_bytes : for a writer that collects whole planes (TIFF, .npy), the most bytes one slab of
            ``core[0]`` planes may take; axis 0 is cut into thinner tiles until it fits (down to
            ``voxels_per_latent`` planes). Default None: the plan of :meth:`generate`. The voxels do not depend on it.
        part : (index, count): yield only tiles ``index, index + count, ...`` of the tile order, for ``count``
            processes that share one volume (default (0, 1): all of them).
        progress : show a progress bar over this part's tiles.

        Raises ``ValueError`` for bad arguments and, before generating anything, when one tile (or slab) and the
        generator's working memory do not fit in the available memory.

        >>> tiles = model.generate_tiles({"alpha": 0.35}, seed=7, shape=512)      # doctest: +SKIP
        >>> for where, voxels in tiles:                                           # doctest: +SKIP
        ...     out[where] = voxels
        """
        if (not isinstance(part, tuple) or len(part) != 2 or not all(isinstance(p, Integral) for p in part)
                or not 0 <= part[0] < part[1]):
            raise ValueError(f"part must be (index, count) with 0 <= index < count (got {part!r}).")
        if slab_bytes is not None and (not isinstance(slab_bytes, Integral) or slab_bytes < 1):
            raise ValueError(f"slab_bytes must be a positive integer or None (got {slab_bytes!r}).")
        attrs, shape = self._prepare(attrs, seed, shape, periodic, max_tile_voxels, False, streamed=True,
                                     slab_bytes=slab_bytes)
        z = self.latent(seed, shape, periodic)
        start = [HALO * self.voxels_per_latent if periodic else 0] * 3
        attr_tensor = torch.tensor([[attrs[n] for n in self.attribute_names]], dtype=torch.float32)
        core = self._plan(z.shape[2:], shape, max_tile_voxels, self._slab_voxels(slab_bytes))
        plan = tuple(shape) if core is None else tuple(core)
        count = math.prod(math.ceil(n / c) for n, c in zip(shape, plan))
        out_shape, dtype = self._output_layout(shape, False)
        return Tiles(shape=shape, core=plan, dtype=dtype, colour=len(out_shape) == 4, count=count,
                     blocks=self._blocks(z, attr_tensor, start, shape, core, False, part, progress))

    def generate_to(self, path: str | Path, attrs: dict[str, float] | None = None, seed: int = 0,
                    shape=(128, 128, 128), periodic: bool = False, max_tile_voxels: int = 40_000_000,
                    progress: bool = False, voxel_size_um: float | None = None) -> Path:
        """Generate a volume straight into a ``.zarr`` (OME-Zarr), ``.tif``/``.tiff`` or ``.npy`` file, tile by tile,
        so the volume may be larger than memory; the voxels are those of :meth:`generate`. Written atomically
        with a JSON provenance sidecar; ``voxel_size_um`` (default the model's) goes into the file's metadata.
        Under torchrun the processes share a ``.zarr``. See
        :func:`slicegan_core.stream.generate_to`, which this calls.

        >>> model.generate_to("big.zarr", {"alpha": 0.35}, seed=7, shape=2048)   # doctest: +SKIP
        """
        from .stream import generate_to
        return generate_to(self, path, attrs, seed=seed, shape=shape, periodic=periodic,
                           max_tile_voxels=max_tile_voxels, progress=progress, voxel_size_um=voxel_size_um)

    def _prepare(self, attrs, seed, shape, periodic, max_tile_voxels, probabilities, streamed=False,
                 slab_bytes=None) -> tuple[dict[str, float], tuple[int, int, int]]:
        """Checked (attrs, shape) of a request, after the memory check and the out-of-range warnings. An in-memory
        request that does not fit is told about the streamed formats."""
        attrs = self._check_attrs(attrs)
        shape = self._check_shape(shape, periodic)
        check_seed(seed)
        if not isinstance(max_tile_voxels, Integral) or isinstance(max_tile_voxels, bool) or max_tile_voxels < 1:
            raise ValueError(f"max_tile_voxels must be a positive integer (got {max_tile_voxels!r}); "
                             "the default is 40_000_000.")

        def needed(side_or_shape) -> int:
            return self.memory_needed(side_or_shape, periodic, max_tile_voxels, probabilities, streamed, slab_bytes)

        try:
            check_memory(shape, needed(shape), lambda side: needed((side,) * 3),
                         multiple=self.voxels_per_latent if periodic else 1)
        except ValueError as error:
            if streamed:
                raise
            raise ValueError(f"{str(error).rstrip('.')}; or write it to .zarr, .tif or .npy, which are streamed to "
                             "disk (generate --out, Model.generate_to).") from None
        for message in self.out_of_range(attrs):
            warnings.warn(message, UserWarning, stacklevel=3)
        if self.threads is not None:
            self.threads.settle()
        return attrs, shape

    def warm_up(self, sides=(64, 96, 128), background: bool = True):
        """Generate one throw-away volume of each side (voxels per edge) so that later calls at those sizes
        find oneDNN's kernels for their shapes already built; in a daemon thread when ``background``.
        Returns the thread (or None). The app warms the sizes its slider offers while the user looks."""
        def work():
            for side in sides:
                self.generate(seed=0, shape=(int(side),) * 3)
        if not background:
            work()
            return None
        thread = threading.Thread(target=work, name="slicegan-warm-up", daemon=True)
        thread.start()
        return thread

    @torch.no_grad()
    def _forward(self, z: torch.Tensor, attrs: torch.Tensor, stats=None, collect=None,
                 activate: bool = True) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bfloat16"):
            return self.generator(z.to(self.device), attrs.to(self.device), stats=stats, collect_stats=collect,
                                  activate=activate)[0]

    def _to_output(self, probs: torch.Tensor, probabilities: bool) -> np.ndarray:
        """(C, d, h, w) probabilities -> labels / intensities as numpy."""
        if probabilities:
            return probs.float().cpu().numpy()
        if self.image_type == "n-phase":
            # Works on logits too (argmax is the same). uint8 unless a phase value needs more (16-bit labels).
            index = argmax_channels(probs).cpu().numpy()
            if self.phase_values == tuple(range(len(self.phase_values))):
                return index
            dtype = np.uint8 if max(self.phase_values) <= 255 else np.int32
            return np.asarray(self.phase_values, dtype=dtype)[index]
        out = probs.float().cpu().numpy()
        return out[0] if self.image_type == "grayscale" else np.moveaxis(out, 0, -1)

    def _render(self, z, attrs, start, shape, max_tile_voxels, progress, probabilities) -> np.ndarray:
        """Output voxels [start, start + shape) per axis of the generator run on latent z, as one array."""
        core = self._plan(z.shape[2:], shape, max_tile_voxels)
        blocks = self._blocks(z, attrs, start, shape, core, probabilities, progress=progress)
        if core is None:
            return next(blocks)[1]
        out_shape, dtype = self._output_layout(shape, probabilities)
        out = np.empty(out_shape, dtype)
        for where, block in blocks:
            out[(slice(None), *where) if probabilities else where] = block
        return out

    def _output_layout(self, shape, probabilities: bool) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) of the output array of a (D, H, W) volume."""
        if probabilities:
            return (self.config.n_channels, *shape), np.dtype(np.float32)
        if self.image_type == "n-phase":
            return tuple(shape), np.dtype(self._label_dtype())
        return (tuple(shape) if self.image_type == "grayscale" else (*shape, 3)), np.dtype(np.float32)

    def _plan(self, latent_edges, shape, max_tile_voxels: int, slab_voxels: int | None = None) -> list[int] | None:
        """The tile core per axis (:meth:`_tile_core`), or None when the volume is one pass: within the
        statistics window (its own statistics need that pass anyway), or its generator output fits the budget."""
        full_voxels = math.prod(Generator.output_edge(e, self.config) for e in latent_edges)
        if self._stats_window(latent_edges) is None or full_voxels <= max_tile_voxels:
            return None
        return self._tile_core(shape, max_tile_voxels, slab_voxels)

    def _blocks(self, z, attrs, start, shape, core, probabilities, part=(0, 1), progress=False):
        """Yield ``(where, voxels)`` for tiles ``part[0]``, ``part[0] + part[1]``, ... of the plan ``core`` (None:
        the one pass, which belongs to part 0). ``where`` holds slices of the (D, H, W) output."""
        vpl = self.voxels_per_latent
        logits_suffice = self.image_type == "n-phase" and not probabilities
        window = self._stats_window(z.shape[2:])
        if core is None:
            if part[0] == 0:
                stats = None if window is None else self._frozen_stats(z, attrs, window)
                probs = self._forward(z, attrs, stats=stats, activate=not logits_suffice)
                crop = tuple(slice(s, s + n) for s, n in zip(start, shape))
                yield tuple(slice(0, n) for n in shape), self._to_output(probs[(slice(None), *crop)], probabilities)
            return
        tiles = list(itertools.product(*(range(0, n, c) for n, c in zip(shape, core))))[part[0]::part[1]]
        if not tiles:
            return
        stats = self._frozen_stats(z, attrs, window)
        for corner in tqdm(tiles, desc="generating tiles", disable=not progress, leave=False):
            latent_slices, crop, target = [], [], []
            for axis in range(3):
                g0 = start[axis] + corner[axis]                     # first wanted voxel (generator coordinates)
                g1 = min(g0 + core[axis], start[axis] + shape[axis])
                s = max(0, g0 // vpl - HALO)
                e = min(z.shape[2 + axis], -(-g1 // vpl) + 2 + HALO)
                latent_slices.append(slice(s, e))
                crop.append(slice(g0 - s * vpl, g1 - s * vpl))
                target.append(slice(corner[axis], corner[axis] + g1 - g0))
            probs = self._forward(z[(slice(None), slice(None), *latent_slices)], attrs, stats=stats,
                                  activate=not logits_suffice)
            yield tuple(target), self._to_output(probs[(slice(None), *crop)], probabilities)

    def _tile_core(self, shape, max_tile_voxels: int, slab_voxels: int | None = None) -> list[int]:
        """Voxels per axis of the part of the volume each tile keeps: the largest axis is halved (to a
        multiple of voxels_per_latent) until a tile's generator output, core plus margins, fits the budget.
        With ``slab_voxels`` axis 0 is halved first, until ``core[0]`` whole planes hold at most that many."""
        vpl = self.voxels_per_latent
        core = list(shape)
        while slab_voxels is not None and core[0] * shape[1] * shape[2] > slab_voxels and core[0] > vpl:
            core[0] = max(vpl, math.ceil(core[0] / 2 / vpl) * vpl)
        while math.prod(c + 2 * HALO * vpl + 2 * vpl for c in core) > max_tile_voxels and max(core) > vpl:
            axis = int(np.argmax(core))
            core[axis] = max(vpl, math.ceil(core[axis] / 2 / vpl) * vpl)
        return core

    def _stats_window(self, latent_edges) -> tuple[slice, slice, slice] | None:
        """Latent slices of the centre window whose AdaIN statistics a large volume uses, or None when the
        window covers the whole latent (the volume then uses its own statistics). Per axis the window holds
        the cells of ``max(STATS_WINDOW, patch_size)`` output voxels, or the whole axis if that is shorter."""
        cells = math.ceil(max(STATS_WINDOW, self.config.patch_size) / self.voxels_per_latent) + 2
        if all(edge <= cells for edge in latent_edges):
            return None
        starts_sizes = [((edge - min(edge, cells)) // 2, min(edge, cells)) for edge in latent_edges]
        return tuple(slice(start, start + size) for start, size in starts_sizes)

    def _frozen_stats(self, z, attrs, window) -> list:
        """Per AdaIN layer (mean, std) of the generator run on the latent window ``z[..., window]``."""
        collected: list = []
        self._forward(z[(slice(None), slice(None), *window)], attrs, collect=collected, activate=False)
        return collected

    # ---- memory ----------------------------------------------------------------------------------------
    def _label_dtype(self):
        return np.uint8 if max(self.phase_values) <= 255 else np.int32

    def _slab_voxels(self, slab_bytes: int | None) -> int | None:
        return None if slab_bytes is None else max(1, slab_bytes // self._output_bytes_per_voxel(False))

    def _output_bytes_per_voxel(self, probabilities: bool) -> int:
        if probabilities:
            return 4 * self.config.n_channels
        if self.image_type == "n-phase":
            return np.dtype(self._label_dtype()).itemsize
        return 4 if self.image_type == "grayscale" else 12

    def _pass_bytes(self, latent_edges, probabilities: bool) -> int:
        """Estimated peak bytes of one CPU generator pass on a latent of ``latent_edges`` cells, its output
        conversion included: the largest set of tensors alive at once, op by op, from the extra memory each op
        took on the CPU (oneDNN; measured), times 2: glibc's allocator holds freed blocks for reuse, so the peak
        RSS of the same pass varies from run to run. For the 'cpu' preset at 224 x 192 x 192 (float32, 1 thread)
        the working set is 230 MB (measured with a fixed ``MALLOC_MMAP_THRESHOLD_``, which makes it repeatable)
        and the peak RSS with the default allocator read 246-391 MB over 18 fresh processes and 440 MB once:
        up to 1.9x. The estimate must cover the worst."""
        config = self.config
        elem = 2 if self.precision == "bfloat16" else 4
        # On top of its input, a transposed conv takes 3 x its output plus 1 x (float32) or 2 x (bfloat16) its input.
        conv_copies = 2 if elem == 2 else 1
        edges, channels = list(latent_edges), config.z_channels
        before = 4 * channels * math.prod(edges)                 # the float32 latent
        peak = 0
        for index, width in enumerate([*config.g_widths, config.n_channels]):
            last = index == len(config.g_widths)
            if last and config.output_layer in ("upsample", "upsample_conv"):
                break
            edges = [2 * e - 2 if not last else 2 * e - 4 for e in edges]
            after = elem * width * math.prod(edges)
            peak = max(peak, before + 3 * after + conv_copies * before)
            if not last:
                peak = max(peak, 3 * after)                      # AdaIN: its input and two temporaries
            before, channels = after, width
        n_out = config.n_channels
        if config.output_layer == "upsample":
            grid = n_out * math.prod(edges)                      # 1x1 logits on the last feature grid
            peak = max(peak, before + elem * grid + (2 * before if elem == 2 else 0))
            # x2 interpolation axis by axis in float32 (networks._upsample_axis): at the last axis its input
            # (4 x the grid), the scaled centre (4 x) and the output (8 x); then the cast back
            peak = max(peak, elem * grid + 4 * 16 * grid,
                       elem * grid + 4 * 8 * grid + (2 * 8 * grid if elem == 2 else 0))
            edges = [2 * e for e in edges]                       # the 2-voxel crop is a view
        elif config.output_layer == "upsample_conv":
            fine = 8 * math.prod(edges)                          # voxels of the x2 feature grid
            # float32 copy of the features, their x2 interpolation in float32 and its cast back; then the 3x3x3
            # conv's output beside its input (not measured: counted like a transposed conv's, 3 x its output)
            peak = max(peak, before + 4 * channels * math.prod(edges) + 4 * channels * fine
                       + elem * channels * fine)
            peak = max(peak, elem * channels * fine + 3 * elem * n_out * fine)
            edges = [2 * e for e in edges]                       # the 1-voxel crop is a view
        voxels = math.prod(edges)
        logits = elem * n_out * voxels
        if probabilities or self.image_type != "n-phase":
            finish = logits + (4 * n_out * voxels if elem == 2 else 0) + 4 * n_out * voxels
        else:
            finish = logits + 11 * voxels                        # the channel-wise argmax's temporaries
        return int(2 * max(peak, finish))

    def memory_needed(self, shape, periodic: bool = False, max_tile_voxels: int = 40_000_000,
                      probabilities: bool = False, streamed: bool = False, slab_bytes: int | None = None) -> int:
        """Estimated peak bytes to generate a volume of ``shape`` (D, H, W): latent + output array + the
        larger of the statistics-window pass and one pass (or tile). ``streamed`` (:meth:`generate_tiles`): one
        tile's output instead of the whole array, or with ``slab_bytes`` one slab of whole planes.
        Arithmetic only; nothing is allocated."""
        vpl = self.voxels_per_latent
        edges = self._latent_edges(shape, periodic)
        if periodic:
            edges = [e + 2 * HALO + 2 for e in edges]
        latent = 4 * self.config.z_channels * math.prod(edges) * (2 if periodic else 1)
        window = self._stats_window(edges)
        window_pass = 0 if window is None else self._pass_bytes([w.stop - w.start for w in window], False)
        core = self._plan(edges, shape, max_tile_voxels, self._slab_voxels(slab_bytes) if streamed else None)
        if core is None:
            pass_edges = edges
        else:
            pass_edges = [math.ceil(c / vpl) + 2 + 2 * HALO for c in core]
        held = list(shape) if core is None else core
        if not streamed:
            held = shape
        elif slab_bytes is not None:
            held = (held[0], shape[1], shape[2])
        output = self._output_bytes_per_voxel(probabilities) * math.prod(held)
        if self.device.type == "cpu":
            working = max(window_pass, self._pass_bytes(pass_edges, probabilities))
        else:   # the passes run in GPU memory; the host holds one pass's result on its way to the output
            pass_voxels = math.prod(Generator.output_edge(e, self.config) for e in pass_edges)
            working = self._output_bytes_per_voxel(probabilities) * pass_voxels
        return latent + output + working


def argmax_channels(scores: torch.Tensor) -> torch.Tensor:
    """argmax over the first axis of (C, ...) as uint8 (...), e.g. (C, D, H, W) -> (D, H, W); the first of equal
    maxima, as ``argmax`` takes. Element-wise passes over the C
    channels: ~10x faster on the CPU than ``argmax(0)``, whose reduction strides across whole channels."""
    best = scores[0].clone()
    index = torch.zeros(best.shape, dtype=torch.uint8, device=scores.device)
    for channel in range(1, scores.shape[0]):
        better = scores[channel] > best
        best = torch.maximum(best, scores[channel])
        index.masked_fill_(better, channel)
    return index


def load_model(path: str | Path, device: str = "auto", precision: str = "auto", threads: int | str = "auto") -> Model:
    """Load a model directory (``model.safetensors`` + ``model.json``), or a shipped model by name
    (``"default"``). ``threads``: CPU threads for generating: "auto" (the cores other processes leave free,
    re-read before each volume; at most ``OMP_NUM_THREADS`` when that is set), a number, or None (torch's).

    >>> model = load_model("models/default")                              # doctest: +SKIP
    >>> volume = model.generate({"alpha": 0.35}, seed=7, shape=(64, 64, 64))  # doctest: +SKIP
    """
    path = resolve_model_path(path)        # "default" -> the shipped default model, from any directory
    config, weights, info = read_model(path)
    return Model(config, weights, info, device=device, precision=precision, path=str(path), threads=threads)
