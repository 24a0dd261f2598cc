"""`kubedetect train --workers N`: the local stand-in for a TFJob.

It runs N processes of the training entrypoint (`python -m kubedetect.training.train`, the TFJob's
container command, with the same flags) and gives each the TF_CONFIG a TFJob would: a cluster of
N workers, hosts mapped to free localhost ports, and the worker's own index. Not a second
training code path: the workers cannot tell the difference.

- Each worker's full output (standard output and error) goes to its own log file,
  LOG_DIR/worker-<i>.log (without a LOG_DIR, in a temporary folder kept only if a worker
  fails). The console gets the launcher's lines and the workers' own log lines
  (their standard output, where kubedetect.training.train logs: the cluster forming, one line per
  epoch, the export), each prefixed "[worker i]"; not TensorFlow's chatter on standard error, nor
  the gRPC errors a worker can print as its peers leave after a normal finish (docs/TRAINING.md).
  A failed worker's last lines are shown with its log's path.
- Threads: N workers share this machine's cores (the pod's, by kubedetect.resources), so each
  gets cores // N op threads (unless --threads says otherwise).
- Memory: N workers share one memory limit (KUBEDETECT_MEMORY_LIMIT, the cgroup's, or RAM), so
  each is told limit // N in its KUBEDETECT_MEMORY_LIMIT, which sizes its training cache: one
  pod's worth of memory is not promised to every worker.
- If a worker fails, the others are stopped and the launcher exits with the failed worker's
  status. They are stopped with SIGKILL: MultiWorkerMirroredStrategy traps SIGTERM, and a
  worker waiting in a collective op for a dead peer would not notice anything else.
- Ctrl-C (or SIGTERM to the launcher) stops every worker the same way and exits 130. Workers
  run in their own sessions, so the terminal's SIGINT reaches the launcher alone, and they die
  with the launcher even if it is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack

from kubedetect.console import last_lines
from kubedetect.errors import KubedetectError
from kubedetect.resources import MEMORY_ENV, available_cores, memory_limit, parse_quantity

POLL_SECONDS = 0.2
FAILED_WORKER_LINES = 4  # of a failed worker's log, shown on the console
# Where the workers' log files go when launch() is not told: a pipeline step cannot be told by
# argument, so the local pipeline run sets this for its steps (pipelines/run.py). Else a new
# temporary folder, named on the console.
WORKER_LOG_DIR = "KUBEDETECT_WORKER_LOG_DIR"


def tf_config(ports: list[int], index: int, host: str = "localhost") -> str:
    """The TF_CONFIG of worker `index`, as the Training Operator writes it (no chief replica)."""
    return json.dumps(
        {
            "cluster": {"worker": [f"{host}:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
    )


def reserve_ports(count: int) -> tuple[list[int], ExitStack]:
    """Distinct free localhost ports; their sockets stay open (and the ports taken) until the
    returned stack is closed, just before the workers start."""
    stack = ExitStack()
    ports = []
    for _ in range(count):
        sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.bind(("127.0.0.1", 0))
        ports.append(sock.getsockname()[1])
    return ports, stack


try:  # loaded here, not in the child: a child between fork and exec must not import
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # pragma: no cover - not Linux
    _LIBC = None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the launcher dies (Linux only)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stream(prefix: str, pipe, log, out, lock: threading.Lock) -> None:
    """Copy a worker's pipe line by line into its log file and, when `out` is given, to the
    console, prefixed."""
    for raw in iter(pipe.readline, b""):
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        for line in text.split("\r"):  # progress bars redraw with \r: one line per redraw
            if line.strip():
                with lock:
                    log.write(line + "\n")
                    log.flush()
                    if out is not None:
                        out.write(f"{prefix} {line}\n")
                        out.flush()
    pipe.close()


def worker_log_dir(log_dir: str | None = None) -> tuple[str, bool]:
    """The folder of the workers' logs, and whether to keep it after a run that succeeded: as
    given, else $KUBEDETECT_WORKER_LOG_DIR (both kept), else a new temporary folder (kept only
    when a worker failed)."""
    log_dir = log_dir or os.environ.get(WORKER_LOG_DIR)
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
        return log_dir, True
    return tempfile.mkdtemp(prefix="kubedetect-workers-"), False


def launch(
    train_argv: list[str],
    workers: int,
    *,
    threads: int = 0,
    env: dict | None = None,
    out=None,
    log_dir: str | None = None,
) -> int:
    """Run `workers` training processes with `train_argv` until all succeed or one fails."""
    if workers < 1:
        raise KubedetectError(f"--workers must be at least 1, got {workers}")
    out = out or sys.stdout
    log_dir, keep_logs = worker_log_dir(log_dir)
    argv = [a for a in _without_workers(train_argv)]
    if threads <= 0:
        argv += ["--threads", str(max(1, available_cores() // workers))]
    base_env = dict(os.environ if env is None else env)
    base_env.pop("TF_CONFIG", None)
    base_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    explicit = base_env.get(MEMORY_ENV, "").strip()
    shared = int(parse_quantity(explicit)) if explicit else memory_limit()
    base_env[MEMORY_ENV] = str(shared // workers)
    base_env["PYTHONUNBUFFERED"] = "1"

    lock = threading.Lock()
    processes: list[subprocess.Popen] = []
    streams: list[threading.Thread] = []
    with ExitStack() as logs:
        log_paths = [os.path.join(log_dir, f"worker-{i}.log") for i in range(workers)]
        files = [logs.enter_context(open(path, "w", encoding="utf-8")) for path in log_paths]
        if keep_logs:
            _say(out, lock, f"each worker's full log: {os.path.join(log_dir, 'worker-<i>.log')}")
        ports, reserved = reserve_ports(workers)
        reserved.close()
        try:
            for i in range(workers):
                worker_env = dict(base_env, TF_CONFIG=tf_config(ports, i))
                process = subprocess.Popen(
                    [sys.executable, "-m", "kubedetect.training.train", *argv],
                    env=worker_env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
                processes.append(process)
                _say(out, lock, f"worker {i} started (pid {process.pid}, localhost:{ports[i]})")
                for pipe, shown in ((process.stdout, out), (process.stderr, None)):
                    thread = threading.Thread(
                        target=_stream,
                        args=(f"[worker {i}]", pipe, files[i], shown, lock),
                        daemon=True,
                    )
                    thread.start()
                    streams.append(thread)
            code, failed = _supervise(processes, out, lock)
        except KeyboardInterrupt:
            _kill_all(processes)
            _say(out, lock, "interrupted: every worker stopped")
            return 130
        finally:
            _kill_all(processes)
            for thread in streams:
                thread.join(timeout=5)
    if failed is not None:  # its log is complete now: show how it ended
        for line in last_lines(log_paths[failed], FAILED_WORKER_LINES):
            _say(out, lock, f"  | {line}")
        _say(out, lock, f"worker {failed}'s full log: {log_paths[failed]}")
    elif not keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
    return code


def _say(out, lock: threading.Lock, text: str) -> None:
    with lock:
        out.write(f"[launcher] {text}\n")
        out.flush()


def _supervise(processes: list[subprocess.Popen], out, lock) -> tuple[int, int | None]:
    """Wait for every worker; the exit code, and the index of the worker that failed, if any."""
    previous = (
        signal.signal(signal.SIGTERM, _raise_interrupt)
        if threading.current_thread() is threading.main_thread()
        else None
    )
    try:
        while True:
            codes = [p.poll() for p in processes]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                index, code = failed[0]
                _kill_all(processes)
                _say(out, lock, f"worker {index} failed (exit status {code}); stopped the others")
                return (code if code > 0 else 128 - code), index
            if all(c == 0 for c in codes):
                _say(out, lock, f"all {len(processes)} workers finished")
                return 0, None
            time.sleep(POLL_SECONDS)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _kill_all(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()  # SIGKILL: see the module docstring
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


def _without_workers(argv: list[str]) -> list[str]:
    """The flags minus --workers (each worker is one task of the cluster)."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--workers":
            skip = True
            continue
        if arg.startswith("--workers="):
            continue
        kept.append(arg)
    return kept
