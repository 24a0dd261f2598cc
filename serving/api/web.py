"""`GET /`: the web page (static HTML, JS and CSS from serving/static, no build step).

A browser asks for text/html and gets the page; any other client gets KServe V1's liveness
answer `{"status": "alive"}`, which is what KServe's REST client reads at the root.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, jsonify, request, send_from_directory

STATIC = Path(__file__).resolve().parent.parent / "static"

bp = Blueprint("web", __name__, static_folder=str(STATIC), static_url_path="/static")


@bp.get("/")
def index():
    if "text/html" in request.accept_mimetypes.values():
        response = send_from_directory(STATIC, "index.html", max_age=0)
        response.headers["Vary"] = "Accept"
        return response
    response = jsonify({"status": "alive"})
    response.headers["Vary"] = "Accept"
    return response
