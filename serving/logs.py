"""Logs as one JSON object per line on stdout: what container platforms collect and index.

Used for Gunicorn's own logs (`gunicorn.error`), its access log (`gunicorn.access`, one line per
request with route, status and duration) and the service's (`kubedetect.serving`).

The access line's fields are taken from the request by `AccessLogger` (Gunicorn's
`logger_class`): Gunicorn's own logger first builds every atom its `access_log_format` could
name, every request and response header among them, one of the largest items of Python time
per request in a profile of a worker under load.
"""

from __future__ import annotations

import json
import logging
import os
import time

from gunicorn import glogging


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        access = getattr(record, "access", None)
        if access is not None:
            entry |= access
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)  # ASCII: one record is one line, whatever a client sent


class AccessLogger(glogging.Logger):
    """Gunicorn's logger, with an access line of named fields made from the request alone."""

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled or not self.access_log.isEnabledFor(logging.INFO):
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
        fields = {
            "message": f"{method} {path} {status}",
            "method": method,
            "path": path,
            "query": environ.get("QUERY_STRING", ""),
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": round(request_time.total_seconds() * 1000, 3),
            "remote": environ.get("REMOTE_ADDR", "-"),
            "user_agent": environ.get("HTTP_USER_AGENT", "-"),
            "pid": os.getpid(),
        }
        try:
            self.access_log.info(fields["message"], extra={"access": fields})
        except Exception:  # as Gunicorn's own: a broken log line never fails a request
            self.exception("access log line failed")


def logging_config(level: str = "info", access_log: bool = True) -> dict:
    """A `logging.config.dictConfig` for Gunicorn's `logconfig_dict`."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stdout": handler},
        "root": {"level": level.upper(), "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["stdout"], "propagate": False},
            "gunicorn.access": {
                "level": "INFO" if access_log else "CRITICAL",
                "handlers": ["stdout"],
                "propagate": False,
            },
            "kubedetect.serving": {
                "level": level.upper(),
                "handlers": ["stdout"],
                "propagate": False,
            },
        },
    }
