"""A model is a directory: ``model.safetensors`` (generator weights) + ``model.json`` (everything else).

``model.json`` holds the architecture (:class:`ModelConfig`), image type, phase values and colours, attribute
names with their trained values and range, voxel size (micrometres), a description of the training data and
training metrics. Nothing is ever unpickled.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from . import __version__
from .config import ModelConfig, from_dict, to_dict
from .storage import atomic_write_text, load_meta, load_tensors, save_tensors

MODEL_FORMAT = 1
WEIGHTS_FILE = "model.safetensors"
INFO_FILE = "model.json"

# Colour-blind-safe defaults (Okabe-Ito), one per phase index.
DEFAULT_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def default_phases(phase_values) -> list[dict]:
    return [{"value": int(v), "name": f"phase {int(v)}", "colour": DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)]}
            for i, v in enumerate(phase_values)]


def save_model(directory: str | Path, generator: torch.nn.Module | dict, config: ModelConfig, info: dict) -> Path:
    """Write a model directory (weights, then JSON, each atomically); ``generator`` is the module or its
    state dict. ``info`` carries ``phases``,
    ``attributes`` ({name: {"trained_values": [...], "range": [lo, hi]}}), ``voxel_size_um``,
    ``training_data``, ``training`` and optional ``metrics`` / ``recipe``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    document = {"format_version": MODEL_FORMAT, "package_version": __version__,
                "architecture": to_dict(config), "image_type": config.image_type, **info}
    weights = generator if isinstance(generator, dict) else generator.state_dict()
    save_tensors(directory / WEIGHTS_FILE, weights, {"format_version": MODEL_FORMAT})
    atomic_write_text(directory / INFO_FILE, json.dumps(document, indent=2))
    return directory


def shipped_model_dirs() -> list[Path]:
    """Folders searched for a model given by name ("default"): ``SLICEGAN_MODELS_DIR`` if set, the package's
    own ``models/`` (an installed package ships the default model as package data), then a checkout's
    top-level ``models/``."""
    here = Path(__file__).resolve().parent
    folders = [Path(os.environ["SLICEGAN_MODELS_DIR"])] if os.environ.get("SLICEGAN_MODELS_DIR") else []
    return folders + [here / "models", here.parent / "models"]


def shipped_model_names() -> list[str]:
    """Names that :func:`resolve_model_path` resolves (models in :func:`shipped_model_dirs`), sorted."""
    names = set()
    for folder in shipped_model_dirs():
        if folder.is_dir():
            names.update(d.name for d in folder.iterdir() if (d / INFO_FILE).is_file())
    return sorted(names)


def resolve_model_path(path: str | Path) -> Path:
    """A model directory as given, or, for a bare name such as ``"default"`` that is not a directory here, the
    shipped model of that name (see :func:`shipped_model_dirs`)."""
    path = Path(path)
    if path.is_dir() or len(path.parts) != 1:
        return path
    for folder in shipped_model_dirs():
        if (folder / path.name / INFO_FILE).is_file():
            return folder / path.name
    return path


def read_model(directory: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], dict]:
    """Read a model directory -> (config, generator state_dict, model.json as a dict).

    Raises ValueError with one sentence when the directory, either file, or the format is wrong."""
    directory = Path(directory)
    if not directory.is_dir():
        names = shipped_model_names()
        shipped = f" or the name of a shipped model ({', '.join(names)})" if names else ""
        raise ValueError(f"Model directory {directory} does not exist; pass a folder holding "
                         f"{INFO_FILE} and {WEIGHTS_FILE} (a training run's model/ folder){shipped}.")
    info_path, weights_path = directory / INFO_FILE, directory / WEIGHTS_FILE
    if (directory / "config.json").is_file() and not info_path.is_file():
        model = directory / "model"
        hint = f"its model is {model}" if (model / INFO_FILE).is_file() else \
            "its model appears in its model/ folder at the first checkpoint"
        raise ValueError(f"{directory} is a training run, not a model; {hint}.")
    for path in (info_path, weights_path):
        if not path.is_file():
            raise ValueError(f"Model directory {directory} has no {path.name}; it is not a SliceGAN Studio model "
                             "(a training run's model appears after its first checkpoint).")
    try:
        info = json.loads(info_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{info_path} is not valid JSON ({error}).") from None
    except RecursionError:
        raise ValueError(f"{info_path} is nested too deeply to be a model card; re-export the model.") from None
    if not isinstance(info, dict):
        raise ValueError(f"{info_path} holds a JSON {type(info).__name__}, not a model card; re-export the model.")
    if info.get("format_version") != MODEL_FORMAT:
        raise ValueError(f"{info_path} has format_version {info.get('format_version')!r}; this version of "
                         f"SliceGAN Studio reads format {MODEL_FORMAT}.")
    try:
        config = from_dict(ModelConfig, info.get("architecture"))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{info_path} has an invalid architecture section ({error}).") from None
    problem = _card_problem(info, config)
    if problem:
        raise ValueError(f"{info_path} is damaged: {problem}.")
    load_meta(weights_path)                      # a header that fits its file, before anything else is read
    try:
        problem = _weights_problem(weights_path, config)
    except Exception as error:  # safetensors raises its own types for a damaged header
        problem = f"it could not be read ({error})"
    if problem:
        raise ValueError(f"The weights do not match the architecture in model.json ({weights_path}: {problem}); "
                         "re-export the model.")
    weights, _ = load_tensors(weights_path)
    bad = [name for name, tensor in weights.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise ValueError(f"{weights_path} holds NaN or infinite weights ({bad[0]}{' and others' if len(bad) > 1 else ''}); "
                         "the training run diverged: resume from an earlier checkpoint or train again.")
    return config, weights, info


def update_info(directory: str | Path, **fields) -> Path:
    """Set ``fields`` in ``directory/model.json`` (atomically; the weights are not touched)."""
    path = Path(directory) / INFO_FILE
    if not path.is_file():
        raise ValueError(f"{directory} has no {INFO_FILE}; pass a model directory.")
    info = json.loads(path.read_text())
    info.update(fields)
    atomic_write_text(path, json.dumps(info, indent=2))
    return path


def _card_problem(info: dict, config: ModelConfig) -> str | None:
    """What is wrong with the fields of model.json that the library reads besides the architecture."""
    phases = info.get("phases", [])
    if not isinstance(phases, list) or not all(
            isinstance(p, dict) and isinstance(p.get("value"), int) and not isinstance(p.get("value"), bool)
            and 0 <= p["value"] < 2**31
            and isinstance(p.get("name", ""), str) and isinstance(p.get("colour", "#000000"), str)
            for p in phases):
        return ("'phases' must be a list of {\"value\": integer from 0 to 2^31 - 1, \"name\": text, "
                "\"colour\": \"#RRGGBB\"}")
    values = [p["value"] for p in phases]
    if len(set(values)) != len(values):
        return f"'phases' repeats a value ({values})"
    if config.image_type == "n-phase" and phases and len(phases) != config.n_channels:
        return f"'phases' lists {len(phases)} phases but the architecture has {config.n_channels} channels"
    attributes = info.get("attributes", {})
    if not isinstance(attributes, dict) or not all(
            isinstance(a, dict) and isinstance(a.get("trained_values", []), list)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in a.get("trained_values", []))
            for a in attributes.values()):
        return "'attributes' must map each name to {\"trained_values\": [numbers], \"range\": [low, high]}"
    voxel = info.get("voxel_size_um")
    if voxel is not None and (isinstance(voxel, bool) or not isinstance(voxel, (int, float))
                              or not 0 < voxel < float("inf")):
        return f"'voxel_size_um' must be a positive number or null (got {voxel!r})"
    for key in ("training", "training_data", "metrics"):
        if not isinstance(info.get(key, {}), dict):
            return f"'{key}' must be a JSON object (got a {type(info[key]).__name__})"
    return None


def _weights_problem(weights_path: Path, config: ModelConfig) -> str | None:
    """Whether the weights file's tensors (names and shapes, from its header) are the ones ``config``'s
    generator has: checked on the meta device, so an absurd architecture allocates nothing."""
    from safetensors import safe_open
    from .networks import Generator
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in Generator(config).state_dict().items()}
    with safe_open(str(weights_path), "pt") as f:
        stored = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    if "phase_offset" not in stored:        # models written before the fraction calibration: zeros
        expected.pop("phase_offset", None)
    if set(stored) != set(expected):
        missing, extra = sorted(set(expected) - set(stored)), sorted(set(stored) - set(expected))
        return f"it does not hold this architecture's tensors (missing {missing[:3]}, unexpected {extra[:3]})"
    wrong = [name for name in expected if stored[name] != expected[name]]
    if wrong:
        return (f"its tensor {wrong[0]} has shape {list(stored[wrong[0]])} where the architecture in model.json "
                f"needs {list(expected[wrong[0]])}")
    return None
