"""The Flask application through `app.test_client()`: the factory, its lifecycle, its config.

The same endpoints are exercised again through a real Gunicorn in test_gunicorn.py; here the
tests reach states a running server passes through too quickly to catch (not ready yet).
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import time

import pytest
from PIL import Image

from kubedetect.config import ServeConfig
from kubedetect.errors import KubedetectError
from kubedetect.flags import from_env, to_env
from serving.app import create_app
from serving.memory import DecodeBudget


@pytest.fixture(scope="module")
def app(model_dir):
    app = create_app(ServeConfig(model_dir=str(model_dir), score_threshold=0.0, max_detections=5))
    assert app.extensions["kubedetect"].batcher.ready  # create_app warmed the model up
    yield app
    app.extensions["kubedetect"].batcher.stop()


@pytest.fixture()
def client(app):
    return app.test_client()


def test_detect_answers_boxes_in_original_pixels(client, shapes):
    data, _ = shapes[0]
    width, height = Image.open(io.BytesIO(data)).size
    response = client.post("/v1/detect", data=data, content_type="image/jpeg")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["width"], body["height"]) == (width, height)
    assert 1 <= len(body["detections"]) <= 5  # max_detections from the config
    for det in body["detections"]:
        assert set(det) == {"label", "class_id", "score", "box"}
        box = det["box"]
        assert (
            0 <= box["xmin"] <= box["xmax"] <= width and 0 <= box["ymin"] <= box["ymax"] <= height
        )


def test_the_three_protocols_agree(client, jpeg):
    own = client.post("/v1/detect?max_detections=3", data=jpeg).get_json()["detections"]
    v1 = client.post(
        "/v1/models/detector:predict",
        json={
            "instances": [{"image": {"b64": base64.b64encode(jpeg).decode()}}],
            "parameters": {"max_detections": 3},
        },
    ).get_json()["predictions"][0]["detections"]
    v2 = client.post(
        "/v2/models/detector/infer",
        json={
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(jpeg).decode()],
                }
            ],
            "parameters": {"max_detections": 3},
        },
    ).get_json()
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert own == v1
    assert outputs["labels"]["data"] == [d["label"] for d in own]
    assert outputs["num_detections"]["data"] == [len(own)]
    assert outputs["boxes"]["data"] == pytest.approx(
        [v for d in own for v in d["box"].values()], abs=0.01
    )


def test_not_ready_until_started_and_warmed_up(model_dir, jpeg):
    app = create_app(ServeConfig(model_dir=str(model_dir)), start=False)
    client = app.test_client()
    # As an app is in Gunicorn's master, before a worker's post_worker_init has warmed it up.
    for path in ("/v2/health/ready", "/v2/models/detector/ready", "/v1/models/detector"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.headers["Retry-After"] == "1"
        assert "not ready" in response.get_json()["error"]
    response = client.post("/v1/detect", data=jpeg)
    assert response.status_code == 503 and "not ready" in response.get_json()["error"]
    assert client.get("/v2/health/live").get_json() == {"live": True}


def test_a_tampered_model_is_refused_at_load(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    with open(copy / "model.tflite", "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(KubedetectError, match="sha256"):
        create_app(ServeConfig(model_dir=str(copy)))


def test_settings_come_from_the_environment_and_flags_win():
    env = {
        "KUBEDETECT_PORT": "9001",
        "KUBEDETECT_WORKERS": "3",
        "KUBEDETECT_ACCESS_LOG": "false",
        "KUBEDETECT_SCORE_THRESHOLD": "0.25",
        "KUBEDETECT_MODEL_NAME": "cards",
    }
    config = from_env(ServeConfig, env, argv=["--workers=5"])
    assert (config.port, config.workers, config.access_log) == (9001, 5, False)
    assert (config.score_threshold, config.model_name) == (0.25, "cards")
    assert from_env(ServeConfig, to_env(config)) == config
    with pytest.raises(ValueError, match="port"):
        from_env(ServeConfig, {"KUBEDETECT_PORT": "eighty"})


def test_the_serving_path_never_imports_tensorflow(model_dir, jpeg, tmp_path):
    """The WSGI module Gunicorn loads, its app and a request through every protocol: no TF."""
    (tmp_path / "image.jpg").write_bytes(jpeg)
    script = f"""
import base64, json, sys
from serving.wsgi import app
from serving.app import start_worker
start_worker(app)
client = app.test_client()
data = open({str(tmp_path / "image.jpg")!r}, "rb").read()
codes = [client.post("/v1/detect", data=data).status_code,
         client.post("/v1/detect?format=jpeg", data=data).status_code,
         client.post("/v1/models/detector:predict",
                     json={{"instances": [{{"image": {{"b64": base64.b64encode(data).decode()}}}}]}}
                     ).status_code,
         client.get("/metrics").status_code, client.get("/openapi.json").status_code]
tf = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(json.dumps({{"codes": codes, "tf": tf}}))
"""
    env = {"KUBEDETECT_MODEL_DIR": str(model_dir), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [200] * 5
    assert result["tf"] == []


def test_kubedetect_serve_refuses_a_tampered_or_missing_model_in_one_line(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    (copy / "model.tflite").write_bytes((copy / "model.tflite").read_bytes()[:-10])
    for folder, words in ((copy, "sha256"), (tmp_path / "nothing", "no model.json")):
        done = subprocess.run(
            [sys.executable, "-m", "cli", "serve", str(folder), "--port", "9"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert done.stderr.startswith("kubedetect: error:") and words in done.stderr
        assert "Traceback" not in done.stderr


class FailingRuntime:
    """Stands in for a LiteRT interpreter that has gone bad: it raises what LiteRT raises (a
    RuntimeError, not one of the server's errors), and takes the real runtime's place until the
    worker replaces it. Everything around it is the server as it runs."""

    def __init__(self, real):
        self.card, self.input_size, self.classes = real.card, real.input_size, real.classes

    def raw_outputs(self, pixels):
        raise RuntimeError("Invoke failed: the tensor arena is corrupted")


def test_a_broken_interpreter_turns_readiness_false_until_the_worker_rebuilds_it(model_dir, jpeg):
    """The interpreter breaks under load: its requests are answered 503 with Retry-After and a
    JSON reason (a client retries elsewhere), readiness turns false with the reason (a load
    balancer stops sending), and the worker rebuilds its interpreters from the model file; then
    readiness is true again and the next request is answered. (It used to answer 500, and to
    stay 'ready' however broken the interpreter was.)"""
    app = create_app(ServeConfig(model_dir=str(model_dir)))
    client, service = app.test_client(), app.extensions["kubedetect"]
    try:
        assert client.get("/v2/health/ready").status_code == 200
        service.model.runtime = FailingRuntime(service.model.runtime)
        failed = client.post("/v1/detect", data=jpeg)
        assert failed.status_code == 503 and failed.headers["Retry-After"]
        assert "inference failed (RuntimeError: Invoke failed" in failed.get_json()["error"]
        readiness = [client.get("/v2/health/ready")]
        while readiness[-1].status_code != 200 and len(readiness) < 200:  # bounded: 20 s
            time.sleep(0.1)
            readiness.append(client.get("/v2/health/ready"))
        assert readiness[0].status_code == 503, "never seen not ready"
        assert "Invoke failed" in readiness[0].get_json()["error"]
        assert readiness[-1].status_code == 200, readiness[-1].get_json()
        assert client.post("/v1/detect", data=jpeg).status_code == 200
    finally:
        service.batcher.stop()


def test_decodes_beyond_the_memory_budget_wait_their_turn_or_get_503(model_dir):
    """A worker whose plan leaves room for one large decode at a time: a request whose image
    cannot fit even alone is refused with 400 saying so; one that would fit waits for the
    memory (and is served) or, past its deadline, gets 503 with Retry-After."""
    app = create_app(ServeConfig(model_dir=str(model_dir), request_timeout=0.5))
    client, service = app.test_client(), app.extensions["kubedetect"]
    try:
        png = encode_png(Image.new("RGBA", (3000, 2000), (200, 30, 30, 90)))  # 24 MB decoded
        service.budget = DecodeBudget(40 * 2**20)
        assert client.post("/v1/detect", data=png).status_code == 200
        service.budget = DecodeBudget(10 * 2**20)
        refused = client.post("/v1/detect", data=png)
        assert refused.status_code == 400
        assert "more than the 10 MiB this server may spend" in refused.get_json()["error"]
        service.budget = DecodeBudget(40 * 2**20)
        with service.budget.reserve(30 * 2**20, time.monotonic() + 5):  # another decode
            busy = client.post("/v1/detect", data=png)
        assert busy.status_code == 503 and busy.headers["Retry-After"]
        assert "busy decoding other images" in busy.get_json()["error"]
        assert client.post("/v1/detect", data=png).status_code == 200
    finally:
        service.batcher.stop()


def encode_png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
