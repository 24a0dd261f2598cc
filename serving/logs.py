"""Logs as one JSON object per line on stdout: what container platforms collect and index.

Used for Gunicorn's own logs (`gunicorn.error`), its access log (`gunicorn.access`, one line per
request with route, status and duration) and the service's (`kubedetect.serving`).
"""

from __future__ import annotations

import json
import logging
import time


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if record.name == "gunicorn.access" and isinstance(record.args, dict):
            entry |= _access(record.args)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)  # ASCII: one record is one line, whatever a client sent


def _access(atoms) -> dict:
    """Gunicorn's access-log atoms (see its `access_log_format` docs) as named fields."""
    return {
        "message": f"{atoms['m']} {atoms['U']} {atoms['s']}",
        "method": atoms["m"],
        "path": atoms["U"],
        "query": atoms["q"],
        "status": int(atoms["s"]) if str(atoms["s"]).isdigit() else atoms["s"],
        "bytes": atoms["B"],
        "duration_ms": round(int(atoms["D"]) / 1000, 3),
        "remote": atoms["h"],
        "user_agent": atoms["a"],
        "pid": int(str(atoms["p"]).strip("<>"))
        if str(atoms["p"]).strip("<>").isdigit()
        else atoms["p"],
    }


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
