"""CPU threads from the machine's load (slicegan_core.threads)."""
import json
import subprocess
import sys
import time

import pytest
import torch

from slicegan_core import threads as threads_module
from slicegan_core.threads import AutoThreads, threads_for


@pytest.fixture(autouse=True)
def keep_torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("other_cores, cores, expected", [
    (0.0, 2, 2), (0.4, 2, 2),          # a browser or an idle app beside us: both cores
    (0.6, 2, 1), (1.0, 2, 1), (3.0, 2, 1),   # one or more busy processes: one thread, never zero
    (0.0, 8, 8), (2.6, 8, 5), (0.0, 1, 1),
])
def test_threads_are_the_cores_the_others_leave(other_cores, cores, expected):
    assert threads_for(other_cores, cores) == expected


class FakeMachine:
    """/proc/stat and our own CPU time, advanced by hand: ``tick(wall, ours, others)`` in seconds / cores."""

    def __init__(self, monkeypatch, cores=2):
        self.now, self.busy, self.own = 1000.0, 0.0, 0.0
        monkeypatch.setattr(threads_module, "usable_cores", lambda: cores)
        monkeypatch.setattr(threads_module, "_machine_busy_s", lambda: self.busy)
        monkeypatch.setattr(threads_module, "_own_cpu_s", lambda: self.own)
        monkeypatch.setattr(threads_module.time, "monotonic", lambda: self.now)
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def tick(self, wall, ours, others):
        self.now += wall
        self.own += ours * wall
        self.busy += (ours + others) * wall


def test_auto_follows_the_load_and_ignores_one_burst(monkeypatch):
    machine = FakeMachine(monkeypatch)
    torch.set_num_threads(1)
    policy = AutoThreads("auto", check_every_s=3)
    machine.tick(3, ours=2.0, others=0.1)
    assert policy.update() == 2                       # quiet: both cores
    machine.tick(3, ours=1.3, others=0.7)             # a busy process starts beside us
    assert policy.update() == 2                       # one reading is not enough to change
    machine.tick(3, ours=1.3, others=0.7)
    assert policy.update() == 1
    machine.tick(1, ours=1.0, others=1.0)
    assert policy.update() == 1                       # not re-read before check_every_s
    machine.tick(3, ours=1.0, others=1.0)
    assert policy.update() == 1                       # still busy: stays at one
    machine.tick(3, ours=1.0, others=0.0)             # the other process ended
    policy.update()
    machine.tick(3, ours=1.0, others=0.0)
    assert policy.update() == 2
    assert [count for _, count in policy.changes] == [2, 1, 2]


def test_settle_decides_at_once_before_a_volume(monkeypatch):
    machine = FakeMachine(monkeypatch)
    policy = AutoThreads("auto")
    machine.tick(0.5, ours=0.0, others=1.0)
    assert policy.settle() == 1
    machine.tick(0.5, ours=0.0, others=0.0)
    assert policy.settle() == 2


def test_a_fixed_count_is_kept_whatever_the_load(monkeypatch):
    machine = FakeMachine(monkeypatch)
    policy = AutoThreads(1, check_every_s=0)
    machine.tick(3, ours=0.0, others=0.0)
    assert policy.update() == 1 and policy.settle() == 1


def test_omp_num_threads_is_the_ceiling(monkeypatch):
    machine = FakeMachine(monkeypatch, cores=8)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    policy = AutoThreads("auto")
    machine.tick(1, ours=0.0, others=0.0)
    assert policy.settle() == 3


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_real_busy_process_is_seen():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)                                # its interpreter has started
        others = AutoThreads("auto").other_cores(sample_s=0.5)
    finally:
        hog.kill()
        hog.wait()
    assert others is not None and others >= 0.5      # it gets at least half a core, whatever else runs


def test_training_logs_its_thread_count(tiny_specs, tmp_path):
    from slicegan_core.train import train

    train(tiny_specs, tmp_path / "auto", preset_name="tiny", steps=2, log_every=1)
    train(tiny_specs, tmp_path / "fixed", preset_name="tiny", steps=2, log_every=1, threads=1)
    auto = [json.loads(line) for line in (tmp_path / "auto" / "events.jsonl").read_text().splitlines()]
    fixed = [json.loads(line) for line in (tmp_path / "fixed" / "events.jsonl").read_text().splitlines()]
    assert all(1 <= e["threads"] <= threads_module.usable_cores() for e in auto if "loss_d" in e)
    assert [e["threads"] for e in fixed if "loss_d" in e] == [1, 1]
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["train"]["threads"] == "auto"


def test_threads_setting_is_checked():
    from slicegan_core.config import TrainConfig

    assert TrainConfig().threads == "auto" and TrainConfig(threads=2).threads == 2
    for bad, message in (("many", "'auto' or a number"), (-1, "at least 0"), (1.5, "'auto' or a whole number")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(threads=bad)
