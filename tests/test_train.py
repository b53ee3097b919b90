"""Training runs: end to end, exact resume, surviving SIGTERM / SIGKILL, and refusing to clobber a run."""
import dataclasses
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from slicegan_core.data import DatasetSpec
from slicegan_core.generate import load_model
from slicegan_core.storage import load_tensors
from slicegan_core.train import lock_holder, resume, train

from conftest import ALPHAS, TRAINED_STEPS, VOXEL_SIZE_UM

REPO = Path(__file__).resolve().parents[1]
train_module = importlib.import_module("slicegan_core.train")   # the package exports a train() too


def event_steps(run_dir: Path) -> list[int]:
    path = run_dir / "events.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except json.JSONDecodeError:          # the line being written right now
            pass
    return steps


def status(run_dir: Path) -> dict:
    return json.loads((run_dir / "status.json").read_text())


def checkpoint_step(run_dir: Path) -> int:
    return load_tensors(run_dir / "checkpoint.safetensors")[1]["step"]


def start_cli_training(training_volumes, run_dir: Path, *settings: str) -> subprocess.Popen:
    """``python -m slicegan_core train`` on the two test volumes, tiny preset, effectively endless."""
    command = [sys.executable, "-m", "slicegan_core", "train", "--preset", "tiny", "--run-dir", str(run_dir),
               "--steps", "100000", "--set", "threads=1"]
    for path, alpha in training_volumes:
        command += ["--data", str(path), "--attr", f"alpha={alpha}"]
    for setting in settings:
        command += ["--set", setting]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_until(condition, process: subprocess.Popen, timeout: float = 120.0, poll: float = 0.01):
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"training exited early: {process.communicate()[1].decode()[-2000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("training made no progress in time")
        time.sleep(poll)


# ---- a tiny run end to end -------------------------------------------------------------------------------

def test_tiny_run_finishes_with_a_loadable_model(trained_run):
    assert status(trained_run)["state"] == "finished" and status(trained_run)["step"] == TRAINED_STEPS
    assert event_steps(trained_run) == list(range(1, TRAINED_STEPS + 1))
    assert checkpoint_step(trained_run) == TRAINED_STEPS
    assert lock_holder(trained_run) is None
    events = [json.loads(line) for line in (trained_run / "events.jsonl").read_text().splitlines()]
    assert all(np.isfinite(e[k]) for e in events for k in ("loss_d", "loss_g", "wasserstein", "gradient_penalty"))
    for alpha in ALPHAS:
        assert (trained_run / "samples" / f"latest_alpha={alpha:g}.png").is_file()
        assert (trained_run / "samples" / f"step_{TRAINED_STEPS:06d}_alpha={alpha:g}.png").is_file()
    model = load_model(trained_run / "model", device="cpu")
    volume = model.generate({"alpha": 0.3}, seed=0, shape=(48, 40, 32))
    assert volume.shape == (48, 40, 32) and set(np.unique(volume)) <= {0, 1, 2}
    assert model.info["training"]["steps"] == TRAINED_STEPS and model.voxel_size_um == VOXEL_SIZE_UM
    assert model.trained_values == {"alpha": list(ALPHAS)}          # as given, not float32 roundings
    assert model.info["training_data"]["phase_values"] == [0, 1, 2]
    config = json.loads((trained_run / "config.json").read_text())
    assert config["preset"] == "tiny" and config["train"]["steps"] == TRAINED_STEPS
    assert config["model"]["patch_size"] == 32 and config["train"]["checkpoint_every"] == 2


def test_checkpoint_is_self_contained(trained_run):
    tensors, meta = load_tensors(trained_run / "checkpoint.safetensors")
    assert {"step", "config", "opt_g", "opt_d", "rng_numpy", "package_version"} <= set(meta)
    assert meta["config"] == json.loads((trained_run / "config.json").read_text())
    assert any(k.startswith("G.") for k in tensors) and any(k.startswith("D.") for k in tensors)
    assert any(k.startswith("opt_g.") for k in tensors) and "rng.torch" in tensors


def test_resume_is_bit_identical_to_an_uninterrupted_run(tiny_specs, tmp_path):
    # A fixed thread count: with "auto" the count follows the machine's load, and a backward pass summed over
    # another number of threads can differ in the last bit.
    train(tiny_specs, tmp_path / "straight", preset_name="tiny", steps=6, threads=1)
    train(tiny_specs, tmp_path / "split", preset_name="tiny", steps=3, threads=1)
    assert checkpoint_step(tmp_path / "split") == 3
    resume(tmp_path / "split", steps=6)
    straight, straight_meta = load_tensors(tmp_path / "straight" / "checkpoint.safetensors")
    split, split_meta = load_tensors(tmp_path / "split" / "checkpoint.safetensors")
    assert straight_meta["step"] == split_meta["step"] == 6
    assert set(straight) == set(split)
    different = [name for name in straight if not torch.equal(straight[name], split[name])]
    assert different == []
    assert straight_meta["rng_numpy"] == split_meta["rng_numpy"]
    assert event_steps(tmp_path / "split") == list(range(1, 7))


def test_exported_model_is_the_weight_average_and_resume_keeps_it_exact(tiny_specs, tmp_path):
    train(tiny_specs, tmp_path / "straight", preset_name="tiny", steps=6, ema_decay=0.5, threads=1)
    train(tiny_specs, tmp_path / "split", preset_name="tiny", steps=3, ema_decay=0.5, threads=1)
    resume(tmp_path / "split", steps=6)
    straight, _ = load_tensors(tmp_path / "straight" / "checkpoint.safetensors")
    split, _ = load_tensors(tmp_path / "split" / "checkpoint.safetensors")
    assert [name for name in straight if not torch.equal(straight[name], split[name])] == []
    averaged = {k[len("G_average."):]: v for k, v in straight.items() if k.startswith("G_average.")}
    current = {k[2:]: v for k, v in straight.items() if k.startswith("G.")}
    assert averaged.keys() == current.keys()
    assert any(not torch.equal(averaged[k], current[k]) for k in current)       # the average lags G
    exported = load_model(tmp_path / "straight" / "model", device="cpu", precision="float32")
    assert all(torch.equal(exported.generator.state_dict()[k], averaged[k]) for k in averaged)


def test_switching_the_average_on_at_resume_starts_it_from_the_current_weights(tiny_specs, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_specs, run_dir, preset_name="tiny", steps=3)
    assert not any(k.startswith("G_average.") for k in load_tensors(run_dir / "checkpoint.safetensors")[0])
    config = json.loads((run_dir / "config.json").read_text())
    config["train"]["ema_decay"] = 0.999
    (run_dir / "config.json").write_text(json.dumps(config))
    run = train_module.Run(run_dir, config)
    run.restore()
    assert all(torch.equal(a, b) for a, b in zip(run.G_average.parameters(), run.G.parameters()))
    assert run.G_average is not run.G


def test_sigterm_checkpoints_and_stops_then_resume_continues(training_volumes, tmp_path):
    run_dir = tmp_path / "run"
    process = start_cli_training(training_volumes, run_dir, "checkpoint_every=100000")
    wait_until(lambda: len(event_steps(run_dir)) >= 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr.decode()[-2000:]
    stopped = status(run_dir)
    assert stopped["state"] == "stopped"
    step = checkpoint_step(run_dir)                       # the checkpoint written on SIGTERM
    assert step >= 2 and stopped["step"] == step and max(event_steps(run_dir)) == step
    assert lock_holder(run_dir) is None
    assert load_model(run_dir / "model", device="cpu").info["training"]["steps"] == step

    resume(run_dir, steps=step + 2)
    assert status(run_dir)["state"] == "finished" and checkpoint_step(run_dir) == step + 2
    assert event_steps(run_dir) == list(range(1, step + 3))
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == step + 2


def test_sigkill_between_checkpoints_resumes_from_the_last_one(training_volumes, tmp_path):
    run_dir = tmp_path / "run"
    process = start_cli_training(training_volumes, run_dir, "checkpoint_every=4")
    # Kill right after the first step past a checkpoint: the log is then ahead of the checkpoint.
    wait_until(lambda: (lambda s: bool(s) and s[-1] >= 5 and s[-1] % 4 == 1)(event_steps(run_dir)), process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    step = checkpoint_step(run_dir)
    logged = event_steps(run_dir)
    assert step % 4 == 0 and max(logged) > step                # killed between checkpoints
    assert lock_holder(run_dir) is None                        # the kernel dropped the dead process's lock
    assert status(run_dir)["state"] == "running"
    with open(run_dir / "events.jsonl", "a") as events:        # a line cut short by the kill
        events.write('{"step": %d, "loss_d": 1.2' % (max(logged) + 1))

    resume(run_dir, steps=step + 2)
    assert status(run_dir)["state"] == "finished" and checkpoint_step(run_dir) == step + 2
    steps = event_steps(run_dir)
    assert steps == list(range(1, step + 3))                   # no duplicates, no gap
    assert len((run_dir / "events.jsonl").read_text().splitlines()) == step + 2
    assert lock_holder(run_dir) is None


# ---- refusing to clobber a run ----------------------------------------------------------------------------

HOLD_LOCK = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def hold_lock():
    """Start processes that hold a run directory's lock as a trainer would; yields a starter -> pid."""
    holders = []

    def start(run_dir):
        holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(run_dir / "run.lock")],
                                  stdout=subprocess.PIPE)
        assert holder.stdout.readline().strip() == b"held"
        holders.append(holder)
        return holder.pid
    yield start
    for holder in holders:
        holder.kill()
        holder.wait()


def test_a_second_process_on_the_same_run_is_refused(trained_run, tiny_specs, tmp_path, hold_lock):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    owner = hold_lock(run_dir)
    before = (run_dir / "checkpoint.safetensors").read_bytes()
    with pytest.raises(ValueError, match=f"is in use by process {owner}; stop that run first"):
        resume(run_dir, steps=TRAINED_STEPS + 1)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    fresh_owner = hold_lock(fresh)
    with pytest.raises(ValueError, match=f"is in use by process {fresh_owner}"):
        train(tiny_specs, fresh, preset_name="tiny", steps=1)
    assert (run_dir / "checkpoint.safetensors").read_bytes() == before
    assert lock_holder(run_dir) == owner and not (fresh / "config.json").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(trained_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / "run.lock").write_text(str(dead.pid))
    resume(run_dir)                                            # already at its steps: finishes at once
    assert status(run_dir)["state"] == "finished" and lock_holder(run_dir) is None


def test_training_into_a_used_directory_is_refused(trained_run, tiny_specs, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run, run_dir)
    config = (run_dir / "config.json").read_text()
    with pytest.raises(ValueError, match="already holds a run; resume it or choose a new directory"):
        train(tiny_specs, run_dir, preset_name="tiny", steps=2, lr_g=1e-3)
    assert (run_dir / "config.json").read_text() == config
    assert event_steps(run_dir) == list(range(1, TRAINED_STEPS + 1))


def test_resume_can_change_training_settings_but_not_the_architecture(tiny_specs, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_specs, run_dir, preset_name="tiny", steps=2)
    before = (run_dir / "config.json").read_text()
    with pytest.raises(ValueError, match="'g_widths' is not one"):
        resume(run_dir, steps=3, g_widths=(8, 8, 8))
    assert (run_dir / "config.json").read_text() == before            # a refused change writes nothing
    resume(run_dir, steps=3, lr_g=1e-4, lr_d=2e-4)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["history"] == [{"at_step": 2, "changed": {"lr_g": 1e-4, "lr_d": 2e-4, "steps": 3}}]
    run = train_module.Run(run_dir, config)
    run.restore()
    assert [g["lr"] for g in run.opt_g.param_groups] == [1e-4] and [g["lr"] for g in run.opt_d.param_groups] == [2e-4]


def test_resume_needs_a_run_directory(tmp_path):
    with pytest.raises(ValueError, match="is not a training run \\(no config.json\\)"):
        resume(tmp_path)


def test_bad_data_leaves_no_run_behind(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(ValueError, match="does not exist"):
        train([DatasetSpec((str(tmp_path / "missing.npy"),), {"alpha": 0.2})], run_dir, preset_name="tiny")
    assert not run_dir.exists()


def test_bad_option_is_refused_before_anything_is_written(tiny_specs, tmp_path):
    with pytest.raises(ValueError, match="Unknown option 'lerning_rate'"):
        train(tiny_specs, tmp_path / "run", preset_name="tiny", lerning_rate=1)
    assert not (tmp_path / "run").exists()


def test_a_crash_is_recorded_and_releases_the_lock(tiny_specs, tmp_path, monkeypatch):
    def broken_penalty(*args, **kwargs):
        raise RuntimeError("penalty exploded")
    monkeypatch.setattr(train_module, "gradient_penalty", broken_penalty)
    run_dir = tmp_path / "run"
    with pytest.raises(RuntimeError, match="penalty exploded"):
        train(tiny_specs, run_dir, preset_name="tiny", steps=2)
    crashed = status(run_dir)
    assert crashed["state"] == "crashed" and "penalty exploded" in crashed["error"]
    assert lock_holder(run_dir) is None


def test_options_are_recorded(tiny_specs, tmp_path):
    run_dir = train(tiny_specs, tmp_path / "run", preset_name="tiny", steps=1, attr_jitter=0.1,
                    slices_per_axis=2, model_info={"name": "demo"})
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["attr_jitter"] == 0.1 and config["options"]["slices_per_axis"] == 2
    assert config["model"]["attribute_ranges"] == [list(ALPHAS)]
    info = json.loads((run_dir / "model" / "model.json").read_text())
    assert info["name"] == "demo" and info["training"]["options"]["attr_jitter"] == 0.1


# ---- critic batch rules ------------------------------------------------------------------------------------

def _skewed_specs(tmp_path) -> list[DatasetSpec]:
    """Two 32^3 datasets told apart by content: mostly phase 0 (alpha 0.15) and mostly phase 1 (alpha 0.5)."""
    specs = []
    for i, alpha in enumerate(ALPHAS):
        volume = np.full((32, 32, 32), i, np.uint8)
        volume[::7, ::5, ::3] = 1 - i
        np.save(tmp_path / f"skewed_{i}.npy", volume)
        specs.append(DatasetSpec((str(tmp_path / f"skewed_{i}.npy"),), {"alpha": alpha}))
    return specs


def _run(specs, tmp_path, preset_name="tiny", **settings) -> "train_module.Run":
    from slicegan_core.config import ModelConfig, TrainConfig, preset, to_dict
    model_fields, train_fields = preset(preset_name, **settings)
    config = {"model": to_dict(ModelConfig(**{**model_fields, "attribute_ranges": (ALPHAS,)})),
              "train": to_dict(TrainConfig(**train_fields)),
              "data": {"image_type": "n-phase", "datasets": [{"paths": list(s.paths), "attrs": s.attrs}
                                                              for s in specs]}}
    return train_module.Run(tmp_path, config)


def test_real_patches_and_penalty_pairs_follow_batch_size_and_match_their_fake_slices(tmp_path):
    run = _run(_skewed_specs(tmp_path), tmp_path, batch_size=4, slices_per_axis=8)
    assert (run.real_patches_per_axis, run.penalty_pairs, run.slices_per_axis) == (4, 4, 8)
    dataset_index, attrs, fake = run.fake_batch(grad=False)
    for axis in range(3):
        fake_slices, slice_attrs, slice_dataset = run.slices(fake, attrs, dataset_index, axis, run.slices_per_axis)
        assert fake_slices.shape[0] == 32 and len(slice_dataset) == 32
        real, real_attrs, paired = run.real_batch(fake_slices, slice_attrs, slice_dataset, axis)
        assert real.shape[0] == real_attrs.shape[0] == paired.shape[0] == 4
        # each real patch comes from the dataset of the fake slice it is paired with, with its attributes
        for k in range(4):
            match = [i for i in range(32) if torch.equal(fake_slices[i], paired[k])]
            assert match and torch.equal(slice_attrs[match[0]], real_attrs[k])
            dominant = int(real[k].sum(dim=(1, 2)).argmax())      # dataset 0 is mostly phase 0, 1 phase 1
            assert dominant == slice_dataset[match[0]]
        # spread over the volumes: one real patch per fake volume here
        volumes = {[i for i in range(32) if torch.equal(fake_slices[i], paired[k])][0] // 8 for k in range(4)}
        assert volumes == {0, 1, 2, 3}


def test_critic_planes_show_the_critics_each_slice_with_its_neighbours_real_and_fake(tmp_path):
    run = _run(_skewed_specs(tmp_path), tmp_path, batch_size=2, slices_per_axis=5, critic_planes=3, n_channels=2)
    assert (run.slices_per_axis, run.generator_slices_per_axis) == (5, 5)
    channels = run.model_config.n_channels
    assert run.critics[0].convs[0].in_channels == 3 * channels + 1         # 3 planes of C phases + alpha
    # a fake "volume" whose value is its slice index along the axis shows which slices each group holds
    fake = torch.arange(32.0)[None, None, :, None, None].expand(2, channels, 32, 32, 32)
    for axis in range(3):
        moved = fake.movedim(2, 2 + axis)
        images, _, _ = run.slices(moved, torch.zeros(2, 1), np.array([0, 1]), axis, 5)
        assert images.shape == (10, 3 * channels, 32, 32)                 # 2 volumes x 5 groups, 3 x C channels
        first = images[:, 0].flatten(1)[:, 0]
        for plane in range(3):                                             # consecutive slices, plane-major
            assert torch.equal(images[:, channels * plane].flatten(1)[:, 0], first + plane)
        everything, _, _ = run.slices(moved, torch.zeros(2, 1), np.array([0, 1]), axis, 64)
        assert everything.shape[0] == 2 * 30                               # every slice with both neighbours
    dataset_index, attrs, fake = run.fake_batch(grad=False)
    fake_slices, slice_attrs, slice_dataset = run.slices(fake, attrs, dataset_index, 0, run.slices_per_axis)
    real, _, paired = run.real_batch(fake_slices, slice_attrs, slice_dataset, 0)
    assert real.shape[1:] == paired.shape[1:] == (3 * channels, 32, 32)
    assert run.critics[0](real, attrs[:1].expand(len(real), -1)).shape == (len(real),)
    # a 2D image has no neighbouring slices: refused before the run is written
    image = tmp_path / "flat.npy"
    np.save(image, np.random.default_rng(0).integers(0, 2, (40, 40)).astype(np.uint8))
    with pytest.raises(ValueError, match="only 3D stacks"):
        train([DatasetSpec((str(image),), {"alpha": 0.2})], tmp_path / "flat_run", preset_name="tiny", critic_planes=3)
    assert not (tmp_path / "flat_run").exists()
    run_dir = train(_skewed_specs(tmp_path), tmp_path / "run3", preset_name="tiny", steps=2, critic_planes=3)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert load_model(run_dir / "model").generate({"alpha": ALPHAS[0]}, seed=0, shape=(32, 32, 32)).shape == (32, 32, 32)


def test_one_real_patch_per_fake_slice_is_still_possible_and_settings_are_validated(tmp_path):
    run = _run(_skewed_specs(tmp_path), tmp_path, batch_size=2, slices_per_axis=4, real_patches_per_axis=100,
               penalty_pairs_per_axis=3, generator_slices_per_axis=32)
    assert (run.real_patches_per_axis, run.penalty_pairs, run.generator_slices_per_axis) == (8, 3, 32)
    dataset_index, attrs, fake = run.fake_batch(grad=False)
    fake_slices, slice_attrs, slice_dataset = run.slices(fake, attrs, dataset_index, 1, 4)
    real, real_attrs, paired = run.real_batch(fake_slices, slice_attrs, slice_dataset, 1)
    assert torch.equal(paired, fake_slices) and torch.equal(real_attrs, slice_attrs)   # every slice, in order
    all_slices = run.slices(fake, attrs, dataset_index, 2, run.generator_slices_per_axis)[0]
    assert all_slices.shape[0] == 2 * 32
    from slicegan_core.config import TrainConfig
    with pytest.raises(ValueError, match="penalty_pairs_per_axis"):
        TrainConfig(batch_size=4, penalty_pairs_per_axis=5)
    with pytest.raises(ValueError, match="real_patches_per_axis"):
        TrainConfig(real_patches_per_axis=0)


def test_expected_islands_counts_small_islands_of_one_hot_volumes_and_has_a_gradient(tmp_path):
    from slicegan_core.metrics import island_density
    labels = np.zeros((2, 12, 12, 12), np.int64)
    labels[0, 4, 4, 4] = 1                      # two single-voxel islands inside, one 8-voxel block
    labels[0, 8, 8, 8] = 2
    labels[1, 2:4, 2:4, 2:4] = 1
    labels[1, 7, 7, 6:8] = 2                    # a two-voxel island along each axis
    labels[1, 5:7, 9, 9] = 1
    labels[1, 9, 3:5, 3] = 2
    probabilities = torch.nn.functional.one_hot(torch.from_numpy(labels), 3).permute(0, 4, 1, 2, 3).float()
    probabilities.requires_grad_(True)
    single = train_module.expected_islands(probabilities)
    assert single.tolist() == pytest.approx([1000 * 2 / 10 ** 3, 0.0])       # per thousand interior voxels
    up_to_two = train_module.expected_islands(probabilities, max_voxels=2)
    assert up_to_two.tolist() == pytest.approx([1000 * 2 / 10 ** 3, 1000 * 3 / 10 ** 3])
    assert island_density(labels[1], [1, 2], max_size=2)[2] > 0             # the metric agrees they are islands
    up_to_two.sum().backward()
    assert probabilities.grad.abs().sum() > 0
    # A random soft volume: the pair term only adds.
    soft = torch.softmax(torch.randn(1, 3, 10, 10, 10), dim=1)
    assert train_module.expected_islands(soft, 2).item() > train_module.expected_islands(soft, 1).item() > 0
    run_dir = train(_skewed_specs(tmp_path), tmp_path / "run", preset_name="tiny", steps=2, island_penalty=5.0)
    assert json.loads((run_dir / "config.json").read_text())["train"]["island_penalty"] == 5.0


def test_expected_islands_in_slices_counts_the_cut_ends_of_thin_rods(tmp_path):
    labels = np.zeros((1, 12, 12, 12), np.int64)
    labels[0, 1:11, 5, 5] = 1                   # a one-voxel-thin rod along axis 0 through the interior
    labels[0, 8, 8, 8] = 2                      # and one single-voxel island
    probabilities = torch.nn.functional.one_hot(torch.from_numpy(labels), 3).permute(0, 4, 1, 2, 3).float()
    # 3D: only the single voxel is an island; slices: the rod's 10 interior cuts across axis 0 are islands
    # too, and the single voxel is one in each of its three slices.
    assert train_module.expected_islands(probabilities).item() == pytest.approx(1000 * 1 / 10 ** 3)
    sliced = train_module.expected_islands(probabilities, view="slices").item()
    assert sliced == pytest.approx(1000 * (10 + 3) / 3 / 10 ** 3)
    weighted = train_module.expected_islands(probabilities, 1, torch.tensor([0.0, 1.0, 0.0]), view="slices")
    assert weighted.item() == pytest.approx(1000 * 10 / 3 / 10 ** 3)         # the rod's phase only
    soft = torch.softmax(torch.randn(1, 3, 10, 10, 10), dim=1).requires_grad_(True)
    train_module.expected_islands(soft, view="slices").sum().backward()
    assert soft.grad.abs().sum() > 0
    from slicegan_core.config import TrainConfig
    with pytest.raises(ValueError, match="island_max_voxels"):
        TrainConfig(island_view="slices", island_max_voxels=2)
    with pytest.raises(ValueError, match="island_view"):
        TrainConfig(island_view="2d")
    run_dir = train(_skewed_specs(tmp_path), tmp_path / "run", preset_name="tiny", steps=2, island_penalty=5.0,
                    island_view="slices")
    assert json.loads((run_dir / "config.json").read_text())["train"]["island_view"] == "slices"


def test_island_count_counts_what_the_settings_name_on_tempered_probabilities():
    from slicegan_core.config import TrainConfig
    logits = 6 * torch.randn(2, 3, 10, 10, 10, generator=torch.Generator().manual_seed(1))
    weights = torch.tensor([1.0, 2.0, 0.0])
    tempered = torch.softmax(logits / 4, dim=1)
    for settings, expected in (
            (dict(island_max_voxels=2), train_module.expected_islands(tempered, 2, weights)),
            (dict(island_view="slices"), train_module.expected_islands(tempered, 1, weights, view="slices")),
            (dict(island_max_voxels=5), train_module.expected_speck_voxels(tempered, 5, weights))):
        counted = train_module.island_count(logits, TrainConfig(island_temperature=4.0, **settings), weights)
        assert counted.shape == (2,) and torch.allclose(counted, expected)
    # the temperature is applied: at T = 1 the same logits count differently
    plain = train_module.island_count(logits, TrainConfig(island_max_voxels=2), weights)
    assert not torch.allclose(plain, train_module.expected_islands(tempered, 2, weights))


def test_expected_speck_voxels_counts_pieces_up_to_the_size_and_never_a_grain(tmp_path):
    labels = np.zeros((1, 16, 16, 16), np.int64)
    labels[0, 3, 3, 3] = 1                      # a one-voxel speck: 1 voxel
    labels[0, 3:5, 8:10, 3] = 2                 # a four-voxel plaquette: 4 voxels
    labels[0, 8:11, 8:10, 8:10] = 1             # a 12-voxel block: none of its voxels has <= 7 of its phase around
    labels[0, 12, 3:6, 12] = 1                  # a three-voxel rod: 3 voxels
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(labels), 3).permute(0, 4, 1, 2, 3).float()
    per_thousand = 1000 / 14 ** 3
    assert train_module.expected_speck_voxels(one_hot, 7, sharpness=0.01).item() == pytest.approx(8 * per_thousand)
    assert train_module.expected_speck_voxels(one_hot, 3, sharpness=0.01).item() == pytest.approx(4 * per_thousand)
    only_phase_2 = train_module.expected_speck_voxels(one_hot, 7, torch.tensor([0.0, 0.0, 1.0]), sharpness=0.01)
    assert only_phase_2.item() == pytest.approx(4 * per_thousand)
    soft = torch.softmax(4 * one_hot + torch.randn_like(one_hot), dim=1).requires_grad_(True)
    train_module.expected_speck_voxels(soft, 7).sum().backward()
    assert soft.grad.abs().sum() > 0
    run_dir = train(_skewed_specs(tmp_path), tmp_path / "run", preset_name="tiny", steps=2, island_penalty=5.0,
                    island_max_voxels=7, island_temperature=8.0)
    assert json.loads((run_dir / "config.json").read_text())["train"]["island_max_voxels"] == 7
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_speck_margins_push_only_on_small_pieces_and_as_hard_on_confident_ones(tmp_path):
    labels = np.zeros((1, 16, 16, 16), np.int64)
    labels[0, 3, 3, 3] = 1                      # a one-voxel speck
    labels[0, 3:5, 8:10, 3] = 2                 # a four-voxel plaquette
    labels[0, 8:11, 8:10, 8:10] = 1             # a 12-voxel block
    labels[0, 0, 5, 5] = 2                      # one voxel on the volume's face: maybe part of a larger piece
    mask = train_module.speck_mask(labels, 4)
    assert mask.sum() == 5 and mask[0, 3, 3, 3] and mask[0, 3:5, 8:10, 3].all() and not mask[0, 0, 5, 5]
    assert train_module.speck_mask(labels, 1).sum() == 1
    # logits whose argmax is these labels; the speck confident (margin 20), the plaquette barely (margin 0.5)
    logits = torch.zeros(1, 3, 16, 16, 16)
    logits.scatter_(1, torch.from_numpy(labels).unsqueeze(1), 0.5)
    logits[0, 1, 3, 3, 3] = 20.0
    logits.requires_grad_(True)
    margins = train_module.speck_margins(logits, 4, torch.tensor([1.0, 1.0, 2.0]))
    per_thousand = 1000 / 16 ** 3
    assert margins.item() == pytest.approx((21.0 + 2 * 4 * 1.5) * per_thousand)
    margins.sum().backward()
    # the same push on the confident speck as on the plaquette's voxels (times their phase's weight), none
    # anywhere else
    assert logits.grad[0, 1, 3, 3, 3].item() == pytest.approx(per_thousand)
    assert logits.grad[0, 2, 3, 8, 3].item() == pytest.approx(2 * per_thousand)
    assert logits.grad[:, :, 8:11, 8:10, 8:10].abs().sum() == 0 and logits.grad[0, :, 0, 5, 5].abs().sum() == 0
    from slicegan_core.config import TrainConfig
    counted = train_module.island_count(logits.detach(), TrainConfig(island_loss="margin", island_max_voxels=4),
                                        torch.ones(3))
    assert counted.item() == pytest.approx((21.0 + 4 * 1.5) * per_thousand)
    with pytest.raises(ValueError, match="island_loss"):
        TrainConfig(island_loss="hinge")
    with pytest.raises(ValueError, match="needs island_view"):
        TrainConfig(island_loss="margin", island_penalty=None)       # the automatic weight is the slices' view's
    TrainConfig(island_loss="margin", island_penalty=None, island_view="slices", island_max_voxels=4)
    # the slices' view: 2D pieces of any axis's slices. The plaquette is a 4-pixel piece across one axis and
    # 2-pixel ones across the other two; every slice of the block shows 6 or 9 pixels; the voxel on the
    # volume's face is a one-pixel piece inside the slice x = 0 (only a slice's own edges leave pieces out)
    sliced = train_module.speck_mask(labels, 2, view="slices")
    assert sliced[0, 3, 3, 3] and sliced[0, 3:5, 8:10, 3].all() and not sliced[0, 8:11, 8:10, 8:10].any()
    assert sliced[0, 0, 5, 5] and sliced.sum() == 6
    assert not train_module.speck_mask(labels, 1, view="slices")[0, 3:5, 8:10, 3].any()
    ridge = np.zeros((1, 16, 16, 16), np.int64)
    ridge[0, 5:12, 7, 5:12] = 1                 # a one-voxel-thin plate: a 7-pixel rod in the slices across x and z
    assert train_module.speck_mask(ridge, 7, view="slices")[0, 5:12, 7, 5:12].all()
    assert not train_module.speck_mask(ridge, 6, view="slices").any()
    assert not train_module.speck_mask(ridge, 7, view="3d").any()
    TrainConfig(island_loss="margin", island_view="slices", island_max_voxels=4)
    run_dir = train(_skewed_specs(tmp_path), tmp_path / "run", preset_name="tiny", steps=2, island_penalty=5.0,
                    island_loss="margin", island_max_voxels=7)
    assert json.loads((run_dir / "config.json").read_text())["train"]["island_loss"] == "margin"
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"


def test_island_penalty_weight_follows_the_attribute_between_low_and_high(tmp_path):
    low, high = ALPHAS
    run = _run(_skewed_specs(tmp_path), tmp_path, island_penalty=8.0, island_penalty_high=2.0)
    attrs = torch.tensor([[low], [(low + high) / 2], [high], [high + 1.0]])
    assert run.island_weights(attrs).tolist() == pytest.approx([8.0, 5.0, 2.0, 2.0])   # clamped outside
    uniform = _run(_skewed_specs(tmp_path), tmp_path, island_penalty=8.0)
    assert uniform.island_weights(attrs).tolist() == pytest.approx([8.0] * 4)
    # ramped in: a quarter of the weight after the first quarter of the warm-up, all of it from its end on
    ramped = _run(_skewed_specs(tmp_path), tmp_path, island_penalty=8.0, island_penalty_high=2.0, island_warmup=100)
    ramped.step = 24
    assert ramped.island_weights(attrs).tolist() == pytest.approx([2.0, 1.25, 0.5, 0.5])
    ramped.step = 500
    assert ramped.island_weights(attrs).tolist() == pytest.approx([8.0, 5.0, 2.0, 2.0])
    automatic = _run(_skewed_specs(tmp_path), tmp_path, island_warmup=10)
    automatic.train_config = dataclasses.replace(automatic.train_config, island_penalty=None)   # per phase
    automatic.step = 4
    assert automatic.island_weights(attrs).tolist() == pytest.approx([0.5] * 4)
    # left at None: ramped in over ISLAND_WARMUP_SLICES steps with the slice count, full at once with the 3D one
    assert uniform.train_config.island_warmup is None
    sliced = _run(_skewed_specs(tmp_path), tmp_path, island_penalty=8.0, island_view="slices")
    sliced.step = train_module.ISLAND_WARMUP_SLICES // 2 - 1
    assert sliced.island_weights(attrs).tolist() == pytest.approx([4.0] * 4)
    from slicegan_core.config import TrainConfig
    with pytest.raises(ValueError, match="island_warmup"):
        TrainConfig(island_warmup=-1)
    with pytest.raises(ValueError, match="island_max_voxels"):
        TrainConfig(island_max_voxels=8)
    with pytest.raises(ValueError, match="island_penalty_high"):
        TrainConfig(island_penalty_high=-1.0)
    run_dir = train(_skewed_specs(tmp_path), tmp_path / "trained", preset_name="tiny", steps=2, island_penalty=8.0,
                    island_penalty_high=2.0, island_max_voxels=2)
    assert json.loads((run_dir / "config.json").read_text())["train"]["island_max_voxels"] == 2
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"



def test_automatic_island_penalty_weighs_each_phase_by_the_speckle_its_training_image_has(tmp_path, capsys):
    # The weight per phase from its small 2D islands per million pixels of that phase: full at or below
    # ISLAND_SPARSE, none at ISLAND_DENSE, log-linear between; a phase absent from the data gets full.
    middle = (train_module.ISLAND_SPARSE * train_module.ISLAND_DENSE) ** 0.5
    weights = train_module.island_phase_weights({0: 0.0, 1: middle, 2: train_module.ISLAND_SPARSE}, [0, 1, 2, 3])
    assert weights == pytest.approx([train_module.ISLAND_WEIGHT, train_module.ISLAND_WEIGHT / 2,
                                     train_module.ISLAND_WEIGHT, train_module.ISLAND_WEIGHT], rel=1e-4)
    # One phase at ISLAND_DENSE or more (real small features, like a sphere packing's pockets) turns it off for
    # every phase: a phase's penalty smooths its neighbours too.
    assert train_module.island_phase_weights({0: 0.0, 1: middle, 2: 50_000.0}, [0, 1, 2, 3]) == [0.0] * 4
    assert train_module.island_phase_weights({0: 0.0, 1: train_module.ISLAND_DENSE * 0.99}, [0, 1])[1] > 0
    # Per-phase weights in the expected count: phase 1's single-voxel island counts 3 times, phase 0's none.
    labels = np.zeros((1, 5, 5, 5), np.int64)
    labels[0, 2, 2, 2] = 1
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(labels), 2).permute(0, 4, 1, 2, 3).float()
    plain = train_module.expected_islands(one_hot).item()
    assert plain > 0
    assert train_module.expected_islands(one_hot, 1, torch.tensor([0.0, 3.0])).item() == pytest.approx(3 * plain)
    assert train_module.expected_islands(one_hot, 1, torch.tensor([1.0, 0.0])).item() == 0.0
    # Measured on the training images (the cpu preset's automatic weight): a smooth image (two half planes) has no islands, a speckled phase does.
    smooth = np.zeros((64, 64), np.uint8)
    smooth[:, 32:] = 1
    speckled = smooth.copy()
    speckled[::4, 2:30:4] = 1                       # 112 one-pixel islands of phase 1 inside phase 0
    paths = []
    for name, image in (("smooth", smooth), ("speckled", speckled)):
        np.save(tmp_path / f"{name}.npy", image)
        paths.append(str(tmp_path / f"{name}.npy"))
    smooth_run = _run([DatasetSpec(paths=(paths[0],), attrs={"alpha": ALPHAS[0]})], tmp_path / "a", "cpu")
    assert smooth_run.island_densities == {0: 0.0, 1: 0.0}
    assert smooth_run.island_phase_weights.tolist() == [train_module.ISLAND_WEIGHT] * 2
    both = _run([DatasetSpec(paths=(p,), attrs={"alpha": a}) for p, a in zip(paths, ALPHAS)], tmp_path / "b", "cpu")
    # 112 islands in 64^2 pixels, phase 1 covering (2048 + 112) / 4096 of it: the densest image decides
    assert both.island_densities[1] == pytest.approx(1e6 * 112 / 4096 / (2160 / 4096))
    assert both.island_phase_weights is None        # phase 1 is full of real small features: off for both
    # Counted on slices (island_view "slices"), the full weight is the slice count's own.
    sliced = _run([DatasetSpec(paths=(paths[0],), attrs={"alpha": ALPHAS[0]})], tmp_path / "s", "cpu",
                  island_view="slices")
    assert sliced.island_phase_weights.tolist() == pytest.approx([train_module.ISLAND_WEIGHT_SLICES] * 2)
    # The margin on the slices' small pieces has its own full weight, by the same rule; off where the data is
    # full of small features.
    margin = _run([DatasetSpec(paths=(paths[0],), attrs={"alpha": ALPHAS[0]})], tmp_path / "m", "cpu",
                  island_view="slices", island_loss="margin", island_max_voxels=4)
    assert margin.island_phase_weights.tolist() == pytest.approx([train_module.ISLAND_WEIGHT_MARGIN] * 2)
    assert _run([DatasetSpec(paths=(p,), attrs={"alpha": a}) for p, a in zip(paths, ALPHAS)], tmp_path / "mb",
                "cpu", island_view="slices", island_loss="margin", island_max_voxels=4).island_phase_weights is None
    # island_loss "auto" (the cpu preset's): the margin where every phase has some real small islands (here one
    # one-pixel island in each phase's 2,048 pixels: 488 per million), the expected count where one has few.
    sparse = smooth.copy()
    sparse[10, 10], sparse[50, 50] = 1, 0
    np.save(tmp_path / "sparse.npy", sparse)
    picked = _run([DatasetSpec(paths=(str(tmp_path / "sparse.npy"),), attrs={"alpha": ALPHAS[0]})], tmp_path / "p",
                  "cpu")
    assert picked.island_densities == {0: pytest.approx(1e6 / 2048), 1: pytest.approx(1e6 / 2048)}
    tc = picked.train_config
    assert (tc.island_loss, tc.island_view, tc.island_max_voxels) == ("margin", "slices", 4)
    assert picked.island_phase_weights.tolist() == pytest.approx([train_module.ISLAND_WEIGHT_MARGIN] * 2)
    assert "counts the margins of the slices' pieces of up to 4 px and weights phase 0 0.03" in (
        train_module.island_message(picked.island_densities, picked.data.phase_values, picked.island_phase_weights,
                                    tc=tc))
    assert picked.island_summary() == {"loss": "margin", "view": "slices", "max_voxels": 4,
                                       "phase_weights": {"0": 0.03, "1": 0.03}}
    assert smooth_run.train_config.island_loss == "expected" and smooth_run.train_config.island_view == "3d"
    from slicegan_core.config import TrainConfig, preset
    resolve = train_module.resolve_island_loss
    auto = TrainConfig(island_loss="auto", island_penalty=None)
    assert resolve(auto, {0: 150.0, 1: 800.0}, [0, 1]).island_loss == "margin"
    assert resolve(auto, {0: 149.0, 1: 800.0}, [0, 1]).island_loss == "expected"
    assert resolve(dataclasses.replace(auto, island_penalty=2.0), {0: 400.0}, [0]).island_loss == "expected"
    assert resolve(TrainConfig(island_loss="expected"), {0: 400.0}, [0]).island_loss == "expected"
    # a view or piece size of one's own keeps the expected count it names (older commands still reproduce)
    kept = resolve(dataclasses.replace(auto, island_view="slices"), {0: 400.0}, [0])
    assert (kept.island_loss, kept.island_view, kept.island_max_voxels) == ("expected", "slices", 1)
    assert resolve(dataclasses.replace(auto, island_max_voxels=2), {0: 400.0}, [0]).island_loss == "expected"
    # A number weighs every phase alike (the default model's recipes); 0 is off.
    assert _run([DatasetSpec(paths=(paths[1],), attrs={"alpha": ALPHAS[0]})], tmp_path / "c",
                island_penalty=4.0).island_phase_weights.tolist() == [1.0, 1.0]
    assert _run([DatasetSpec(paths=(paths[1],), attrs={"alpha": ALPHAS[0]})], tmp_path / "d",
                island_penalty=0.0).island_phase_weights is None
    # A rare phase (kept by the fraction penalty) turns the automatic island penalty off: it coarsened its specks.
    rare = np.zeros((64, 64), np.uint8)
    rare[:, 32:] = 1
    rare[10:17, 10:17] = 2                                     # a 7 x 7 square: 1.2 % of the image
    np.save(tmp_path / "rare.npy", rare)
    rare_run = _run([DatasetSpec(paths=(str(tmp_path / "rare.npy"),), attrs={"alpha": ALPHAS[0]})], tmp_path / "e",
                    "cpu")
    assert rare_run.fraction_weight > 0 and rare_run.island_phase_weights is None
    assert "the island penalty is off (it would coarsen the rare phase's specks)" in train_module.island_message(
        rare_run.island_densities, rare_run.data.phase_values, None, rare_phase=True)
    assert _run([DatasetSpec(paths=(str(tmp_path / "rare.npy"),), attrs={"alpha": ALPHAS[0]})], tmp_path / "f",
                "cpu", fraction_penalty=0.0).island_phase_weights is not None
    assert preset("cpu")[1]["island_penalty"] is None       # what a user's run gets
    assert preset("cpu")[1]["island_loss"] == "auto"
    assert preset("cpu")[1]["augment"] is True
    assert preset("cpu")[1]["patch_edges"] == "mirror"      # a small image's edges seen as often as its centre
    with pytest.raises(ValueError, match="island_penalty_high needs a number"):
        TrainConfig(island_penalty=None, island_penalty_high=2.0)
    # A run says what it found and what it does, and trains with it.
    run_dir = train([DatasetSpec(paths=(paths[1],), attrs={})], tmp_path / "trained", preset_name="cpu",
                    steps=1, fidelity_seeds=0, threads=1)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert json.loads((run_dir / "config.json").read_text())["train"]["island_penalty"] is None
    out = capsys.readouterr().out
    assert "small islands (<= 4 px) per million pixels of each phase in the training images: phase 0 0, " \
           "phase 1 51,852; the island penalty is off (the data is full of real small features) (--set " \
           "island_penalty=W" in out


def test_fraction_error_is_relative_to_each_phase_and_pulls_a_missing_phase_back(tmp_path):
    probabilities = torch.zeros(2, 3, 4, 4, 4)
    probabilities[0, 0], probabilities[0, 1], probabilities[0, 2] = 0.895, 0.1, 0.005
    probabilities[1, 0], probabilities[1, 1] = 0.9, 0.1                # has its fractions; phase 2 absent in both
    targets = torch.tensor([[0.9, 0.09, 0.01], [0.9, 0.1, 0.0]])
    error = train_module.fraction_error(probabilities, targets)
    kl = 2 * (0.9 * np.log(0.9 / 0.895) + 0.09 * np.log(0.09 / 0.1) + 0.01 * np.log(0.01 / 0.005))
    assert error.tolist() == pytest.approx([kl, 0.0], abs=1e-6)
    # Near the target it is the relative square sum (m - t)^2 / t: a rare phase's miss counts most.
    near = torch.zeros(1, 3, 4, 4, 4)
    near[0, 0], near[0, 1], near[0, 2] = 0.601, 0.3895, 0.0095
    square = (0.001 ** 2 / 0.6 + 0.0005 ** 2 / 0.39 + 0.0005 ** 2 / 0.01)
    assert train_module.fraction_error(near, torch.tensor([[0.6, 0.39, 0.01]])).item() == pytest.approx(square, rel=0.05)
    # A phase the softmax is confident is absent (logit -20: P ~ 1e-9) is still pulled back, by about 2 x its
    # target share on its logits; the squared form's pull was ~1e-9 there and the phase stayed lost.
    logits = torch.zeros(1, 3, 4, 4, 4)
    logits[:, 2] = -20.0
    logits.requires_grad_(True)
    train_module.fraction_error(torch.softmax(logits, 1), torch.tensor([[0.6, 0.39, 0.01]])).sum().backward()
    assert logits.grad[0, 2].sum().item() == pytest.approx(-2 * 0.01, rel=0.01)
    # An excess is pushed down, hardest where the phase is rare.
    logits = torch.zeros(1, 3, 4, 4, 4, requires_grad=True)
    train_module.fraction_error(torch.softmax(logits, 1), torch.tensor([[0.6, 0.39, 0.01]])).sum().backward()
    assert logits.grad[0, 2].mean() > 0
    # Automatic weight: on when a phase present in an image covers less than 5 % of it; a number overrides.
    assert train_module.fraction_weight(None, [{0: 0.5, 1: 0.5}, {0: 1.0}]) == (0.0, [])
    weight, rare = train_module.fraction_weight(None, [{0: 0.6, 1: 0.391, 255: 0.009}])
    assert weight == train_module.RARE_PHASE_WEIGHT > 0 and rare == ["phase 255 (0.9%)"]
    assert train_module.fraction_weight(0, [{0: 0.99, 1: 0.01}]) == (0.0, ["phase 1 (1.0%)"])
    from slicegan_core.config import TrainConfig
    with pytest.raises(ValueError, match="fraction_penalty"):
        TrainConfig(fraction_penalty=-1.0)


def test_running_fraction_error_pulls_on_the_bias_and_leaves_each_volumes_spread_free():
    targets = torch.tensor([[0.6, 0.39, 0.01]] * 2)
    logits = torch.randn(2, 3, 4, 4, 4, requires_grad=True)
    probabilities = torch.softmax(logits, 1)
    fractions = probabilities.mean(dim=(2, 3, 4))
    # With the running mean equal to a volume's own fractions, its gradient is fraction_error's.
    train_module.running_fraction_error(fractions, fractions.detach(), targets).sum().backward()
    running_grad = logits.grad.clone()
    logits.grad = None
    train_module.fraction_error(torch.softmax(logits, 1), targets).sum().backward()
    assert torch.allclose(running_grad, logits.grad, atol=1e-6)
    # With the running mean on target, nothing pulls, however far one volume's own fractions lie from it.
    logits.grad = None
    train_module.running_fraction_error(torch.softmax(logits, 1).mean(dim=(2, 3, 4)), targets, targets).sum().backward()
    assert logits.grad.abs().max().item() < 1e-7
    # A running excess of phase 2 pushes phase 2 down in every volume, including one that lacks it.
    logits.grad = None
    running = torch.tensor([[0.58, 0.39, 0.03]] * 2)
    train_module.running_fraction_error(torch.softmax(logits, 1).mean(dim=(2, 3, 4)), running, targets).sum().backward()
    assert (logits.grad[:, 2].sum(dim=(1, 2, 3)) > 0).all()
    from slicegan_core.config import TrainConfig
    with pytest.raises(ValueError, match="fraction_scope"):
        TrainConfig(fraction_scope="batch")


def test_fraction_scope_running_keeps_its_running_mean_through_a_resume(tmp_path):
    specs = _skewed_specs(tmp_path)
    run_dir = train(specs, tmp_path / "run", preset_name="tiny", steps=3, fidelity_seeds=0,
                    fraction_penalty=100.0, fraction_scope="running")
    _, meta = train_module.load_tensors(run_dir / "checkpoint.safetensors")
    running = np.array(meta["running_fractions"], dtype=float)
    assert running.shape == (2, 2) and np.allclose(running.sum(axis=1), 1, atol=1e-4)
    run = train_module.Run(run_dir, json.loads((run_dir / "config.json").read_text()))
    run.restore()
    assert np.allclose(run.running_fractions.cpu().numpy(), running)
    # a damaged entry is refused with the value named
    from slicegan_core.storage import save_tensors
    tensors, meta = train_module.load_tensors(run_dir / "checkpoint.safetensors")
    meta["running_fractions"] = [[2.0, 0.5], [0.5, 0.5]]
    save_tensors(run_dir / "checkpoint.safetensors", tensors, meta)
    with pytest.raises(ValueError, match="running_fractions"):
        train_module.Run(run_dir, json.loads((run_dir / "config.json").read_text())).restore()


def test_a_rare_phase_turns_the_fraction_penalty_on_and_says_so(tmp_path, capsys):
    specs = _skewed_specs(tmp_path)           # the minority phase covers 1.2 % of each volume
    run = _run(specs, tmp_path)
    assert run.fraction_weight == train_module.RARE_PHASE_WEIGHT
    assert run.target_fractions.shape == (2, 2) and run.target_fractions[0, 1] == pytest.approx(385 / 32 ** 3)
    assert _run(specs, tmp_path, fraction_penalty=0.0).fraction_weight == 0.0
    run_dir = train(specs, tmp_path / "trained", preset_name="tiny", steps=2, fidelity_seeds=0)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert "rare phases: phase 0 (1.2%), phase 1 (1.2%) of a training image; the fraction penalty keeps them in " \
           "the output (weight" in capsys.readouterr().out


def test_patch_edges_mirror_reaches_the_real_patches_of_a_run(tmp_path, monkeypatch):
    from slicegan_core.data import TrainingData
    seen = []
    original = TrainingData.sample

    def recording(self, *args, **kwargs):
        seen.append(args[4] if len(args) > 4 else kwargs.get("edges", "inside"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TrainingData, "sample", recording)
    run_dir = train(_skewed_specs(tmp_path), tmp_path / "mirror", preset_name="tiny", steps=2, fidelity_seeds=0,
                    patch_edges="mirror")
    assert json.loads((run_dir / "status.json").read_text())["state"] == "finished"
    assert seen and set(seen) == {"mirror"}
    assert json.loads((run_dir / "config.json").read_text())["train"]["patch_edges"] == "mirror"


def _islands_card(*per_dataset):
    """A fidelity card holding only island entries: per dataset, phase value -> (generated, training)."""
    return {"datasets": [{"phases": {str(value): {"islands": {"generated": generated, "training": training,
                                                              "allowance": 1.5 * training + 20}}
                                     for value, (generated, training) in phases.items()}}
                         for phases in per_dataset]}


def test_island_feedback_raises_a_phase_above_mid_allowance_lowers_one_below_its_image_and_holds_between():
    step = train_module.ISLAND_FEEDBACK_STEP
    low, high = train_module.ISLAND_FEEDBACK_RANGE
    above = 100 + 70 * train_module.ISLAND_FEEDBACK_TARGET + 5     # training 100 -> allowance 170
    card_ = _islands_card({0: (above, 100), 1: (90, 100), 2: (100, 100), 3: (None, 100)})
    assert train_module.island_feedback([1.0] * 4, card_, [0, 1, 2, 3]) == pytest.approx([step, 1 / step, 1, 1])
    assert train_module.island_places(card_, [1, 2, 3]) == [pytest.approx(-10 / 70), 0.0, None]
    # the worst dataset decides: one dataset above the target raises the phase even if another is below
    two = _islands_card({0: (90, 100)}, {0: (above, 100)})
    assert train_module.island_feedback([1.0], two, [0]) == pytest.approx([step])
    # clamped to the range
    assert train_module.island_feedback([high, low], _islands_card({0: (500, 100), 1: (0, 100)}), [0, 1]) == \
        pytest.approx([high, low])


def test_island_feedback_moves_the_weights_is_logged_and_survives_a_resume(tmp_path):
    from slicegan_core.config import TrainConfig
    with pytest.raises(ValueError, match="fidelity_seeds"):
        TrainConfig(island_feedback=True, fidelity_seeds=0)
    run_dir = train(_skewed_specs(tmp_path), tmp_path / "run", preset_name="tiny", steps=10, island_penalty=4.0,
                    island_feedback=True)
    series = [json.loads(line) for line in (run_dir / "fidelity.jsonl").read_text().splitlines()]
    assert [e["step"] for e in series] == [5, 10]
    factors = [e["island_factors"] for e in series]
    assert all(set(f) == {"0", "1"} and set(e["island_places"]) == {"0", "1"} for f, e in zip(factors, series))
    one_step = {round(train_module.ISLAND_FEEDBACK_STEP ** k, 4) for k in range(-1, 2)}
    assert all(f in one_step for f in factors[0].values())      # at most one step from 1 after the first checkpoint
    tensors, meta = train_module.load_tensors(run_dir / "checkpoint.safetensors")
    assert [round(s, 4) for s in meta["island_scales"]] == list(factors[-1].values())
    # a resume starts from the checkpoint's factors and drops no and duplicates no series line
    run = train_module.Run(run_dir, json.loads((run_dir / "config.json").read_text()))
    run.restore()
    assert run.island_phase_weights.tolist() == pytest.approx(list(factors[-1].values()), abs=1e-4)
    resume(run_dir, steps=15)
    assert [json.loads(line)["step"] for line in (run_dir / "fidelity.jsonl").read_text().splitlines()] == [5, 10, 15]
    # off by default: no factors, nothing in the series
    plain = _run(_skewed_specs(tmp_path), tmp_path, island_penalty=4.0)
    assert plain.island_scales is None
