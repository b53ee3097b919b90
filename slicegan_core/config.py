"""Typed configuration: what the networks look like and how a run trains.

Two small frozen dataclasses, saved as JSON next to every run (``config.json``) and inside every model
(``model.json``). Presets fill them; the CLI and the app override single fields.
"""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field

CONDITIONINGS = ("none", "channel", "projection")
OUTPUT_LAYERS = ("transposed", "upsample", "upsample_conv")
MAX_WIDTH = 4096        # channels of one layer; wider networks do not fit any GPU at 64^3
MAX_SEED = 2 ** 63 - 1  # what torch.manual_seed and numpy's generators accept


def _describe_type(annotation) -> str:
    return {int: "a whole number", float: "a number", str: "a text value", bool: "true or false"}.get(
        annotation, "a list of values")


def _type_error(annotation, value) -> bool:
    """True when ``value`` does not have the declared ``annotation`` (JSON-level types: bool is not a
    number, an int is a float, tuples hold their element type)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return all(_type_error(a, value) for a in args)
    if annotation is type(None):
        return value is not None
    if annotation is bool:
        return not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, bool) or not isinstance(value, int)
    if annotation is float:
        return isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
    if annotation is str:
        return not isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, tuple):
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return any(_type_error(args[0], v) for v in value)
        return len(value) != len(args) or any(_type_error(a, v) for a, v in zip(args, value))
    return False


def _check_types(config) -> None:
    """Refuse a field whose value is not of its declared type, with one sentence naming it."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if _type_error(hints[f.name], value):
            if f.name == "threads":     # int | str: the only union without None
                raise ValueError(f"threads must be 'auto' or a whole number of threads (got {value!r}).")
            optional = typing.get_origin(hints[f.name]) in (typing.Union, types.UnionType)
            base = [a for a in typing.get_args(hints[f.name]) if a is not type(None)][0] if optional \
                else hints[f.name]
            kind = _describe_type(base)
            if typing.get_origin(base) is tuple:
                inner = typing.get_args(base)[0]
                kind = f"a comma-separated list of {_describe_type(inner).removeprefix('a ')}s" \
                    if inner in (int, float, str) else "a list of (low, high) number pairs"
            none = " or null" if optional else ""
            raise ValueError(f"{f.name} must be {kind}{none} (got {value!r}).")


def _check_range(name: str, value, low=None, high=None, low_open=False, high_open=False) -> None:
    """Refuse ``value`` outside [low, high] (or the open ends), naming the field and the allowed range."""
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        left = "" if low is None else f"{'above' if low_open else 'at least'} {low}"
        right = "" if high is None else f"{'below' if high_open else 'at most'} {high}"
        raise ValueError(f"{name} must be {' and '.join(p for p in (left, right) if p)} (got {value!r}).")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the AdaIN-SliceGAN generator and its 2D critics.

    ``patch_size`` P is the edge of the training volume (P^3) and of the critics' 2D slices (P^2); it fixes the
    number of layers: ``log2(P) - 1`` transposed convs in G (4^3 latent -> P^3), the same number of convs in D.
    """

    image_type: str = "n-phase"               # "n-phase" | "grayscale" | "colour"
    n_channels: int = 3                       # phases (one-hot) or intensity channels
    attribute_names: tuple[str, ...] = ("alpha",)
    # Trained range of each attribute; the code fed to the MLP maps it to [-1, 1] when
    # code_normalisation == "range" (the seed used the raw value: "none").
    attribute_ranges: tuple[tuple[float, float], ...] = ((0.15, 0.60),)
    patch_size: int = 64
    z_channels: int = 16
    g_widths: tuple[int, ...] = (512, 256, 128, 64)
    d_widths: tuple[int, ...] = (64, 128, 256, 512)
    code_dim: int = 128                       # c = code * ones(code_dim) as in the seed
    mlp_width: int = 128
    mlp_layers: int = 4
    code_normalisation: str = "range"         # "range" | "none"
    sigma_activation: str = "softplus"        # "softplus" | "relu" (seed) keeps AdaIN's sigma_y >= 0
    critic_conditioning: str = "channel"      # "none" (seed) | "channel" | "projection"
    isotropic: bool = True                    # one critic shared by the x, y, z slices
    # Last generator layer: "transposed" (seed: ConvTranspose3d, kernel 4, stride 2) or "upsample" (a 1x1x1
    # conv to per-phase logits on the last feature grid, then trilinear x2 upsampling). Stride-2 transposed
    # convs can give the output a 2-voxel checkerboard; interpolated logits cannot. On the default model's
    # data it reached the chord statistics in about a quarter of the steps (docs/default-model.md). Same
    # output edge and reach, so tiling stays exact; training time about the same. "upsample_conv": the last
    # feature grid upsampled x2 (trilinear), then a 3x3x3 conv to the logits, so that the network, not a fixed
    # interpolation, places each voxel's logits (a screen, not a preset's: 2.3x the cpu preset's step time;
    # docs/default-model.md, "Open problems"). Same reach; tiling matches a single pass to float rounding.
    output_layer: str = "transposed"
    # What one critic input is: 1 = a 2D slice (SliceGAN); 3 = a slice with its two neighbours along the axis,
    # as 3 x C channels, for 3D-stack training data only (a 2D image has no neighbouring slices). A slice alone
    # cannot tell a grain's real tip, a blob that grows and shrinks from slice to slice, from a voxel that
    # hangs on a grain by an edge; its neighbours can.
    critic_planes: int = 1

    def __post_init__(self):
        _check_types(self)
        for name in ("n_channels", "z_channels", "code_dim", "mlp_width", "mlp_layers"):
            _check_range(name, getattr(self, name), 1, MAX_WIDTH)
        for name in ("g_widths", "d_widths"):
            for width in getattr(self, name):
                _check_range(f"every entry of {name}", width, 1, MAX_WIDTH)
        if self.image_type not in ("n-phase", "grayscale", "colour"):
            raise ValueError(f"image_type must be 'n-phase', 'grayscale' or 'colour' (got {self.image_type!r}).")
        if self.code_normalisation not in ("range", "none"):
            raise ValueError(f"code_normalisation must be 'range' or 'none' (got {self.code_normalisation!r}).")
        if self.sigma_activation not in ("softplus", "relu"):
            raise ValueError(f"sigma_activation must be 'softplus' or 'relu' (got {self.sigma_activation!r}).")
        for low, high in self.attribute_ranges:
            if low > high:
                raise ValueError(f"attribute_ranges must hold (low, high) pairs with low <= high "
                                 f"(got {self.attribute_ranges}).")
        n_layers = math.log2(self.patch_size) - 1
        if n_layers != int(n_layers) or n_layers < 3:
            raise ValueError(f"patch_size must be a power of two >= 16 (got {self.patch_size}); use 32, 64 or 128.")
        if len(self.g_widths) != self.n_layers - 1 or len(self.d_widths) != self.n_layers - 1:
            raise ValueError(
                f"patch_size {self.patch_size} needs {self.n_layers - 1} generator and critic widths "
                f"(got g_widths={list(self.g_widths)}, d_widths={list(self.d_widths)}).")
        if self.critic_conditioning not in CONDITIONINGS:
            raise ValueError(f"critic_conditioning must be one of {CONDITIONINGS} (got {self.critic_conditioning!r}).")
        if self.critic_planes not in (1, 3):
            raise ValueError(f"critic_planes must be 1 (2D slices) or 3 (a slice with its two neighbours; 3D-stack "
                             f"training data only), got {self.critic_planes!r}.")
        if self.output_layer not in OUTPUT_LAYERS:
            raise ValueError(f"output_layer must be one of {OUTPUT_LAYERS} (got {self.output_layer!r}).")
        if len(self.attribute_ranges) != len(self.attribute_names):
            raise ValueError("attribute_ranges needs one (low, high) pair per attribute name.")

    @property
    def n_layers(self) -> int:
        return int(math.log2(self.patch_size)) - 1

    @property
    def voxels_per_latent(self) -> int:
        """Voxels of output per latent cell along one axis (generator stride product)."""
        return 2 ** self.n_layers


@dataclass(frozen=True)
class TrainConfig:
    """How a run trains (WGAN-GP). Times are in generator steps; one step = ``critic_steps`` critic updates
    followed by one generator update."""

    steps: int = 4500
    batch_size: int = 8                       # fake volumes per critic / generator update
    critic_steps: int = 5
    lr_g: float = 1e-4
    lr_d: float = 1e-4
    beta1: float = 0.0
    beta2: float = 0.9
    gp_lambda: float = 10.0
    # Slices per axis cut from each fake volume for the critic; None = all patch_size slices (SliceGAN).
    slices_per_axis: int | None = None
    # Slices per axis for the generator step; None = the same as slices_per_axis. Every voxel lies in one
    # slice per axis, so with all slices every voxel receives the critics' gradient in every step; with 4 of
    # 64, 82 % of the voxels receive none.
    generator_slices_per_axis: int | None = None
    # Real patches per axis per critic step, and gradient-penalty pairs per axis; None = batch_size, the
    # seed's rule (it scores batch_size real patches per axis against all fake slices). Real patches are
    # drawn for a subset of the fake slices, spread over the fake volumes, with those slices' datasets and
    # attribute values, so a conditional critic sees matching pairs. Capped at the fake slices per axis;
    # penalty pairs at the real patches.
    real_patches_per_axis: int | None = None
    penalty_pairs_per_axis: int | None = None
    # bfloat16 autocast of the convs: None = on where bf16 is fast (CUDA, CPUs with AVX-512 BF16 / AMX); its
    # gradient error is a few % of the batch-to-batch gradient noise (bench/bench_precision.py).
    bf16: bool | None = None
    # Gaussian jitter of the attribute code (std, in normalised [-1, 1] units) given to G and the critic
    # for each fake volume and its matching real patches (vicinal training, as in CcGAN) so the map from
    # attribute to structure is learnt as a continuous one rather than three separate modes; 0 = off.
    attr_jitter: float = 0.0
    # Exponential moving average of the generator weights (decay per generator step); the average is what
    # the run exports and samples. WGAN generators trained at a high learning rate oscillate around a good
    # solution, and the oscillation shows as speckle; the average sits in the middle. 0 = off.
    ema_decay: float = 0.0
    # Weight of train.expected_islands (expected small phase islands per thousand voxels of the fake
    # volumes) in the generator's loss; n-phase only. 0 = off. None = automatic, per phase from the training
    # images' own small 2D islands (train.island_phase_weights): full where the data has no speckle, off where
    # it is full of real small features (with island_loss "margin": train.ISLAND_WEIGHT_MARGIN in the slices'
    # view).
    island_penalty: float | None = 0.0
    # Weight at the top of the first attribute's trained range, interpolated linearly from island_penalty at
    # the bottom; None = island_penalty at every value. Wide grain-size distributions really have small
    # grains, which a uniform weight also thins (docs/default-model.md).
    island_penalty_high: float | None = None
    # Largest island the penalty counts: 1 (single voxels) or 2 (also face-connected pairs), exactly
    # (train.expected_islands); 3-7: voxels of specks of up to that many voxels, from each voxel's 3x3x3
    # neighbourhood (train.expected_speck_voxels: a k-voxel speck counts k times).
    island_max_voxels: int = 1
    # What the penalty counts: "3d" islands of the volume, or "slices": one-pixel 2D islands of its slices
    # across each axis (also the cut ends of one-voxel-thin rods; island_max_voxels must then be 1).
    island_view: str = "3d"
    # The penalty sees softmax(logits / island_temperature): above 1 it reaches confident islands, whose
    # plain softmax gradient P(1 - P) vanishes.
    island_temperature: float = 1.0
    # How the penalty counts: "expected", the expected islands of softmax(logits / island_temperature) (its
    # gradient reaches every uncertain voxel and fades on confident islands), or "margin": the argmax volume's
    # own face-connected pieces of at most island_max_voxels voxels (pieces touching the volume's faces left
    # out), each voxel adding max(0, its logit margin + 1), the margin being its phase's logit minus the
    # runner-up's, so the gradient is the same on a confident speck as on an uncertain one and zero
    # everywhere else (train.speck_margins); with island_view "slices", the 2D pieces of at most
    # island_max_voxels pixels of the slices across each axis instead. "auto" (the cpu preset's): with the
    # automatic island_penalty, "margin" on the slices' pieces of up to 4 pixels where every phase of the
    # training images has some real small islands (at least train.ISLAND_MARGIN_FROM per million of its pixels),
    # else "expected" in island_view (train.resolve_island_loss; it sets view and piece size with the margin,
    # and keeps the expected count when island_view or island_max_voxels was set away from "3d" / 1).
    island_loss: str = "expected"
    # Steps over which the island penalty's weight rises linearly from 0 to full; 0 = full from the start.
    # A freshly initialised generator's output is all speckle, and a strong penalty on it can outweigh the
    # critics and settle the generator on stripes that have no islands (the slice count at weight 30 from
    # step 0 did so on the SOFC anode; docs/real-micrographs.md). None = automatic: ISLAND_WARMUP_SLICES
    # steps with island_view "slices", 0 with "3d" (which never did so in any measured case).
    island_warmup: int | None = None
    # Closed loop on the island penalty: at every checkpoint the run measures the current generator's small 2D
    # islands per phase as the fidelity monitor does (slicegan_core.fidelity) and multiplies that phase's
    # weight by train.ISLAND_FEEDBACK_STEP while they are above its allowance, or divides it while they are
    # below the training image's own (the penalty is then erasing real small features); within
    # train.ISLAND_FEEDBACK_RANGE of its starting weight. Needs fidelity_seeds >= 1; no effect when the penalty
    # is off. Off: it traded islands for surface on the SOFC anode (docs/real-micrographs.md).
    island_feedback: bool = False
    # Weight of train.fraction_error (each fake volume's phase fractions against its training image's,
    # relative to them) in the generator's loss; n-phase only. None = automatic: RARE_PHASE_WEIGHT when a phase
    # covers less than RARE_PHASE_SHARE of a training image (the critics alone let such a phase vanish), else
    # off. 0 = off. train.FRACTION_WEIGHT_FIT is what a fraction the critics alone miss needed.
    fraction_penalty: float | None = None
    # What the fraction penalty pulls: "volume", each fake volume's fractions (train.fraction_error; it also
    # squeezes the volumes' natural spread about the mean), or "running", the generator's running mean fraction
    # per training image (train.running_fraction_error: a bias only).
    fraction_scope: str = "volume"
    # Export each n-phase model with its phase-fraction calibration (slicegan_core.fractions): one offset per
    # phase on the output logits, set at every checkpoint so that the averaged generator's volumes hold the
    # training images' fractions. Training itself never sees it; the fidelity monitor measures the calibrated model.
    fraction_calibration: bool = False
    # Show the critics each real patch turned by a random flip or quarter turn (isotropic data only;
    # TrainingData.sample): one small training image then offers 8 times as many distinct patches.
    augment: bool = False
    # Where real patches may lie (TrainingData.sample): "inside" the image, or "mirror": up to half a patch
    # beyond its edges, mirrored, so that every pixel is seen equally often (on a small image "inside" shows
    # the critics its centre's phase fractions; docs/real-micrographs.md, "Volume fraction").
    patch_edges: str = "inside"
    checkpoint_every: int = 200               # generator steps
    log_every: int = 10
    # Generated volumes per dataset for the fidelity verdict at every checkpoint (slicegan_core.fidelity);
    # 0 = no verdict. Two patch-size volumes cost about as much as one or two training steps.
    fidelity_seeds: int = 2
    # Export the checkpoint with the lowest fidelity distance as model/ (True), or the latest (False). The
    # checkpoint itself, which resume continues from, is always the latest.
    export_best: bool = False
    seed: int = 0
    device: str = "auto"                      # "auto" | "cpu" | "cuda"
    # torch CPU threads: "auto" = the cores other processes leave free, re-checked as the run goes
    # (slicegan_core.threads); a number fixes it; 0 = torch's default.
    threads: int | str = "auto"

    def __post_init__(self):
        _check_types(self)
        for name in ("steps", "batch_size", "critic_steps", "checkpoint_every", "log_every"):
            _check_range(name, getattr(self, name), 1)
        for name in ("slices_per_axis", "generator_slices_per_axis", "real_patches_per_axis",
                     "penalty_pairs_per_axis"):
            if getattr(self, name) is not None:
                _check_range(name, getattr(self, name), 1)
        for name in ("lr_g", "lr_d", "island_temperature"):
            _check_range(name, getattr(self, name), 0, low_open=True)
        for name in ("beta1", "beta2", "ema_decay"):
            _check_range(name, getattr(self, name), 0, 1, high_open=True)
        for name in ("gp_lambda", "attr_jitter", "fidelity_seeds"):
            _check_range(name, getattr(self, name), 0)
        if isinstance(self.threads, str) and self.threads != "auto":
            raise ValueError(f"threads must be 'auto' or a number of threads (got {self.threads!r}).")
        if not isinstance(self.threads, str):
            _check_range("threads", self.threads, 0, 1024)
        for name in ("island_penalty", "island_penalty_high", "fraction_penalty", "island_warmup"):
            if getattr(self, name) is not None:
                _check_range(name, getattr(self, name), 0)
        _check_range("island_max_voxels", self.island_max_voxels, 1, 7)
        if self.island_feedback and not self.fidelity_seeds:
            raise ValueError("island_feedback reads the fidelity monitor's island counts; set fidelity_seeds to 1 "
                             "or more, or island_feedback to false.")
        if self.fraction_scope not in ("volume", "running"):
            raise ValueError(f"fraction_scope must be \"volume\" or \"running\", got {self.fraction_scope!r}.")
        if self.patch_edges not in ("inside", "mirror"):
            raise ValueError(f"patch_edges must be \"inside\" or \"mirror\", got {self.patch_edges!r}.")
        if self.island_view not in ("3d", "slices"):
            raise ValueError(f"island_view must be \"3d\" or \"slices\", got {self.island_view!r}.")
        if self.island_loss not in ("expected", "margin", "auto"):
            raise ValueError(f"island_loss must be \"expected\", \"margin\" or \"auto\", got {self.island_loss!r}.")
        if self.island_loss == "margin" and self.island_penalty is None and self.island_view != "slices":
            # the automatic margin weight was measured in the slices' view only (a SOFC anode); the 3D pieces'
            # count has another scale
            raise ValueError("island_loss \"margin\" with the automatic island_penalty (None) needs island_view "
                             "\"slices\"; in the \"3d\" view give island_penalty a number (0.067-1 were tried on "
                             "the default model's data).")
        if self.island_view == "slices" and self.island_max_voxels != 1 and self.island_loss != "margin":
            raise ValueError("island_view \"slices\" counts one-pixel islands; set island_max_voxels to 1 "
                             "(or island_loss \"margin\", which counts 2D pieces of up to island_max_voxels).")
        if self.island_penalty is None and self.island_penalty_high is not None:
            raise ValueError("island_penalty_high needs a number for island_penalty (its weight at the bottom of "
                             "the range); the automatic island_penalty (None) sets its weights from the data.")
        _check_range("seed", self.seed, 0, MAX_SEED)
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda' (got {self.device!r}).")
        real, pairs = self.real_patches_per_axis or self.batch_size, self.penalty_pairs_per_axis
        if pairs is not None and pairs > real:
            raise ValueError(f"penalty_pairs_per_axis ({pairs}) cannot exceed the real patches per axis ({real}); "
                             "raise real_patches_per_axis or lower penalty_pairs_per_axis.")


PRESETS: dict[str, tuple[dict, dict]] = {
    # Exactly the seed's configuration (Chung & Ye; SliceGAN): heavy, meant for a GPU.
    "paper": (dict(patch_size=64, z_channels=16, g_widths=(512, 256, 128, 64), d_widths=(64, 128, 256, 512),
                   code_normalisation="none", sigma_activation="relu", critic_conditioning="none"),
              dict(batch_size=8, critic_steps=5, lr_g=1e-4, lr_d=1e-4, slices_per_axis=None, steps=4500)),
    # Laptop preset: 8x narrower networks, a subset of slices per fake volume for the critic but all of them
    # for the generator step, conditional critic, a normalised code (the seed's raw alpha*ones gives the MLP
    # almost no signal over [0.15, 0.6]) and the upsample output layer (no stride-2 checkerboard). The last
    # two settings cut small phase islands (docs/default-model.md, "Clean structure"). The island penalty's
    # weights and what it counts come from the data, and the real patches are flipped and turned and may reach
    # past the image's edges, mirrored, so that the critics see the image's phase fractions; the exported
    # model's phase fractions are calibrated to the training images' (slicegan_core.fractions;
    # docs/real-micrographs.md).
    "cpu": (dict(patch_size=64, z_channels=16, g_widths=(128, 64, 32, 16), d_widths=(16, 32, 64, 128),
                 code_normalisation="range", sigma_activation="softplus", critic_conditioning="channel",
                 output_layer="upsample"),
            dict(batch_size=4, critic_steps=3, lr_g=5e-4, lr_d=5e-4, slices_per_axis=4,
                 generator_slices_per_axis=64, steps=3000,
                 checkpoint_every=100, ema_decay=0.999, island_penalty=None, island_temperature=4.0,
                 island_loss="auto", augment=True, patch_edges="mirror", fraction_calibration=True)),
    # For tests and smoke runs: 32^3 volumes, tiny widths; trains a step in well under a second.
    "tiny": (dict(patch_size=32, z_channels=8, g_widths=(32, 16, 8), d_widths=(8, 16, 32),
                  mlp_width=32, code_dim=32, critic_conditioning="channel"),
             dict(batch_size=2, critic_steps=2, lr_g=5e-4, lr_d=5e-4, slices_per_axis=4, steps=20,
                  checkpoint_every=5, log_every=1)),
}


# Training fields whose None is a setting of its own (automatic, all slices), not "not given": their type
# admits None (read as _check_types reads it).
NONE_MEANS_SOMETHING = frozenset(name for name, hint in typing.get_type_hints(TrainConfig).items()
                                 if type(None) in typing.get_args(hint))


def check_voxel_size(value, what: str = "voxel_size_um"):
    """``value`` (micrometres) if it is None or a finite number > 0, else a ValueError naming ``what``: a voxel
    size is checked where it enters, so no run or export carries one that generate and info would refuse."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{what} must be a positive, finite number of micrometres (got {value!r}).")
    return float(value)


def preset(name: str, **overrides) -> tuple[dict, dict]:
    """Return (model_fields, train_fields) of a named preset with ``overrides`` applied to either part. None
    sets a field whose None means something (``island_penalty`` None = automatic, ``slices_per_axis`` None =
    all slices) and leaves any other field at the preset's value (an option not given)."""
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}; choose one of {sorted(PRESETS)}.")
    model_fields, train_fields = (dict(part) for part in PRESETS[name])
    model_names = {f.name for f in dataclasses.fields(ModelConfig)}
    train_names = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in overrides.items():
        if value is None and key not in NONE_MEANS_SOMETHING:
            continue
        if key in model_names:
            model_fields[key] = value
        elif key in train_names:
            train_fields[key] = value
        else:
            raise ValueError(f"Unknown option {key!r}; it is neither a model nor a training setting.")
    return model_fields, train_fields


def to_dict(config) -> dict:
    """Dataclass -> JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(cls, data: dict):
    """JSON dict -> dataclass, turning lists back into tuples and ignoring unknown keys from newer versions.
    Raises ValueError (one sentence) when ``data`` is not a dict or a value is invalid."""
    if not isinstance(data, dict):
        raise ValueError(f"the {cls.__name__} section must be a JSON object, not {type(data).__name__}.")
    names = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in names:
            continue
        if isinstance(value, list):
            value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        values[key] = value
    return cls(**values)
