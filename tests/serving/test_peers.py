"""Real protocol peers against a real Gunicorn: Triton's tritonclient.http (binary tensor
extension by default, and JSON) and KServe's own REST client (V1 and V2, from the KServe
virtualenv). Each must get the same detections as kubedetect's own /v1/detect."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow

PARAMETERS = {"score_threshold": 0.0, "max_detections": 3}


@pytest.fixture(scope="module")
def images(shapes) -> list[bytes]:
    return [data for data, _ in shapes[:3]]


@pytest.fixture(scope="module")
def expected(server, images) -> list[dict]:
    """What /v1/detect answers for each image."""
    return [server.post("/v1/detect", data=data, params=PARAMETERS).json() for data in images]


def check_tensors(tensors: dict, expected: list[dict]) -> None:
    for i, want in enumerate(expected):
        dets = want["detections"]
        assert tensors["num_detections"][i] == len(dets)
        assert [label for label in tensors["labels"][i][: len(dets)]] == [d["label"] for d in dets]
        np.testing.assert_allclose(
            tensors["scores"][i][: len(dets)], [d["score"] for d in dets], atol=1e-4
        )
        np.testing.assert_allclose(
            tensors["boxes"][i][: len(dets)], [list(d["box"].values()) for d in dets], atol=0.01
        )


@pytest.fixture(scope="module")
def client(server):
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield client
    client.close()


def test_tritonclient_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("detector")
    assert not client.is_model_ready("resnet")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata("detector")
    assert meta["inputs"][0] == {"name": "image", "datatype": "BYTES", "shape": [-1]}


def test_tritonclient_default_binary_mode(client, images, expected):
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=np.object_))  # binary_data=True by default
    result = client.infer("detector", [tensor], parameters=PARAMETERS)
    response = result.get_response()
    assert all("binary_data_size" in out["parameters"] for out in response["outputs"])
    tensors = {out["name"]: result.as_numpy(out["name"]) for out in response["outputs"]}
    tensors["labels"] = [[v.decode() for v in row] for row in tensors["labels"]]
    assert tensors["boxes"].dtype == np.float32 and tensors["class_ids"].dtype == np.int32
    check_tensors(tensors, expected)
    assert tensors["image_size"].tolist() == [[e["width"], e["height"]] for e in expected]


def test_tritonclient_json_mode(client, images, expected):
    tensor = triton.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(
        np.array([base64.b64encode(i) for i in images], dtype=np.object_), binary_data=False
    )
    outputs = [
        triton.InferRequestedOutput(name, binary_data=False)
        for name in ("boxes", "scores", "labels", "num_detections")
    ]
    result = client.infer("detector", [tensor], outputs=outputs, parameters=PARAMETERS)
    response = result.get_response()
    assert all("data" in out for out in response["outputs"])  # plain JSON, no binary section
    tensors = {
        name: result.as_numpy(name) for name in ("boxes", "scores", "labels", "num_detections")
    }
    tensors["labels"] = [
        [v.decode() if isinstance(v, bytes) else v for v in row] for row in tensors["labels"]
    ]
    check_tensors(tensors, expected)


def test_tritonclient_errors_arrive_as_messages(client, images):
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="not a decodable image"):
        client.infer("detector", [tensor])
    with pytest.raises(InferenceServerException, match="no model named 'resnet'"):
        client.infer("resnet", [tensor])
    wrong = triton.InferInput("image", [1, 4], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 4), np.float32))
    with pytest.raises(InferenceServerException, match="datatype must be BYTES"):
        client.infer("detector", [wrong])


def test_kserve_rest_client_v1_and_v2(server, images, expected, kserve_python, tmp_path):
    paths = []
    for i, data in enumerate(images):
        path = tmp_path / f"{i}.jpg"
        path.write_bytes(data)
        paths.append(str(path))
    peer = Path(__file__).with_name("kserve_peer.py")
    done = subprocess.run(
        [str(kserve_python), str(peer), server.url, *paths],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["v1_live"] is True and out["v1_model_ready"] is True
    assert out["v2_live"] is True and out["v2_ready"] is True and out["v2_model_ready"] is True
    assert [p["detections"] for p in out["v1_predictions"]] == [e["detections"] for e in expected]
    check_tensors(out["v2_json"], expected)
    check_tensors(out["v2_binary"], expected)
    # The answer came in the binary tensor format: a JSON header, then the tensors' bytes.
    assert out["v2_binary_headers"]["content-type"] == "application/octet-stream"
    assert int(out["v2_binary_headers"]["inference-header-content-length"]) > 0
    status, message = out["unknown_model"]
    assert status == 404 and "no model named 'nope'" in message
