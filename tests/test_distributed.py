"""Training over several processes (slicegan_core.distributed): 2 CPU ranks (gloo) against 1 process.

The equality test compares what a 5-step run computes, from its own sampling, with 1 process and with 2:
the random streams (bit for bit), the gradients of the whole batch (Adam's moments: with beta1 = 0 its first
moment is the last step's gradient, its second a decaying sum of every step's squared gradient) and the weights.
The learning rates are tiny there, on purpose: Adam divides each gradient by its own magnitude, so a parameter
whose true gradient is zero (e.g. the bias of a critic channel that is linear on every input: the WGAN loss is a
difference of means, and constants cancel) takes a step of +-lr decided by float rounding. Any change of
summation order, 2 threads instead of 1 included, then moves the weights apart by ~1e-3 within 5 steps at the
tiny preset's learning rate, whatever the code does. At lr 1e-9 those steps do not matter and the gradients
are compared where they are computed.

A 2-process run stopped by SIGTERM (through torchrun) and resumed by one process: tests/test_jobs.py.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from slicegan_core.distributed import BatchShare, Ranks
from slicegan_core.storage import load_tensors
from slicegan_core.train import lock_holder, train

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4
EQUALITY_SETTINGS = {"bf16": False, "threads": 1, "lr_g": 1e-9, "lr_d": 1e-9, "fidelity_seeds": 0}


def cli(*arguments: str) -> list[str]:
    """``python -m slicegan_core ARGUMENTS`` (``--nproc N`` runs torchrun inside it: slicegan_core.launch)."""
    return [sys.executable, "-m", "slicegan_core", *arguments]


def train_arguments(training_volumes, run_dir: Path, steps: int, settings: dict) -> list[str]:
    arguments = ["train", "--preset", "tiny", "--run-dir", str(run_dir), "--steps", str(steps)]
    for path, alpha in training_volumes:
        arguments += ["--data", str(path), "--attr", f"alpha={alpha}"]
    for key, value in settings.items():
        arguments += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    return arguments


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(command: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def event_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "events.jsonl").read_text().splitlines()]


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / a.double().norm()).item()


def flat(tensors: dict, prefix: str, suffix: str = "") -> torch.Tensor:
    return torch.cat([tensors[k].flatten() for k in sorted(tensors) if k.startswith(prefix) and k.endswith(suffix)])


# ---- the batch split -------------------------------------------------------------------------------------

def test_batch_shares_cover_the_batch_once_and_uneven_splits_are_refused():
    shares = [BatchShare.of(Ranks(r, 2), 4, 4, 8, 4) for r in range(2)]
    assert [s.volumes for s in shares] == [slice(0, 2), slice(2, 4)]
    assert sorted(sum((list(s.real_rows) for s in shares), [])) == list(range(8))   # every real patch once
    assert [list(s.penalty_rows) for s in shares] == [[0, 1], [2, 3]]                 # patch j is for volume j % 4
    one = BatchShare.of(Ranks(), 4, 4, 8, 4)
    assert one.volumes == slice(0, 4) and list(one.real_rows) == list(range(8))
    with pytest.raises(ValueError, match=r"batch_size \(3\) must be divisible by the number of processes \(2\)"):
        BatchShare.of(Ranks(0, 2), 3, 4, 3, 3)
    with pytest.raises(ValueError, match="multiples of batch_size"):
        BatchShare.of(Ranks(0, 2), 4, 4, 6, 4)


def test_nproc_that_does_not_divide_the_batch_is_one_error_line(training_volumes, tmp_path):
    command = cli(*train_arguments(training_volumes, tmp_path / "run", 2, {}), "--nproc", "3")
    done = subprocess.run(command, cwd=REPO, env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith("error: batch_size (2) must be divisible by the number of processes (3)")
    assert not (tmp_path / "run").exists()


# ---- one run, two processes --------------------------------------------------------------------------------

def test_two_ranks_compute_the_one_process_run_and_a_run_resumes_from_one_rank_to_two(training_volumes,
                                                                                     tiny_specs, tmp_path):
    one = train(tiny_specs, tmp_path / "one", preset_name="tiny", steps=5, **EQUALITY_SETTINGS)
    two = tmp_path / "two"
    run_cli(cli(*train_arguments(training_volumes, two, 5, EQUALITY_SETTINGS), "--nproc", "2"))
    assert status(two)["processes"] == 2 and status(two)["state"] == "finished"
    a, meta_a = load_tensors(one / "checkpoint.safetensors")
    b, meta_b = load_tensors(two / "checkpoint.safetensors")
    assert meta_b["processes"] == 2 and meta_a["step"] == meta_b["step"] == 5
    # the same draws: every rank drew the whole batch's randomness, and rank 0's state is the run's
    assert torch.equal(a["rng.torch"], b["rng.torch"]) and meta_a["rng_numpy"] == meta_b["rng_numpy"]
    # the same gradients of the whole batch: the last step's (exp_avg) and all five steps' squares (exp_avg_sq)
    control = train(tiny_specs, tmp_path / "control", preset_name="tiny", steps=5, seed=1, **EQUALITY_SETTINGS)
    c, _ = load_tensors(control / "checkpoint.safetensors")
    for prefix in ("opt_g.", "opt_d."):
        for moment in (".exp_avg", ".exp_avg_sq"):
            assert relative(flat(a, prefix, moment), flat(b, prefix, moment)) <= TOLERANCE
            assert relative(flat(a, prefix, moment), flat(c, prefix, moment)) > 100 * TOLERANCE  # other batches
    for prefix in ("G.", "D."):
        assert relative(flat(a, prefix), flat(b, prefix)) <= TOLERANCE
    assert event_steps(two) == event_steps(one) == [1, 2, 3, 4, 5]
    # the logged losses are the whole batch's, averaged over the ranks
    for x, y in zip(*(map(json.loads, (r / "events.jsonl").read_text().splitlines()) for r in (one, two))):
        assert x["loss_d"] == pytest.approx(y["loss_d"], rel=1e-4) and x["loss_g"] == pytest.approx(y["loss_g"], rel=1e-3)

    # stopped (finished) under 1 process, resumed under 2: the step count and the log go on
    run_cli(cli("resume", str(one), "--steps", "7", "--nproc", "2"))
    assert status(one)["state"] == "finished" and status(one)["step"] == 7 and status(one)["processes"] == 2
    assert event_steps(one) == list(range(1, 8)) and lock_holder(one) is None
