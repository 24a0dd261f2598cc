"""KServe's V1 protocol (TensorFlow Serving style): what KServe's clients and tools speak.

- `GET /v1/models`: the served model names.
- `GET /v1/models/<model:name>`: `{"name", "ready"}`; 503 while not ready (as KServe answers).
- `POST /v1/models/<model:name>:predict` with `{"instances": [{"image": {"b64": "..."}}, ...],
  "parameters": {"score_threshold": 0.3, "max_detections": 100}}` answered with
  `{"predictions": [{"width", "height", "detections": [...]}, ...]}`, one per instance.
"""

from __future__ import annotations

import base64
import binascii
import json

from flask import Blueprint, g, jsonify

from serving.body import read_body
from serving.errors import BadRequest
from serving.service import current_service

bp = Blueprint("kserve_v1", __name__)


@bp.get("/v1/models")
def models():
    return jsonify({"models": [current_service().model.name]})


@bp.get("/v1/models/<model:name>")
def model_ready(name: str):
    service = current_service()
    service.check_model(name)
    problem = service.problem()
    if problem is not None:
        response = jsonify({"error": problem, "name": name, "ready": False})
        response.status_code = 503
        response.headers["Retry-After"] = "1"
        return response
    return jsonify({"name": name, "ready": True} | service.model.metadata())


@bp.post("/v1/models/<model:name>:predict")
def predict(name: str):
    service = current_service()
    model = service.check_model(name)
    body = read_json_object()
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise BadRequest('"instances": expected a non-empty list of {"image": {"b64": "..."}}')
    images = [_instance_image(i, instance) for i, instance in enumerate(instances)]
    decode = model.parameters_from(body.get("parameters", {}))
    results = service.detect(images, decode, deadline=g.deadline)
    return jsonify(
        {
            "predictions": [
                {
                    "width": r.width,
                    "height": r.height,
                    "detections": [d.to_dict() for d in r.detections],
                }
                for r in results
            ]
        }
    )


def read_json_object() -> dict:
    """The request body as a JSON object, or a 400 that says what is wrong with it."""
    try:
        body = json.loads(read_body() or b"null")
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


def _instance_image(index: int, instance) -> bytes:
    where = f"instances[{index}]"
    image = instance.get("image") if isinstance(instance, dict) else None
    encoded = image.get("b64") if isinstance(image, dict) else None
    if not isinstance(encoded, str):
        raise BadRequest(f'{where}: expected {{"image": {{"b64": "<base64 of an image file>"}}}}')
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}.image.b64: not valid base64") from None
