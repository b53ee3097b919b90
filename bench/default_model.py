"""Recipe of the shipped default model (models/default): regenerate the data, train, export.

    python bench/default_model.py data   [--out runs/default_data]        # 3 synthetic volumes + truth
    python bench/default_model.py train  [--run runs/default]              # the staged recipe; background-friendly
    python bench/default_model.py train  --run runs/x --steps N --set FIELD=JSON   # an experiment
    python bench/default_model.py train  --auto-precision    # float32 where bfloat16 is slow (no AVX-512 BF16)
    python bench/default_model.py export [--run runs/default]              # copy the run's model to models/default
    python bench/default_model.py export --run runs/default --calibrate    # ... and calibrate it for match

The generator sees only 2D slices of the three volumes (SliceGAN); the 3D volumes stay ground truth.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from slicegan_core.data import DatasetSpec  # noqa: E402
from slicegan_core.synthetic import synthesize  # noqa: E402

# The seed's experiment: identical volumes except the width of the log-normal grain-size distribution.
RECIPE = {
    "sigmas": [0.15, 0.35, 0.60],        # alpha = ln(sigma_g) of each training volume
    "held_out_sigmas": [0.25, 0.475],    # truth only, never trained on
    "shape": [160, 160, 160],
    "median_esd": 8.0,                   # voxels: a 64-voxel patch shows ~8 grains across
    "phase_fractions": [0.35, 0.35, 0.30],
    "periodic": True,
    "seeds": {"0.15": 101, "0.35": 102, "0.6": 103, "0.25": 104, "0.475": 105},
}
# Recipes: training settings on top of the "cpu" preset (which averages the generator's weights, ema_decay
# 0.999) and stages (train up to this step, training changes from the stage's start); see
# docs/default-model.md for how they were chosen. Each pins island_penalty (0 in stage 1), augment (off),
# patch_edges ("inside") and fraction_calibration (off): the preset's automatic per-phase weight, its flips and
# turns of real patches, its mirrored edges and its fraction calibration came after these recipes.
RECIPES = {
    # v2. Its settings pin what the cpu preset then did: the generator step saw the critic's
    # 4 slices per axis and the critic took one real patch per fake slice (16) with the penalty on all 16.
    # The jitter rose to 0.3 when a branch at step 2,330 showed it interpolates between the trained alphas
    # far better; threads rose to 2 when the run had the machine to itself (speed only). A further stage at
    # lr 2e-4 (to 7,243) measured worse and is not part of the recipe.
    "v2": {"overrides": dict(island_penalty=0.0, augment=False, patch_edges="inside", fraction_calibration=False, checkpoint_every=100, log_every=20, bf16=True, threads=1, attr_jitter=0.1,
                             output_layer="upsample", generator_slices_per_axis=4, real_patches_per_axis=16,
                             penalty_pairs_per_axis=16),
           "schedule": [(2330, {}), (4000, {"attr_jitter": 0.3}), (5795, {"threads": 2})]},
    # v3 (issue "Clean structure"): the generator step sees all 64 slices per axis and the critic 16
    # (short screening runs: fewer small islands at equal steps), real patches and penalty pairs per axis =
    # batch size (the seed's rule, now the preset's default), both cores from the start.
    "v3": {"overrides": dict(island_penalty=0.0, augment=False, patch_edges="inside", fraction_calibration=False, checkpoint_every=100, log_every=20, bf16=True, threads=2, attr_jitter=0.1,
                             slices_per_axis=16, generator_slices_per_axis=64),
           "schedule": [(2000, {}), (4500, {"attr_jitter": 0.3})]},
    # v4 (issue "Clean structure"): v3, then 1,500 steps with a direct penalty on one-voxel islands,
    # seen through softmax(logits / 4) so that confident islands still get a gradient (weight 10: a 400-step
    # screen of weights 1 / 3 / 10 from v3's end cut the raw generator's islands most at 10, chords held). The
    # weight average needs ~1,000 steps to follow, hence 1,500. The stage ran at 1 thread beside other work.
    "v4": {"overrides": dict(island_penalty=0.0, augment=False, patch_edges="inside", fraction_calibration=False, checkpoint_every=100, log_every=20, bf16=True, threads=2, attr_jitter=0.1,
                             slices_per_axis=16, generator_slices_per_axis=64),
           "schedule": [(2000, {}), (4500, {"attr_jitter": 0.3}),
                        (6000, {"island_penalty": 10.0, "island_temperature": 4.0, "threads": 1})]},
}
# v5 (issue "Clean structure"): v4's branch of v3 with the penalty weighted by alpha, 10 at alpha 0.15 down
# to 2 at 0.6 (the widest distribution really has small grains, which v4's uniform weight thinned), and
# counting two-voxel islands too (a fifth of the small islands). 2 threads.
def _v3_then(end: int, penalty_low: float) -> dict:
    """v3's recipe to step 4,500, then a stage to ``end`` with the alpha-weighted island penalty (one- and
    two-voxel islands, T = 4) from ``penalty_low`` at alpha 0.15 down to 2 at 0.6."""
    return {"overrides": dict(RECIPES["v3"]["overrides"]),
            "schedule": [*RECIPES["v3"]["schedule"],
                         (end, {"island_penalty": penalty_low, "island_penalty_high": 2.0, "island_max_voxels": 2,
                                "island_temperature": 4.0})]}


RECIPES["v5"] = _v3_then(6000, 10.0)
# v6, shipped: v5's penalty three times stronger at alpha 0.15 (30 down to 2 at 0.6) for 1,000 steps
# instead of 1,500 (the raw generator reaches its level within ~400 steps; the recipe then fits in ~60 minutes).
RECIPES["v6"] = _v3_then(5500, 30.0)
# Not shipped, a screen (issue "Grain-size distributions"): v6 with critics that see each slice with its two
# neighbours (critic_planes 3; the data are 3D stacks), threads as the machine allows.
RECIPES["v6-planes"] = {"overrides": {**RECIPES["v6"]["overrides"], "critic_planes": 3, "threads": "auto"},
                        "schedule": RECIPES["v6"]["schedule"]}
# The paper's widths (G 512-256-128-64, critic 64-128-256-512), batch 8, 5 critic steps, lr 1e-4 and all 64
# slices per axis for critic and generator, with this recipe's conditional critic, normalised code, upsample
# output, weight average and jitter schedule (the seed's unconditional critic does not steer). For a GPU.
RECIPES["paper-widths"] = {
    "preset": "paper",
    "overrides": dict(checkpoint_every=250, log_every=20, bf16=True, attr_jitter=0.1, ema_decay=0.999,
                      critic_conditioning="channel", code_normalisation="range", sigma_activation="softplus",
                      output_layer="upsample"),
    "schedule": [(2000, {}), (4500, {"attr_jitter": 0.3})]}
SHIPPED = "v6"


def warn_slow_bf16(overrides: dict) -> None:
    """One line on stderr when a recipe asks for bfloat16 on a CPU that only emulates it: on a 2-core AMD EPYC
    without AVX-512 the v6 recipe's first stage took 12-13 s a step in bfloat16 and 1.24 s in float32."""
    from slicegan_core.generate import pick_device
    from slicegan_core.train import resolve_bf16
    if overrides.get("bf16") and not resolve_bf16(None, pick_device(overrides.get("device", "auto"))):
        print("This CPU has no fast bfloat16 (AVX-512 BF16), which the recipe trains in: a step takes about 10x "
              "as long as in float32. Add --auto-precision to train in float32 here.", file=sys.stderr, flush=True)


def data_path(out: Path, sigma: float) -> Path:
    return out / f"synthetic_sigma{sigma:g}.npy"


def make_data(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for sigma in RECIPE["sigmas"] + RECIPE["held_out_sigmas"]:
        path = data_path(out, sigma)
        if not path.exists():
            volume = synthesize(shape=tuple(RECIPE["shape"]), sigma=sigma, median_esd=RECIPE["median_esd"],
                                phase_fractions=tuple(RECIPE["phase_fractions"]), periodic=RECIPE["periodic"],
                                seed=RECIPE["seeds"][f"{sigma:g}"])
            np.save(path, volume.labels)
            np.save(path.with_name(path.stem + "_grain_ids.npy"), volume.grain_ids)
            print(f"wrote {path}")
        paths.append(path)
    return paths


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("data", "train", "export"))
    parser.add_argument("--out", default="runs/default_data")
    parser.add_argument("--run", default="runs/default")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--auto-precision", action="store_true",
                        help="train: bfloat16 only where it is fast (CUDA, CPUs with AVX-512 BF16), float32 elsewhere, "
                             "in every stage (the shipped model was trained in bfloat16)")
    parser.add_argument("--set", action="append", default=[], help="FIELD=VALUE overrides (JSON values)")
    parser.add_argument("--recipe", default=SHIPPED, choices=sorted(RECIPES),
                        help=f"train: which recipe (default {SHIPPED}, the shipped model's)")
    parser.add_argument("--target", default="models/default", help="export: model directory to write")
    parser.add_argument("--report", help="export: report.json of bench/report_default_model.py to embed")
    parser.add_argument("--report-name", help="export: which model of the report (default: the first)")
    parser.add_argument("--snapshot", help="export: a copy of the run's model/ taken at an earlier step")
    parser.add_argument("--calibrate", action="store_true",
                        help="export: then calibrate the exported model for match (python -m slicegan_core calibrate)")
    args = parser.parse_args(argv)
    data_dir = Path(args.out)
    if args.action == "data":
        make_data(data_dir)
    elif args.action == "train":
        from slicegan_core.train import checkpoint_step, resume, train
        make_data(data_dir)
        run = Path(args.run)
        settings = {}
        for item in args.set:
            key, _, value = item.partition("=")
            settings[key] = json.loads(value)
            if isinstance(settings[key], list):
                settings[key] = tuple(settings[key])
        recipe = RECIPES[args.recipe]
        precision = {"bf16": None} if args.auto_precision else {}   # every stage's, unlike --set
        if not args.auto_precision:
            warn_slow_bf16({**recipe["overrides"], **settings})
        if settings or args.steps:        # an experiment: one stage with these settings
            stages = [(args.steps or recipe["schedule"][-1][0], settings)]
        else:                              # the recipe's stages
            stages = recipe["schedule"]
        for end, changes in stages:
            if not (run / "config.json").exists():
                specs = [DatasetSpec(paths=(str(data_path(data_dir, s)),), attrs={"alpha": s})
                         for s in RECIPE["sigmas"]]
                train(specs, run, preset_name=recipe.get("preset", "cpu"), model_info={"recipe": RECIPE},
                      **{**recipe["overrides"], **changes, **precision, "steps": end})
            elif checkpoint_step(run) < end:
                resume(run, steps=end, **changes, **precision)   # changes: settings from the checkpoint on
            else:
                continue                           # a stage done before: its status is not this call's
            if json.loads((run / "status.json").read_text())["state"] != "finished":
                return                             # stopped (SIGTERM): run the same command again to go on
    else:
        export(Path(args.run), Path(args.target), Path(args.report) if args.report else None, args.report_name,
               Path(args.snapshot) if args.snapshot else None)
        if args.calibrate:
            from slicegan_core.calibrate import calibrate_model_dir
            calibrate_model_dir(Path(args.target))
            print(f"calibrated {args.target}")


def export(run_dir: Path, target: Path, report: Path | None, report_name: str | None,
           snapshot: Path | None = None):
    """Write ``target`` (atomically replaced) from the run's last checkpoint, rebuilt with the current code so
    the model card follows the current format, or from ``snapshot``: a copy of the run's ``model/`` taken at an
    earlier step (the run's later stages did not improve on it). Adds the training history up to the model's
    step and the measured fidelity summary of ``report``."""
    from slicegan_core.modelfile import read_model, save_model
    from slicegan_core.networks import Generator
    from slicegan_core.train import Run

    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    if snapshot is None:
        run = Run(run_dir, json.loads((run_dir / "config.json").read_text()))
        run.restore()
        run.export_model(staging)
        source = staging
    else:
        source = snapshot
    config, weights, info = read_model(source)
    generator = Generator(config)
    generator.load_state_dict(weights)
    step = info["training"]["steps"]
    history = json.loads((run_dir / "config.json").read_text()).get("history", [])
    info["training"]["history"] = [h for h in history if h["at_step"] < step]
    if report is not None:
        results = json.loads(report.read_text())
        chosen = results[report_name] if report_name else next(iter(results.values()))
        info["fidelity"] = {"report": "docs/default-model.md", "verdict": chosen["verdict"],
                            "table": chosen["fidelity"],
                            "steering_summary": chosen["steering"]["summary"]}
    for key in ("format_version", "package_version", "architecture", "image_type"):
        info.pop(key, None)
    # A calibration carries over only if it was measured on these very weights (the run's model/ or the
    # snapshot, calibrated with `python -m slicegan_core calibrate`); otherwise recalibrate (--calibrate).
    from slicegan_core.calibrate import weights_fingerprint
    measured = info.pop("calibration", None) or _calibration(snapshot or run_dir / "model")
    if measured and measured.get("weights") == weights_fingerprint(generator):
        info["calibration"] = measured
    elif measured:
        print("the calibration found was measured on other weights and is not carried over; recalibrate with "
              f"--calibrate or: python -m slicegan_core calibrate {target}")
    save_model(staging, generator, config, info)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    print(f"exported {snapshot or run_dir} (step {step}) -> {target}")


def _calibration(model_dir: Path) -> dict | None:
    path = Path(model_dir) / "model.json"
    return json.loads(path.read_text()).get("calibration") if path.is_file() else None


if __name__ == "__main__":
    main()
