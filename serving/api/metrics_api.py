"""`GET /metrics`: Prometheus text, summed over every Gunicorn worker (serving/prometheus.py)."""

from __future__ import annotations

from flask import Blueprint, Response

from serving import prometheus

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    body, content_type = prometheus.exposition()
    return Response(body, content_type=content_type)
