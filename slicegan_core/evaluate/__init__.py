"""Evaluation: compare generated microstructures with real data and measure how attributes steer a model.

- :func:`evaluate` -- the small public entry point: (generate from a model, then) compare with real data.
- :func:`compare` -- per-phase statistics and distances between real and generated labels (JSON report).
- :func:`steering` -- commanded attribute value vs measured statistics over seeds, with optional truth.
- :func:`compare_figures`, :func:`steering_figures`, :func:`save_figures` -- plotly figures of the reports.
- :func:`evaluate_main`, :func:`steering_main` -- the ``python -m slicegan_core evaluate|steering`` commands.

The report schema (``SCHEMA_VERSION``) is documented in docs/report-schema.md.
"""
from __future__ import annotations

from pathlib import Path

from ._report import SCHEMA_VERSION, write_json
from .cli import evaluate_main, load_labels, steering_main
from .compare import compare
from .plots import compare_figures, save_figures, steering_figures
from .steering import measure_volume, steering

__all__ = ["SCHEMA_VERSION", "evaluate", "compare", "steering", "measure_volume", "compare_figures",
           "steering_figures", "save_figures", "write_json", "evaluate_main", "steering_main"]


def evaluate(model_or_volume, real, *, attrs: dict | None = None, seed: int = 0, shape=(96, 96, 96),
             phases=None, voxel_size: float | None = None, tortuosity_factor: bool = False,
             progress: bool = False) -> dict:
    """Compare a model's output (or a given volume) with real label data; returns the compare report.

    With a model, one volume is generated (``attrs`` default to the middle of the trained range, non-periodic)
    and the report gains ``generated.attrs``, ``generated.seed``. Then :func:`compare` runs: a 3D real volume
    is compared in 3D, a 2D real image against 2D slices of the generated volume.

    Parameters
    ----------
    model_or_volume : Model or array_like of int, shape (D, H, W)
        A loaded model (anything with ``generate``) or a generated label volume.
    real : array_like of int or str or Path
        Real labels, (H, W) or (D, H, W), or a .npy/.tif/.png file holding them.
    attrs : dict, optional
        Attribute values for the model, e.g. ``{"alpha": 0.35}``.
    seed : int, default 0
        Generation seed.
    shape : tuple of 3 int, default (96, 96, 96)
        Generated shape (D, H, W) in voxels.
    phases : sequence of int, optional
        Phase values to compare; default all present.
    voxel_size : float, optional
        Micrometres per voxel; default the model's ``voxel_size_um`` or 1.0.
    tortuosity_factor : bool, default False
        Also compute tortuosity (slow).
    progress : bool, default False
        Show progress bars.

    Returns
    -------
    dict
        The compare report (docs/report-schema.md).

    Examples
    --------
    >>> from slicegan_core.synthetic import synthesize
    >>> real = synthesize(shape=(48, 48, 48), sigma=0.35, median_esd=6.0, seed=1).labels
    >>> fake = synthesize(shape=(48, 48, 48), sigma=0.35, median_esd=6.0, seed=2).labels
    >>> report = evaluate(fake, real)
    >>> report["schema_version"], report["phases"]["0"]["vf_abs_diff"] < 0.02
    ('1.1', True)
    """
    if isinstance(real, (str, Path)):
        real = load_labels(real, "real")
    if hasattr(model_or_volume, "generate"):
        model = model_or_volume
        if attrs is None:
            attrs = {name: sum(model.trained_range[name]) / 2 for name in model.attribute_names}
        volume = model.generate(attrs=attrs, seed=seed, shape=shape, periodic=False)
        if voxel_size is None:
            voxel_size = getattr(model, "voxel_size_um", None)
        report = compare(real, volume, phases=phases, voxel_size=voxel_size or 1.0,
                         tortuosity_factor=tortuosity_factor, progress=progress)
        report["generated"].update(attrs=attrs, seed=seed)
        return report
    return compare(real, model_or_volume, phases=phases, voxel_size=voxel_size or 1.0,
                   tortuosity_factor=tortuosity_factor, progress=progress)
