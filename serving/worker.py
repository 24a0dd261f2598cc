"""Gunicorn's threaded worker (gthread), with three changes: connections are shared fairly between
the workers, a keep-alive client's next request is served by the thread that answered the last,
and the worker quits once however many quit signals arrive.

**Fair accept.** All workers listen on one socket, and whichever wakes first takes a new
connection. A keep-alive connection then stays with that worker for its whole life, and gthread
accepts as long as it has room for connections (1000), not threads to serve them: one worker
routinely held 6 or 7 of a client's 8 connections, or 31 of 32, its requests queueing for its
4 threads while the other worker's core idled (bench/serve.py's table shows the splits, and the
throughput they cost). Here a worker stops listening while every one of its threads has a
request, as nginx's workers step back from accepting when busy, so that a new connection goes
to a worker with a free thread. A busy worker still accepts one connection every ACCEPT_HOLD
seconds: when every worker is busy (more clients than threads) the connections waiting in the
listen backlog are taken up within milliseconds, not left behind the ones already accepted.
Idle keep-alive connections do not count: a worker holding many quiet clients still accepts.

**Keep-alive on the same thread.** gthread hands every finished connection back to its main
thread, which watches it and, when the next request comes, hands it to the thread pool again:
four thread wake-ups per request before the model is even reached (12 context switches per
request under load, against 4 for KServe's single-threaded event loop). Here the thread that
answered waits up to KEEPALIVE_LINGER for the client's next request and serves it directly, as
long as no other request is waiting for a thread (so no client is starved by a busy one). A
client that does not come back within the linger goes back to the main thread as before. Such
a thread also wakes its main thread when an accept hold has run out: otherwise a worker whose
threads all kept serving their clients never listened again, and a benchmark's 32 connections
split 28/4.

Measured (bench/serve.py's load, 10 s runs): at concurrency 1, 14 -> 4 context switches and
0.5 ms less CPU per request, 8 % more requests/s; at 8, +2-4 %; at 32, unchanged.

**Quitting once.** Ctrl-C in a terminal (and stopping `make demo`) sends SIGINT to the whole
process group: each worker gets it from the terminal and SIGQUIT from its master a moment later,
and a user may press Ctrl-C again. gthread's quit handler shuts its thread pool down under a
lock; a second signal landing while the first handler holds that lock runs the handler again,
which then waits for the lock forever. The worker hangs, its master gives up on it, and the
orphan keeps the port: the next `make demo` cannot bind it. Seen here after a demo run;
tests/serving/test_resilience.py provokes it with a flood of SIGQUIT.
"""

from __future__ import annotations

import select
import time

from gunicorn.workers.gthread import ThreadWorker

# How long a worker with every thread busy leaves new connections to the others: longer than a
# free worker takes to wake and accept (milliseconds, even on busy cores), short enough that
# with all workers busy the backlog drains at one connection per worker per hold.
ACCEPT_HOLD = 0.010
# How long a thread waits for a keep-alive client's next request before handing the connection
# back: clients that pipeline or loop (load balancers, SDKs, benchmarks) send it within a
# fraction of that; a thread idles at most this long for one that does not.
KEEPALIVE_LINGER = 0.002


class Worker(ThreadWorker):
    """`gthread`, accepting only with a free thread, serving keep-alive clients on the same
    thread, and quitting once."""

    quitting = False
    # Requests handed to the thread pool and not finished. Changed only on the main thread
    # (gthread hands every finished request back to it), so it needs no lock.
    in_flight = 0
    held_since = 0.0  # when this worker last stopped accepting for want of a free thread

    def enqueue_req(self, conn) -> None:
        self.in_flight += 1
        super().enqueue_req(conn)
        if self.in_flight >= self.cfg.threads:
            self.set_accept_enabled(False)

    def handle(self, conn):
        """Serve the connection's request, then its next ones while they come promptly."""
        keepalive = super().handle(conn)
        while (
            keepalive is True
            and self.alive
            and not conn.is_http2
            and self.in_flight <= self.cfg.threads  # more: a request waits for a thread
            and (
                conn.parser.unreader.buf.getvalue()
                or select.select([conn.sock], [], [], KEEPALIVE_LINGER)[0]
            )
        ):
            keepalive = super().handle(conn)
            if not self._accepting and time.monotonic() - self.held_since >= ACCEPT_HOLD:
                # A worker whose threads keep serving their clients leaves its main thread
                # asleep, and the hold would never end: wake it to listen for one connection.
                self.method_queue.defer(self.notify)
        return keepalive

    def finish_request(self, conn, fs) -> None:
        self.in_flight -= 1
        super().finish_request(conn, fs)

    def set_accept_enabled(self, enabled: bool) -> None:
        # gthread's loop asks to accept again whenever it has room for connections; the answer
        # is yes only with a thread free.
        enabled = enabled and self.in_flight < self.cfg.threads
        if not enabled and self._accepting:
            self.held_since = time.monotonic()
        super().set_accept_enabled(enabled)

    def notify(self) -> None:
        """The heartbeat, which gthread's loop calls on every turn: also where a busy worker
        that has held back for ACCEPT_HOLD listens again, for one connection."""
        super().notify()
        if (
            self.alive
            and not self._accepting
            and self.nr_conns < self.worker_connections
            and time.monotonic() - self.held_since >= ACCEPT_HOLD
        ):
            super().set_accept_enabled(True)

    def handle_quit(self, sig, frame) -> None:
        if self.quitting:  # already on its way out: a second signal only waits for it
            return
        self.quitting = True
        super().handle_quit(sig, frame)
