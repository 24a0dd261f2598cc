"""The application factory: `create_app(config)` builds one Flask app serving one model.

As in Flask's tutorial, configuration is passed in, each protocol is a blueprint, and tests
drive the app through `app.test_client()` as well as through a real Gunicorn. Every error leaves
as JSON `{"error": ...}`: 4xx for the client's mistakes, 503 with Retry-After when the server is
not ready or has no room, never a bare 500 for bad input.

`start=False` builds the app without starting the batcher thread: Gunicorn's master loads the
app (and checks the model's sha256) once before forking, and each worker starts its own batcher
thread after the fork, since threads do not survive fork, and waits for its warm-up before it
accepts a connection (gunicorn.conf.py `post_worker_init`): a worker that only listens once it
is warm never answers a client "not ready" while its neighbour is serving. Once warm, the worker
plans its memory (serving/memory.py) and, with `health_port` set, answers probes on a thread of
its own (serving/health.py).
"""

from __future__ import annotations

import io
import logging
import os
import time

from flask import Flask, Request, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from kubedetect.config import ServeConfig
from kubedetect.resources import memory_limit, parse_quantity
from serving import health, prometheus
from serving.api import detect, kserve_v1, metrics_api, openapi, v2, web
from serving.body import drain
from serving.errors import ServingError, Unavailable
from serving.lifecycle import DetectorModel
from serving.memory import resident
from serving.service import Service

log = logging.getLogger("kubedetect.serving")


def create_app(config: ServeConfig, *, start: bool = True) -> Flask:
    if not config.model_dir:
        raise ValueError("ServeConfig.model_dir is required (the folder with model.json)")
    if config.memory_limit:
        parse_quantity(config.memory_limit)  # a bad quantity fails here, naming itself
    app = Flask(__name__, static_folder=None)
    app.request_class = InMemoryUploads
    app.url_map.converters["model"] = ModelName
    app.config.update(MAX_CONTENT_LENGTH=config.max_body_bytes, JSON_SORT_KEYS=False)
    app.json.sort_keys = False
    app.json.compact = True

    model = DetectorModel(
        config.model_name,
        config.model_dir,
        num_threads=config.num_threads,
        max_image_pixels=config.max_image_pixels,
        score_threshold=config.score_threshold,
        max_detections=config.max_detections,
    )
    model.load()  # a missing, malformed or tampered model fails here, before serving anything
    app.extensions["kubedetect"] = Service(config, model)

    for blueprint in (web.bp, detect.bp, kserve_v1.bp, v2.bp, metrics_api.bp, openapi.bp):
        app.register_blueprint(blueprint)
    _register_errors(app, config)
    _register_request_metrics(app, config)
    if start:
        start_worker(app)
    return app


class InMemoryUploads(Request):
    """Multipart uploads kept in memory, never spooled to a temporary file.

    Werkzeug writes an upload over 500 kB to a file in TMPDIR, and on Kubernetes /tmp is a
    memory-backed emptyDir: those pages count against the pod's memory limit, outside the
    worker's plan. In memory, an upload is one of the request-body copies the plan sets aside
    (`max_body_bytes` bounds it). `_get_file_stream` is Werkzeug's documented hook for this.
    """

    def _get_file_stream(
        self, total_content_length, content_type, filename=None, content_length=None
    ):
        return io.BytesIO()


class ModelName(BaseConverter):
    """A model name in a route: anything but '/' and ':' (':predict' is KServe V1's verb)."""

    regex = r"[^/:]+"


def start_worker(app: Flask, worker=None) -> None:
    """Start the model's batcher thread in this process and wait for its warm-up (or its
    failure), at most `warmup_timeout` seconds; then plan this worker's memory and answer
    probes. Gunicorn calls it in each `worker` before the worker accepts a connection."""
    service = app.extensions["kubedetect"]
    config = service.config
    service.in_gunicorn = worker is not None
    service.batcher.start()
    if not service.batcher.wait_ready(config.warmup_timeout) and service.batcher.state == "loading":
        log.warning(
            "the model is still warming up after %.0f s; serving meanwhile", config.warmup_timeout
        )
    limit = int(parse_quantity(config.memory_limit)) if config.memory_limit else memory_limit()
    if worker is not None:
        service.plan_memory(limit, workers=worker.cfg.workers, master=resident(os.getppid()))
    else:
        service.plan_memory(limit)
    if config.health_port:
        health.listen(config.host, config.health_port, service.batcher.problem)


def _error(status: int, message: str, retry_after: int | None = None) -> Response:
    response = jsonify({"error": message})
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _register_errors(app: Flask, config: ServeConfig) -> None:
    @app.errorhandler(ServingError)
    def serving_error(exc: ServingError):
        if isinstance(exc, Unavailable):
            prometheus.REJECTED.labels(type(exc).__name__).inc()
        return _error(exc.status, exc.message, exc.retry_after)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(exc):
        drain()
        return _error(413, f"the request body is over the limit of {config.max_body_bytes} bytes")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        response = _error(exc.code or 500, exc.description or exc.name)
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _error(500, f"internal server error ({type(exc).__name__})")


def _register_request_metrics(app: Flask, config: ServeConfig) -> None:
    per_route: dict[tuple, tuple] = {}

    @app.before_request
    def started():
        g.started = time.perf_counter()
        g.deadline = time.monotonic() + config.request_timeout

    @app.after_request
    def counted(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        route = request.url_rule.rule if request.url_rule is not None else "unmatched"
        labels = (route, request.method, str(response.status_code))
        counted_in = per_route.get(labels)
        if counted_in is None:  # the metrics' children for these labels, looked up once
            counted_in = (
                prometheus.REQUESTS.labels(*labels),
                prometheus.REQUEST_SECONDS.labels(*labels),
            )
            per_route[labels] = counted_in
        counted_in[0].inc()
        counted_in[1].observe(elapsed)
        response.headers["Server-Timing"] = f"app;dur={elapsed * 1000:.2f}"
        return response
