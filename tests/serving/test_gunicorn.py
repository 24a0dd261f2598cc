"""Every endpoint through a real Gunicorn (`kubedetect serve`, 2 workers) on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from PIL import Image
from servers import free_port

from kubedetect.io.images import reduction

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
    # Drawn on the image the model's input was made from: reduced by the decode's rule.
    factor = reduction((width, height), server.get("/v1/models/detector").json()["input_size"])
    assert picture.format == "JPEG" and picture.size == (-(-width // factor), -(-height // factor))


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


def start_slow_upload(port: int) -> socket.socket:
    """A request whose body is still arriving: it keeps one request thread busy, reading."""
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(
        b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 100000\r\n\r\n" + b"x" * 10
    )
    return client


def test_probes_are_answered_while_every_request_thread_is_busy(start_server, model_dir):
    """A worker's two threads each held by an upload that is still arriving, and more requests
    queued behind them: a probe on the serving port waits behind them past its timeout, while
    the health port answers at once, from the worker's own probe thread (the kubelet would
    otherwise restart a healthy pod for being busy)."""
    health = free_port()
    server = start_server(
        model_dir, flags=["--workers", "1", "--threads", "2", "--health-port", str(health)]
    )
    probe = f"http://127.0.0.1:{health}"
    assert requests.get(probe + "/v2/health/ready", timeout=2).json() == {"ready": True}
    busy = [start_slow_upload(server.port) for _ in range(4)]
    try:
        time.sleep(1.0)  # the uploads reach the threads
        with pytest.raises(requests.Timeout):
            requests.get(server.url + "/v2/health/live", timeout=2)
        for _ in range(10):
            assert requests.get(probe + "/v2/health/live", timeout=2).json() == {"live": True}
            assert requests.get(probe + "/v2/health/ready", timeout=2).json() == {"ready": True}
        missing = requests.get(probe + "/metrics", timeout=2)
        assert missing.status_code == 404 and "error" in missing.json()
    finally:
        for client in busy:
            client.close()
    server.stop()


def test_a_health_port_another_process_holds_stops_the_server_naming_it(start_server, model_dir):
    """Each worker binds the health port as it boots. When another program holds that port,
    no worker can boot: Gunicorn's master must see their boot-error status and stop with a
    non-zero one, saying why, instead of forking replacements forever (what it would do if the
    workers' exit status were lost on the way out, serving/worker.py `exit_now`)."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = start_server(
            model_dir, flags=["--workers", "2", "--health-port", str(port)], wait=None
        )
        status = server.process.wait(timeout=60)
    log = server.log()
    assert status != 0
    assert "Address already in use" in log and "Worker failed to boot" in log


def read_response(client: socket.socket) -> tuple[bytes, bytes]:
    """The next HTTP response on `client`: its head and body (sized by Content-Length). Reads
    byte by byte up to the body, so that a following response stays unread on the socket."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = client.recv(1)
        assert byte, f"the server closed the connection mid-response: {head!r}"
        head += byte
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    body = b""
    while len(body) < length:
        chunk = client.recv(length - len(body))
        assert chunk, "the server closed the connection mid-response"
        body += chunk
    return head[:-4], body


def test_a_keep_alive_client_is_answered_in_order_however_it_sends(server, jpeg):
    """One connection: requests sent one after the other, after a pause, and several at once
    (pipelined, in one write) are each answered, in order, on the same connection."""
    detect = (
        b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n" % len(jpeg) + jpeg
    )
    model = b"GET /v1/models/detector HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    missing = b"GET /v1/models/nobody HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
        for request, status in [(detect, b"200"), (model, b"200"), (missing, b"404")]:
            client.sendall(request)
            head, body = read_response(client)
            assert head.split(b" ")[1] == status, head
        time.sleep(0.2)
        client.sendall(model)
        assert read_response(client)[0].split(b" ")[1] == b"200"
        client.sendall(missing + detect + model)
        answers = [read_response(client) for _ in range(3)]
    assert [head.split(b" ")[1] for head, _ in answers] == [b"404", b"200", b"200"]
    assert b'"detections"' in answers[1][1]
    assert b'"name":"detector"' in answers[2][1].replace(b" ", b"")
