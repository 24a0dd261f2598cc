"""Gunicorn's process model under stress: SIGTERM lets in-flight requests finish; a killed worker
is replaced while the rest keep serving. Bounded loads on 127.0.0.1 only."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import signal
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.slow


def heavy_png(seed: int) -> bytes:
    """A 1600 x 1200 PNG: tens of milliseconds to decode, so requests stay in flight a while."""
    y, x = np.mgrid[0:1200, 0:1600]
    pixels = np.stack([(x / 7 + seed) % 256, (y / 5) % 256, ((x * y) / 900) % 256], axis=-1)
    pixels = pixels.astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def test_sigterm_under_load_lets_in_flight_requests_finish(start_server, model_dir, artifacts_dir):
    server = start_server(
        model_dir, flags=["--workers", "2", "--threads", "4", "--graceful-timeout", "30"]
    )
    body = {
        "instances": [{"image": {"b64": base64.b64encode(heavy_png(i)).decode()}} for i in range(4)]
    }
    url = server.url + "/v1/models/detector:predict"
    records: list[tuple[float, float, object]] = []  # (sent, answered, status or exception)
    stop = threading.Event()
    lock = threading.Lock()

    def client():
        for _ in range(50):  # bounded
            if stop.is_set():
                return
            sent = time.monotonic()
            try:
                outcome = requests.post(
                    url, json=body, timeout=60
                ).status_code  # a new connection each
            except requests.RequestException as exc:
                outcome = exc
            with lock:
                records.append((sent, time.monotonic(), outcome))

    threads = [threading.Thread(target=client) for _ in range(8)]  # = workers x threads
    for thread in threads:
        thread.start()
    while len(records) < 8:  # under load: every client has had answers and sent again
        time.sleep(0.02)
    term = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(60)
    stop.set()
    for thread in threads:
        thread.join(60)

    # Sent well before SIGTERM: a request thread had it (8 threads for 8 clients). Every one of
    # those was answered 200, even those answered after the signal: they were in flight.
    in_flight = [r for r in records if r[0] < term - 0.05 and r[1] > term]
    before = [r for r in records if r[0] < term - 0.05]
    assert in_flight, "no request was in flight at SIGTERM: the test proved nothing"
    assert [r[2] for r in before] == [200] * len(before)
    # After it, new connections are refused, never answered with an error.
    for sent, _, outcome in records:
        if sent > term and outcome != 200:
            assert isinstance(outcome, requests.ConnectionError)
    assert code == 0
    (artifacts_dir / "sigterm-under-load.txt").write_text(
        f"{len(before)} requests sent before SIGTERM, all 200; "
        f"{len(in_flight)} of them answered after it; "
        f"{len(records) - len(before)} sent after it\n"
    )
    log = server.log()
    assert "Handling signal: term" in log or "Handling signal: TERM" in log.replace("term", "TERM")
    assert "Shutting down" in log


def test_a_worker_accepts_connections_only_once_warm(start_server, model_dir, jpeg):
    """Clients that arrive while the workers warm up (a long warm-up here: 150 runs at each
    batch size) wait for a warm worker instead of meeting a cold one: probes and requests are
    answered 200, none 'not ready'. This holds for the initial workers and for the replacement
    of a killed one, which warms up while its neighbour serves. A readiness probe answered 200
    thus means every worker that takes connections can serve them. (503 'not ready' is left
    for a warm-up that failed or outlasted --warmup-timeout: test_bad_input.py.)"""
    server = start_server(
        model_dir,
        flags=["--workers", "2", "--threads", "2"],
        env={"KUBEDETECT_WARMUP_RUNS": "150"},
        wait=None,
    )
    paths = ["/v2/health/live", "/v2/health/ready", "/v1/models/detector", "/v1/detect"]
    answers: dict[str, int] = {}
    sent_while_cold = 0
    started = time.monotonic()
    while len(answers) < len(paths) and time.monotonic() - started < 120:  # bounded
        path = paths[len(answers)]
        cold = "model ready" not in server.log()
        try:
            if path == "/v1/detect":
                response = requests.post(server.url + path, data=jpeg, timeout=90)
            else:
                response = requests.get(server.url + path, timeout=90)
        except requests.ConnectionError:  # the master has not bound the port yet
            time.sleep(0.02)
            continue
        answers[path] = response.status_code
        sent_while_cold += cold
    assert answers == dict.fromkeys(paths, 200), answers
    assert sent_while_cold, "every request came after the warm-up: the test proved nothing"

    workers = server.wait_workers(2)
    os.kill(workers[0], signal.SIGKILL)
    outcomes: list[int] = []
    replacement_served = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not replacement_served:  # bounded
        response = requests.post(server.url + "/v1/detect", data=jpeg, timeout=60)  # new conns
        outcomes.append(response.status_code)
        fresh = set(server.workers()) - set(workers)
        replacement_served = bool(fresh) and f'"pid": {min(fresh)}' in server.log()
    assert set(outcomes) == {200}, outcomes
    assert replacement_served, "the killed worker's replacement served nothing within 60 s"
    server.stop()


def test_a_killed_worker_is_replaced_and_under_1_percent_fail(
    start_server, model_dir, jpeg, artifacts_dir
):
    server = start_server(model_dir, flags=["--workers", "2", "--threads", "4"])
    before = set(server.wait_workers(2))  # ready once the first is warm; the master forks in turn
    assert len(before) == 2
    victim = min(before)
    total, clients = 2000, 8
    outcomes: list[object] = []
    lock = threading.Lock()
    counter = iter(range(total))
    killed = threading.Event()

    def client():
        session = requests.Session()  # keep-alive, as real clients and proxies do
        while True:
            with lock:
                n = next(counter, None)
            if n is None:
                return
            if n == total // 4 and not killed.is_set():
                os.kill(victim, signal.SIGKILL)
                killed.set()
            try:
                outcome = session.post(server.url + "/v1/detect", data=jpeg, timeout=30).status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
                session = requests.Session()
            with lock:
                outcomes.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert killed.is_set() and len(outcomes) == total
    failed = [o for o in outcomes if o != 200]
    (artifacts_dir / "killed-worker.txt").write_text(
        f"{len(failed)} of {total} requests failed: {failed}\n"
    )
    assert len(failed) < total / 100, failed

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(set(server.workers()) - {victim}) < 2:
        time.sleep(0.1)
    after = set(server.workers())
    assert victim not in after and len(after) == 2 and len(after - before) == 1  # one new worker
    assert server.post("/v1/detect", data=jpeg).status_code == 200
    server.stop()


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_repeated_quit_signals_never_hang_a_worker_and_ctrl_c_frees_the_port(
    start_server, model_dir, jpeg
):
    """Ctrl-C sends SIGINT to the whole process group and the master adds SIGQUIT; users press it
    again. A worker flooded with quit signals must still exit (Gunicorn's own gthread handler,
    re-entered while it held its pool's lock, hung in about a third of such floods here), the
    master replaces it, and Ctrl-C on the group ends every process and frees the port.

    Only workers that have long finished starting are flooded: one still booting has not yet
    installed its own handlers (it runs the master's, which only queue the signal)."""
    server = start_server(model_dir, flags=["--workers", "6", "--threads", "2"], session=True)
    time.sleep(2)
    for worker in sorted(server.workers()):
        deadline = time.monotonic() + 0.5
        with contextlib.suppress(ProcessLookupError):
            while time.monotonic() < deadline:
                os.kill(worker, signal.SIGQUIT)
        gone_by = time.monotonic() + 10
        while _running(worker) and time.monotonic() < gone_by:
            time.sleep(0.05)
        assert not _running(worker), f"worker {worker} hangs after a flood of SIGQUIT"
    gone_by = time.monotonic() + 60
    while len(server.workers()) < 6 and time.monotonic() < gone_by:
        time.sleep(0.1)
    time.sleep(3)  # the replacements warm up before they accept a connection
    assert server.post("/v1/detect", data=jpeg).status_code == 200

    processes = [server.process.pid, *server.workers()]
    os.killpg(server.process.pid, signal.SIGINT)
    server.process.wait(timeout=20)
    gone_by = time.monotonic() + 10
    while any(_running(p) for p in processes) and time.monotonic() < gone_by:
        time.sleep(0.05)
    assert not any(_running(p) for p in processes), "a process outlived Ctrl-C"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", server.port))  # nothing holds the port any more
    server.stop()


def test_ctrl_c_with_a_client_stalled_mid_upload_ends_at_once_without_a_kill(
    start_server, model_dir
):
    """A client that sent half an upload and went quiet holds a request thread in a read that
    never returns. Ctrl-C must still end every process at once: a worker that ran Python's
    interpreter shutdown after Gunicorn's quit would wait for that thread, until its master
    killed it graceful_timeout later (30 s) and logged "SIGKILL! Perhaps out of memory?"."""
    server = start_server(
        model_dir, flags=["--workers", "2", "--graceful-timeout", "30"], session=True
    )
    stalled = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    for client in stalled:
        client.sendall(
            b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 100000\r\n\r\n\xff\xd8" + bytes(1000)
        )
    time.sleep(1)  # the requests are in their threads, reading the rest of the body

    sent = time.monotonic()
    os.killpg(server.process.pid, signal.SIGINT)
    server.process.wait(timeout=45)
    took = time.monotonic() - sent
    for client in stalled:
        client.close()
    assert "SIGKILL" not in server.log(), "a worker had to be killed"
    assert took < 10, f"Ctrl-C took {took:.0f} s with a stalled upload"
    server.stop()
