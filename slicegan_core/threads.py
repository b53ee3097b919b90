"""How many CPU threads torch should use, from what the other processes on the machine use right now.

On a 2-core laptop a 2-thread training step beside one busy process runs ~3x slower than quiet, and slower
than the same step at 1 thread (``bench/bench_threads.py``): torch's OpenMP threads meet at a barrier after
every kernel, and when the other process holds one core, every barrier waits for a time slice. So the right
count is the cores nobody else is using, re-read while the work runs.

``AutoThreads`` reads the machine's busy time (``/proc/stat``) and this process's own CPU time between two
calls; what is left after subtracting our own is the other processes' load in cores. Where ``/proc/stat``
is missing (macOS, Windows) it leaves torch's default alone.
"""
from __future__ import annotations

import math
import os
import time

import torch

CHECK_EVERY_S = 3.0   # re-read the load at most this often; a training step takes 0.3-3 s on a CPU


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:             # macOS, Windows
        return os.cpu_count() or 1


def _machine_busy_s() -> float | None:
    """Seconds of CPU time all cores have spent busy since boot (``/proc/stat``), or None without it."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy.
    ticks = [int(value) for value in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def threads_for(other_cores: float, cores: int) -> int:
    """Threads for the cores the other processes leave free: ``cores - other_cores`` rounded half down,
    at least 1. E.g. on 2 cores: others below half a core -> 2, a busy process beside us (0.6-1 core) -> 1."""
    return max(1, min(cores, math.floor(cores - other_cores + 0.5)))


class AutoThreads:
    """Sets torch's intra-op threads to the cores the other processes leave free, and re-checks.

    ``setting``: "auto", or a fixed count (0 = torch's default, left alone). Call :meth:`update` between
    pieces of work (a training step, a generation); it reads the load at most every ``check_every_s`` seconds
    and changes the count only when two readings in a row agree, so that one burst does not flip it.
    """

    def __init__(self, setting: int | str = "auto", check_every_s: float = CHECK_EVERY_S):
        self.auto = setting == "auto"
        self.fixed = None if self.auto or not int(setting) else int(setting)
        self.cores = usable_cores()
        if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
            self.cores = min(self.cores, int(os.environ["OMP_NUM_THREADS"]))   # the user's ceiling
        self.check_every_s = check_every_s
        self.changes: list[tuple[float, int]] = []      # (monotonic time, threads) of every change
        self._last = None                                # (wall, machine busy, own cpu) at the last reading
        self._wanted = None
        if self.fixed:
            self._set(self.fixed)
        if self.auto:
            self._read()                                     # the first reading; the count is decided at update()

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def _set(self, threads: int) -> None:
        torch.set_num_threads(threads)
        self.changes.append((time.monotonic(), threads))

    def _read(self) -> float | None:
        """Other processes' load in cores since the last reading (None on the first or without /proc)."""
        busy = _machine_busy_s()
        now = (time.monotonic(), busy, _own_cpu_s())
        previous, self._last = self._last, now
        if busy is None or previous is None or previous[1] is None:
            return None
        wall = now[0] - previous[0]
        if wall <= 0:
            return None
        return max(0.0, ((now[1] - previous[1]) - (now[2] - previous[2])) / wall)

    def other_cores(self, sample_s: float = 0.1) -> float | None:
        """The other processes' load in cores, now: over the time since the last reading (at least ``sample_s``
        seconds: /proc/stat counts in 10 ms ticks), or over ``sample_s`` when the last reading is older than a
        10 s, too stale to stand for now."""
        if self._last is None or time.monotonic() - self._last[0] > 10:
            self._read()
        remaining = sample_s - (time.monotonic() - self._last[0])
        if remaining > 0:
            time.sleep(remaining)
        return self._read()

    def update(self) -> int:
        """Re-read the load if ``check_every_s`` has passed and adjust; returns the thread count in force."""
        if not self.auto or self._last is None or time.monotonic() - self._last[0] < self.check_every_s:
            return self.threads
        others = self._read()
        if others is None:
            return self.threads
        wanted = threads_for(others, self.cores)
        if wanted != self.threads and (wanted == self._wanted or self._wanted is None):
            self._set(wanted)                            # the first decision is taken at once
        self._wanted = wanted
        return self.threads

    def settle(self, sample_s: float = 0.1) -> int:
        """Decide now (before a one-off piece of work such as a generation): read the load, sampling
        ``sample_s`` seconds if there is no recent reading, and set the count at once."""
        if not self.auto:
            if self.fixed and self.fixed != self.threads:   # torch's count is per thread: set it in this one
                torch.set_num_threads(self.fixed)
            return self.threads
        others = self.other_cores(sample_s)
        if others is not None:
            self._wanted = threads_for(others, self.cores)
            if self._wanted != self.threads:
                self._set(self._wanted)
        return self.threads
