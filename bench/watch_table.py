"""Markdown table of a run's monitoring history (runs/X/watch.jsonl, written by bench/watch_run.py).

    python bench/watch_table.py runs/default [runs/other ...]

One row per watched step: wall minutes of training, mean / std of ln(chord) per alpha, phase fractions at
alpha 0.15, islands per million voxels at 0.15 / 0.6 (under 20 voxels, phases pooled) and, where the watcher
recorded them, islands of at most 4 voxels per phase at 0.15 (generated, truth in the header).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ALPHAS = (0.15, 0.25, 0.35, 0.475, 0.6)


def wall_minutes(run: Path, step: int) -> float | None:
    """Training wall time at ``step`` from events.jsonl (the last event at or before it)."""
    best = None
    for line in (run / "events.jsonl").read_text().splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if event.get("step", 0) <= step:
            best = event["elapsed_s"] / 60
    return best


def table(run: Path) -> str:
    entries = [json.loads(line) for line in (run / "watch.jsonl").read_text().splitlines() if line.strip()]
    by_alpha = {r["alpha"]: r for r in entries[-1]["rows"]}
    truth = " ".join(f"{a:g}: {by_alpha[a]['truth_mean_ln_chord']} / {by_alpha[a]['truth_std_ln_chord']}"
                     for a in ALPHAS if by_alpha.get(a, {}).get("truth_mean_ln_chord") is not None)
    lines = [f"**{run}** (truth mean / std ln chord, {truth})", "",
             "| step | wall min | " + " | ".join(f"alpha {a:g}" for a in ALPHAS)
             + " | vf at 0.15 | islands/M 0.15 / 0.6 | <= 4 voxels/M at 0.15 |",
             "|---" * (len(ALPHAS) + 5) + "|"]
    for entry in entries:
        rows = {r["alpha"]: r for r in entry["rows"]}
        minutes = wall_minutes(run, entry["step"])
        cells = [f"{rows[a]['mean_ln_chord']:.2f} / {rows[a]['std_ln_chord']:.2f}" if a in rows else "" for a in ALPHAS]
        vf = " ".join(f"{v:.2f}".lstrip("0") for v in rows[0.15]["vf"])
        islands = " / ".join(str(rows[a].get("islands_per_million", "")) for a in (0.15, 0.6))
        small = " / ".join(str(v) for v in rows[0.15].get("small_islands") or [])
        lines.append(f"| {entry['step']} | {minutes:.0f} | " + " | ".join(cells) + f" | {vf} | {islands} | {small} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(Path(arg)) for arg in sys.argv[1:]))
