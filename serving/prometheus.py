"""Prometheus metrics, correct across Gunicorn's worker processes.

Each worker counts its own requests; a scrape lands on one worker only. prometheus_client's
multiprocess mode makes every worker write its values to files in PROMETHEUS_MULTIPROC_DIR and
lets whichever worker answers /metrics add them all up (gunicorn.conf.py creates and empties the
folder at start and marks dead workers). Without that variable (the Flask test client, a plain
`flask run`) the process's own registry is reported.

The variable must be set before prometheus_client is first imported, which gunicorn.conf.py does.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "kubedetect_http_requests_total",
    "HTTP requests answered, by route and status.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "kubedetect_http_request_duration_seconds",
    "Time to answer an HTTP request, by route and status.",
    ["route", "method", "status"],
    buckets=LATENCY_BUCKETS,
)
IMAGES = Counter("kubedetect_images_total", "Images run through the detector.")
BATCH_SIZE = Histogram(
    "kubedetect_batch_size",
    "Images per interpreter run (dynamic batching).",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32),
)
INFERENCE_SECONDS = Histogram(
    "kubedetect_inference_duration_seconds",
    "Interpreter time per batch.",
    buckets=LATENCY_BUCKETS,
)
QUEUE_DEPTH = Gauge(
    "kubedetect_queue_depth",
    "Images waiting for the interpreter, summed over live workers.",
    multiprocess_mode="livesum",
)
MODEL_READY = Gauge(
    "kubedetect_model_ready",
    "1 once a worker's model is loaded and warmed up (min over workers).",
    multiprocess_mode="livemin",
)
REJECTED = Counter(
    "kubedetect_rejected_total",
    "Requests refused for capacity (503), by reason.",
    ["reason"],
)


def exposition() -> tuple[bytes, str]:
    """The text a scrape gets, summed over every worker in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def worker_exited(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters and histograms keep counting)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)
