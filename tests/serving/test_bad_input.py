"""Bad input against a real Gunicorn: each case a 4xx (or 503) with a JSON error, never a 500,
and the server serves on afterwards with the same workers."""

from __future__ import annotations

import base64
import io
import json
import os
import struct

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def bomb() -> bytes:
    """A 36 KB PNG of 30 million pixels (6000 x 5000): over the shared server's 25 MP limit."""
    out = io.BytesIO()
    Image.new("L", (6000, 5000)).save(out, format="PNG")
    return out.getvalue()


def v2_json(data: list[str], *, datatype="BYTES", shape=None, name="image", **extra) -> dict:
    tensor = {"name": name, "datatype": datatype, "shape": shape or [len(data)], "data": data}
    return {"inputs": [tensor], **extra}


def v2_binary(elements: list[bytes], *, header_length=None, size=None, shape=None):
    blob = b"".join(struct.pack("<I", len(e)) + e for e in elements)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": shape or [len(elements)],
                    "parameters": {"binary_data_size": len(blob) if size is None else size},
                }
            ]
        }
    ).encode()
    headers = {
        "Inference-Header-Content-Length": str(header_length or len(header)),
        "Content-Type": "application/octet-stream",
    }
    return {"data": header + blob, "headers": headers}


TEXT = b"this is not an image, it is a sentence"


def cases(jpeg: bytes):
    """(what, method, path, request kwargs, status, words the error must contain)."""
    truncated = jpeg[: len(jpeg) // 2]
    huge = os.urandom(3 * 2**20)  # the shared server takes at most 2 MB
    detect, v1, v2 = "/v1/detect", "/v1/models/detector:predict", "/v2/models/detector/infer"
    return [
        # not an image
        ("text as image", "POST", detect, {"data": TEXT}, 400, "not a decodable image"),
        (
            "text upload",
            "POST",
            detect,
            {"files": {"image": ("a.jpg", TEXT)}},
            400,
            "not a decodable image",
        ),
        (
            "text in V1",
            "POST",
            v1,
            {"json": {"instances": [{"image": {"b64": b64(TEXT)}}]}},
            400,
            "not a decodable image",
        ),
        (
            "text in V2 JSON",
            "POST",
            v2,
            {"json": v2_json([b64(TEXT)])},
            400,
            "not a decodable image",
        ),
        ("text in V2 binary", "POST", v2, v2_binary([TEXT]), 400, "not a decodable image"),
        ("empty body", "POST", detect, {"data": b""}, 400, "empty request"),
        (
            "upload without file",
            "POST",
            detect,
            {"files": {"score_threshold": (None, "0.5")}},
            400,
            "without a file",
        ),
        (
            "empty upload",
            "POST",
            detect,
            {"files": {"image": ("a.jpg", b"")}},
            400,
            "empty request",
        ),
        # a truncated image
        ("truncated JPEG", "POST", detect, {"data": truncated}, 400, "truncated"),
        ("truncated in V2", "POST", v2, v2_binary([truncated]), 400, "truncated"),
        # a decompression bomb
        ("bomb", "POST", detect, {"data": bomb()}, 400, "decompression bomb"),
        (
            "bomb in V1",
            "POST",
            v1,
            {"json": {"instances": [{"image": {"b64": b64(bomb())}}]}},
            400,
            "decompression bomb",
        ),
        # a body over the limit
        ("body over limit", "POST", detect, {"data": huge}, 413, "over the limit"),
        (
            "upload over limit",
            "POST",
            detect,
            {"files": {"image": ("a.jpg", huge)}},
            413,
            "over the limit",
        ),
        (
            "chunked over limit",
            "POST",
            detect,
            {"data": iter([huge[: 2**20]] * 3)},
            413,
            "over the limit",
        ),
        ("V2 over limit", "POST", v2, v2_binary([huge]), 413, "over the limit"),
        # a wrong JSON shape
        ("V1 not JSON", "POST", v1, {"data": b"{instances"}, 400, "not valid JSON"),
        ("V1 JSON list", "POST", v1, {"json": [1, 2]}, 400, "JSON object"),
        ("V1 no instances", "POST", v1, {"json": {"inputs": []}}, 400, "instances"),
        ("V1 empty instances", "POST", v1, {"json": {"instances": []}}, 400, "instances"),
        (
            "V1 instance shape",
            "POST",
            v1,
            {"json": {"instances": [{"image": b64(jpeg)}]}},
            400,
            "instances[0]",
        ),
        (
            "V1 bad base64",
            "POST",
            v1,
            {"json": {"instances": [{"image": {"b64": "@@@"}}]}},
            400,
            "not valid base64",
        ),
        (
            "V1 parameters",
            "POST",
            v1,
            {"json": {"instances": [{"image": {"b64": b64(jpeg)}}], "parameters": [1]}},
            400,
            "parameters",
        ),
        ("V2 not JSON", "POST", v2, {"data": b"\x00\x01"}, 400, "not valid JSON"),
        ("V2 no inputs", "POST", v2, {"json": {"outputs": []}}, 400, "inputs"),
        (
            "V2 two inputs",
            "POST",
            v2,
            {"json": {"inputs": [v2_json([b64(jpeg)])["inputs"][0]] * 2}},
            400,
            "exactly one input",
        ),
        (
            "V2 unknown input",
            "POST",
            v2,
            {"json": v2_json([b64(jpeg)], name="pixels")},
            400,
            "unknown input",
        ),
        (
            "V2 unknown output",
            "POST",
            v2,
            {"json": v2_json([b64(jpeg)], outputs=[{"name": "masks"}])},
            400,
            "unknown output",
        ),
        (
            "V2 data not list",
            "POST",
            v2,
            {
                "json": {
                    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": "abc"}]
                }
            },
            400,
            "data must be a list",
        ),
        (
            "V2 header length",
            "POST",
            v2,
            v2_binary([jpeg], header_length=10**9),
            400,
            "Inference-Header-Content-Length",
        ),
        ("V2 binary size", "POST", v2, v2_binary([jpeg], size=7), 400, "binary_data_size"),
        (
            "V2 content encoding",
            "POST",
            v2,
            {"json": v2_json([b64(jpeg)]), "headers": {"Content-Encoding": "gzip"}},
            415,
            "gzip",
        ),
        # a wrong tensor dtype or shape
        (
            "V2 FP32 pixels",
            "POST",
            v2,
            {"json": v2_json([0.5] * 12, datatype="FP32", shape=[1, 2, 2, 3])},
            400,
            "datatype must be BYTES",
        ),
        (
            "V2 numbers as BYTES",
            "POST",
            v2,
            {"json": v2_json([1, 2], shape=[2])},
            400,
            "must be strings",
        ),
        (
            "V2 shape mismatch",
            "POST",
            v2,
            {"json": v2_json([b64(jpeg)], shape=[2])},
            400,
            "holds 2 elements, data has 1",
        ),
        (
            "V2 shape rank",
            "POST",
            v2,
            {"json": v2_json([b64(jpeg)], shape=[1, 1, 1])},
            400,
            "shape must be",
        ),
        (
            "V2 negative shape",
            "POST",
            v2,
            {"json": v2_json([b64(jpeg)], shape=[-1])},
            400,
            "shape must be",
        ),
        ("V2 binary shape", "POST", v2, v2_binary([jpeg], shape=[3]), 400, "holds 3 elements"),
        # bad parameters
        (
            "threshold text",
            "POST",
            detect + "?score_threshold=high",
            {"data": jpeg},
            400,
            "score_threshold",
        ),
        (
            "threshold range",
            "POST",
            detect + "?score_threshold=2",
            {"data": jpeg},
            400,
            "from 0 to 1",
        ),
        (
            "max detections",
            "POST",
            detect + "?max_detections=0",
            {"data": jpeg},
            400,
            "max_detections",
        ),
        (
            "max detections empty",
            "POST",
            detect + "?max_detections=&format=jpeg",
            {"data": jpeg},
            400,
            "max_detections",
        ),
        ("format", "POST", detect + "?format=png", {"data": jpeg}, 400, "format"),
        (
            "V2 threshold",
            "POST",
            v2,
            {"json": v2_json([b64(jpeg)], parameters={"score_threshold": "x"})},
            400,
            "score_threshold",
        ),
        # an unknown model
        ("V1 unknown model", "GET", "/v1/models/resnet", {}, 404, "no model named 'resnet'"),
        (
            "V1 predict unknown",
            "POST",
            "/v1/models/resnet:predict",
            {"json": {"instances": [{"image": {"b64": b64(jpeg)}}]}},
            404,
            "no model named",
        ),
        ("V2 unknown model", "GET", "/v2/models/resnet", {}, 404, "no model named"),
        ("V2 ready unknown", "GET", "/v2/models/resnet/ready", {}, 404, "no model named"),
        (
            "V2 infer unknown",
            "POST",
            "/v2/models/resnet/infer",
            {"json": v2_json([b64(jpeg)])},
            404,
            "no model named",
        ),
        ("V2 unknown version", "GET", "/v2/models/detector/versions/7", {}, 404, "no version '7'"),
        # HTTP itself
        ("unknown path", "GET", "/v3/models", {}, 404, "not found"),
        ("wrong method", "GET", detect, {}, 405, "not allowed"),
    ]


def test_every_bad_input_gets_a_json_4xx_and_the_server_serves_on(server, jpeg):
    workers = sorted(server.wait_workers(2))  # the shared server runs 2
    failures = []
    for what, method, path, kwargs, status, words in cases(jpeg):
        response = server.get(path, **kwargs) if method == "GET" else server.post(path, **kwargs)
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            error = None
        if response.status_code != status or error is None or words.lower() not in error.lower():
            failures.append(f"{what}: {response.status_code} {response.text[:200]!r}")
        # the very next request is served (no crashed worker, no broken state)
        assert server.post("/v1/detect", data=jpeg).status_code == 200, what
    assert not failures, "\n".join(failures)
    assert sorted(server.workers()) == workers  # no worker died or was replaced
    statuses = [e["status"] for e in server.json_log() if e["logger"] == "gunicorn.access"]
    assert 500 not in statuses


def test_a_request_with_more_images_than_the_queue_holds_is_refused(server, jpeg):
    instances = [{"image": {"b64": b64(jpeg)}}] * 33  # max_queue is 32 per worker
    response = server.post("/v1/models/detector:predict", json={"instances": instances})
    assert response.status_code == 400 and "at most 32" in response.json()["error"]


def test_a_worker_that_serves_before_its_warm_up_ends_answers_not_ready(
    start_server, model_dir, jpeg
):
    """With no time given to warm up (`--warmup-timeout 0`), a worker accepts connections at once
    and, until warm, answers every readiness and inference route 503 'not ready' with
    Retry-After, as JSON; liveness answers 200 throughout."""
    server = start_server(
        model_dir,
        flags=["--workers", "1", "--warmup-runs", "300", "--warmup-timeout", "0"],
        wait="/v2/health/live",
    )
    checks = {
        "/v2/health/ready": server.get("/v2/health/ready"),
        "/v2/models/detector/ready": server.get("/v2/models/detector/ready"),
        "/v1/models/detector": server.get("/v1/models/detector"),
        "/v1/detect": server.post("/v1/detect", data=jpeg),
        "infer": server.post("/v2/models/detector/infer", json=v2_json([b64(jpeg)])),
    }
    for what, response in checks.items():
        assert response.status_code == 503, what
        assert response.headers["Retry-After"] == "1", what
        assert "not ready" in response.json()["error"], what
    server.wait("/v2/health/ready", timeout=180)
    assert server.post("/v1/detect", data=jpeg).status_code == 200
    server.stop()


def test_backpressure_answers_503_with_retry_after_never_500(start_server, model_dir, shapes):
    """One worker, a queue of 2, 16 threads: some requests are turned away, none fails badly."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    server = start_server(
        model_dir,
        flags=["--workers", "1", "--threads", "16", "--max-queue", "2", "--max-batch-size", "1"],
    )
    images = [b64(data) for data, _ in shapes[:2]]
    body = {"instances": [{"image": {"b64": images[0]}}, {"image": {"b64": images[1]}}]}

    def call(_):
        r = requests.post(server.url + "/v1/models/detector:predict", json=body, timeout=30)
        return r.status_code, r.headers.get("Retry-After"), r.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(call, range(400)))
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {200, 503}
    assert statuses.count(503) > 0 and statuses.count(200) > 0
    for status, retry_after, body in results:
        if status == 503:
            assert retry_after == "1" and "busy" in body["error"]
    assert np.mean([s == 200 for s in statuses]) > 0
    assert 'kubedetect_rejected_total{reason="QueueFull"}' in server.get("/metrics").text
    server.stop()
