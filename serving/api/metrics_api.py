"""`GET /metrics`: Prometheus text, summed over every Gunicorn worker (see serving/metrics.py)."""

from __future__ import annotations

from flask import Blueprint, Response

from serving import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
