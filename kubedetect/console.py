"""What a person sees while kubedetect works: a line per step, the details in log files.

The long commands (`make demo`, `kubedetect pipeline run-local`) run steps whose own output is
long: TensorFlow's start-up chatter, kfp.local's executor inputs, every training worker's log.
A person wants to know which step runs, how long it took, and the one figure that says whether it
went well; the rest belongs in files to open when something went wrong. So the console shows

     0:12  train                started
     4:03  train                done in 3 min 51 s: val mAP@0.5 0.953

and, when a step fails, the step's last lines and the path of its full log. Progress bars are
drawn only on a terminal (redrawn into a file or a pipe, one bar becomes hundreds of lines).

Lines may come from several threads at once (steps that run side by side): each is written
whole, under one lock, and any bar on the terminal is cleared first and drawn again after.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
import time
from collections import deque

NAME_WIDTH = 20  # the step names line up in a column: "preprocess shard 3" fits
TAIL_LINES = 12  # how much of a failed step's log the console shows
BAR = "{desc} {bar:24} {n_fmt}/{total_fmt} {unit}s [{elapsed}<{remaining}]"


def duration(seconds: float) -> str:
    """4.2 s, 3 min 51 s, 1 h 2 min: as a person says it."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def shown(path: str) -> str:
    """A path as short as it can be said: relative to the working folder when inside it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def progress_wanted(stream=None) -> bool:
    """Progress bars only on a terminal (tqdm draws on stderr)."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


# TensorFlow's start-up chatter in C++ (absl) log format: "I0000 00:00:1796397490.5 ... port.cc"
# for information, and the notice that precedes it; never why something failed.
CHATTER = re.compile(r"^(I\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl::)")


CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def last_lines(path: str, count: int = TAIL_LINES) -> list[str]:
    """The last `count` lines of a log, each Python traceback folded to its final line (the
    error's message) and TensorFlow's informational chatter left out: what a person reads
    first when a step failed. The file keeps it all."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    kept: deque[str] = deque(maxlen=count)
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
            continue
        if in_traceback:
            if not line.strip() or line[:1].isspace():
                continue  # a frame, or the source line under it
            in_traceback = False  # the exception's own line: kept
        if line.strip() and not CHATTER.match(line) and not line.startswith(CHAINED):
            kept.append(line.rstrip())
    return list(kept)


class Console:
    """Step lines on `stream` (standard output), each stamped with the time since the start."""

    def __init__(self, stream=None, *, name_width: int = NAME_WIDTH):
        self.stream = sys.stdout if stream is None else stream
        self.name_width = name_width
        self.started = time.monotonic()
        self.terminal = progress_wanted(self.stream)
        self._lock = threading.RLock()
        self._bar = None

    # -- plain lines ------------------------------------------------------------------------

    def line(self, text: str = "") -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.clear()
            self.stream.write(text + "\n")
            self.stream.flush()
            if self._bar is not None:
                self._bar.refresh()

    def lines(self, text: str) -> None:
        for line in text.splitlines():
            self.line(line)

    # -- steps ------------------------------------------------------------------------------

    def _step(self, name: str, text: str) -> None:
        clock = time.monotonic() - self.started
        minutes, seconds = divmod(int(clock), 60)
        self.line(f"{minutes:>3}:{seconds:02d}  {name:<{self.name_width}} {text}".rstrip())

    def started_step(self, name: str, detail: str = "") -> None:
        self._step(name, f"started{': ' + detail if detail else ''}")

    def done(self, name: str, seconds: float, figure: str = "") -> None:
        self._step(name, f"done in {duration(seconds)}{': ' + figure if figure else ''}")

    def skipped(self, name: str, why: str) -> None:
        self._step(name, f"skipped: {why}")

    def failed(self, name: str, seconds: float, log_path: str | None) -> None:
        """The failure line, then the last lines of the step's log and where the rest is."""
        self._step(name, f"FAILED after {duration(seconds)}")
        if log_path is None:
            return
        with self._lock:
            for text in last_lines(log_path):
                self.line(f"         | {text}")
            self.line(f"         full log: {shown(log_path)}")

    # -- progress bars ----------------------------------------------------------------------

    def show_progress(self, done: int, total: int, description: str, unit: str = "it") -> None:
        """A bar at done/total, drawn on a terminal only; another description starts another
        bar. Lines written meanwhile appear above it."""
        if not self.terminal:
            return
        from tqdm import tqdm  # noqa: PLC0415

        with self._lock:
            if self._bar is None or self._bar.desc != description:
                self.close_progress()
                self._bar = tqdm(
                    total=total,
                    desc=description,
                    unit=unit,
                    leave=False,
                    file=self.stream,
                    bar_format=BAR,
                )
            self._bar.total = total
            self._bar.n = done
            self._bar.refresh()

    def close_progress(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


@contextlib.contextmanager
def output_to(path: str):
    """Meanwhile, everything this process writes to standard output and error goes to the file
    `path`: Python's own writes and those of C libraries alike (TensorFlow's converter writes
    from C++), appended. For work whose chatter a person does not need to see."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    with open(path, "a", encoding="utf-8") as log:
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                yield
        finally:
            log.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
