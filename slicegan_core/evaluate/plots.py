"""Plotly figures of the reports, built from the JSON report alone (so the app can redraw saved reports)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# plotly is imported inside the functions: training and generation (e.g. on a bare GPU machine) need no plotting.

_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
_MEASURE_TITLES = {"ln_esd_sigma": "sigma of ln(ESD)", "ln_esd_sigma_field": "sigma of ln(ESD), features >= 8 voxels",
                   "ln_chord_sigma": "sigma of ln(chord length)",
                   "ln_esd_median": "median of ln(ESD / um)", "vf": "volume fraction"}


def compare_figures(report: dict) -> dict[str, "go.Figure"]:
    """Figures of a compare report: ``s2`` (S2 curves), ``chords`` and ``sizes`` (ln-size histograms).

    One subplot per phase; real solid, generated dashed.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    phases = list(report["curves"])
    size_name = "ESD" if report.get("size_measure") == "esd" else "ECD (2D sections)"
    specs = {"s2": ("two-point correlation S2(r)", "r (um)", "S2"),
             "chords": ("chord lengths", "ln(chord / um)", "density"),
             "sizes": (f"feature sizes, {size_name}", f"ln({size_name.split()[0]} / um)", "density")}
    figures = {}
    for key, (title, xlabel, ylabel) in specs.items():
        fig = make_subplots(rows=1, cols=len(phases), subplot_titles=[f"phase {p}" for p in phases])
        for col, p in enumerate(phases, start=1):
            curves = report["curves"][p]
            if key == "s2":
                x = curves["s2"]["r"]
                pairs = (("real", curves["s2"]["real"]), ("generated", curves["s2"]["generated"]))
            else:
                hist = curves["ln_chord_hist" if key == "chords" else "ln_esd_hist"]
                edges = np.asarray(hist["edges"], dtype=float)
                x = (0.5 * (edges[1:] + edges[:-1])).tolist() if edges.size else []
                pairs = (("real", hist["real"]), ("generated", hist["generated"]))
            for name, y in pairs:
                fig.add_trace(go.Scatter(x=x, y=y, name=name, legendgroup=name, showlegend=col == 1,
                                         mode="lines", line={"color": _COLOURS[0 if name == "real" else 1],
                                                             "dash": "solid" if name == "real" else "dash"}),
                              row=1, col=col)
            fig.update_xaxes(title_text=xlabel, row=1, col=col)
        fig.update_yaxes(title_text=ylabel, row=1, col=1)
        fig.update_layout(title=f"{title}: real vs generated ({report['mode']})", template="plotly_white")
        figures[key] = fig
    return figures


def steering_figures(report: dict) -> dict[str, "go.Figure"]:
    """One figure per measure: commanded value vs measured median per phase with a band over seeds.

    The band is the min..max over seeds (light) and the quartiles (darker); the truth, when present, is drawn
    dotted with its own band; the trained range is shaded and trained values marked; for sigma of ln(ESD)
    the identity (measured = commanded) is drawn for reference.
    """
    import plotly.graph_objects as go
    values = report["values"]
    lo, hi = report["trained_range"]
    figures = {}
    for m in report["measures"]:
        fig = go.Figure()
        fig.add_vrect(x0=lo, x1=hi, fillcolor="grey", opacity=0.08, line_width=0, annotation_text="trained range",
                      annotation_position="top left")
        for i, (p, entry) in enumerate(report["phases"].items()):
            colour = _COLOURS[i % len(_COLOURS)]
            for src, dash in (("generated", "solid"), ("truth", "dot")):
                band = entry[m].get(src)
                if not band:
                    continue
                name = f"phase {p} {src}"
                for lower, upper, alpha in (("min", "max", 0.12), ("q25", "q75", 0.25)):
                    fig.add_trace(go.Scatter(x=values + values[::-1], y=_nan(band[upper]) + _nan(band[lower])[::-1],
                                             fill="toself", fillcolor=_rgba(colour, alpha), line={"width": 0},
                                             hoverinfo="skip", showlegend=False, legendgroup=name))
                fig.add_trace(go.Scatter(x=values, y=_nan(band["median"]), name=name, legendgroup=name,
                                         mode="lines+markers", line={"color": colour, "dash": dash}))
        if report["trained_values"]:
            for t in report["trained_values"]:
                fig.add_vline(x=t, line={"color": "grey", "dash": "dash", "width": 1})
        if m in ("ln_esd_sigma", "ln_esd_sigma_field"):
            fig.add_trace(go.Scatter(x=[values[0], values[-1]], y=[values[0], values[-1]], name="measured = commanded",
                                     mode="lines", line={"color": "black", "width": 1, "dash": "dash"}))
        fig.update_layout(title=f"steering {report['attribute']}: {_MEASURE_TITLES.get(m, m)} "
                                f"(median over {len(report['seeds'])} seeds; dashed lines: trained values)",
                          xaxis_title=f"commanded {report['attribute']}", yaxis_title=_MEASURE_TITLES.get(m, m),
                          template="plotly_white")
        figures[m] = fig
    return figures


def save_figures(figures: dict[str, "go.Figure"], folder, prefix: str) -> list[Path]:
    """Write each figure as ``folder/prefix_name.html`` (plotly.js written once next to them, offline)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures.items():
        path = folder / f"{prefix}_{name}.html"
        fig.write_html(path, include_plotlyjs="directory")
        paths.append(path)
    return paths


def _nan(values) -> list:
    return [None if v is None or (isinstance(v, float) and not np.isfinite(v)) else float(v) for v in values]


def _rgba(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
