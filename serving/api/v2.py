"""The Open Inference Protocol (KServe V2) over REST, with the binary tensor extension.

The model takes one input, `image`: a BYTES tensor of shape [N] (or [N, 1]) whose elements are
encoded image files (JPEG, PNG, ...). In a JSON request each element is a string holding the
file in base64; with the binary extension (tritonclient.http's default) the elements are the
raw file bytes, each preceded by its length as a 4-byte little-endian integer, after the JSON
header whose length the `Inference-Header-Content-Length` header gives.

It answers with detection tensors, padded to the most detections K found in any image:
`boxes` FP32 [N, K, 4] (xmin, ymin, xmax, ymax in original-image pixels), `scores` FP32 [N, K],
`class_ids` INT32 [N, K] (-1 where padded), `labels` BYTES [N, K] ("" where padded),
`num_detections` INT32 [N] and `image_size` INT32 [N, 2] (width, height). An output is sent in
binary when the request asks (`"parameters": {"binary_data": true}` on the output, or
`"binary_data_output": true` on the request), as JSON otherwise.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct

import numpy as np
from flask import Blueprint, Response, g, jsonify, request

from kubedetect import __version__
from serving.api.kserve_v1 import read_json_object
from serving.body import read_body
from serving.errors import BadRequest, ModelNotFound, UnsupportedMediaType
from serving.service import ImageResult, current_service

bp = Blueprint("v2", __name__)

HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT = "image"
VERSION = "1"
# name -> (datatype, shape in the metadata; -1 is any size)
OUTPUTS = {
    "boxes": ("FP32", [-1, -1, 4]),
    "scores": ("FP32", [-1, -1]),
    "class_ids": ("INT32", [-1, -1]),
    "labels": ("BYTES", [-1, -1]),
    "num_detections": ("INT32", [-1]),
    "image_size": ("INT32", [-1, 2]),
}
NUMPY = {"FP32": np.float32, "INT32": np.int32}


# -- health and metadata ------------------------------------------------------------------------


@bp.get("/v2")
@bp.get("/v2/", strict_slashes=False)
def server_metadata():
    return jsonify(
        {"name": "kubedetect", "version": __version__, "extensions": ["binary_tensor_data"]}
    )


@bp.get("/v2/health/live")
def live():
    return jsonify({"live": True})


@bp.get("/v2/health/ready")
def ready():
    problem = current_service().problem()
    if problem is not None:
        return _not_ready(problem, {"ready": False})
    return jsonify({"ready": True})


@bp.get("/v2/models/<model:name>")
@bp.get("/v2/models/<model:name>/versions/<version>")
def model_metadata(name: str, version: str | None = None):
    model = _model(name, version)
    return jsonify(
        {
            "name": model.name,
            "versions": [VERSION],
            "platform": "tflite",
            "inputs": [{"name": INPUT, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [
                {"name": out, "datatype": dtype, "shape": shape}
                for out, (dtype, shape) in OUTPUTS.items()
            ],
            "parameters": model.metadata(),
        }
    )


@bp.get("/v2/models/<model:name>/ready")
@bp.get("/v2/models/<model:name>/versions/<version>/ready")
def model_ready(name: str, version: str | None = None):
    _model(name, version)
    problem = current_service().problem()
    if problem is not None:
        return _not_ready(problem, {"name": name, "ready": False})
    return jsonify({"name": name, "ready": True})


# -- inference ----------------------------------------------------------------------------------


@bp.post("/v2/models/<model:name>/infer")
@bp.post("/v2/models/<model:name>/versions/<version>/infer")
def infer(name: str, version: str | None = None):
    service = current_service()
    model = _model(name, version)
    header, binary = _read_request()
    images = _input_images(header, binary)
    parameters = header.get("parameters", {})
    decode = model.parameters_from(parameters)
    wanted = _requested_outputs(header, parameters)
    if "id" in header and not isinstance(header["id"], str):
        raise BadRequest('"id": expected a string')
    results = service.detect(images, decode, deadline=g.deadline)
    response = {"model_name": model.name, "model_version": VERSION}
    if "id" in header:
        response["id"] = header["id"]
    tensors = _output_tensors(results, model.classes)
    response["outputs"], blobs = [], []
    for out, binary_out in wanted:
        datatype, array = tensors[out]
        entry = {"name": out, "datatype": datatype, "shape": list(array.shape)}
        if binary_out:
            blob = _serialize(datatype, array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = _json_data(datatype, array)
        response["outputs"].append(entry)
    if not blobs:
        return jsonify(response)
    head = json.dumps(response, separators=(",", ":")).encode()
    return Response(
        b"".join([head, *blobs]),
        mimetype="application/octet-stream",
        headers={HEADER_LENGTH: str(len(head))},
    )


def _model(name: str, version: str | None):
    model = current_service().check_model(name)
    if version is not None and version != VERSION:
        raise ModelNotFound(f"model {name!r} has no version {version!r}; it has {VERSION!r}")
    return model


def _not_ready(problem: str, body: dict) -> Response:
    response = jsonify({"error": problem} | body)
    response.status_code = 503
    response.headers["Retry-After"] = "1"
    return response


def _read_request() -> tuple[dict, bytes]:
    """The JSON header and the binary section that follows it (empty without the extension)."""
    encoding = request.headers.get("Content-Encoding", "identity").lower()
    if encoding not in ("identity", ""):
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported; send identity")
    length = request.headers.get(HEADER_LENGTH)
    if length is None:
        return read_json_object(), b""
    body = read_body()
    try:
        size = int(length)
    except ValueError:
        raise BadRequest(f"{HEADER_LENGTH}: expected a number of bytes, got {length!r}") from None
    if not 0 < size <= len(body):
        raise BadRequest(f"{HEADER_LENGTH}: {size} is not within the body's {len(body)} bytes")
    try:
        header = json.loads(body[:size])
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the JSON header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise BadRequest("the JSON header must be an object")
    return header, body[size:]


def _input_images(header: dict, binary: bytes) -> list[bytes]:
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f'"inputs": expected exactly one input, {INPUT!r} (BYTES, shape [N])')
    tensor = inputs[0]
    if tensor.get("name") != INPUT:
        raise BadRequest(f"unknown input {tensor.get('name')!r}; the model's input is {INPUT!r}")
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(
            f"input {INPUT!r}: datatype must be BYTES (encoded image files), "
            f"got {tensor.get('datatype')!r}"
        )
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 2
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise BadRequest(f"input {INPUT!r}: shape must be [N] or [N, 1], got {shape!r}")
    count = math.prod(shape)
    parameters = tensor.get("parameters", {})
    if not isinstance(parameters, dict):
        raise BadRequest(f"input {INPUT!r}: parameters must be an object")
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
            raise BadRequest(
                f"input {INPUT!r}: binary_data_size {size!r} does not match "
                f"the {len(binary)} bytes sent"
            )
        elements = _deserialize_bytes(binary)
    else:
        if binary:
            raise BadRequest(f"binary data sent but input {INPUT!r} has no binary_data_size")
        if "data" not in tensor:
            raise BadRequest(f"input {INPUT!r}: no data")
        elements = [_from_json_element(e) for e in _flatten(tensor["data"])]
    if len(elements) != count:
        raise BadRequest(
            f"input {INPUT!r}: shape {shape} holds {count} elements, data has {len(elements)}"
        )
    return [_image_file(e, i) for i, e in enumerate(elements)]


def _flatten(data) -> list:
    if not isinstance(data, list):
        raise BadRequest(f"input {INPUT!r}: data must be a list")
    flat = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _from_json_element(element) -> bytes:
    if not isinstance(element, str):
        raise BadRequest(
            f"input {INPUT!r}: BYTES elements in JSON must be strings (base64 of an image file), "
            f"got {type(element).__name__}"
        )
    return element.encode("utf-8", "surrogatepass")


def _deserialize_bytes(binary: bytes) -> list[bytes]:
    """Triton's BYTES serialization: each element as a uint32 little-endian length, then bytes."""
    elements, offset = [], 0
    while offset < len(binary):
        if offset + 4 > len(binary):
            raise BadRequest(f"input {INPUT!r}: binary BYTES data is truncated (a length prefix)")
        (size,) = struct.unpack_from("<I", binary, offset)
        offset += 4
        if offset + size > len(binary):
            raise BadRequest(f"input {INPUT!r}: binary BYTES element longer than the data sent")
        elements.append(binary[offset : offset + size])
        offset += size
    return elements


def _image_file(element: bytes, index: int) -> bytes:
    """An element's image file: raw bytes as they are, base64 text decoded."""
    if not element:
        raise BadRequest(f"input {INPUT!r}: element {index} is empty")
    try:
        return base64.b64decode(element, validate=True)
    except (binascii.Error, ValueError):
        return element  # not base64: the raw file (an image file is never valid base64 text)


def _requested_outputs(header: dict, parameters: dict) -> list[tuple[str, bool]]:
    """Which outputs to send, each with whether it goes in binary."""
    default_binary = _flag(parameters, "binary_data_output", "parameters")
    if "outputs" not in header:
        return [(name, default_binary) for name in OUTPUTS]
    requested = header["outputs"]
    if not isinstance(requested, list):
        raise BadRequest('"outputs": expected a list of {"name": ...}')
    wanted = []
    for item in requested:
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str) or name not in OUTPUTS:
            raise BadRequest(f"unknown output {name!r}; the outputs are {', '.join(OUTPUTS)}")
        out_parameters = item.get("parameters", {})
        if not isinstance(out_parameters, dict):
            raise BadRequest(f"output {name!r}: parameters must be an object")
        binary = _flag(out_parameters, "binary_data", f"output {name!r}", default=default_binary)
        wanted.append((name, binary))
    return wanted


def _flag(parameters: dict, key: str, where: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise BadRequest(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _output_tensors(results: list[ImageResult], classes) -> dict[str, tuple[str, np.ndarray]]:
    n = len(results)
    k = max((len(r.detections) for r in results), default=0)
    boxes = np.zeros((n, k, 4), np.float32)
    scores = np.zeros((n, k), np.float32)
    class_ids = np.full((n, k), -1, np.int32)
    labels = np.full((n, k), b"", dtype=object)
    for i, result in enumerate(results):
        for j, det in enumerate(result.detections):
            boxes[i, j] = det.box
            scores[i, j] = det.score
            class_ids[i, j] = det.class_id
            labels[i, j] = det.label.encode()
    return {
        "boxes": ("FP32", boxes),
        "scores": ("FP32", scores),
        "class_ids": ("INT32", class_ids),
        "labels": ("BYTES", labels),
        "num_detections": ("INT32", np.array([len(r.detections) for r in results], np.int32)),
        "image_size": (
            "INT32",
            np.array([[r.width, r.height] for r in results], np.int32).reshape(n, 2),
        ),
    }


def _serialize(datatype: str, array: np.ndarray) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(e)) + e for e in array.reshape(-1))
    return array.astype(np.dtype(NUMPY[datatype]).newbyteorder("<")).tobytes()  # row-major


def _json_data(datatype: str, array: np.ndarray) -> list:
    flat = array.reshape(-1)
    if datatype == "BYTES":
        return [e.decode() for e in flat]
    if datatype == "FP32":
        return [float(v) for v in flat]
    return [int(v) for v in flat]
