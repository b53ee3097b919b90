"""Command-line entry points ``evaluate`` and ``steering`` (called by ``python -m slicegan_core``).

Bad input raises ``ValueError`` with one sentence; the package CLI prints it as ``error: ...``.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from ..program import PROG   # the command's name (``slicegan`` when installed)
from ..metrics._checks import as_segmented
from ._report import write_json
from .compare import compare
from .plots import compare_figures, save_figures, steering_figures
from .steering import steering


class _Parser(argparse.ArgumentParser):
    """argparse that raises ValueError (one sentence) instead of printing usage and exiting with 2."""

    def error(self, message):
        raise ValueError(f"{self.prog}: {message} (see --help).")


def evaluate_main(argv=None) -> int:
    """``evaluate --real A --generated B [--json out.json] [--plots dir/]``: compare two label files."""
    parser = _Parser(prog=f"{PROG} evaluate",
                     description="Compare a generated label volume with real label data (.npy, .tif, .png). "
                                 "A 2D real image is compared with 2D slices of the generated volume.")
    parser.add_argument("--real", required=True, help="real labels: (H, W) image or (D, H, W) volume")
    parser.add_argument("--generated", required=True, help="generated labels: (D, H, W) volume")
    parser.add_argument("--json", help="write the report here (schema: docs/report-schema.md)")
    parser.add_argument("--plots", help="folder for HTML figures (S2, chord and size histograms)")
    parser.add_argument("--voxel-size", type=float, default=1.0, help="micrometres per voxel (default 1)")
    parser.add_argument("--phases", help="comma-separated phase values (default: all present)")
    parser.add_argument("--tortuosity", action="store_true", help="also compute tortuosity (slow)")
    parser.add_argument("--slices", type=int, default=8, help="slices per axis for 2D-vs-3D sizes (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    real, generated = load_labels(args.real, "--real"), load_labels(args.generated, "--generated")
    if args.phases is None:
        _check_shared_phases(real, generated)
    else:
        present = set(np.unique(real).tolist()) | set(np.unique(generated).tolist())
        absent = [p for p in _phase_list(args.phases) if p not in present]
        if absent:
            raise ValueError(f"--phases {args.phases} names {absent}, which neither volume holds (values present: "
                             f"{sorted(present)}); choose phases that are in at least one of them.")
    report = compare(real, generated, phases=_phase_list(args.phases), voxel_size=args.voxel_size,
                     tortuosity_factor=args.tortuosity, n_slices=args.slices, seed=args.seed,
                     progress=not args.quiet)
    report["real"]["source"], report["generated"]["source"] = str(args.real), str(args.generated)
    _outputs(report, args.json, args.plots, compare_figures, "compare")
    print(format_compare(report))
    return 0


def steering_main(argv=None) -> int:
    """``steering --model DIR --values 0.1:0.7:13 --seeds 4 [--json out.json] [--plots dir/]``."""
    parser = _Parser(prog=f"{PROG} steering",
                     description="Sweep one attribute of a model, generate several seeds per value, and measure "
                                 "sigma of ln(ESD) and of ln(chord) per phase (commanded vs measured).")
    parser.add_argument("--model", required=True, help="model folder (model.json + model.safetensors)")
    parser.add_argument("--attribute", help="attribute to sweep (default: the model's only attribute)")
    parser.add_argument("--values", required=True, help="start:stop:count (inclusive) or a comma list")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per value (default 4)")
    parser.add_argument("--shape", default="96", help="volume edge or DxHxW in voxels (default 96)")
    parser.add_argument("--truth", choices=("none", "synthetic"), default="none",
                        help="'synthetic': also measure the synthetic generator at sigma = value, with the "
                             "model recipe's median ESD and phase fractions (default none)")
    parser.add_argument("--json", help="write the report here (schema: docs/report-schema.md)")
    parser.add_argument("--plots", help="folder for HTML figures")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    from ..generate import load_model

    values = parse_values(args.values)
    shape = _parse_shape(args.shape)
    model = load_model(args.model, device=args.device)
    attribute = args.attribute
    if attribute is None:
        if len(model.attribute_names) != 1:
            raise ValueError(f"The model has attributes {list(model.attribute_names)}; choose one with --attribute.")
        attribute = model.attribute_names[0]
    truth = synthetic_truth(model, shape, values) if args.truth == "synthetic" else None
    report = steering(model, attribute, values, seeds=args.seeds, shape=shape, truth=truth,
                      progress=not args.quiet)
    report["model"] = str(args.model)
    _outputs(report, args.json, args.plots, steering_figures, "steering")
    print(format_steering(report))
    return 0


def load_labels(path, option: str) -> np.ndarray:
    """Read a label image/volume file (.npy, .tif/.tiff, .png) with the project's image reader."""
    from ..data import load_image

    if not Path(path).is_file():
        raise ValueError(f"{option} file '{path}' does not exist; check the path.")
    array = load_image(path)
    if array.ndim == 3 and array.shape[-1] == 3 and min(array.shape[:2]) > 8:
        raise ValueError(f"{option} '{path}' is a colour image; evaluate compares label (segmented) data.")
    if array.ndim not in (2, 3):
        raise ValueError(f"{option} '{path}' has shape {array.shape}; pass a 2D image or a 3D volume of labels.")
    return as_segmented(array, f"{option} '{path}'")


def _check_shared_phases(real: np.ndarray, generated: np.ndarray) -> None:
    """Refuse a pair whose phase values share nothing; warn about values present on one side only."""
    real_values, generated_values = set(np.unique(real).tolist()), set(np.unique(generated).tolist())
    shared = real_values & generated_values
    if 2 * len(shared) < len(real_values | generated_values):   # e.g. {0, 255} against {0, 1, 2}
        raise ValueError(f"--real has phase values {sorted(real_values)} and --generated {sorted(generated_values)}: "
                         f"{'no value is' if not shared else 'only ' + str(sorted(shared)) + ' is'} shared, so the "
                         "phases cannot be matched; relabel one file so that each phase has the same value in both, "
                         "or choose the values to compare with --phases.")
    for side, only in (("--real", real_values - generated_values), ("--generated", generated_values - real_values)):
        if only:
            print(f"warning: phase value(s) {sorted(only)} appear only in {side}; their rows compare with nothing.",
                  file=sys.stderr)


def parse_values(spec: str) -> list[float]:
    """``"0.1:0.7:13"`` -> 13 evenly spaced values from 0.1 to 0.7 inclusive; ``"0.1,0.3"`` -> a list."""
    try:
        if ":" in spec:
            start, stop, count = spec.split(":")
            count = int(count)
            if count < 1:
                raise ValueError
            values = np.linspace(float(start), float(stop), count).round(12).tolist()
        else:
            values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--values must be start:stop:count (e.g. 0.1:0.7:13) or a comma list, got {spec!r}.") \
            from None
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"--values must give at least one finite number, got {spec!r}.")
    return values


def synthetic_truth(model, shape, values):
    """truth(value, seed): the synthetic generator at sigma = value with the model recipe's grain settings."""
    from ..synthetic import synthesize

    if min(values) < 0:
        raise ValueError("--truth synthetic needs values >= 0 (they are the sigma of the synthetic generator).")
    recipe = (getattr(model, "info", None) or {}).get("recipe") or {}
    median_esd = float(recipe.get("median_esd", 8.0))
    fractions = tuple(recipe.get("phase_fractions", (0.35, 0.35, 0.30)))

    def truth(value: float, seed: int) -> np.ndarray:
        return synthesize(shape=shape, sigma=float(value), median_esd=median_esd, phase_fractions=fractions,
                          periodic=False, seed=10_000 + seed).labels

    return truth


def format_compare(report: dict) -> str:
    """A short text table of a compare report."""
    lines = [f"mode {report['mode']}; sizes are {report['size_measure'].upper()}; lengths in um",
             f"{'phase':>6} {'vf real':>8} {'vf gen':>8} {'max|dS2|':>9} {'W1 ln chord':>11} "
             f"{'sig lnESD real':>14} {'sig lnESD gen':>13}"]
    for p, e in report["phases"].items():
        lines.append(f"{p:>6} {_f(e['vf_real']):>8} {_f(e['vf_generated']):>8} {_f(e['s2_max_abs_diff']):>9} "
                     f"{_f(e['ln_chord_wasserstein']):>11} {_f(e['ln_esd_sigma_real']):>14} "
                     f"{_f(e['ln_esd_sigma_generated']):>13}")
    return "\n".join(lines)


def format_steering(report: dict) -> str:
    """A short text table of a steering report: Spearman rho and interpolation error per phase."""
    lines = [f"steering {report['attribute']} over {len(report['values'])} values x {len(report['seeds'])} seeds",
             f"{'phase':>6} {'measure':>18} {'spearman':>9} {'interp err vs trained':>22} {'vs truth':>9}"]
    for p, entry in report["phases"].items():
        for m in ("ln_esd_sigma", "ln_esd_sigma_field", "ln_chord_sigma"):
            e = entry[m]
            lines.append(f"{p:>6} {m:>18} {_f(e['spearman']):>9} {_f(e['interp_max_abs_error_vs_trained']):>22} "
                         f"{_f(e['interp_max_abs_error_vs_truth']):>9}")
    return "\n".join(lines)


def _outputs(report, json_path, plots_dir, figures, prefix) -> None:
    if json_path:
        write_json(report, json_path)
    if plots_dir:
        save_figures(figures(report), plots_dir, prefix)


def _phase_list(spec):
    if spec is None:
        return None
    try:
        return [int(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--phases must be comma-separated whole numbers, got {spec!r}.") from None


def _parse_shape(spec: str) -> tuple[int, int, int]:
    try:
        dims = [int(v) for v in spec.lower().replace(",", "x").split("x")]
    except ValueError:
        dims = []
    if len(dims) == 1:
        dims *= 3
    if len(dims) != 3 or min(dims) < 16:
        raise ValueError(f"--shape must be one edge or DxHxW, each at least 16 voxels, got {spec!r}.")
    return tuple(dims)


def _f(value) -> str:
    return "-" if value is None else f"{value:.3f}"
