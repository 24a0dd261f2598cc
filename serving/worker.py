"""Gunicorn's threaded worker (gthread), taking connections only while it has a thread free, and
quitting once however many quit signals arrive.

Taking connections. A stock gthread worker accepts every connection it is offered: its main
thread only polls and hands connections to the thread pool, so it is never too busy to take
one. Whichever worker wakes first takes the next connection, and a few keep-alive clients (a
benchmark's, or an ingress's upstream pool) often all land on one worker: 8 connections to 2
workers split 5/3, 6/2, 7/1, even 8/0, and since a worker's interpreter and Python run on about
one core, the pod then does half the work it could while the other worker idles. KServe's
uvicorn workers do not have this problem, because a worker busy with inference does not accept.
Here a worker stops listening when it hands its last free thread a connection (`in_flight`
connections in the pool, running or queued), and listens again each time a request ends: a new
connection goes to a worker with a free thread, or waits in the kernel's backlog until a worker
answers a request, as with uvicorn's event loop, which accepts between requests. Idle keep-alive
connections hold no thread and block nothing; a worker kept busy by the clients it holds still
lets a new one in after every answer. Measured side by side in one run (bench.serve's
worker comparison, docs/BENCHMARKS.md): the stock worker against this one at concurrency 8.
Only gthread's public methods are overridden (`enqueue_req`, `finish_request`, both called on
the main thread, and `set_accept_enabled`), so `in_flight` needs no lock.

Quitting. Ctrl-C in a terminal (and stopping `make demo`) sends SIGINT to the whole process
group: each worker gets it from the terminal and SIGQUIT from its master a moment later, and a
user may press Ctrl-C again. gthread's quit handler shuts its thread pool down under a lock; a
second signal landing while the first handler holds that lock runs the handler again, which
then waits for the lock forever. The worker hangs, its master gives up on it, and the orphan
keeps the port: the next `make demo` cannot bind it. tests/serving/test_resilience.py provokes
it with a flood of SIGQUIT (Gunicorn 27's own gthread hangs there).
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


class QuitOnceWorker(ThreadWorker):
    """Stock gthread but for quitting once: the point of comparison for `Worker`."""

    quitting = False

    def handle_quit(self, sig, frame) -> None:
        if self.quitting:  # already on its way out: a second signal only waits for it
            return
        self.quitting = True
        super().handle_quit(sig, frame)


class Worker(QuitOnceWorker):
    in_flight = 0  # connections in the thread pool (running or queued for a thread)
    room = True  # False from handing the last free thread a connection until a request ends

    def set_accept_enabled(self, enabled: bool) -> None:
        super().set_accept_enabled(enabled and self.alive and self.room)

    def enqueue_req(self, conn) -> None:
        self.in_flight += 1
        super().enqueue_req(conn)
        if self.in_flight >= self.cfg.threads:
            self.room = False
            self.set_accept_enabled(False)

    def finish_request(self, conn, fs) -> None:
        self.in_flight -= 1
        super().finish_request(conn, fs)  # may hand the connection back at once (read-ahead)
        # Each answer opens the door again, if only for one connection: under more load than
        # the threads can take, new clients are let in as often as answers go out, never shut
        # out by the clients already held (whose requests keep the threads busy).
        self.room = True
        self.set_accept_enabled(self.nr_conns < self.worker_connections)
