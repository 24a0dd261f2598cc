"""Errors of the Kubernetes API in one readable line, for the cluster steps' messages."""

from __future__ import annotations

import json


def one_line(exc: Exception) -> str:
    """An error in one line. For a Kubernetes API error: its status and the API server's own
    message (str() of an ApiException lists every response header first, and the message, the
    part that says what was refused and why, is lost when such a text is cut short)."""
    body = getattr(exc, "body", None)
    if getattr(exc, "status", None) and body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return f"({exc.status}) {' '.join(str(message).split())[:400]}"
    text = str(exc) or type(exc).__name__
    return " ".join(text.split())[:400]
