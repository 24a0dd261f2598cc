"""Servers on loopback, started and stopped as their users do: the tests' and benchmarks' one
lifecycle of a server process.

`serve(model_dir, workdir, ...)` runs `kubedetect serve MODEL_DIR` (which execs Gunicorn with
serving/gunicorn.conf.py) on a free port of 127.0.0.1, its settings passed as KUBEDETECT_*
variables as in the container; `Server` runs any other command (KServe's model server in the
benchmark). Each keeps its output in a log file in its working folder. The tests use it through
tests/serving/conftest.py (as `servers`), bench/serve.py imports it (as `tests.servers`).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
KSERVE_VENV = Path(os.environ.get("KSERVE_VENV", REPO / ".venv-kserve"))


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on (the kernel's choice, released again)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server process listening on 127.0.0.1:`port`, its output in `workdir`/`log_name`."""

    def __init__(
        self,
        argv: Sequence[str],
        workdir: Path,
        *,
        port: int,
        env: dict[str, str] | None = None,
        session: bool = False,
        preexec_fn: Callable[[], None] | None = None,
        log_name: str = "server.log",
    ):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.workdir = workdir
        self.log_path = workdir / log_name
        self.session = session
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open while the server runs
        self.process = subprocess.Popen(
            list(argv),
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=session,  # its own process group, as a terminal's foreground job
            preexec_fn=preexec_fn,
        )

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, **{"timeout": 30, **kwargs})

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, **{"timeout": 30, **kwargs})

    def wait(self, path: str = "/v2/health/ready", timeout: float = 60) -> Server:
        """Until `path` answers 200; fails with the log if the server exits or never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log()}")
            try:
                if self.get(path, timeout=5).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{path} did not answer 200 within {timeout} s:\n{self.log()}")

    def workers(self) -> list[int]:
        """The pids of the server's worker processes (the master's children)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def wait_workers(self, count: int, timeout: float = 30) -> list[int]:
        """The worker pids once the master has forked `count` of them (it forks them in turn)."""
        deadline = time.monotonic() + timeout
        while len(self.workers()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.workers()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def json_log(self) -> list[dict]:
        """The log lines that are JSON objects (LiteRT's C++ runtime prints one plain line)."""
        text = self.log()
        complete = text[: text.rfind("\n") + 1]  # the server may be writing the last line now
        return [json.loads(line) for line in complete.split("\n") if line.startswith("{")]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int | None:
        """Signal the server (its whole process group when it has one) and wait for it; kill
        it if it outlasts `timeout`."""
        if self.process.poll() is None:
            send = (lambda s: os.killpg(self.process.pid, s)) if self.session else None
            (send or self.process.send_signal)(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                (send or self.process.send_signal)(signal.SIGKILL)
                self.process.wait()
        self._log.close()
        return self.process.returncode


def serve(
    model_dir: Path,
    workdir: Path,
    *,
    flags: Sequence[str] = (),
    env: dict[str, str] | None = None,
    session: bool = False,
    preexec_fn: Callable[[], None] | None = None,
) -> Server:
    """`kubedetect serve MODEL_DIR FLAGS...` on a free port, as a user starts it, with only the
    KUBEDETECT_* settings given here (none inherited) and its own HOME and metrics folder."""
    port = free_port()
    home = workdir / "home"  # Gunicorn would put a control socket under ~/.gunicorn
    home.mkdir(parents=True, exist_ok=True)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KUBEDETECT_")}
    environ |= {
        "HOME": str(home),
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
        "KUBEDETECT_PORT": str(port),  # settings by environment, as in the container
        "PYTHONUNBUFFERED": "1",
    } | (env or {})
    argv = [sys.executable, "-m", "cli", "serve", str(model_dir), *flags]
    return Server(argv, workdir, port=port, env=environ, session=session, preexec_fn=preexec_fn)


UNTRAINED_CLASSES = ("circle", "square", "triangle")


def untrained_models(
    out_dir: str, *, input_size: int = 128, modes: Sequence[str] = ("float32", "int8")
) -> str:
    """Untrained but real model folders (one per mode), made by the project's own build and
    conversion code (calibrated on random pixels): the files `kubedetect serve` takes from
    training. The speed of a model does not depend on its weights."""
    from kubedetect.io.modelcard import ModelCard, TensorSpec
    from kubedetect.network.architecture import build_detector
    from kubedetect.network.quantize import convert, write_variant

    model = build_detector(len(UNTRAINED_CLASSES), input_size)
    source = ModelCard(
        kind="keras",
        variant="float",
        file="model.keras",
        sha256="0" * 64,
        classes=UNTRAINED_CLASSES,
        input_size=input_size,
        stride=4,
        input=TensorSpec("image", "float32"),
        outputs={name: TensorSpec(name, "float32") for name in ("heatmap", "size", "offset")},
        provenance={"note": "untrained, for the serving tests and benchmarks"},
    )
    rng = np.random.default_rng(0)
    calibration = [
        rng.integers(0, 256, (1, input_size, input_size, 3)).astype(np.float32) for _ in range(8)
    ]
    for mode in modes:
        write_variant(out_dir, mode, convert(model, mode, calibration), source)
    return out_dir


def uploads(url: str, data: bytes, count: int, content_type: str = "image/png") -> list[tuple]:
    """`count` uploads of `data` to `url` at once, raw and (every other one) as a browser's form;
    for each (status, content type, body), or (-1, the error's name, b"") for a connection
    that failed (a worker killed mid-request)."""

    def send(i: int) -> tuple:
        try:
            if i % 2:
                r = requests.post(url, files={"image": ("up", data, content_type)}, timeout=300)
            else:
                r = requests.post(
                    url, data=data, headers={"Content-Type": content_type}, timeout=300
                )
        except requests.RequestException as exc:
            return -1, type(exc).__name__, b""
        return r.status_code, r.headers.get("Content-Type", ""), r.content

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(send, range(count)))


def kserve_python() -> Path:
    """The KServe virtualenv's python (KServe's server, client and models, apart from .venv
    whose kfp pins conflict with KServe's), made by bench/kserve/setup-venv.sh if needed."""
    subprocess.run(["bash", str(REPO / "bench/kserve/setup-venv.sh"), str(KSERVE_VENV)], check=True)
    return KSERVE_VENV / "bin" / "python"


class MemoryCgroup:
    """A memory cgroup (v1) with a limit, for a server to run in: the kernel enforces the limit
    on its processes together, as it does a pod's, and kills one of them when they pass it.
    Needs root and the v1 memory hierarchy (`MemoryCgroup.make` returns None without them)."""

    ROOT = Path("/sys/fs/cgroup/memory")

    def __init__(self, folder: Path):
        self.folder = folder

    @classmethod
    def make(cls, limit: int) -> MemoryCgroup | None:
        folder = cls.ROOT / f"kubedetect-{os.getpid()}-{time.monotonic_ns()}"
        try:
            folder.mkdir()
        except OSError:
            return None
        (folder / "memory.limit_in_bytes").write_text(str(limit))
        swap = folder / "memory.memsw.limit_in_bytes"  # no swapping past the limit either
        if swap.exists():
            swap.write_text(str(limit))
        return cls(folder)

    def enter(self) -> None:
        """Move the calling process in (a Popen `preexec_fn`: the child, before it execs)."""
        (self.folder / "cgroup.procs").write_text(str(os.getpid()))

    def stat(self, name: str) -> int:
        return int((self.folder / name).read_text().split()[0])

    @property
    def peak(self) -> int:
        """The most memory the processes inside have used together, in bytes."""
        return self.stat("memory.max_usage_in_bytes")

    @property
    def oom_kills(self) -> int:
        """Processes the kernel killed for passing the limit (0 where it does not count)."""
        for line in (self.folder / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def remove(self) -> None:
        deadline = time.monotonic() + 10
        while (self.folder / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.1)  # processes still leaving
        self.folder.rmdir()
