"""The two images, built from the Dockerfile and run as a cluster would run them.

Both targets are really built (k8s/build-images.sh, BuildKit) on the base image this machine has:
python:3.11-slim where it can be pulled, else the Debian stand-in that k8s/ci/docker-engine.sh
makes (no image can be pulled here). Then:
- the server image holds no TensorFlow, fits its size budget, and serves a quantized model as a
  non-root user on a read-only root filesystem with only a tmpfs /tmp, answering readiness and
  /v1/detect on 127.0.0.1; SIGTERM ends it cleanly;
- the trainer image holds the training and pipeline stack, and runs as two containers on the
  host network with the TF_CONFIG a TFJob gives its pods: a tiny 2-worker training that exports a
  model.

Every container uses the host network and talks to 127.0.0.1 only. Without a Docker engine these
tests skip, saying so; under KUBEDETECT_REQUIRE_DOCKER=1 (CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from servers import free_port

REPO = Path(__file__).resolve().parent.parent
TAG = "test"
SERVER = f"kubedetect-server:{TAG}"
TRAINER = f"kubedetect-trainer:{TAG}"
SERVER_BUDGET_BYTES = 400 * 10**6  # docker's MB
BASE_CANDIDATES = ("kubedetect-base:bookworm", "python:3.11-slim")
USER = "10001:10001"

pytestmark = pytest.mark.slow


def unavailable(reason: str):
    if os.environ.get("KUBEDETECT_REQUIRE_DOCKER") == "1":
        pytest.fail(f"KUBEDETECT_REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert done.returncode == 0, f"docker {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


@pytest.fixture(scope="module")
def engine() -> None:
    if shutil.which("docker") is None:
        unavailable("no docker CLI on PATH (k8s/ci/docker-engine.sh installs and starts one)")
    try:
        done = docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
    except subprocess.TimeoutExpired:
        unavailable("the Docker engine did not answer `docker info` within 30 s")
    if done.returncode != 0:
        unavailable(
            f"no Docker engine answers ({done.stderr.strip()}); start one with "
            "k8s/ci/docker-engine.sh (as root)"
        )


@pytest.fixture(scope="module")
def base_image(engine) -> str:
    wanted = os.environ.get("KUBEDETECT_BASE_IMAGE")
    for image in [wanted] if wanted else BASE_CANDIDATES:
        if docker("image", "inspect", image, check=False).returncode == 0:
            return image
    unavailable(
        f"no base image ({wanted or ' or '.join(BASE_CANDIDATES)}) is present and none can "
        "be pulled here; k8s/ci/docker-engine.sh builds the stand-in"
    )


@pytest.fixture(scope="module")
def images(base_image) -> dict[str, str]:
    """Both targets, built by the same script users and kind-deploy run."""
    done = subprocess.run(
        ["k8s/build-images.sh", "--tag", TAG, "--base-image", base_image, "--network", "host"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert done.returncode == 0, (
        f"the image build failed:\n{done.stdout[-4000:]}{done.stderr[-4000:]}"
    )
    return {"server": SERVER, "trainer": TRAINER}


def inspect(image: str) -> dict:
    (info,) = json.loads(docker("image", "inspect", image).stdout)
    return info


def python_in(image: str, code: str, *run_args: str, timeout: float = 300) -> str:
    done = docker(
        "run",
        "--rm",
        "--network",
        "none",
        *run_args,
        "--entrypoint",
        "python3",
        image,
        "-c",
        code,
        timeout=timeout,
    )
    return done.stdout


def world_writable(path: Path) -> Path:
    """A bind-mounted folder the image's non-root user (uid 10001) can write to."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path


# ------------------------------------------------------------------------------------------------
# The server image
# ------------------------------------------------------------------------------------------------

INSTALLED = """
import importlib.metadata as md, importlib.util as iu, json
print(json.dumps({
    "distributions": sorted({d.metadata["Name"].lower() for d in md.distributions()}),
    "modules": {m: iu.find_spec(m) is not None for m in
                ("tensorflow", "keras", "ai_edge_litert", "flask", "gunicorn", "prometheus_client",
                 "kubedetect", "serving", "kserve", "serving.kserve")},
}))
"""


def test_server_image_has_no_tensorflow(images):
    found = json.loads(python_in(images["server"], INSTALLED))
    tensorflow = [d for d in found["distributions"] if d.startswith(("tensorflow", "keras", "tf-"))]
    assert not tensorflow, f"the server image holds {tensorflow}"
    assert found["modules"]["tensorflow"] is False and found["modules"]["keras"] is False
    for module in (
        "ai_edge_litert",
        "flask",
        "gunicorn",
        "prometheus_client",
        "kubedetect",
        "serving",
    ):
        assert found["modules"][module], f"{module} is missing from the server image"
    assert "pip" not in found["distributions"], "the service installs nothing at run time"
    # KServe's model server is a benchmark's peer (bench/kserve/), not part of the service.
    assert not found["modules"]["kserve"] and not found["modules"]["serving.kserve"]


def test_server_image_fits_its_budget(images):
    size = inspect(images["server"])["Size"]
    assert size <= SERVER_BUDGET_BYTES, f"server image {size / 1e6:.0f} MB > 400 MB"


def test_images_run_as_a_non_root_user(images):
    for image in images.values():
        assert inspect(image)["Config"]["User"] == USER, image
        uid = python_in(image, "import os; print(os.getuid(), os.getgid())")
        assert uid.split() == ["10001", "10001"], image


@pytest.fixture(scope="module")
def quantized_model(images, tmp_path_factory) -> Path:
    """A full-int8 model folder (model.tflite, model.json, labels.json), converted by the
    trainer image with the project's own converter from an untrained detector: what the server
    loads is the same kind of folder `kubedetect quantize` writes, whatever its weights."""
    out = world_writable(tmp_path_factory.mktemp("quantized"))
    code = """
import numpy as np
from kubedetect.network.architecture import build_detector
from kubedetect.io.modelcard import ModelCard, TensorSpec
from kubedetect.network.quantize import convert, write_variant
classes, size = ("circle", "square", "triangle"), 128
model = build_detector(len(classes), size)
source = ModelCard(kind="keras", variant="float", file="model.keras", sha256="0" * 64,
                   classes=classes, input_size=size, stride=4, input=TensorSpec("image", "float32"),
                   outputs={n: TensorSpec(n, "float32") for n in ("heatmap", "size", "offset")},
                   provenance={"note": "untrained, for the container tests"})
rng = np.random.default_rng(0)
calibration = [rng.integers(0, 256, (1, size, size, 3)).astype(np.float32) for _ in range(8)]
write_variant("/out", "int8", convert(model, "int8", calibration), source)
"""
    python_in(images["trainer"], code, "-v", f"{out}:/out", timeout=600)
    model = out / "int8"
    assert (model / "model.tflite").is_file() and (model / "model.json").is_file()
    return model


def jpeg(width: int, height: int) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (240, 240, 240))
    ImageDraw.Draw(image).ellipse((40, 30, 120, 110), fill=(200, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None):
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_until_ready(url: str, container: str, tries: int = 240) -> None:
    """Poll readiness (bounded), failing early with the logs if the container died."""
    for _ in range(tries):
        try:
            status, _ = http("GET", url)
            if status == 200:
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        state = json.loads(docker("inspect", container).stdout)[0]["State"]
        if not state["Running"]:
            logs = docker("logs", container, check=False)
            pytest.fail(f"the server exited ({state['ExitCode']}):\n{logs.stdout}{logs.stderr}")
        time.sleep(0.5)
    logs = docker("logs", container, check=False)
    pytest.fail(f"{url} never answered 200:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")


@contextlib.contextmanager
def serving(image: str, model_dir: Path, workers: int = 2):
    """The server image serving `model_dir` as a pod would run it: non-root, read-only root,
    a tmpfs /tmp, no capabilities, the model mounted read-only, probes on a port of their own;
    bound to 127.0.0.1 only. Yields the container's name, its URL and its probes' URL."""
    port, health = free_port(), free_port()
    name = f"kubedetect-test-server-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "--detach", "--name", name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp:rw,size=64m",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-v", f"{model_dir}:/models/serving:ro",
        image, "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--health-port", str(health),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/v2/health/ready", name)
        yield name, base, f"http://127.0.0.1:{health}"
    finally:
        docker("rm", "--force", name, check=False)


def detect(base: str, width: int = 200, height: int = 150) -> dict:
    status, body = http(
        "POST", f"{base}/v1/detect", jpeg(width, height), {"Content-Type": "image/jpeg"}
    )
    assert status == 200, body
    answer = json.loads(body)
    assert (answer["width"], answer["height"]) == (width, height)
    assert isinstance(answer["detections"], list)
    for detection in answer["detections"]:
        assert isinstance(detection["label"], str) and isinstance(detection["class_id"], int)
        box = detection["box"]
        assert (
            0 <= box["xmin"] <= box["xmax"] <= width and 0 <= box["ymin"] <= box["ymax"] <= height
        )
    return answer


def test_server_serves_a_quantized_model_read_only_and_non_root(images, quantized_model):
    with serving(images["server"], quantized_model) as (name, base, probes):
        status, body = http("GET", f"{base}/v2/health/live")
        assert status == 200, body
        for probe in ("live", "ready"):  # what the kubelet asks, on the health port
            status, body = http("GET", f"{probes}/v2/health/{probe}")
            assert status == 200 and json.loads(body) == {probe: True}, body
        for detection in detect(base)["detections"]:
            assert detection["label"] in ("circle", "square", "triangle")

        # A client error is a 4xx with a JSON body, even here.
        status, body = http(
            "POST",
            f"{base}/v1/detect",
            b"not an image",
            {"Content-Type": "application/octet-stream"},
        )
        assert 400 <= status < 500 and "error" in json.loads(body)

        # The process really is non-root, and the root filesystem really is read-only.
        whoami = docker("exec", name, "python3", "-c", "import os; print(os.getuid())")
        assert whoami.stdout.strip() == "10001"
        write = docker("exec", name, "python3", "-c", "open('/opt/venv/x', 'w')", check=False)
        assert write.returncode != 0 and "Read-only file system" in write.stderr

        # SIGTERM (what Kubernetes sends after preStop): Gunicorn stops cleanly.
        docker("stop", "--time", "40", name, timeout=120)
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
        logs = docker("logs", name, check=False)
        assert state["ExitCode"] == 0, f"exit {state['ExitCode']}:\n{logs.stdout}{logs.stderr}"
        assert "Traceback" not in logs.stdout + logs.stderr, logs.stdout + logs.stderr


# ------------------------------------------------------------------------------------------------
# The trainer image
# ------------------------------------------------------------------------------------------------


def test_trainer_image_holds_the_training_and_pipeline_stack(images):
    versions = python_in(
        images["trainer"],
        "import tensorflow as tf, kfp, kubernetes, kubeflow.training, pycocotools, ai_edge_litert, "
        "kubedetect; print(tf.__version__, kfp.__version__)",
    )
    pins = dict(
        line.split("==", 1)
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    tf_version, kfp_version = versions.split()[-2:]
    assert tf_version == pins["tensorflow_cpu"] and kfp_version == pins["kfp"]


@pytest.fixture(scope="module")
def two_worker_training(images, synth_shards, tmp_path_factory) -> dict:
    """Two trainer containers on the host network, each with the TF_CONFIG the Training Operator
    would give a 2-worker TFJob (the hosts mapped to loopback ports), sharing a workspace folder
    as the pods share the workspace PVC."""
    root = tmp_path_factory.mktemp("training")
    shards = root / "shards"
    shutil.copytree(synth_shards, shards)
    for path in [shards, *shards.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    work = world_writable(root / "workspace")
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    names = [f"kubedetect-test-worker{i}-{uuid.uuid4().hex[:8]}" for i in range(2)]
    codes: dict[str, int | None] = {}
    try:
        for index, name in enumerate(names):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            docker(
                "run", "--detach", "--name", name, "--network", "host",
                "--env", f"TF_CONFIG={tf_config}",
                "-v", f"{shards}:/workspace/shards:ro", "-v", f"{work}:/workspace/out",
                images["trainer"],
                "python", "-m", "kubedetect.training.train", "/workspace/shards",
                "/workspace/out/model", "--epochs", "1", "--checkpoint-dir",
                "/workspace/out/checkpoints", "--cluster-timeout", "180",
            )  # fmt: skip
        for name in names:
            try:
                codes[name] = int(docker("wait", name, timeout=1200).stdout.strip())
            except subprocess.TimeoutExpired:
                codes[name] = None
        logs = {n: docker("logs", n, check=False) for n in names}
    finally:
        for name in names:
            docker("rm", "--force", name, check=False)
    report = "\n".join(
        f"--- {n} (exit {codes.get(n)})\n{logs[n].stdout[-3000:]}{logs[n].stderr[-3000:]}"
        for n in names
    )
    return {"codes": codes, "report": report, "shards": shards, "workspace": work}


def test_trainer_runs_two_workers_with_tf_config_and_exports(two_worker_training):
    """MultiWorkerMirroredStrategy across two containers; worker 0 (the chief) exports."""
    run = two_worker_training
    assert all(code == 0 for code in run["codes"].values()), run["report"]
    model = run["workspace"] / "model"
    for artifact in ("model.json", "labels.json"):
        assert (model / artifact).is_file(), (
            f"the chief did not export {artifact}:\n{run['report']}"
        )
    assert json.loads((model / "model.json").read_text()), "model.json is empty"
    assert any((run["workspace"] / "checkpoints").iterdir()), "no checkpoint was written"


def test_a_model_trained_in_containers_is_quantized_and_served(images, two_worker_training):
    """The whole chain across the images: trained by two trainer containers, quantized to int8
    by the trainer image (`kubedetect quantize`), served by the server image."""
    run = two_worker_training
    assert all(code == 0 for code in run["codes"].values()), "training failed:\n" + run["report"]
    work = run["workspace"]
    docker(
        "run", "--rm", "--network", "none",
        "-v", f"{run['shards']}:/workspace/shards:ro", "-v", f"{work}:/workspace/out",
        images["trainer"], "kubedetect", "quantize", "/workspace/out/model",
        "/workspace/out/quantized", "--mode", "int8",
        timeout=900,
    )  # fmt: skip
    model = work / "quantized" / "int8"
    assert (model / "model.tflite").is_file() and (model / "model.json").is_file()
    with serving(images["server"], model, workers=1) as (_, base, _probes):
        detect(base)
