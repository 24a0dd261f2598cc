"""kfp.local's output, sorted: a log file per task, a line on the console as each starts and ends.

kfp.local (SubprocessRunner) writes everything to standard output: its own log records (a task
starting, finishing, its outputs), and each task's process output line by line (the executor
input as JSON, TensorFlow's start-up chatter, the step's own lines), plus Python warnings on
standard error. `TaskLogs` stands in for both streams while a pipeline runs and sorts what
arrives:

- a task's output goes to `LOG_DIR/<task>.log` (`preprocess-shard-2.log`, `train.log`, ...);
- kfp.local's own records and warnings go to `LOG_DIR/kfp-local.log`;
- the console gets a line when a task starts and one when it ends, with the figure that matters
  (`describe`), or, when it failed, the task's last lines and the path of its log.

Which task a line belongs to is told by the thread that writes it: kfp.local runs each task in
one thread from "Executing task" to "finished with status" (the iterations of a ParallelFor in
threads of their own, side by side), and prints the task's output in that thread.
The formats read here are kfp 2.17's (kfp/local/task_dispatcher.py, logging_utils.py and
subprocess_task_handler.py, kubeflow/pipelines 7b70c7b, unchanged on master); the test of the
demo's console fails if they change.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kubedetect.console import Console

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours task names and statuses
STARTED = re.compile(r" - INFO - Executing task '([^']+)'")
FINISHED = re.compile(r" - (?:INFO|ERROR) - Task '([^']+)' finished with status (\w+)")
# The executor input names the task's folder: ".../for-loop-1-iteration-2/preprocess-shard/..."
TASK_ROOT = re.compile(r'"outputFile": "(.+)/executor_output\.json"')
ITERATION = re.compile(r"-iteration-(\d+)$")
# kfp.local indents a task's output by printing four spaces before each line (logging_utils.
# indented_print); a write of exactly that, at the start of a line, is not the task's.
INDENT = " " * 4


@dataclass
class Task:
    """A task while it runs: where its output goes until it is over."""

    name: str  # kfp's task name: "preprocess-shard"
    started: float = field(default_factory=time.monotonic)
    root: str | None = None  # its folder under the run, once the executor input names it
    label: str = ""  # "preprocess shard 2"
    log_path: str | None = None
    file: io.TextIOBase | None = None
    pending: list[str] = field(default_factory=list)  # lines before the log file is known


# (label, the task's folder) -> the figure that matters, or "" when there is none
Describe = Callable[[str, str], str]
# (label, a line of its output) -> (done, total) when the line tells progress, else None
Progress = Callable[[str, str], "tuple[int, int] | None"]


class TaskLogs(io.TextIOBase):
    """A text stream that sorts kfp.local's output; use as sys.stdout and sys.stderr."""

    def __init__(
        self,
        log_dir: str,
        console: Console,
        describe: Describe = lambda label, root: "",
        progress: Progress = lambda label, line: None,
        echo: io.TextIOBase | None = None,
    ):
        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        self.console = console
        self.describe = describe
        self.progress = progress
        self.echo = echo  # --verbose: everything also goes here, as kfp.local wrote it
        self.kfp_log_path = os.path.join(log_dir, "kfp-local.log")
        self._kfp_log = open(self.kfp_log_path, "w", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self._partial: dict[int, str] = {}  # by thread: text not yet ended by a newline
        self._tasks: dict[int, Task] = {}  # by thread: the task it runs
        self.failed: list[Task] = []
        self.finished: list[Task] = []

    # -- the stream -------------------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if self.echo is not None:
            self.echo.write(text)
        thread = threading.get_ident()
        with self._lock:
            partial = self._partial.get(thread, "")
            if not partial and text == INDENT:
                return len(text)
            lines = (partial + text).split("\n")
            self._partial[thread] = lines.pop()
        for line in lines:
            # A progress bar redrawn with carriage returns: its last state is the line.
            self._line(thread, ANSI.sub("", line).rstrip("\r").rpartition("\r")[2])
        return len(text)

    def flush(self) -> None:
        if self.echo is not None:
            self.echo.flush()

    def close(self) -> None:
        """End: what is left goes to kfp-local.log; tasks never finished are closed."""
        for thread, text in list(self._partial.items()):
            if text:
                self._line(thread, ANSI.sub("", text))
        self._partial.clear()
        for task in list(self._tasks.values()):
            self._close_task(task)
        self._tasks.clear()
        if not self._kfp_log.closed:
            self._kfp_log.close()
        super().close()

    # -- the lines --------------------------------------------------------------------------

    def _line(self, thread: int, line: str) -> None:
        task = self._tasks.get(thread)
        started = STARTED.search(line)
        if started:
            self._kfp(line)
            self._tasks[thread] = Task(started.group(1))
            return
        finished = FINISHED.search(line)
        if task is not None and finished and finished.group(1) == task.name:
            self._kfp(line)
            del self._tasks[thread]
            self._finish(task, ok=finished.group(2) == "SUCCESS")
            return
        if task is None:
            self._kfp(line)
            return
        if task.root is None:
            found = TASK_ROOT.search(line)
            if found:
                self._open(task, found.group(1))
        self._task_line(task, line)
        self._report_progress(task, line)

    def _kfp(self, line: str) -> None:
        with self._lock:
            self._kfp_log.write(line + "\n")
            self._kfp_log.flush()

    def _task_line(self, task: Task, line: str) -> None:
        if task.file is None:
            task.pending.append(line)
        else:
            task.file.write(line + "\n")
            task.file.flush()

    def _open(self, task: Task, root: str) -> None:
        """The task's folder is known: name it, open its log, say that it started."""
        task.root = root
        iteration = ITERATION.search(os.path.dirname(root))
        base = os.path.basename(root)
        name = f"{base}-{iteration.group(1)}" if iteration else base
        task.label = name.replace("-", " ")
        task.log_path = os.path.join(self.log_dir, f"{name}.log")
        task.file = open(task.log_path, "w", encoding="utf-8")  # noqa: SIM115
        for line in task.pending:
            task.file.write(line + "\n")
        task.pending.clear()
        self.console.started_step(task.label)

    def _report_progress(self, task: Task, line: str) -> None:
        told = self.progress(task.label, line)
        if told is not None:
            self.console.show_progress(*told, description=f"       {task.label}", unit="epoch")

    def _finish(self, task: Task, ok: bool) -> None:
        if task.file is None:  # never named by its executor input: name it after kfp
            self._open(task, task.name)
        seconds = time.monotonic() - task.started
        self._close_task(task)
        self.console.close_progress()
        if ok:
            self.finished.append(task)
            figure = ""
            if task.root and os.path.isdir(task.root):
                try:
                    figure = self.describe(task.label, task.root)
                except (OSError, ValueError, KeyError, TypeError):
                    figure = ""  # a figure that cannot be read does not fail the run
            self.console.done(task.label, seconds, figure)
        else:
            self.failed.append(task)
            self.console.failed(task.label, seconds, task.log_path)

    def _close_task(self, task: Task) -> None:
        if task.file is not None and not task.file.closed:
            task.file.close()
