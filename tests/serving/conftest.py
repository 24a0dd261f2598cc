"""Fixtures of the serving tests: model folders, images, and real Gunicorn servers on loopback.

Servers are started the way users start them, with `kubedetect serve MODEL_DIR` (which execs
Gunicorn with serving/gunicorn.conf.py), on a free port of 127.0.0.1, settings passed as
KUBEDETECT_* variables and flags (tests/servers.py, shared with bench/serve.py). Each keeps its
JSON log for the tests to read.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import servers
from PIL import Image
from servers import Server, serve, untrained_models

# -- models -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_variants(request, tmp_path_factory) -> Path:
    """A folder of quantized variants (float32/, int8/, ...): the briefly trained detector of the
    training tests when the suite has it, else an untrained one made with the same code."""
    try:
        return Path(request.getfixturevalue("quantized_models"))
    except pytest.FixtureLookupError:
        out = tmp_path_factory.mktemp("untrained-models")
        return Path(untrained_models(str(out)))


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


@pytest.fixture(scope="session")
def start_server(tmp_path_factory):
    """Start servers that are stopped at the end of the session: start_server(model_dir, ...)
    (tests/servers.py `serve`, then a wait for `wait` to answer 200)."""
    started: list[Server] = []

    def start(
        model_dir: Path,
        *,
        flags=(),
        env=None,
        wait: str | None = "/v2/health/ready",
        session: bool = False,
        preexec_fn=None,
    ) -> Server:
        server = serve(
            model_dir,
            tmp_path_factory.mktemp("server"),
            flags=flags,
            env=env,
            session=session,
            preexec_fn=preexec_fn,
        )
        started.append(server)
        if wait:
            server.wait(wait)
        return server

    yield start
    for server in started:
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
    """The KServe virtualenv's python, created by bench/kserve/setup-venv.sh if needed."""
    return servers.kserve_python()
