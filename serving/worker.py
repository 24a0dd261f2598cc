"""Gunicorn's threaded worker (gthread), quitting once however many quit signals arrive, and
leaving without Python's interpreter shutdown.

Ctrl-C in a terminal (and stopping `make demo`) sends SIGINT to the whole process group: each
worker gets it from the terminal and SIGQUIT from its master a moment later, and a user may
press Ctrl-C again. gthread's quit handler shuts its thread pool down under a lock; a second
signal landing while the first handler holds that lock runs the handler again, which then waits
for the lock forever. The worker hangs, its master gives up on it, and the orphan keeps the
port: the next `make demo` cannot bind it. tests/serving/test_resilience.py provokes it with a
flood of SIGQUIT (Gunicorn 27's own gthread hangs there). Nothing else of gthread is changed,
and only its public signal handler is overridden.

Once Gunicorn is done with a worker (its `worker_exit` hook, the last thing the worker runs),
`exit_now` ends the process there. Python's own shutdown would come next, and in a worker it
only does harm: it joins the request threads, so a client stalled mid-upload holds the worker
until its master kills it graceful_timeout later (Ctrl-C then takes 30 s and the log says
"Perhaps out of memory?"); and it visits every object the worker inherited from the preloaded
master, which copies the master's memory page by page into each exiting worker (seconds of CPU
for six workers stopping at once on two busy cores). Gunicorn has already let in-flight
requests finish, or given up on them, by the time the hook runs.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from gunicorn.workers.gthread import ThreadWorker


class Worker(ThreadWorker):
    quitting = False

    def handle_quit(self, sig, frame) -> None:
        if self.quitting:  # already on its way out: a second signal only waits for it
            return
        self.quitting = True
        super().handle_quit(sig, frame)


def exit_now() -> NoReturn:
    """End the worker with the status Gunicorn is exiting with (its master reads it: 3 and 4
    mean the worker could not boot), after flushing the logs."""
    leaving = sys.exc_info()[1]  # Gunicorn calls worker_exit while its SystemExit propagates
    status = leaving.code if isinstance(leaving, SystemExit) else 1
    if status is None:
        status = 0
    elif not isinstance(status, int):  # sys.exit("message"): Python would print it, then 1
        print(status, file=sys.stderr)
        status = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(status & 0xFF)
