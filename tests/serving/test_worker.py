"""How Gunicorn's workers share the clients' connections (serving/worker.py), seen from outside:
which worker process holds which established connection, read from /proc as `ss -tnp` does."""

from __future__ import annotations

import os
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.slow


def established_inodes(port: int) -> set[str]:
    """Socket inodes of the established TCP connections whose local port is `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01":
                inodes.add(inode)
    return inodes


def connections_per_worker(server) -> dict[int, int]:
    inodes = established_inodes(server.port)
    counts = {}
    for pid in server.workers():
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:  # closed meanwhile
                continue
            held += target.startswith("socket:[") and target[8:-1] in inodes
        counts[pid] = held
    return counts


def wait_warm(server, workers: int) -> None:
    """Until each worker has warmed up (and so listens): a worker takes no connection before."""
    deadline = time.monotonic() + 120
    while server.log().count("model ready") < workers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.log().count("model ready") == workers, server.log()


def start_slow_upload(port: int) -> socket.socket:
    """A request whose body is still arriving: it keeps one server thread busy until finished."""
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(
        b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: 1000\r\n\r\n" + b"x" * 10
    )
    return client


def read_response(client: socket.socket) -> tuple[bytes, bytes]:
    """The next HTTP response on `client`: its head and body (sized by Content-Length). Reads
    byte by byte up to the body, so that a following response stays unread on the socket."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = client.recv(1)
        assert byte, f"the server closed the connection mid-response: {head!r}"
        head += byte
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))
    body = b""
    while len(body) < length:
        chunk = client.recv(length - len(body))
        assert chunk, "the server closed the connection mid-response"
        body += chunk
    return head[:-4], body


def test_connections_go_to_the_worker_with_a_free_thread(start_server, model_dir):
    """Four clients arrive at once at 2 workers of 2 threads: each worker takes two, round after
    round. (Gunicorn's own gthread lets whichever worker wakes first take them: 4/0 or 3/1 in
    most rounds here, the busy worker's clients queueing for its threads while the other
    worker idles.)"""
    server = start_server(model_dir, flags=["--workers", "2", "--threads", "2"])
    wait_warm(server, 2)
    splits = []
    for _ in range(4):
        clients = [start_slow_upload(server.port) for _ in range(4)]
        try:
            deadline = time.monotonic() + 20
            while sum(connections_per_worker(server).values()) < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            splits.append(sorted(connections_per_worker(server).values()))
            for client in clients:  # the rest of each body: not an image, a 400 for each
                client.sendall(b"x" * 990)
                head, body = read_response(client)
                assert head.startswith(b"HTTP/1.1 400"), head
                assert b'"error"' in body
        finally:
            for client in clients:
                client.close()
        deadline = time.monotonic() + 20
        while sum(connections_per_worker(server).values()) and time.monotonic() < deadline:
            time.sleep(0.02)  # all four closed on the server's side too
    assert splits == [[2, 2]] * 4
    server.stop()


def test_more_clients_than_threads_are_all_served_by_both_workers(start_server, model_dir, jpeg):
    """Six keep-alive clients, two workers of one thread: a busy worker leaves new connections
    to the other, but still takes one from the backlog after a short hold when all are busy,
    so no client waits behind the others for long: every request is answered, by both."""
    server = start_server(model_dir, flags=["--workers", "2", "--threads", "1"])
    wait_warm(server, 2)

    def client(_) -> list[int]:
        with requests.Session() as session:
            return [
                session.post(server.url + "/v1/detect", data=jpeg, timeout=30).status_code
                for _ in range(5)
            ]

    with ThreadPoolExecutor(6) as pool:
        statuses = [s for answers in pool.map(client, range(6)) for s in answers]
    assert statuses == [200] * 30
    served_by = {entry["pid"] for entry in server.json_log() if entry.get("path") == "/v1/detect"}
    assert served_by == set(server.workers())
    server.stop()


def test_a_keep_alive_client_is_answered_in_order_however_it_sends(server, jpeg):
    """One connection: requests sent one after the other, after a pause longer than the thread's
    linger, and several at once (pipelined, in one write) are each answered, in order, on the
    same connection."""
    detect = (
        b"POST /v1/detect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        b"Content-Length: %d\r\n\r\n" % len(jpeg) + jpeg
    )
    model = b"GET /v1/models/detector HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    missing = b"GET /v1/models/nobody HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
        for request, status in [(detect, b"200"), (model, b"200"), (missing, b"404")]:
            client.sendall(request)
            head, body = read_response(client)
            assert head.split(b" ")[1] == status, head
        time.sleep(0.2)  # well past the linger: the connection is back with the main thread
        client.sendall(model)
        assert read_response(client)[0].split(b" ")[1] == b"200"
        client.sendall(missing + detect + model)
        answers = [read_response(client) for _ in range(3)]
    assert [head.split(b" ")[1] for head, _ in answers] == [b"404", b"200", b"200"]
    assert b'"detections"' in answers[1][1]
    assert b'"name":"detector"' in answers[2][1].replace(b" ", b"")
