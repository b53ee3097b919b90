"""Command line: ``python -m slicegan_core {synth,train,resume,generate,info,evaluate,steering,calibrate,match}
--help``.

Bad user input prints one line (``error: ...``) and exits with status 2; it never shows a traceback.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from .config import check_voxel_size
from .program import PROG


def _shape(text: str) -> tuple[int, int, int]:
    """'128' -> (128, 128, 128); '128x96x64' -> (128, 96, 64)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must look like 128 or 128x128x64 (got {text!r})") from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"shape must be one or three positive integers (got {text!r})")
    return tuple(values)


def _attrs(text: str) -> dict[str, float]:
    """'alpha=0.35,beta=2' -> {'alpha': 0.35, 'beta': 2.0}."""
    out = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"attributes must look like alpha=0.35 (got {text!r})")
    return out


def _value(text: str):
    """Parse a --set value: int, float, bool, comma list or string."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if "," in text:
        return tuple(_value(t) for t in text.split(","))
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text




class _DefaultsFormatter(argparse.HelpFormatter):
    """--help states every option's default (unless its help already does)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default == argparse.SUPPRESS or \
                default == [] or isinstance(action, argparse._HelpAction):
            return text
        if isinstance(default, tuple) and len(set(default)) == 1:      # a cube shape (128, 128, 128) -> 128
            default = default[0]
        shown = f"{default:_}" if isinstance(default, int) and not isinstance(default, bool) else default
        return f"{text} (default: {shown})" if text else f"default: {shown}"


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are the CLI's one line (``error: ...``, status 2), not usage + message.
    Subcommand parsers inherit it (add_subparsers uses the parent's class)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _DefaultsFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG,
                     description="SliceGAN Studio: steerable 3D microstructures from 2D images.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="make a synthetic 3-phase grain volume (ground truth)")
    p.add_argument("--sigma", type=float, default=0.35, help="std of ln(grain ESD) = alpha (default 0.35)")
    p.add_argument("--median-esd", type=float, default=8.0, help="median grain ESD in voxels (default 8)")
    p.add_argument("--shape", type=_shape, default=(128, 128, 128), help="e.g. 160 or 160x160x160")
    p.add_argument("--fractions", default="0.35,0.35,0.30", help="phase volume fractions (default 0.35,0.35,0.30)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same volume")
    p.add_argument("--no-periodic", action="store_true", help="do not wrap grains across faces")
    p.add_argument("--out", required=True, help="output file .npy/.tif/.vti")
    p.add_argument("--grain-ids", help="also write the grain ids (.npy)")

    p = sub.add_parser("train", help="train a new model from 2D images or 3D stacks")
    p.add_argument("--data", action="append", required=True, metavar="PATH[,PATH,PATH]",
                   help="one image or 3D stack, or three comma-separated 2D views (x,y,z); repeat per dataset")
    p.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE[,...]",
                   help="attribute values of each --data, in the same order (e.g. alpha=0.35)")
    p.add_argument("--image-type", default="n-phase", choices=("n-phase", "grayscale", "colour"),
                   help="n-phase: segmented labels, one channel per phase")
    p.add_argument("--preset", default="cpu", help="cpu (laptop, default), paper (the seed's, GPU) or tiny")
    p.add_argument("--run-dir", required=True, help="new directory for this run")
    p.add_argument("--steps", type=int, help="generator steps (overrides the preset)")
    p.add_argument("--voxel-size", type=float, help="voxel edge in micrometres (default: a .dream3d file's spacing)")
    p.add_argument("--dream3d-array", metavar="CONTAINER/CellData/ARRAY",
                   help="cell array of the .dream3d data to train on (default: the first image container's Phases)")
    p.add_argument("--bf16", action="store_true",
                   help="bfloat16 autocast (the default where it is fast: CUDA, CPUs with AVX-512 BF16); "
                        "--set bf16=false forces float32")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default auto: CUDA when present")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override any model/training field, e.g. --set lr_g=2e-4 --set g_widths=64,32,16,8")
    p.add_argument("--calibrate", action="store_true",
                   help="when the run finishes, calibrate its model for match (see calibrate --help; off by default)")
    _add_nproc(p)

    p = sub.add_parser("resume", help="continue a run from its last checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--steps", type=int, help="new total number of generator steps")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="change a training setting from here on, e.g. --set threads=2 --set attr_jitter=0.3")
    _add_nproc(p)

    p = sub.add_parser("generate", help="generate a volume from a model")
    p.add_argument("--model", default="default",
                   help="model directory, or the name of a shipped model (default: default)")
    p.add_argument("--attr", type=_attrs, default=None, metavar="NAME=VALUE[,...]",
                   help="e.g. alpha=0.35 (default: the middle of each attribute's trained range)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same volume")
    p.add_argument("--shape", type=_shape, default=(128, 128, 128), help="e.g. 128 or 256x256x128")
    p.add_argument("--periodic", action="store_true", help="opposite faces continue into each other")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when present")
    p.add_argument("--max-tile-voxels", type=int, default=40_000_000, metavar="N",
                   help="generator output voxels per tile, which bounds the working memory (default 40000000; "
                        "the volume does not depend on it)")
    p.add_argument("--voxel-size", type=float, metavar="UM",
                   help="micrometres per voxel written to the file's metadata (default: the model's voxel size)")
    p.add_argument("--out", required=True,
                   help="output: .zarr (OME-Zarr), .tif (ImageJ; BigTIFF + OME above 4 GiB) or .npy, streamed tile "
                        "by tile so the volume may exceed memory (torchrun processes share a .zarr); or .vti "
                        "(ParaView) or .dream3d (DREAM3D 6, with an .xdmf that ParaView opens), built in memory")

    p = sub.add_parser("info", help="show a model's card")
    p.add_argument("model", nargs="?", default="default", help="model directory or shipped model name")
    p.add_argument("--json", action="store_true", help="print the card as JSON (for scripts)")

    p = sub.add_parser("verdict", help="measure a model against its training images (fidelity verdict); store it "
                                       "in the model's model.json")
    p.add_argument("model", help="model directory or shipped model name")
    p.add_argument("--data", action="append", required=True, metavar="PATH[,PATH,PATH]",
                   help="a training image or stack (or three views), as given to train; repeat per dataset")
    p.add_argument("--attr", action="append", default=[], metavar="NAME=VALUE[,...]",
                   help="attribute values of each --data, in the same order (e.g. alpha=0.35)")
    p.add_argument("--seeds", type=int, default=2, help="generated volumes per dataset (default 2)")
    p.add_argument("--no-write", action="store_true", help="print the verdict only; leave model.json as it is")

    p = sub.add_parser("calibrate", help="measure how each attribute changes 2D-slice statistics; store it in "
                                         "the model's model.json (needed by match)")
    p.add_argument("model", nargs="?", default="default", help="model directory or shipped model name")
    p.add_argument("--values", type=int, default=10, help="values per attribute over its trained range (default 10)")
    p.add_argument("--seeds", type=int, default=6, help="volumes per value (default 6)")
    p.add_argument("--tile", type=int, default=128, help="slice (tile) edge in pixels (default 128)")
    p.add_argument("--slices", type=int, default=4, help="tiles per axis of each volume (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("match", help="find the attribute value whose slices look like a segmented image")
    p.add_argument("--model", default="default", help="model directory or shipped model name (default: default)")
    p.add_argument("--image", required=True, help="segmented 2D image or 3D stack (.png .tif .npy ...)")
    p.add_argument("--json", help="write the result here")
    p.add_argument("--pixel-size", type=float,
                   help="micrometres per pixel of the image (default: the model's voxel size)")
    p.add_argument("--statistics", default=None, metavar="NAME[,NAME]",
                   help="statistics the distance uses (default ln_chord_mean,ln_chord_sigma,ln_ecd_sigma; "
                        "ln_chord_sigma,ln_ecd_sigma do not depend on the pixel size)")
    p.add_argument("--no-confirm", action="store_true", help="skip generating a volume at the match")
    p.add_argument("--seed", type=int, default=100, help="seed of the confirming volume (default 100)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when present")

    sub.add_parser("evaluate", help="compare a generated volume with real data (see evaluate --help)",
                   add_help=False)
    sub.add_parser("steering", help="measure how an attribute steers a model (see steering --help)",
                   add_help=False)
    return parser


def _add_nproc(parser):
    parser.add_argument("--nproc", type=int, metavar="N",
                        help="train with N processes on this machine, one per GPU (or N CPU processes), by starting "
                             "torchrun; batch_size stays the whole batch and must be divisible by N")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("evaluate", "steering"):
        from .evaluate import evaluate_main, steering_main
        entry = evaluate_main if argv[0] == "evaluate" else steering_main
        return _guard(lambda: entry(argv[1:]))
    args = build_parser().parse_args(argv)
    if getattr(args, "nproc", None) is not None:
        status = _guard(lambda: _start_processes(args, argv))
        if status:
            return status
    return _guard(lambda: COMMANDS[args.command](args))


def _guard(action) -> int:
    """Run a command; user errors become one line on stderr and exit status 2."""
    try:
        result = action()
        return int(result or 0)
    except (ValueError, argparse.ArgumentTypeError, OSError) as error:
        if isinstance(error, OSError):      # read-only folder, full disk, missing file: one sentence, the path
            from .storage import os_error_sentence
            error = os_error_sentence(error, error.filename or "a file", action="use")
            # zarr writes through asyncio: after a failed write its unfinished tasks are collected at exit, and
            # asyncio would log "Task was destroyed but it is pending!" for each under the sentence.
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        from .launch import ERROR_FILE
        if os.environ.get(ERROR_FILE) and "RANK" in os.environ:   # started by --nproc: the launch prints one
            try:
                Path(f"{os.environ[ERROR_FILE]}.{int(os.environ['RANK'])}").write_text(str(error))
                return 2
            except (OSError, ValueError):
                pass
        if _first_process():   # under plain torchrun every process has the same error; one line is enough
            print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _first_process() -> bool:
    """False in the processes torchrun started after the first (RANK > 0)."""
    return os.environ.get("RANK", "0") == "0"


def _start_processes(args, argv: list[str]) -> int:
    """``--nproc N``: replace this process by torchrun starting N processes of the same command (same pid, so
    whoever started this command can signal it), after checking that the batch splits into N shares. Returns
    0 to go on in this process (N = 1, or already one of torchrun's processes)."""
    from .distributed import check_processes, torchrun_command, under_torchrun
    from .train import check_batch_split

    processes = check_processes(args.nproc)
    if under_torchrun():
        started = int(os.environ.get("WORLD_SIZE", "1"))
        if processes != started:
            raise ValueError(f"--nproc {processes} was given to a command that torchrun started {started} times; "
                             "drop --nproc or make it match.")
        return 0
    if processes == 1:
        return 0
    if args.command == "train":
        from .config import preset
        check_voxel_size(args.voxel_size, "--voxel-size")   # before N processes start, not in each of them
        model_fields, train_fields = preset(args.preset, **_train_overrides(args))
        check_batch_split(train_fields, model_fields["patch_size"], processes, model_fields.get("critic_planes", 1))
    else:
        from .train import read_run_config
        config = read_run_config(args.run_dir)
        train_fields = {**config["train"], **_settings(args.set)}
        check_batch_split(train_fields, config["model"]["patch_size"], processes,
                          config["model"].get("critic_planes", 1))
    sys.stdout.flush()
    sys.stderr.flush()
    command = torchrun_command(processes, _without_nproc(argv))
    os.execv(command[0], command)
    return 0   # not reached


def _without_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` (or ``--nproc=N``, or an abbreviation such as ``--np N``): torchrun's own
    parser would take it for its ``--nproc-per-node``."""
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if len(name) >= 3 and name.startswith("--n") and "--nproc".startswith(name):
            skip = "=" not in token
            continue
        kept.append(token)
    return kept


def cmd_synth(args) -> int:
    from .export import FORMATS, save_volume
    from .storage import check_writable
    from .synthetic import synthesize

    for option, out in (("--out", args.out), ("--grain-ids", args.grain_ids)):   # both checked before either is written
        if out is not None:
            if Path(out).suffix.lower() not in FORMATS:
                raise ValueError(f"{option} must end in {', '.join(FORMATS)} (got {out!r}).")
            check_writable(out, f"{out}.json")

    try:
        fractions = tuple(float(f) for f in args.fractions.split(","))
    except ValueError:
        raise ValueError(f"--fractions must be numbers separated by commas, such as 0.35,0.35,0.30 "
                         f"(got {args.fractions!r}).") from None
    volume = synthesize(shape=args.shape, sigma=args.sigma, median_esd=args.median_esd,
                        phase_fractions=fractions, periodic=not args.no_periodic, seed=args.seed)
    if args.grain_ids:      # first: the format can still refuse ids that do not fit, before --out is written
        save_volume(args.grain_ids, volume.grain_ids, provenance={"synthetic_recipe": volume.recipe})
    save_volume(args.out, volume.labels, provenance={"synthetic_recipe": volume.recipe})
    print(f"wrote {args.out}: {volume.labels.shape}, {volume.grain_phase.size} grains")
    return 0


def cmd_train(args) -> int:
    from .data import DatasetSpec
    from .train import train

    if args.attr and len(args.attr) != len(args.data):
        raise ValueError(f"Give one --attr per --data (got {len(args.data)} --data and {len(args.attr)} --attr).")
    attrs = [_attrs(a) for a in args.attr] if args.attr else [{} for _ in args.data]
    from .dream3d import ARRAY_SEPARATOR, isotropic_voxel_size, read_spacing
    def named(path: str) -> str:   # a .dream3d path carries the chosen array after '#'
        if args.dream3d_array and path.lower().endswith(".dream3d"):
            return f"{path}{ARRAY_SEPARATOR}{args.dream3d_array}"
        return path
    specs = [DatasetSpec(paths=tuple(named(p) for p in d.split(",") if p), attrs=a) for d, a in zip(args.data, attrs)]
    check_voxel_size(args.voxel_size, "--voxel-size")
    if args.voxel_size is None:
        dream3d = [p for spec in specs for p in spec.paths if ".dream3d" in p.lower()]
        if dream3d:
            args.voxel_size = isotropic_voxel_size(read_spacing(dream3d[0]), f"DREAM3D file '{dream3d[0]}'")
    run_dir = train(specs, args.run_dir, preset_name=args.preset, image_type=args.image_type,
                    voxel_size_um=args.voxel_size, calibrate=args.calibrate, **_train_overrides(args))
    if _first_process():
        print(_outcome(run_dir))
    return 0


def _train_overrides(args) -> dict:
    """The model/training fields that train's --set, --steps, --device and --bf16 change."""
    overrides = _settings(args.set)
    # Flags override --set only when given (an absent flag is None, which the preset ignores anyway, but it
    # must not replace a --set bf16=false).
    overrides.update({k: v for k, v in dict(steps=args.steps, device=args.device,
                                             bf16=True if args.bf16 else None).items() if v is not None})
    return overrides


def _outcome(run_dir) -> str:
    """One line: how the run ended (status.json) and where its model is, or how to go on."""
    status = json.loads((Path(run_dir) / "status.json").read_text())
    where = f"model in {Path(run_dir) / 'model'}"
    if status["state"] == "stopped":
        return (f"run stopped at step {status['step']} of {status['steps']}: {run_dir} ({where}; "
                f"continue with: {PROG} resume {run_dir})")
    return f"run {status['state']} at step {status['step']}: {run_dir} ({where})"


def _settings(items: list[str]) -> dict:
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set needs FIELD=VALUE (got {item!r}).")
        settings[key.strip()] = _value(value.strip())
    return settings


def cmd_resume(args) -> int:
    from .train import resume

    run_dir = resume(args.run_dir, steps=args.steps, **_settings(args.set))
    if _first_process():
        print(_outcome(run_dir))
    return 0


def cmd_generate(args) -> int:
    from .export import provenance, save_volume
    from .generate import load_model
    from .stream import STREAMED

    suffix = Path(args.out).suffix.lower()
    if suffix not in (*STREAMED, ".vti", ".dream3d"):
        raise ValueError(f"--out must end in .zarr, .tif, .npy, .vti or .dream3d (got {args.out!r}).")
    if suffix != ".zarr" and Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a directory; give a file name such as {Path(args.out) / 'volume.tif'}.")
    check_voxel_size(args.voxel_size, "--voxel-size")
    if suffix in STREAMED:
        return _generate_streamed(args)
    model = load_model(args.model, device=args.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = model.generate(args.attr, seed=args.seed, shape=args.shape, periodic=args.periodic,
                                max_tile_voxels=args.max_tile_voxels, progress=True)
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    attrs = model._check_attrs(args.attr)
    save_volume(args.out, volume, model.voxel_size_um if args.voxel_size is None else args.voxel_size,
                provenance(model, attrs, args.seed, args.shape, args.periodic))
    print(f"wrote {args.out}: {_described(attrs, args)}, shape {volume.shape}, {volume.dtype}")
    return 0


def _described(attrs: dict, args) -> str:
    """'alpha = 0.375 (middle of the trained range: no --attr given), seed 0' for the line after a write."""
    values = ", ".join(f"{name} = {value:g}" for name, value in attrs.items())
    note = " (the middle of the trained range, as no --attr was given)" if attrs and not args.attr else ""
    return f"{values}{note}, seed {args.seed}" if values else f"seed {args.seed}"


def _generate_streamed(args) -> int:
    """generate --out .zarr/.tif/.npy: tile by tile into the file (slicegan_core.stream); under torchrun the
    processes share the tiles of a .zarr."""
    from .distributed import joined
    from .generate import load_model

    with joined() as ranks:
        model = load_model(args.model, device=args.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = model.generate_to(args.out, args.attr, seed=args.seed, shape=args.shape, periodic=args.periodic,
                                     max_tile_voxels=args.max_tile_voxels, progress=True,
                                     voxel_size_um=args.voxel_size)
    if ranks.main:
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        sidecar = json.loads(path.with_name(path.name + ".json").read_text())
        print(f"wrote {args.out}: {sidecar['format']}, {_described(sidecar['attrs'], args)}, shape "
              f"{tuple(sidecar['shape'])}, {sidecar['dtype']}")
    return 0


def cmd_info(args) -> int:
    from .generate import load_model

    model = load_model(args.model)
    card = {"model": args.model, "image_type": model.image_type, "phases": model.phases,
            "attributes": {n: {"trained_values": model.trained_values[n], "range": model.trained_range[n]}
                           for n in model.attribute_names},
            "voxel_size_um": model.voxel_size_um, "patch_size": model.config.patch_size,
            "training": model.info.get("training", {}).get("steps"),
            "training_wall_time_s": model.info.get("training", {}).get("wall_time_s"),
            "fraction_calibration": model.info.get("fraction_calibration")}
    from .fidelity import banner
    level, text = banner(model.info.get("verdict"), model.info.get("training"))
    card["verdict"] = {"result": level, "summary": text}
    if args.json:
        print(json.dumps(card, indent=2))
        return 0
    voxel = f"{model.voxel_size_um:g} um" if model.voxel_size_um else "unknown (lengths are in voxels)"
    lines = [f"model       {model.path}", f"image type  {model.image_type}, patch {model.config.patch_size} px",
             f"voxel size  {voxel}"]
    if model.phases:
        lines.append("phases      " + ", ".join(f"{p['value']} ({p['name']})" for p in model.phases))
    for name in model.attribute_names:
        low, high = model.trained_range[name]
        trained = ", ".join(f"{v:g}" for v in model.trained_values[name])
        lines.append(f"{name:<11} trained at {trained}; range {low:g} to {high:g}")
    training = model.info.get("training") or {}
    if training.get("steps") is not None:
        hours = (training.get("wall_time_s") or 0) / 3600
        lines.append(f"training    {training['steps']} steps, {hours:.1f} h")
    calibration = model.info.get("fraction_calibration")
    if isinstance(calibration, dict) and isinstance(calibration.get("phase_offset"), list):
        lines.append("fractions   calibrated to the training images' (phase offsets on the logits: "
                     + ", ".join(f"{x:+.3g}" for x in calibration["phase_offset"] if isinstance(x, (int, float))) + ")")
    lines.append(f"verdict     {text}")
    print("\n".join(lines))
    return 0


def cmd_verdict(args) -> int:
    from .data import DatasetSpec
    from .fidelity import verdict, summary_line

    if args.attr and len(args.attr) != len(args.data):
        raise ValueError(f"Give one --attr per --data (got {len(args.data)} --data and {len(args.attr)} --attr).")
    if isinstance(args.seeds, bool) or args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1 (got {args.seeds}).")
    attrs = [_attrs(a) for a in args.attr] if args.attr else [{} for _ in args.data]
    specs = [DatasetSpec(paths=tuple(p for p in d.split(",") if p), attrs=a) for d, a in zip(args.data, attrs)]
    card = verdict(args.model, specs, seeds=args.seeds, write=not args.no_write)
    for dataset in card["datasets"]:
        label = ", ".join(f"{k} = {v:g}" for k, v in dataset["attrs"].items()) or "data"
        print(f"{label}: distance {dataset['distance']}, {'pass' if dataset['pass'] else 'FAIL'}")
        print(f"  {'phase':>5} {'statistic':<11} {'training':>10} {'generated':>10}  error/tolerance")
        for phase, row in dataset["phases"].items():
            for name, entry in row.items():
                ref = entry.get("training", "")
                gen = entry.get("generated", entry.get("max_abs_difference", ""))
                print(f"  {phase:>5} {name:<11} {ref if ref is not None else '-':>10} {gen if gen is not None else '-':>10}"
                      f"  {entry.get('error_over_tolerance', '')} {'ok' if entry['pass'] else 'FAIL'}")
    print(summary_line(card) + ("" if args.no_write else " (written to model.json)"))
    return 0


def cmd_calibrate(args) -> int:
    from .calibrate import calibrate_model_dir
    from .modelfile import resolve_model_path

    calibration = calibrate_model_dir(args.model, progress=not args.quiet, values=args.values, seeds=args.seeds,
                                      tile=args.tile, slices_per_axis=args.slices)
    ranges = ", ".join(f"{n} {min(a['values']):g} to {max(a['values']):g}" for n, a in calibration["attributes"].items())
    print(f"calibrated {resolve_model_path(args.model)} ({ranges}; {calibration['seeds']} seeds, "
          f"{calibration['tile']}² tiles, {calibration['seconds']:.0f} s): written to its model.json")
    return 0


def cmd_match(args) -> int:
    from .generate import load_model
    from .match import FIT_STATISTICS, format_match, load_micrograph, match

    image = load_micrograph(args.image)      # before the model: a bad image fails fast
    model = load_model(args.model, device=args.device)
    statistics = tuple(s.strip() for s in args.statistics.split(",") if s.strip()) if args.statistics \
        else FIT_STATISTICS
    result = match(model, image, pixel_size=args.pixel_size, statistics=statistics, confirm=not args.no_confirm,
                   seed=args.seed)
    result.pop("generated_slice", None)
    result.pop("image_slice", None)
    result.pop("image_tile", None)
    result.update(model=str(args.model), source=str(args.image))
    if args.json:
        from .evaluate import write_json
        write_json(result, args.json)
    print(format_match(result))
    return 0


COMMANDS = {"synth": cmd_synth, "train": cmd_train, "resume": cmd_resume, "generate": cmd_generate,
            "info": cmd_info, "calibrate": cmd_calibrate, "match": cmd_match, "verdict": cmd_verdict}
