"""Schemathesis against /openapi.json of a real Gunicorn: thousands of generated requests, every
response checked against the document, and no 5xx among them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_server_error_and_no_nonconformance(server, artifacts_dir):
    seen = len(server.json_log())
    schemathesis = Path(sys.executable).with_name("schemathesis")
    done = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(Path(__file__).with_name("schemathesis.toml")),
            "run",
            server.url + "/openapi.json",
            "--max-examples",
            "60",
            "--workers",
            "2",
            "--request-timeout",
            "30",
            "--seed",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )
    report = done.stdout + done.stderr
    (artifacts_dir / "schemathesis.txt").write_text(report)
    assert done.returncode == 0, report[-6000:]
    generated, passed = map(int, re.search(r"(\d+) generated, (\d+) passed", report).groups())
    assert generated == passed > 500
    statuses = [e["status"] for e in server.json_log()[seen:] if e["logger"] == "gunicorn.access"]
    assert len(statuses) > 500  # it really ran, against this server
    assert not [s for s in statuses if s >= 500]
