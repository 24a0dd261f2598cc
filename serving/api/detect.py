"""kubedetect's own API: `POST /v1/detect`, one image in, detections out.

The image comes as a multipart upload (field `image`, as a browser form sends it) or as the raw
request body (`curl --data-binary @photo.jpg`). `score_threshold` and `max_detections` come from
the query string (or the form). Boxes are in the original image's pixels, after its EXIF
orientation. `?format=jpeg` answers with the image and its boxes drawn instead of JSON (the
image as the model saw it before the final resize: large images come back reduced, see
serving/draw.py).
"""

from __future__ import annotations

import time

from flask import Blueprint, Response, g, jsonify, request

from serving.body import read_body
from serving.draw import draw_detections
from serving.errors import BadRequest
from serving.service import current_service

bp = Blueprint("detect", __name__)

FORMATS = ("json", "jpeg")


@bp.post("/v1/detect")
def detect():
    started = time.perf_counter()
    service = current_service()
    output = request.args.get("format", "json")
    if output not in FORMATS:
        raise BadRequest(f"format: expected one of {', '.join(FORMATS)}, got {output!r}")
    parameters = service.model.parameters(_param("score_threshold"), _param("max_detections"))
    (result,) = service.detect(
        [_image_bytes()], parameters, deadline=g.deadline, keep_image=output == "jpeg"
    )
    if output == "jpeg":
        picture = draw_detections(result.image, result.detections, result.width)
        return Response(picture, mimetype="image/jpeg")
    return jsonify(
        {
            "model": service.model.name,
            "width": result.width,
            "height": result.height,
            "detections": [d.to_dict() for d in result.detections],
            "time_ms": round((time.perf_counter() - started) * 1000, 2),
        }
    )


def _param(name: str):
    """A parameter from the query string or, in a form upload, from the form (the query wins;
    a value given in both places must be valid in both). An empty form field is a field left
    blank (browsers send those); an empty query value (`?max_detections=`) is a bad value."""
    query = request.args.get(name)
    form = request.form.get(name) or None if request.mimetype == "multipart/form-data" else None
    if query is not None and form is not None:
        current_service().model.parameters(**{name: form})  # raises BadRequest if invalid
    return query if query is not None else form


def _image_bytes() -> bytes:
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image") or next(iter(request.files.values()), None)
        if upload is None:
            raise BadRequest("multipart upload without a file: send the image in the field 'image'")
        data = upload.read()  # held in memory, never spooled to disk (serving.app.Request)
    else:
        data = read_body()
    if not data:
        raise BadRequest(
            "empty request: send an image as the body or as the multipart field 'image'"
        )
    return data
