"""Fidelity and steering report of trained models against the synthetic truth (issue: default model).

    python bench/report_default_model.py --model conditional=models/default [--model other=runs/x/model ...]
        [--seeds 8] [--size 128] [--steer-seeds 4] [--steer-size 96] [--out docs/default-model]

Writes <out>/report.json, <out>/steering.png and prints markdown tables (pasted into docs/default-model.md).
Truth: the recipe's synthetic volumes (bench/default_model.py data) at the trained and held-out alphas; for
the steering sweep, fresh synthetic volumes at every commanded alpha, measured by the same pipeline.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from slicegan_core import load_model, synthesize  # noqa: E402
from slicegan_core.evaluate import compare, steering, write_json  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_model import RECIPE, data_path, make_data  # noqa: E402

# Goals of the issue "Clean structure" (ESD sigma, fractions, S2 and islands), of the first default-model
# issue (chord sigma) and of the issue "Grain-size distributions" (the field measure: ESD sigma of the features
# of at least 8 voxels; the share of features under that size at most twice the truth's).
GOALS = {"vf": 0.015, "s2": 0.015, "esd_trained": 0.05, "esd_held_out": 0.07, "sigma_trained": 0.03,
         "sigma_held_out": 0.05, "islands_factor": 1.5, "islands_offset": 20.0,
         "esd_field_trained": 0.03, "esd_field_held_out": 0.05, "small_share_factor": 2.0}
ISLAND_SEEDS, ISLAND_SIZE = 3, 96     # islands: 3 seeds of 96^3 per trained alpha against 96^3 truth crops


def islands(model, data_dir: Path, seeds: int = ISLAND_SEEDS, size: int = ISLAND_SIZE) -> list[dict]:
    """Small islands (metrics.island_density: <= 4 voxels, face-connected, per million voxels) per trained
    alpha and phase: mean over ``seeds`` generated size^3 volumes against the mean over as many size^3 crops
    of the truth (pieces cut by the faces count on both sides)."""
    from slicegan_core.metrics import island_density
    rows = []
    for alpha in RECIPE["sigmas"]:
        truth = np.load(data_path(data_dir, alpha))
        corners = np.linspace(0, truth.shape[0] - size, seeds).astype(int)
        truth_density = [island_density(truth[c:c + size, c:c + size, c:c + size], [0, 1, 2]) for c in corners]
        generated = []
        for seed in range(seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                generated.append(island_density(model.generate({"alpha": alpha}, seed=seed, shape=(size,) * 3),
                                                [0, 1, 2]))
        for phase in (0, 1, 2):
            rows.append({"alpha": alpha, "phase": phase,
                         "truth": float(np.mean([d[phase] for d in truth_density])),
                         "generated": float(np.mean([d[phase] for d in generated]))})
    return rows


def fidelity(model, data_dir: Path, seeds: int, size: int) -> list[dict]:
    """Per alpha (trained + held out) and phase: mean over seeds of the compare() distances to the truth."""
    rows = []
    for alpha in sorted(RECIPE["sigmas"] + RECIPE["held_out_sigmas"]):
        truth = np.load(data_path(data_dir, alpha))
        reports = []
        for seed in range(seeds):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                volume = model.generate({"alpha": alpha}, seed=seed, shape=(size,) * 3)
            reports.append(compare(truth, volume, phases=[0, 1, 2], n_boot=0))
        for phase in ("0", "1", "2"):
            entries = [r["phases"][phase] for r in reports]
            mean = lambda key: float(np.nanmean([e[key] for e in entries]))  # noqa: E731
            rows.append({"alpha": alpha, "held_out": alpha in RECIPE["held_out_sigmas"], "phase": int(phase),
                         "vf_abs_diff": float(np.mean([abs(e["vf_real"] - e["vf_generated"]) for e in entries])),
                         "s2_max_abs_diff": mean("s2_max_abs_diff"),
                         "ln_esd_sigma_real": mean("ln_esd_sigma_real"),
                         "ln_esd_sigma_generated": mean("ln_esd_sigma_generated"),
                         "ln_esd_sigma_field_real": mean("ln_esd_sigma_field_real"),
                         "ln_esd_sigma_field_generated": mean("ln_esd_sigma_field_generated"),
                         # share of the watershed features under the minimum size (ESD < 2.48 voxels)
                         "small_share_real": float(np.mean([e["n_small_features_real"] / e["n_features_real"]
                                                            for e in entries])),
                         "small_share_generated": float(np.mean([e["n_small_features_generated"]
                                                                 / e["n_features_generated"] for e in entries])),
                         "ln_chord_sigma_real": mean("ln_chord_sigma_real"),
                         "ln_chord_sigma_generated": mean("ln_chord_sigma_generated"),
                         "ln_chord_mean_real": float(np.log(mean("chord_mean_real"))),
                         "ln_chord_mean_generated": float(np.log(mean("chord_mean_generated")))})
    return rows


def verdicts(rows: list[dict], island_rows: list[dict] | None = None) -> dict:
    """Which fidelity goals hold, and the worst miss of each."""
    out = {}
    trained = [r for r in rows if not r["held_out"]]
    held = [r for r in rows if r["held_out"]]
    checks = {
        "vf (trained)": (max(r["vf_abs_diff"] for r in trained), GOALS["vf"]),
        "max abs dS2 (trained)": (max(r["s2_max_abs_diff"] for r in trained), GOALS["s2"]),
        "sigma ln ESD (trained)": (max(abs(r["ln_esd_sigma_generated"] - r["ln_esd_sigma_real"]) for r in trained),
                                   GOALS["esd_trained"]),
        "sigma ln chord (trained)": (max(abs(r["ln_chord_sigma_generated"] - r["ln_chord_sigma_real"])
                                         for r in trained), GOALS["sigma_trained"]),
        "sigma ln ESD (held out)": (max(abs(r["ln_esd_sigma_generated"] - r["ln_esd_sigma_real"]) for r in held),
                                    GOALS["esd_held_out"]),
        "sigma ln chord (held out)": (max(abs(r["ln_chord_sigma_generated"] - r["ln_chord_sigma_real"])
                                          for r in held), GOALS["sigma_held_out"]),
    }
    if all("ln_esd_sigma_field_real" in r for r in rows):      # reports made before the field measure lack it
        checks["sigma ln ESD, field measure (trained)"] = (
            max(abs(r["ln_esd_sigma_field_generated"] - r["ln_esd_sigma_field_real"]) for r in trained),
            GOALS["esd_field_trained"])
        checks["sigma ln ESD, field measure (held out)"] = (
            max(abs(r["ln_esd_sigma_field_generated"] - r["ln_esd_sigma_field_real"]) for r in held),
            GOALS["esd_field_held_out"])
        checks["small-feature share / truth's (trained)"] = (
            max(r["small_share_generated"] / max(r["small_share_real"], 1e-9) for r in trained),
            GOALS["small_share_factor"])
    if island_rows:
        # worst excess over the allowance 1.5 x truth + 20 (<= 0: met)
        checks["islands - (1.5 x truth + 20), per million"] = (
            max(r["generated"] - GOALS["islands_factor"] * r["truth"] - GOALS["islands_offset"] for r in island_rows),
            0.0)
    for name, (worst, goal) in checks.items():
        out[name] = {"worst": worst, "goal": goal, "met": bool(worst <= goal)}
    return out


def steering_sweep(model, seeds: int, size: int) -> dict:
    values = list(np.round(np.linspace(0.15, 0.6, 10), 4)) + [0.0, 0.05, 0.7, 0.8]

    def truth(value, seed):
        return synthesize(shape=(size,) * 3, sigma=value, median_esd=RECIPE["median_esd"],
                          phase_fractions=tuple(RECIPE["phase_fractions"]), periodic=False,
                          seed=5000 + seed).labels

    return steering(model, "alpha", values, seeds=seeds, shape=(size,) * 3, truth=truth, progress=False)


def in_range_spearman(report: dict) -> dict[str, list[float]]:
    """Per measure, per phase: Spearman of the seed medians over the commanded values inside [0.15, 0.6] only
    (the goal: 1.0), rounded to 3 decimals."""
    from scipy.stats import spearmanr
    values = np.array(report["values"])
    inside = (values >= min(RECIPE["sigmas"]) - 1e-9) & (values <= max(RECIPE["sigmas"]) + 1e-9)
    out = {}
    for measure in ("ln_esd_sigma", "ln_esd_sigma_field", "ln_chord_sigma"):
        if measure not in report.get("measures", ()):
            continue
        out[measure] = []
        for phase in sorted(report["phases"]):
            median = _floats([report["phases"][phase][measure]["generated"]["median"]])[0]
            out[measure].append(round(float(spearmanr(values[inside], median[inside]).statistic), 3))
    return out


def _floats(nested) -> np.ndarray:
    """JSON reports hold null for NaN: back to float arrays."""
    return np.array([[np.nan if v is None else v for v in row] for row in nested], dtype=float)


def plot(steerings: dict[str, dict], path: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("ln_esd_sigma", "sigma of ln(ESD), all watershed features")]
    if any("ln_esd_sigma_field" in r.get("measures", ()) for r in steerings.values()):
        panels.append(("ln_esd_sigma_field", "sigma of ln(ESD), features >= 8 voxels"))
    panels.append(("ln_chord_sigma", "sigma of ln(chord length)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2))
    for ax, (measure, label) in zip(axes, panels):
        truth_drawn = False
        for (name, report), colour in zip(steerings.items(), ("#0072B2", "#D55E00", "#009E73", "#CC79A7")):
            if measure not in report.get("measures", ()):        # an earlier report without this measure
                continue
            values = np.array(report["values"])
            # Pool phases: median over phases of the per-phase medians / bands.
            block = [report["phases"][p][measure] for p in report["phases"]]
            med = np.nanmedian(_floats([b["generated"]["median"] for b in block]), axis=0)
            low = np.nanmedian(_floats([b["generated"]["min"] for b in block]), axis=0)
            high = np.nanmedian(_floats([b["generated"]["max"] for b in block]), axis=0)
            ax.plot(values, med, "o-", color=colour, label=f"{name} (median over seeds)")
            ax.fill_between(values, low, high, color=colour, alpha=0.2)
            if not truth_drawn and block[0]["truth"] is not None:
                truth_med = np.nanmedian(_floats([b["truth"]["median"] for b in block]), axis=0)
                ax.plot(values, truth_med, "k--", label="synthetic truth (same measurement)")
                truth_drawn = True
        for t in RECIPE["sigmas"]:
            ax.axvline(t, color="grey", lw=0.6, ls=":")
        ax.axvspan(0.15, 0.6, color="grey", alpha=0.06)
        ax.set_xlabel("commanded alpha = ln(sigma_g)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle("Steering: commanded alpha vs measured width (band: min-max over seeds; dotted: trained)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(name: str, rows: list[dict], verdict: dict, report: dict, island_rows: list[dict] | None = None) -> str:
    field = all("ln_esd_sigma_field_real" in r for r in rows)
    lines = [f"### {name}", "", "| alpha | phase | abs dvf | max abs dS2 | sigma lnESD truth / gen | "
             + ("sigma lnESD >= 8 voxels truth / gen | features < 8 voxels truth / gen | " if field else "")
             + "sigma ln chord truth / gen | mean ln chord truth / gen |",
             "|---" * (9 if field else 7) + "|"]
    for r in rows:
        tag = " (held out)" if r["held_out"] else ""
        extra = (f"{r['ln_esd_sigma_field_real']:.3f} / {r['ln_esd_sigma_field_generated']:.3f} | "
                 f"{100 * r['small_share_real']:.1f} / {100 * r['small_share_generated']:.1f} % | ") if field else ""
        lines.append(f"| {r['alpha']:g}{tag} | {r['phase']} | {r['vf_abs_diff']:.3f} | {r['s2_max_abs_diff']:.3f} | "
                     f"{r['ln_esd_sigma_real']:.3f} / {r['ln_esd_sigma_generated']:.3f} | {extra}"
                     f"{r['ln_chord_sigma_real']:.3f} / {r['ln_chord_sigma_generated']:.3f} | "
                     f"{r['ln_chord_mean_real']:.3f} / {r['ln_chord_mean_generated']:.3f} |")
    if island_rows:
        lines += ["", f"Small islands per million voxels (<= 4 voxels, face-connected; {ISLAND_SEEDS} seeds of "
                      f"{ISLAND_SIZE}^3 against as many {ISLAND_SIZE}^3 truth crops), phases 0 / 1 / 2:", "",
                  "| alpha | truth | generated | allowance 1.5 x truth + 20 |", "|---|---|---|---|"]
        for alpha in RECIPE["sigmas"]:
            part = [r for r in island_rows if r["alpha"] == alpha]
            fmt = lambda key: " / ".join(f"{r[key]:.0f}" for r in part)  # noqa: E731
            allowance = " / ".join(f"{1.5 * r['truth'] + 20:.0f}" for r in part)
            lines.append(f"| {alpha:g} | {fmt('truth')} | {fmt('generated')} | {allowance} |")
    lines += ["", "| goal | worst | target | met |", "|---|---|---|---|"]
    for goal, v in verdict.items():
        lines.append(f"| {goal} | {v['worst']:.3f} | {v['goal']} | {'yes' if v['met'] else 'NO'} |")
    inside = in_range_spearman(report)
    lines += ["", "Steering monotonicity, Spearman of the seed medians over the 10 alphas in [0.15, 0.6] (goal 1.0), "
                  f"per phase 0 / 1 / 2: sigma ln ESD {' / '.join(map(str, inside['ln_esd_sigma']))}, "
                  + (f"field measure {' / '.join(map(str, inside['ln_esd_sigma_field']))}, "
                     if "ln_esd_sigma_field" in inside else "") +
                  f"sigma ln chord {' / '.join(map(str, inside['ln_chord_sigma']))}.", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", default=[], help="NAME=DIR")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steer-seeds", type=int, default=4)
    parser.add_argument("--steer-size", type=int, default=96)
    parser.add_argument("--data", default="runs/default_data")
    parser.add_argument("--out", default="docs/default-model")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--previous", action="append", default=[], metavar="NAME=REPORT_JSON",
                        help="add a model already measured in an earlier report.json (not re-measured) to the "
                             "plot and the output")
    args = parser.parse_args()
    if not args.model and not args.previous:
        parser.error("give at least one --model NAME=DIR or --previous NAME=REPORT_JSON")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    make_data(Path(args.data))
    results, steerings, text = {}, {}, []
    for item in args.model:
        name, _, directory = item.partition("=")
        model = load_model(directory)
        started = time.perf_counter()
        rows = fidelity(model, Path(args.data), args.seeds, args.size)
        island_rows = islands(model, Path(args.data))
        verdict = verdicts(rows, island_rows)
        report = steering_sweep(model, args.steer_seeds, args.steer_size)
        training = model.info.get("training", {})
        results[name] = {"model": directory, "training_steps": training.get("steps"),
                         "training_wall_time_s": training.get("wall_time_s"), "fidelity": rows,
                         "islands": island_rows,
                         "verdict": verdict, "steering": report,
                         "evaluation_seconds": time.perf_counter() - started}
        steerings[name] = report
        text.append(markdown(f"{name}: {directory} (steps {training.get('steps')}, "
                             f"{training.get('wall_time_s')} s of training)", rows, verdict, report, island_rows))
        print(text[-1], flush=True)
    for item in args.previous:
        name, _, path = item.partition("=")
        earlier = json.loads(Path(path).read_text())
        chosen = earlier[name] if name in earlier else next(iter(earlier.values()))
        results[name] = chosen
        steerings[name] = chosen["steering"]
        text.append(markdown(f"{name}: {chosen['model']} (steps {chosen['training_steps']}, "
                             f"{chosen['training_wall_time_s']} s of training; from {path})",
                             chosen["fidelity"], verdicts(chosen["fidelity"], chosen.get("islands")),
                             chosen["steering"], chosen.get("islands")))
        print(text[-1], flush=True)
    write_json(results, out / "report.json")
    plot(steerings, out / "steering.png")
    (out / "tables.md").write_text("\n".join(text))
    print(f"wrote {out}/report.json, steering.png, tables.md")


if __name__ == "__main__":
    main()
