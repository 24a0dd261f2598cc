"""KServe's own REST client against our server; run by the KServe virtualenv's python.

    .venv-kserve/bin/python tests/serving/kserve_peer.py http://127.0.0.1:PORT IMAGE...

Prints one JSON object: what each client call returned (or the error it raised), for
test_peers.py to compare with /v1/detect. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from pathlib import Path

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

MODEL = "detector"
PARAMETERS = {"score_threshold": 0.0, "max_detections": 3}


def tensors(response) -> dict:
    return {out.name: out.as_numpy().tolist() for out in response.outputs}


def decoded(values):
    return [[v.decode() if isinstance(v, bytes) else v for v in row] for row in values]


async def main(url: str, paths: list[str]) -> dict:
    images = [Path(p).read_bytes() for p in paths]
    out: dict = {}

    v1 = InferenceRESTClient(RESTConfig(protocol="v1", retries=0))
    out["v1_live"] = await v1.is_server_live(url)
    out["v1_model_ready"] = await v1.is_model_ready(url, MODEL)
    body = {
        "instances": [{"image": {"b64": base64.b64encode(i).decode()}} for i in images],
        "parameters": PARAMETERS,
    }
    out["v1_predictions"] = (await v1.infer(url, body, model_name=MODEL))["predictions"]
    await v1.close()

    v2 = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    out["v2_live"] = await v2.is_server_live(url)
    out["v2_ready"] = await v2.is_server_ready(url)
    out["v2_model_ready"] = await v2.is_model_ready(url, MODEL)

    # JSON: the images as base64 strings in "data".
    as_json = InferInput(
        "image", [len(images)], "BYTES", data=[base64.b64encode(i).decode() for i in images]
    )
    response = await v2.infer(
        url, InferRequest(MODEL, [as_json], parameters=PARAMETERS), model_name=MODEL
    )
    out["v2_json"] = tensors(response)
    out["v2_json"]["labels"] = decoded(out["v2_json"]["labels"])

    # Binary tensor extension: the raw files in, binary outputs asked for.
    raw = InferInput("image", [len(images)], "BYTES")
    raw.set_data_from_numpy(np.array(images, dtype=np.object_), binary_data=True)
    wanted = [
        RequestedOutput(name, parameters={"binary_data": True})
        for name in ("boxes", "scores", "labels", "num_detections")
    ]
    request = InferRequest(MODEL, [raw], parameters=PARAMETERS, request_outputs=wanted)
    headers: dict = {}
    response = await v2.infer(url, request, model_name=MODEL, response_headers=headers)
    out["v2_binary"] = tensors(response)
    out["v2_binary"]["labels"] = decoded(out["v2_binary"]["labels"])
    out["v2_binary_headers"] = {k.lower(): v for k, v in headers.items()}

    try:
        await v2.infer(url, InferRequest("nope", [as_json]), model_name="nope")
        out["unknown_model"] = "no error"
    except httpx.HTTPStatusError as exc:
        out["unknown_model"] = [exc.response.status_code, str(exc)]
    await v2.close()
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2:]))))
