"""Shared pieces of the JSON reports: schema version, JSON-safe numbers, log-size histograms."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

SCHEMA_VERSION = "1.1"
_HIST_BINS = 30


def json_safe(value):
    """Convert numpy scalars/arrays, tuples and non-finite floats (-> None) into plain JSON values."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return [json_safe(v) for v in value.tolist()]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_json(report: dict, path) -> Path:
    """Write a report as indented, strictly valid JSON (NaN/inf become null); returns the path."""
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ValueError(f"The folder of the JSON output '{path}' does not exist; create it or pick another path.")
    path.write_text(json.dumps(json_safe(report), indent=2, allow_nan=False) + "\n")
    return path


def log_histograms(real: np.ndarray, generated: np.ndarray) -> dict:
    """Densities of ln(size) of two samples on shared bin edges (for plots); empty lists if none."""
    logs = [np.log(np.asarray(x, dtype=float)) for x in (real, generated)]
    both = np.concatenate(logs)
    if both.size == 0:
        return {"edges": [], "real": [], "generated": []}
    lo, hi = float(both.min()), float(both.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, _HIST_BINS + 1)
    dens = [np.histogram(x, bins=edges, density=True)[0] if x.size else np.zeros(_HIST_BINS) for x in logs]
    return {"edges": edges, "real": dens[0], "generated": dens[1]}
