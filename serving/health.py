"""Liveness and readiness on a port of their own, answered by a thread of each worker.

Kubernetes gives a probe a timeout (2 s in k8s/base/deployment.yaml) and restarts a container
whose liveness probe keeps failing. On the serving port a probe is one more request: when every
request thread of a worker is busy (eight 40-megapixel uploads keep them busy for seconds) it
waits behind them, times out, and a loaded but healthy pod is restarted, which is the moment it
can least afford it. So each worker also listens on `health_port` (KUBEDETECT_HEALTH_PORT), with
one thread that answers nothing but

    GET /v2/health/live   200 {"live": true}
    GET /v2/health/ready  200 {"ready": true}, or 503 {"ready": false, "error": why}

in microseconds, whatever the request threads are doing. All workers bind the port with
SO_REUSEPORT, and the kernel spreads the probes' connections over them; each answers for itself,
as on the serving port. A worker listens only once it accepts requests (after its warm-up), so
probes are never answered by a worker that cannot serve yet. The serving port keeps the same two
routes (the Open Inference Protocol has them there).
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, HTTPServer

log = logging.getLogger("kubedetect.serving")


class _Server(HTTPServer):
    allow_reuse_port = True  # every worker of the pod binds the same port
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], problem: Callable[[], str | None]):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.problem = problem
        super().__init__(address, _Probe)


class _Probe(BaseHTTPRequestHandler):
    timeout = 2.0  # a client that sends nothing does not hold the thread for long
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/v2/health/live":
            self._answer(200, {"live": True})
        elif self.path == "/v2/health/ready":
            problem = self.server.problem()
            if problem is None:
                self._answer(200, {"ready": True})
            else:
                self._answer(503, {"ready": False, "error": problem})
        else:
            self._answer(404, {"error": "this port answers /v2/health/live and /v2/health/ready"})

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 503:
            self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # probes are not worth a log line each
        pass


def listen(host: str, port: int, problem: Callable[[], str | None]) -> HTTPServer:
    """Answer probes on host:port from a daemon thread of this process; `problem()` says why
    the worker cannot serve, or None."""
    server = _Server((host, port), problem)
    thread = threading.Thread(target=server.serve_forever, name="kubedetect-health", daemon=True)
    thread.start()
    log.info("answering probes on %s:%d", host, port)
    return server
