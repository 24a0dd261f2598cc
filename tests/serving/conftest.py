"""Fixtures of the serving tests: model folders, images, and real Gunicorn servers on loopback.

Servers are started the way users start them, with `kubedetect serve MODEL_DIR` (which execs
Gunicorn with serving/gunicorn.conf.py), on a free port of 127.0.0.1, settings passed as
KUBEDETECT_* variables and flags. Each keeps its JSON log for the tests to read.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
KSERVE_VENV = Path(os.environ.get("KSERVE_VENV", REPO / ".venv-kserve"))


# -- models -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_variants(request, tmp_path_factory) -> Path:
    """A folder of quantized variants (float32/, int8/, ...): the briefly trained detector of the
    training tests when the suite has it, else an untrained one made with the same code."""
    try:
        return Path(request.getfixturevalue("quantized_models"))
    except pytest.FixtureLookupError:
        out = tmp_path_factory.mktemp("untrained-models")
        return Path(make_quantized_models(str(out)))


@pytest.fixture(scope="session")
def trained(request) -> bool:
    """Whether the models under test were trained (real boxes) or not (boxes of chance)."""
    try:
        request.getfixturevalue("quantized_models")
        return True
    except pytest.FixtureLookupError:
        return False


@pytest.fixture(scope="session")
def model_dir(model_variants) -> Path:
    return model_variants / "int8"


UNTRAINED_CLASSES = ("circle", "square", "triangle")


def make_quantized_models(out_dir: str, *, input_size: int = 128, modes=("float32", "int8")) -> str:
    """An untrained but real model folder, made by the project's own build and conversion code
    (calibrated on random pixels): the files `kubedetect serve` takes from training."""
    from kubedetect.model import build_detector
    from kubedetect.modelcard import ModelCard, TensorSpec
    from kubedetect.quantize import convert, write_variant

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
        provenance={"note": "untrained, for serving tests"},
    )
    rng = np.random.default_rng(0)
    calibration = [
        rng.integers(0, 256, (1, input_size, input_size, 3)).astype(np.float32) for _ in range(8)
    ]
    for mode in modes:
        write_variant(out_dir, mode, convert(model, mode, calibration), source)
    return out_dir


# -- images -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def shapes(tmp_path_factory):
    """A few synthetic VOC images of shapes, with their annotations: [(jpeg bytes, objects)]."""
    from kubedetect.data.synth import synthesize
    from kubedetect.data.voc import parse_voc

    out = tmp_path_factory.mktemp("shapes")
    synthesize(str(out), 6, seed=11, progress=False)
    images = []
    for jpg in sorted((out / "JPEGImages").glob("*.jpg")):
        xml = out / "Annotations" / (jpg.stem + ".xml")
        images.append((jpg.read_bytes(), parse_voc(xml.read_bytes(), str(xml)).objects))
    return images


@pytest.fixture(scope="session")
def jpeg(shapes) -> bytes:
    return shapes[0][0]


def encode(pixels: np.ndarray, fmt: str = "JPEG", **kwargs) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt, **kwargs)
    return out.getvalue()


# -- servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `kubedetect serve` process (Gunicorn's master after the exec) on 127.0.0.1."""

    def __init__(self, model_dir: Path, workdir: Path, *, flags=(), env=None, session=False):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        self.home = workdir / "home"  # Gunicorn would put a control socket under ~/.gunicorn
        self.home.mkdir(parents=True, exist_ok=True)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("KUBEDETECT_")}
        environ |= {
            "HOME": str(self.home),
            "PROMETHEUS_MULTIPROC_DIR": str(workdir / "metrics"),
            "KUBEDETECT_PORT": str(self.port),  # settings by environment, as in the container
            "PYTHONUNBUFFERED": "1",
        } | (env or {})
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - open while the server runs
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kubedetect.cli", "serve", str(model_dir), *flags],
            env=environ,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            start_new_session=session,  # its own process group, as a terminal's foreground job
        )

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.url + path, timeout=30, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kwargs)

    def wait(self, path: str = "/v2/health/ready", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}):\n{self.log()}")
            try:
                if self.get(path).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{path} did not answer 200 within {timeout} s:\n{self.log()}")

    def wait_workers(self, count: int, timeout: float = 30) -> list[int]:
        """The worker pids once the master has forked `count` of them (it forks them in turn)."""
        deadline = time.monotonic() + timeout
        while len(self.workers()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.workers()

    def workers(self) -> list[int]:
        """The pids of Gunicorn's worker processes (the master's children)."""
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def json_log(self) -> list[dict]:
        """The log lines that are JSON objects (LiteRT's C++ runtime prints one plain line)."""
        entries = []
        text = self.log()
        complete = text[: text.rfind("\n") + 1]  # the server may be writing the last line now
        for line in complete.split("\n"):
            if line.startswith("{"):
                entries.append(json.loads(line))
        return entries

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """Start servers that are stopped at the end of the session: start_server(model_dir, ...)."""
    servers: list[Server] = []

    def start(
        model_dir: Path,
        *,
        flags=(),
        env=None,
        wait: str | None = "/v2/health/ready",
        session: bool = False,
    ) -> Server:
        server = Server(
            model_dir, tmp_path_factory.mktemp("server"), flags=flags, env=env, session=session
        )
        servers.append(server)
        if wait:
            server.wait(wait)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server, model_dir) -> Server:
    """The shared server: 2 workers, a 2 MB body limit (so that 413 is cheap to provoke)."""
    return start_server(
        model_dir,
        flags=["--workers", "2", "--threads", "4", "--max-body-bytes", str(2 * 2**20)],
        env={"KUBEDETECT_MAX_IMAGE_PIXELS": "25000000"},
    )


@pytest.fixture(scope="session")
def kserve_python() -> Path:
    """The KServe virtualenv's python, created by serving/kserve/setup-venv.sh if needed."""
    subprocess.run(
        ["bash", str(REPO / "serving/kserve/setup-venv.sh"), str(KSERVE_VENV)], check=True
    )
    return KSERVE_VENV / "bin" / "python"
