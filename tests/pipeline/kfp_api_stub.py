"""A stand-in for the Kubeflow Pipelines API server, on 127.0.0.1, for `kubedetect pipeline submit`.

There is no KFP server in the test environment, and submitting must still go through kfp's own
`kfp.Client`, unpatched. So this server speaks the few v2beta1 REST endpoints that
`kfp.Client(host=...)` and `create_run_from_pipeline_func` call, in the order they call them:

    GET  /apis/v2beta1/healthz                  (the client's constructor: multi-user or not)
    GET  /apis/v2beta1/experiments?filter=...   (is there an experiment of that display_name?)
    POST /apis/v2beta1/experiments              (if not, create it)
    POST /apis/v2beta1/runs                     (the run: pipeline spec and runtime parameters)

It keeps every request it is sent (method, path, query, JSON body), so that tests can check
what a real server would have received, and answers with the JSON the KFP API server gives
(snake_case fields, ids it assigns). Any other endpoint is a 404 with KFP's error body, and is
recorded too: a test sees a call it did not expect.
"""

from __future__ import annotations

import datetime
import json
import threading
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from .loopback_server import LoopbackServer, read_request

API = "/apis/v2beta1"


@dataclass(frozen=True)
class Request:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, str]  # the first value of each query parameter
    body: dict | None  # the parsed JSON body, if any


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(code: int, message: str) -> dict:
    """KFP's error body (grpc-gateway: a gRPC status code and its message)."""
    return {"error": message, "code": code, "message": message, "details": []}


class KfpApiStub(LoopbackServer):
    """The server; use as a context manager. `url` is its http://127.0.0.1:PORT address."""

    def __init__(self, experiments: tuple[str, ...] = (), *, unavailable: bool = False):
        """`experiments`: names that exist already; `unavailable`: every answer is a 503, as
        from an API whose backend is not ready (a port-forward up, the ml-pipeline pod not)."""
        self.requests: list[Request] = []
        self.unavailable = unavailable
        self.experiments: list[dict] = [self._experiment(name, None) for name in experiments]
        self.runs: list[dict] = []
        self._lock = threading.Lock()
        super().__init__(self._handler())

    # ------------------------------------------------------------------------------------------
    # The endpoints
    # ------------------------------------------------------------------------------------------

    def answer(self, request: Request) -> tuple[int, dict]:
        with self._lock:
            self.requests.append(request)
            route = (request.method, request.path)
            if self.unavailable:
                return 503, _error(14, "upstream connect error: the API server is not ready")
            if route == ("GET", f"{API}/healthz"):
                return 200, {"multi_user": False, "pipeline_store": "database"}
            if route == ("GET", f"{API}/experiments"):
                return 200, self._list_experiments(request.query)
            if route == ("POST", f"{API}/experiments"):
                body = request.body
                experiment = self._experiment(body["display_name"], body.get("namespace"))
                experiment["description"] = body.get("description") or ""
                self.experiments.append(experiment)
                return 200, experiment
            if route == ("POST", f"{API}/runs"):
                return self._create_run(request.body)
            return 404, _error(5, f"Not Found: {request.method} {request.path}")

    @staticmethod
    def _experiment(name: str, namespace: str | None) -> dict:
        experiment = {
            "experiment_id": str(uuid.uuid4()),
            "display_name": name,
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        if namespace:
            experiment["namespace"] = namespace
        return experiment

    def _list_experiments(self, query: dict[str, str]) -> dict:
        # A single-user server (healthz says multi_user false): a namespace is no filter.
        found = self.experiments
        if "filter" in query:
            for predicate in json.loads(query["filter"]).get("predicates", []):
                # The operation comes as its enum name or number (kfp sends 1, EQUALS).
                equals = predicate.get("operation") in ("EQUALS", 1)
                if not equals or predicate.get("key") != "display_name":
                    raise ValueError(f"the stub does not understand the predicate {predicate}")
                found = [e for e in found if e["display_name"] == predicate.get("stringValue")]
        # Like the real server, an empty list is an empty message (no "experiments" key).
        return {"experiments": found, "total_size": len(found)} if found else {}

    def _create_run(self, run: dict) -> tuple[int, dict]:
        if run.get("experiment_id") not in {e["experiment_id"] for e in self.experiments}:
            return 400, _error(3, "Invalid input: experiment not found")
        created = {
            **run,
            "run_id": str(uuid.uuid4()),
            "state": "PENDING",
            "storage_state": "AVAILABLE",
            "created_at": _now(),
        }
        self.runs.append(created)
        return 200, created

    # ------------------------------------------------------------------------------------------
    # HTTP plumbing
    # ------------------------------------------------------------------------------------------

    def _handler(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                path, query, raw = read_request(self)
                body = json.loads(raw) if raw else None
                try:
                    status, payload = stub.answer(Request(self.command, path, query, body))
                except Exception as exc:  # a request the stub cannot answer: say so, loudly
                    status, payload = 500, _error(13, repr(exc))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

            def log_message(self, format, *args):  # noqa: A002 - http.server's signature
                pass  # the requests are recorded; no access log on stderr

        return Handler
