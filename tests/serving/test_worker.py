"""How Gunicorn's workers share connections (serving/worker.py), through a real Gunicorn with
2 workers of one thread each on 127.0.0.1.

A worker whose threads are all busy stops taking connections, so a new client goes to a worker
that can answer it instead of queueing behind a request it has nothing to do with; idle
keep-alive connections hold no thread and never lock anyone out, and neither do busy ones: a
worker lets a new client in after every answer.
"""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import requests

pytestmark = pytest.mark.slow


def answered_by(server) -> list[int]:
    """The worker process of each request answered so far, in order (the JSON access log)."""
    lines = server.log_path.read_text(errors="replace").splitlines()
    return [json.loads(ln)["pid"] for ln in lines if ln.startswith("{") and '"method"' in ln]


def both_workers_serving(server, timeout: float = 60) -> None:
    """Requests on new connections until both workers have answered one (a worker listens only
    once it is warm, and the master forks them in turn)."""
    deadline = time.monotonic() + timeout
    while len(set(answered_by(server))) < 2:
        assert time.monotonic() < deadline, "the second worker never answered"
        requests.get(server.url + "/v2/health/live", timeout=10)
        time.sleep(0.05)


def stalled_upload(server) -> socket.socket:
    """A request whose body never comes: it holds the thread of whichever worker took it."""
    stall = socket.create_connection(("127.0.0.1", server.port))
    stall.sendall(
        b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 1000000\r\n\r\n" + b"\xff" * 100
    )
    time.sleep(1.0)  # taken by a worker's thread, which now waits for the rest of the body
    return stall


@pytest.fixture(scope="module")
def one_thread_each(start_server, model_dir):
    server = start_server(model_dir, flags=["--workers", "2", "--threads", "1"])
    both_workers_serving(server)
    return server


def test_a_worker_with_every_thread_busy_leaves_new_clients_to_the_other(one_thread_each):
    """Stock gthread takes a connection whatever its threads are doing: about half of the new
    clients would wait behind the stalled upload (here: past their 3 s timeout)."""
    server = one_thread_each
    stall = stalled_upload(server)
    try:
        for _ in range(10):  # each on a connection of its own
            answer = requests.get(
                server.url + "/v2/health/live", timeout=3, headers={"Connection": "close"}
            )
            assert answer.status_code == 200
    finally:
        stall.close()
    # The stalled worker takes clients again once its thread is free.
    time.sleep(0.5)
    seen = len(answered_by(server))
    for _ in range(20):
        requests.get(server.url + "/v2/health/live", timeout=10, headers={"Connection": "close"})
    assert len(set(answered_by(server)[seen:])) == 2


def test_idle_keep_alive_connections_hold_no_thread(one_thread_each):
    """Four clients keep their connections open after a request (two per worker's one thread):
    a fifth client is still answered at once."""
    server = one_thread_each
    idle = [requests.Session() for _ in range(4)]
    try:
        for session in idle:
            assert session.get(server.url + "/v2/health/live", timeout=10).status_code == 200
        for _ in range(5):
            started = time.monotonic()
            answer = requests.get(
                server.url + "/v2/health/live", timeout=3, headers={"Connection": "close"}
            )
            assert answer.status_code == 200 and time.monotonic() - started < 3
        for session in idle:  # and the idle ones are still served on their connections
            assert session.get(server.url + "/v2/health/live", timeout=10).status_code == 200
    finally:
        for session in idle:
            session.close()


def test_clients_already_held_never_shut_a_new_one_out(one_thread_each, jpeg):
    """Sixteen keep-alive clients keep both workers' one thread busy without pause (each worker
    always has a request in hand or queued); a new client is still answered within seconds,
    let in after an answer, not after the others stop."""
    server = one_thread_each
    stop, answers = threading.Event(), []

    def busy_client():
        with requests.Session() as session:
            while not stop.is_set():
                answers.append(session.post(server.url + "/v1/detect", data=jpeg, timeout=30))

    clients = [threading.Thread(target=busy_client) for _ in range(16)]
    for client in clients:
        client.start()
    try:
        time.sleep(2)
        for _ in range(5):
            started = time.monotonic()
            answer = requests.get(
                server.url + "/v2/health/live", timeout=10, headers={"Connection": "close"}
            )
            assert answer.status_code == 200
            assert time.monotonic() - started < 3, "a new client waited for the held ones"
    finally:
        stop.set()
        for client in clients:
            client.join()
    assert answers and all(a.status_code == 200 for a in answers)
