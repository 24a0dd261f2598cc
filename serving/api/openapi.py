"""`GET /openapi.json`: an OpenAPI 3.0 document of the whole API, built from the served settings.

The Open Inference Protocol paths follow ../shared/specs/open-inference-protocol-rest.yaml (the
KServe V2 REST spec) with this model's tensors filled in; the binary tensor extension is
described as the application/octet-stream request and response bodies.
"""

from __future__ import annotations

from flask import Blueprint, jsonify

from kubedetect import __version__
from serving.service import current_service

bp = Blueprint("openapi", __name__)

JSON = "application/json"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _error(description: str, retry: bool = False) -> dict:
    response = _json(_ref("Error"), description)
    if retry:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "string"},
            }
        }
    return response


ERRORS = {
    "400": _error("Bad input: not an image, a truncated image, too many pixels, a wrong shape."),
    "413": _error("The body is over the size limit."),
    "503": _error("Not ready yet, the queue is full, or the request timed out.", retry=True),
}
NOT_FOUND = {"404": _error("No such model (or version).")}


def _name(model_name: str) -> dict:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [model_name]},
        "description": "The served model's name (GET /v1/models); any other name is a 404.",
    }


VERSION = {
    "name": "version",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "enum": ["1"]},
    "description": "The one version, '1'.",
}
DECODE_QUERY = [
    {
        "name": "score_threshold",
        "in": "query",
        "required": False,
        "schema": {"type": "number", "minimum": 0, "maximum": 1},
        "description": "Lowest score returned.",
    },
    {
        "name": "max_detections",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
        "description": "Most detections returned.",
    },
]


def document(model_name: str, max_body_bytes: int) -> dict:
    name = _name(model_name)
    binary = {"type": "string", "format": "binary"}
    detect_body = {
        "required": True,
        "description": f"An image file (JPEG, PNG, WebP, ...), at most {max_body_bytes} bytes.",
        "content": {
            "image/jpeg": {"schema": binary},
            "image/png": {"schema": binary},
            "application/octet-stream": {"schema": binary},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": binary,
                        "score_threshold": {"type": "number", "minimum": 0, "maximum": 1},
                        "max_detections": {"type": "integer", "minimum": 1, "maximum": 1000},
                    },
                }
            },
        },
    }
    v2_infer = {
        "tags": ["Open Inference Protocol (KServe V2)"],
        "summary": "Detect objects in a batch of encoded images",
        "parameters": [name],
        "requestBody": {
            "required": True,
            "content": {
                JSON: {"schema": _ref("InferenceRequest")},
                "application/octet-stream": {
                    "schema": binary,
                    "description": "Binary tensor extension: the JSON header (its length in "
                    "Inference-Header-Content-Length), then the tensors' bytes.",
                },
            },
        },
        "responses": {
            "200": {
                "description": "Detection tensors (binary ones after the JSON header, if asked).",
                "content": {
                    JSON: {"schema": _ref("InferenceResponse")},
                    "application/octet-stream": {"schema": binary},
                },
            },
            **ERRORS,
            **NOT_FOUND,
            "415": _error("An unsupported Content-Encoding."),
        },
    }
    doc = {
        "openapi": "3.0.3",
        "info": {
            "title": "kubedetect inference service",
            "version": __version__,
            "description": "Object detection with a quantized TFLite detector: kubedetect's own "
            "API, KServe V1, and the Open Inference Protocol (KServe V2) with the binary tensor "
            f"extension. The model is served as {model_name!r}. Every error is JSON "
            '{"error": "..."}.',
        },
        "paths": {
            "/": {
                "get": {
                    "tags": ["Web"],
                    "summary": "The web page (text/html) or KServe V1 liveness (JSON)",
                    "responses": {
                        "200": {
                            "description": 'The page, or {"status": "alive"}.',
                            "content": {
                                "text/html": {"schema": {"type": "string"}},
                                JSON: {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {
                                            "status": {"type": "string", "enum": ["alive"]}
                                        },
                                    }
                                },
                            },
                        }
                    },
                }
            },
            "/v1/detect": {
                "post": {
                    "tags": ["kubedetect"],
                    "summary": "Detect objects in one image",
                    "parameters": [
                        *DECODE_QUERY,
                        {
                            "name": "format",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "string",
                                "enum": ["json", "jpeg"],
                                "default": "json",
                            },
                            "description": "jpeg: the image with the boxes drawn, instead of JSON.",
                        },
                    ],
                    "requestBody": detect_body,
                    "responses": {
                        "200": {
                            "description": "Detections in original-image pixels.",
                            "content": {
                                JSON: {"schema": _ref("DetectResponse")},
                                "image/jpeg": {"schema": binary},
                            },
                        },
                        **ERRORS,
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "tags": ["KServe V1"],
                    "summary": "Served model names",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["models"],
                                "properties": {
                                    "models": {"type": "array", "items": {"type": "string"}}
                                },
                            },
                            "Names.",
                        )
                    },
                }
            },
            "/v1/models/{name}": {
                "get": {
                    "tags": ["KServe V1"],
                    "summary": "Model readiness and metadata",
                    "parameters": [name],
                    "responses": {
                        "200": _json(_ref("ModelStatus"), "Ready."),
                        **NOT_FOUND,
                        "503": _error("Not ready yet.", retry=True),
                    },
                }
            },
            "/v1/models/{name}:predict": {
                "post": {
                    "tags": ["KServe V1"],
                    "summary": "Detect objects in base64 images",
                    "parameters": [name],
                    "requestBody": {
                        "required": True,
                        "content": {JSON: {"schema": _ref("V1Request")}},
                    },
                    "responses": {
                        "200": _json(_ref("V1Response"), "One prediction per instance."),
                        **ERRORS,
                        **NOT_FOUND,
                    },
                }
            },
            "/v2": {
                "get": {
                    "tags": ["Open Inference Protocol (KServe V2)"],
                    "summary": "Server metadata",
                    "responses": {"200": _json(_ref("ServerMetadata"), "Server metadata.")},
                }
            },
            "/v2/health/live": {
                "get": {
                    "tags": ["Open Inference Protocol (KServe V2)"],
                    "summary": "Server live",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["live"],
                                "properties": {"live": {"type": "boolean"}},
                            },
                            "Live.",
                        )
                    },
                }
            },
            "/v2/health/ready": {
                "get": {
                    "tags": ["Open Inference Protocol (KServe V2)"],
                    "summary": "Server ready",
                    "responses": {
                        "200": _json(_ref("Readiness"), "Ready."),
                        "503": _error("Not ready yet.", retry=True),
                    },
                }
            },
            "/v2/models/{name}": {
                "get": {
                    "tags": ["Open Inference Protocol (KServe V2)"],
                    "summary": "Model metadata",
                    "parameters": [name],
                    "responses": {
                        "200": _json(_ref("ModelMetadata"), "Model metadata."),
                        **NOT_FOUND,
                    },
                }
            },
            "/v2/models/{name}/versions/{version}": {
                "get": {
                    "tags": ["Open Inference Protocol (KServe V2)"],
                    "summary": "Model metadata (a version)",
                    "parameters": [name, VERSION],
                    "responses": {
                        "200": _json(_ref("ModelMetadata"), "Model metadata."),
                        **NOT_FOUND,
                    },
                }
            },
            "/v2/models/{name}/ready": {
                "get": {
                    "tags": ["Open Inference Protocol (KServe V2)"],
                    "summary": "Model ready",
                    "parameters": [name],
                    "responses": {
                        "200": _json(_ref("Readiness"), "Ready."),
                        **NOT_FOUND,
                        "503": _error("Not ready yet.", retry=True),
                    },
                }
            },
            "/v2/models/{name}/versions/{version}/ready": {
                "get": {
                    "tags": ["Open Inference Protocol (KServe V2)"],
                    "summary": "Model ready (a version)",
                    "parameters": [name, VERSION],
                    "responses": {
                        "200": _json(_ref("Readiness"), "Ready."),
                        **NOT_FOUND,
                        "503": _error("Not ready yet.", retry=True),
                    },
                }
            },
            "/v2/models/{name}/infer": {"post": v2_infer},
            "/v2/models/{name}/versions/{version}/infer": {
                "post": v2_infer
                | {"parameters": [name, VERSION], "summary": "Inference (a version)"}
            },
            "/metrics": {
                "get": {
                    "tags": ["Operations"],
                    "summary": "Prometheus metrics, summed over workers",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "tags": ["Operations"],
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0.")},
                }
            },
        },
        "components": {"schemas": SCHEMAS},
    }
    # Gunicorn itself refuses a request line over 4094 bytes, before the app sees it.
    for operations in doc["paths"].values():
        for operation in operations.values():
            operation["responses"].setdefault("414", URI_TOO_LONG)
    return doc


URI_TOO_LONG = {
    "description": "The request line is too long (answered by Gunicorn, as HTML).",
    "content": {"text/html": {"schema": {"type": "string"}}},
}


_NUMBER = {"type": "number"}
EXAMPLE_PNG = (  # an 8 x 8 red PNG, base64
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFUlEQVR42mM8ISfHgA0wMeAAg1MCANDKARQfGKMRAAAAAElFTkSuQmCC"
)
SCHEMAS = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "Box": {
        "type": "object",
        "required": ["xmin", "ymin", "xmax", "ymax"],
        "properties": {k: _NUMBER for k in ("xmin", "ymin", "xmax", "ymax")},
    },
    "Detection": {
        "type": "object",
        "required": ["label", "class_id", "score", "box"],
        "properties": {
            "label": {"type": "string"},
            "class_id": {"type": "integer", "minimum": 0},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "box": _ref("Box"),
        },
    },
    "DetectResponse": {
        "type": "object",
        "required": ["model", "width", "height", "detections"],
        "properties": {
            "model": {"type": "string"},
            "width": {"type": "integer"},
            "height": {"type": "integer"},
            "detections": {"type": "array", "items": _ref("Detection")},
            "time_ms": _NUMBER,
        },
    },
    "ModelStatus": {
        "type": "object",
        "required": ["name", "ready"],
        "properties": {
            "name": {"type": "string"},
            "ready": {"type": "boolean"},
            "variant": {"type": "string"},
            "classes": {"type": "array", "items": {"type": "string"}},
            "input_size": {"type": "integer"},
            "sha256": {"type": "string"},
            "members": {"type": "integer", "minimum": 1},
            "score_threshold": _NUMBER,
            "max_detections": {"type": "integer"},
        },
    },
    "V1Request": {
        "type": "object",
        "required": ["instances"],
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {
                        "image": {
                            "type": "object",
                            "required": ["b64"],
                            "properties": {
                                "b64": {"type": "string", "format": "byte", "minLength": 4}
                            },
                        }
                    },
                },
            },
            "parameters": {
                "type": "object",
                "properties": {
                    "score_threshold": {"type": "number", "minimum": 0, "maximum": 1},
                    "max_detections": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            },
        },
        "example": {
            "instances": [{"image": {"b64": EXAMPLE_PNG}}],
            "parameters": {"score_threshold": 0.3},
        },
    },
    "V1Response": {
        "type": "object",
        "required": ["predictions"],
        "properties": {
            "predictions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["width", "height", "detections"],
                    "properties": {
                        "width": {"type": "integer"},
                        "height": {"type": "integer"},
                        "detections": {"type": "array", "items": _ref("Detection")},
                    },
                },
            }
        },
    },
    "ServerMetadata": {
        "type": "object",
        "required": ["name", "version", "extensions"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Readiness": {
        "type": "object",
        "required": ["ready"],
        "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}},
    },
    "MetadataTensor": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "platform"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("MetadataTensor")},
            "outputs": {"type": "array", "items": _ref("MetadataTensor")},
            "parameters": {"type": "object"},
        },
    },
    "TensorData": {"type": "array", "items": {}},
    "InferenceRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string"},
            "parameters": {
                "type": "object",
                "properties": {
                    "score_threshold": {"type": "number", "minimum": 0, "maximum": 1},
                    "max_detections": {"type": "integer", "minimum": 1, "maximum": 1000},
                    "binary_data_output": {"type": "boolean"},
                },
            },
            "inputs": {
                "type": "array",
                "minItems": 1,
                "maxItems": 1,
                "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype"],
                    "properties": {
                        "name": {"type": "string", "enum": ["image"]},
                        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                        "datatype": {"type": "string", "enum": ["BYTES"]},
                        "parameters": {"type": "object"},
                        "data": {
                            "type": "array",
                            "items": {"type": "string", "format": "byte", "minLength": 4},
                            "description": "Base64 of each image file.",
                        },
                    },
                },
            },
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                },
            },
        },
        "example": {
            "id": "1",
            "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [EXAMPLE_PNG]}],
        },
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": {"type": "object"},
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "shape", "datatype"],
                    "properties": {
                        "name": {"type": "string"},
                        "datatype": {"type": "string"},
                        "shape": {"type": "array", "items": {"type": "integer"}},
                        "parameters": {"type": "object"},
                        "data": _ref("TensorData"),
                    },
                },
            },
        },
    },
}


@bp.get("/openapi.json")
def openapi():
    service = current_service()
    return jsonify(document(service.model.name, service.config.max_body_bytes))
