"""Every endpoint through a real Gunicorn (`kubedetect serve`, 2 workers) on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import re
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.slow


def test_health_and_metadata(server):
    assert server.get("/v2/health/live").json() == {"live": True}
    assert server.get("/v2/health/ready").json() == {"ready": True}
    assert server.get("/v2/models/detector/ready").json() == {"name": "detector", "ready": True}
    assert server.get("/v2/models/detector/versions/1/ready").status_code == 200
    meta = server.get("/v2").json()
    assert meta["name"] == "kubedetect" and "binary_tensor_data" in meta["extensions"]
    assert server.get("/v2/").json() == meta
    model = server.get("/v2/models/detector").json()
    assert model["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert {o["name"] for o in model["outputs"]} == {
        "boxes",
        "scores",
        "class_ids",
        "labels",
        "num_detections",
        "image_size",
    }
    assert server.get("/v2/models/detector/versions/1").json() == model
    v1 = server.get("/v1/models/detector").json()
    assert v1["ready"] is True and v1["name"] == "detector" and v1["classes"]
    assert server.get("/v1/models").json() == {"models": ["detector"]}
    assert server.get("/").json() == {"status": "alive"}  # KServe V1 liveness for API clients


def test_detect_raw_body_multipart_and_jpeg(server, shapes):
    data, _ = shapes[1]
    width, height = Image.open(io.BytesIO(data)).size
    raw = server.post(
        "/v1/detect?score_threshold=0&max_detections=4",
        data=data,
        headers={"Content-Type": "image/jpeg"},
    )
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert (body["model"], body["width"], body["height"]) == ("detector", width, height)
    assert len(body["detections"]) == 4
    form = server.post(
        "/v1/detect",
        files={"image": ("photo.jpg", data, "image/jpeg")},
        data={"score_threshold": "0", "max_detections": "4"},
    )
    assert form.status_code == 200
    assert form.json()["detections"] == body["detections"]
    drawn = server.post("/v1/detect?format=jpeg&score_threshold=0&max_detections=4", data=data)
    assert drawn.headers["Content-Type"] == "image/jpeg"
    picture = Image.open(io.BytesIO(drawn.content))
    assert picture.format == "JPEG" and picture.size == (width, height)


def test_kserve_v1_predict_batches_several_instances(server, shapes):
    instances = [{"image": {"b64": base64.b64encode(data).decode()}} for data, _ in shapes[:3]]
    response = server.post(
        "/v1/models/detector:predict",
        json={"instances": instances, "parameters": {"score_threshold": 0.0, "max_detections": 2}},
    )
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == 3
    for (data, _), prediction in zip(shapes[:3], predictions, strict=True):
        assert (prediction["width"], prediction["height"]) == Image.open(io.BytesIO(data)).size
        assert len(prediction["detections"]) == 2


def test_v2_infer_json_and_binary_by_hand(server, shapes):
    """The wire formats themselves, without a client library (the peers are in test_peers.py)."""
    images = [data for data, _ in shapes[:2]]
    as_json = server.post(
        "/v2/models/detector/infer",
        json={
            "id": "req-1",
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [2],
                    "data": [base64.b64encode(d).decode() for d in images],
                }
            ],
            "parameters": {"score_threshold": 0.0, "max_detections": 3},
        },
    )
    assert as_json.status_code == 200 and as_json.headers["Content-Type"] == "application/json"
    body = as_json.json()
    assert body["id"] == "req-1" and body["model_name"] == "detector"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["boxes"]["shape"] == [2, 3, 4] and outputs["labels"]["shape"] == [2, 3]
    assert outputs["num_detections"]["data"] == [3, 3]

    elements = b"".join(struct.pack("<I", len(d)) + d for d in images)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(elements)},
                }
            ],
            "outputs": [
                {"name": "scores", "parameters": {"binary_data": True}},
                {"name": "labels"},
            ],
            "parameters": {"score_threshold": 0.0, "max_detections": 3},
        }
    ).encode()
    binary = server.post(
        "/v2/models/detector/infer",
        data=header + elements,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert binary.status_code == 200
    length = int(binary.headers["Inference-Header-Content-Length"])
    head = json.loads(binary.content[:length])
    scores, labels = head["outputs"]
    assert scores["parameters"]["binary_data_size"] == 2 * 3 * 4 and "data" not in scores
    assert labels["data"] == outputs["labels"]["data"]  # JSON where not asked for binary
    values = struct.unpack("<6f", binary.content[length:])
    assert list(values) == pytest.approx(outputs["scores"]["data"], abs=1e-6)


def test_openapi_document_describes_every_route(server):
    doc = server.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    paths = set(doc["paths"])
    for path in (
        "/",
        "/v1/detect",
        "/v1/models/{name}",
        "/v1/models/{name}:predict",
        "/v2",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2/models/{name}",
        "/v2/models/{name}/ready",
        "/v2/models/{name}/infer",
        "/metrics",
        "/openapi.json",
    ):
        assert path in paths


def test_web_page_and_its_files_are_served(server):
    page = server.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'name="viewport"' in page.text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert server.get(asset).status_code == 200, asset


def test_metrics_add_up_over_both_workers(server, jpeg):
    def count() -> float:
        text = server.get("/metrics").text
        return sum(
            float(v)
            for v in re.findall(
                r"kubedetect_http_requests_total"
                r'\{method="POST",route="/v1/detect",status="200"\} (\S+)',
                text,
            )
        )

    before = count()
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(lambda _: server.post("/v1/detect", data=jpeg).status_code, range(40))
        )
    assert codes == [200] * 40
    assert len({requests.get(server.url + "/v2/health/live").status_code for _ in range(4)}) == 1
    # Whichever worker answers the scrape, it reports every worker's requests.
    assert [count() - before for _ in range(6)] == [40.0] * 6
    text = server.get("/metrics").text
    for name in (
        "kubedetect_http_request_duration_seconds_bucket",
        "kubedetect_batch_size_bucket",
        "kubedetect_inference_duration_seconds_bucket",
        "kubedetect_queue_depth",
        "kubedetect_model_ready",
    ):
        assert name in text
    assert re.search(r"^kubedetect_images_total (\S+)", text, re.M)


def test_gunicorn_runs_as_configured(server):
    workers = server.workers()
    assert len(workers) == 2
    # No control socket under ~/.gunicorn (read-only, non-root containers).
    assert not (server.workdir / "home" / ".gunicorn").exists()
    # Logs are JSON lines on stdout, the access log included.
    entries = server.json_log()
    assert any(
        e["logger"] == "gunicorn.error" and "Booting worker" in e["message"] for e in entries
    )
    access = [e for e in entries if e["logger"] == "gunicorn.access"]
    assert access and {"method", "path", "status", "duration_ms"} <= set(access[-1])
    # Preloaded: both workers run the app without TensorFlow's libraries in their memory.
    for pid in workers:
        maps = Path(f"/proc/{pid}/maps").read_text()
        assert "/site-packages/tensorflow/" not in maps and "libtensorflow_framework" not in maps
        assert "ai_edge_litert" in maps


def test_v2_answers_conform_to_the_open_inference_protocol_spec(server, jpeg, oip_spec):
    """Our JSON answers validate against the schemas of ../shared/specs (the OIP REST spec)."""
    import jsonschema
    import yaml

    spec = yaml.safe_load(oip_spec.read_text())

    def check(instance: dict, schema: str) -> None:
        root = {"$ref": f"#/components/schemas/{schema}", "components": spec["components"]}
        jsonschema.validate(instance, root, cls=jsonschema.Draft4Validator)

    check(server.get("/v2").json(), "metadata_server_response")
    check(server.get("/v2/models/detector").json(), "metadata_model_response")
    answer = server.post(
        "/v2/models/detector/infer",
        json={
            "id": "42",
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(jpeg).decode()],
                }
            ],
        },
    )
    check(answer.json(), "inference_response")
    error = server.post("/v2/models/detector/infer", json={"inputs": []})
    assert error.status_code == 400
    check(error.json(), "inference_error_response")
