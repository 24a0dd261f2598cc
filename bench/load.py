"""Load: what else ran on the machine while a benchmark did, the HTTP load a benchmark makes,
and comparisons that hold on a shared 2-core machine whose speed drifts.

A benchmark on a machine others share is only as good as its knowledge of them. `OthersCpu`
measures the CPU time every other process took during a block (all CPU time in /proc/stat less
that of the benchmark's own processes), in cores, so a result can say "measured under load"
instead of silently reporting a slow number; the 1-minute load average is kept beside it.
`Wrk` runs wrk against a server; `Paired` compares two servers' runs ratio by ratio.

A library of the benchmarks (bench/__main__.py runs none of it on its own).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
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


# -- HTTP load: wrk ------------------------------------------------------------------------------

WRK_SCRIPT = r"""
local bodies, ctype, n = {}, "application/octet-stream", 0
init = function(args)
  ctype = args[1]
  for i = 2, #args do
    local f = assert(io.open(args[i], "rb")); bodies[#bodies + 1] = f:read("*all"); f:close()
  end
end
request = function()
  n = n + 1
  return wrk.format("POST", nil, {["Content-Type"] = ctype}, bodies[(n % #bodies) + 1])
end
done = function(s, latency, requests)
  local e = s.errors
  io.write(string.format('\nRESULT {"requests": %d, "duration_us": %d, "errors": %d, ' ..
    '"p50": %d, "p95": %d, "p99": %d}\n', s.requests, s.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


class Wrk:
    """wrk (Debian's package: a closed loop of keep-alive connections) POSTing the given files
    in turn, and what the server's processes spent meanwhile."""

    def __init__(self, folder: Path):
        if not shutil.which("wrk") and os.geteuid() == 0 and shutil.which("apt-get"):
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            if subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], env=env).returncode:
                subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
                subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, env=env)
        self.wrk = shutil.which("wrk") or sys.exit("this benchmark needs wrk: apt-get install wrk")
        self.script = folder / "post.lua"
        self.script.write_text(WRK_SCRIPT)

    def run(self, url: str, bodies, content_type: str, c: int, duration: float, server) -> dict:
        """req/s, errors, p50/p95/p99 (ms), the CPU time per request of `server`'s processes,
        and how they hold the connections (`split`, sampled a moment into the run)."""
        processes = descendants(server.process.pid)
        cpu = process_ticks(processes)
        split: list[int] = []
        port = server.port
        timer = threading.Timer(min(2.0, duration / 4), lambda: split.extend(connections(port)))
        timer.start()
        threads = "1" if c == 1 else "2"
        argv = [self.wrk, "-t", threads, "-c", str(c), "-d", f"{int(duration)}s", "--timeout"]
        argv += ["10s", "-s", str(self.script), url, "--", content_type, *map(str, bodies)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
        cpu = process_ticks(processes) - cpu
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"wrk failed: {done.stdout}\n{done.stderr}")
        r = json.loads(line.removeprefix("RESULT "))
        return {
            "rps": r["requests"] / (r["duration_us"] / 1e6),
            "errors": r["errors"],
            "cpu_ms": cpu / TICK * 1000 / max(1, r["requests"]),
            "split": "/".join(map(str, split)) or "-",
        } | {f"p{q}": r[f"p{q}"] / 1000 for q in (50, 95, 99)}


def connections(port: int) -> list[int]:
    """The established connections to `port` held by each server process, most first: a
    keep-alive connection stays with the worker that accepted it, and with Gunicorn's gthread
    and uvicorn alike whichever worker wakes first takes it."""
    argv = ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"]
    listing = subprocess.run(argv, capture_output=True, text=True).stdout
    return sorted(collections.Counter(re.findall(r"pid=(\d+)", listing)).values(), reverse=True)


# -- comparing two servers on a machine whose speed drifts ---------------------------------------

# Student's t for a two-sided 90 % interval by degrees of freedom (the next smaller one between).
T90 = {1: 6.314, 2: 2.920, 3: 2.353, 4: 2.132, 5: 2.015, 6: 1.943, 7: 1.895, 8: 1.860, 9: 1.833}
T90 |= {10: 1.812, 12: 1.782, 15: 1.753, 20: 1.725, 25: 1.708, 29: 1.699, 40: 1.684, 60: 1.671}


class Paired:
    """Throughput ratios run by run (ours against theirs of the same round or pair), with a
    90 % interval of their geometric mean: averaged as logarithms, so that 2x and 0.5x cancel
    out and one freak run weighs no more on one side than on the other. A target is met only
    when the interval's lower end clears it: a difference smaller than the machine's run-to-run
    noise is not claimed."""

    def __init__(self, ours: list[dict], theirs: list[dict], unit: str = "round"):
        self.ratios = [a["rps"] / b["rps"] for a, b in zip(ours, theirs, strict=True)]
        self.unit = unit
        logs = [math.log(r) for r in self.ratios]
        n = len(logs)
        half = (
            T90[max(k for k in T90 if k <= n - 1)] * statistics.stdev(logs) / n**0.5 if n > 1 else 0
        )
        self.mean, self.low, self.high = (
            math.exp(statistics.mean(logs) + d) for d in (0, -half, half)
        )
        self.rps = (
            statistics.mean(r["rps"] for r in ours),
            statistics.mean(r["rps"] for r in theirs),
        )

    def __str__(self) -> str:
        n, ratios = len(self.ratios), self.ratios
        if n <= 10:
            spread = f"by {self.unit} " + ", ".join(f"{r:.2f}" for r in ratios)
        else:
            spread = f"{n} {self.unit}s, ratios {min(ratios):.2f}-{max(ratios):.2f}"
        interval = f", 90 % interval {self.low:.3f}-{self.high:.3f}x" if n > 1 else ""
        means = f"{self.rps[0]:.0f} vs {self.rps[1]:.0f} req/s (means)"
        return f"{means}; {spread}; geometric mean {self.mean:.3f}x{interval}"
