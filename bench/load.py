"""What else ran on the machine while a benchmark did: the honesty of a shared 2-core machine.

A benchmark on a machine others share is only as good as its knowledge of them. `OthersCpu`
measures the CPU time every other process took during a block (all CPU time in /proc/stat less
that of the benchmark's own processes), in cores, so a result can say "measured under load"
instead of silently reporting a slow number; the 1-minute load average is kept beside it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
UNDER_LOAD = 0.25  # cores taken by other processes during a measurement


def busy_ticks() -> int:
    """CPU time spent by everything on the machine (all cores), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(
        int, Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return user + nice + system + irq + softirq + steal


def process_ticks(pids: list[int]) -> int:
    """CPU time of these processes (all their threads), from /proc/PID/stat."""
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def children_ticks() -> int:
    """CPU time of this process's finished (waited-for) children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return round((usage.ru_utime + usage.ru_stime) * TICK)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def descendants(pid: int) -> list[int]:
    found = [pid]
    for child in children(pid):
        found += descendants(child)
    return found


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class OthersCpu:
    """`with OthersCpu() as others: ...`, then `others.cores`: the CPU others took meanwhile.

    Ours are this process with its descendants (and `extra()`, for servers started elsewhere),
    plus the children it waited for during the block.
    """

    def __init__(self, extra: Callable[[], list[int]] = list):
        self.extra = extra
        self.cores = 0.0
        self.load_before = self.load_after = 0.0

    def _ours(self) -> list[int]:
        return sorted({*descendants(os.getpid()), *self.extra()})

    def __enter__(self) -> OthersCpu:
        self.load_before = load_average()
        self._pids = self._ours()
        self._busy, self._mine, self._waited = (
            busy_ticks(),
            process_ticks(self._pids),
            children_ticks(),
        )
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc_info) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        # Processes that started during the block are counted from their start (their ticks
        # before it are zero), ones that ended and were waited for through children_ticks.
        pids = sorted({*self._pids, *self._ours()})
        mine = process_ticks(pids) - self._mine + children_ticks() - self._waited
        self.cores = max(0.0, (busy_ticks() - self._busy - mine) / TICK / elapsed)
        self.load_after = load_average()

    @property
    def under_load(self) -> bool:
        return self.cores > UNDER_LOAD
