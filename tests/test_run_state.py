"""A resume never loses work: every damaged or missing piece of a run directory is found before anything in it
changes (config.json, events.jsonl, model/ stay byte for byte), and is reported in one sentence, exit 2.
In-process through the CLI's own entry point (the subprocess path is covered in test_bad_input.py)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from conftest import TRAINED_STEPS
from slicegan_core.cli import main
from slicegan_core.storage import META_KEY


def run_cli(argv) -> int:
    try:
        return main([str(a) for a in argv])
    except SystemExit as stop:
        return stop.code


@pytest.fixture
def run_copy(trained_run, tmp_path):
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def snapshot(run: Path) -> dict:
    """Every regular file of the run except its lock, by relative path -> bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != "run.lock"}


def rewrite_checkpoint_meta(run: Path, change) -> None:
    path = run / "checkpoint.safetensors"
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()[META_KEY])
    tensors = load_file(str(path))
    change(meta, tensors)
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})


def header_length(length: int):
    def damage(run: Path):
        path = run / "checkpoint.safetensors"
        data = path.read_bytes()
        path.write_bytes(length.to_bytes(8, "little") + data[8:])
    return damage


def _set(key, value):
    def damage(run):
        rewrite_checkpoint_meta(run, lambda meta, tensors: meta.__setitem__(key, value))
    return damage


def _drop(key):
    def damage(run):
        rewrite_checkpoint_meta(run, lambda meta, tensors: meta.pop(key))
    return damage


def _remove(name):
    return lambda run: (run / name).unlink()


def _make_directory(name):
    def damage(run):
        (run / name).unlink()
        (run / name).mkdir()
    return damage


def _truncate(run):
    path = run / "checkpoint.safetensors"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = [
    ("checkpoint missing beside a trained model", _remove("checkpoint.safetensors"), "overwrite it"),
    ("checkpoint step -5", _set("step", -5), "-5"),
    ("checkpoint step as text", _set("step", "four"), "'four'"),
    ("checkpoint without a step", _drop("step"), "None"),
    ("garbage numpy RNG state", _set("rng_numpy", {"bit_generator": "nope"}), "checkpoint.safetensors is damaged"),
    ("optimiser metadata missing", _drop("opt_g"), "checkpoint.safetensors is damaged"),
    ("checkpoint is a directory", _make_directory("checkpoint.safetensors"), "is not a file"),
    ("checkpoint truncated", _truncate, "truncated or corrupt"),
    ("header length 2^40", header_length(2**40), "header length"),
    ("header length 2^64 - 1", header_length(2**64 - 1), "header length"),
    ("events.jsonl is a directory", _make_directory("events.jsonl"), "events.jsonl is not a file"),
]


@pytest.mark.parametrize("damage, named", [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE])
def test_a_damaged_run_is_refused_before_anything_changes(damage, named, run_copy, capsys):
    damage(run_copy)
    before = snapshot(run_copy)
    status = run_cli(["resume", run_copy, "--steps", TRAINED_STEPS + 2])
    error = capsys.readouterr().err.strip()
    assert status == 2, error
    assert error.startswith("error: ") and "\n" not in error and named in error, error
    assert "Traceback" not in error
    assert snapshot(run_copy) == before          # config.json (steps, history), log and model untouched


def test_a_run_killed_before_its_first_checkpoint_starts_again_with_a_clean_log(run_copy, capsys):
    shutil.rmtree(run_copy / "model")
    (run_copy / "checkpoint.safetensors").unlink()
    assert run_cli(["resume", run_copy]) == 0, capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (run_copy / "events.jsonl").read_text().splitlines()]
    assert steps == list(range(1, TRAINED_STEPS + 1))      # one 1..N, not two


def test_damaged_log_lines_are_skipped_and_the_run_resumes(run_copy, capsys):
    with open(run_copy / "events.jsonl", "ab") as log:
        log.write(b'[1, 2, 3]\n{"step": "x"}\n\xff\xfe not utf-8\n')
    assert run_cli(["resume", run_copy, "--steps", TRAINED_STEPS + 1]) == 0, capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (run_copy / "events.jsonl").read_text().splitlines()]
    assert steps == list(range(1, TRAINED_STEPS + 2))
