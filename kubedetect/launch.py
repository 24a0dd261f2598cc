"""`kubedetect train --workers N`: the local stand-in for a TFJob.

It runs N processes of the training entrypoint (`python -m kubedetect.train`, the TFJob's
container command, with the same flags) and gives each the TF_CONFIG a TFJob would: a cluster of
N workers, hosts mapped to free localhost ports, and the worker's own index. Not a second
training code path: the workers cannot tell the difference.

- Their output is streamed line by line, each line prefixed with "[worker i]".
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
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

from kubedetect.errors import KubedetectError
from kubedetect.resources import MEMORY_ENV, available_cores, memory_limit, parse_quantity

POLL_SECONDS = 0.2


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


def _stream(prefix: str, pipe, out, lock: threading.Lock) -> None:
    for raw in iter(pipe.readline, b""):
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        for line in text.split("\r"):  # progress bars redraw with \r: one line per redraw
            if line.strip():
                with lock:
                    out.write(f"{prefix} {line}\n")
                    out.flush()
    pipe.close()


def launch(
    train_argv: list[str], workers: int, *, threads: int = 0, env: dict | None = None, out=None
) -> int:
    """Run `workers` training processes with `train_argv` until all succeed or one fails."""
    if workers < 1:
        raise KubedetectError(f"--workers must be at least 1, got {workers}")
    out = out or sys.stdout
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
    ports, reserved = reserve_ports(workers)
    reserved.close()
    try:
        for i in range(workers):
            worker_env = dict(base_env, TF_CONFIG=tf_config(ports, i))
            process = subprocess.Popen(
                [sys.executable, "-m", "kubedetect.train", *argv],
                env=worker_env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            processes.append(process)
            with lock:
                out.write(
                    f"[launcher] worker {i} started (pid {process.pid}, localhost:{ports[i]})\n"
                )
                out.flush()
            thread = threading.Thread(
                target=_stream, args=(f"[worker {i}]", process.stdout, out, lock), daemon=True
            )
            thread.start()
            streams.append(thread)
        return _supervise(processes, out, lock)
    except KeyboardInterrupt:
        _kill_all(processes)
        with lock:
            out.write("[launcher] interrupted: every worker stopped\n")
            out.flush()
        return 130
    finally:
        _kill_all(processes)
        for thread in streams:
            thread.join(timeout=5)


def _supervise(processes: list[subprocess.Popen], out, lock) -> int:
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
                with lock:
                    out.write(
                        f"[launcher] worker {index} failed (exit status {code}); "
                        "stopped the others\n"
                    )
                    out.flush()
                return code if code > 0 else 128 - code
            if all(c == 0 for c in codes):
                with lock:
                    out.write(f"[launcher] all {len(processes)} workers finished\n")
                    out.flush()
                return 0
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
