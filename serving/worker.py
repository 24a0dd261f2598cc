"""Gunicorn's threaded worker (gthread), quitting once however many quit signals arrive.

Ctrl-C in a terminal (and stopping `make demo`) sends SIGINT to the whole process group: each
worker gets it from the terminal and SIGQUIT from its master a moment later, and a user may
press Ctrl-C again. gthread's quit handler shuts its thread pool down under a lock; a second
signal landing while the first handler holds that lock runs the handler again, which then waits
for the lock forever. The worker hangs, its master gives up on it, and the orphan keeps the
port: the next `make demo` cannot bind it. tests/serving/test_resilience.py provokes it with a
flood of SIGQUIT (Gunicorn 27's own gthread hangs there). Nothing else of gthread is changed,
and only its public signal handler is overridden.
"""

from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker


class Worker(ThreadWorker):
    quitting = False

    def handle_quit(self, sig, frame) -> None:
        if self.quitting:  # already on its way out: a second signal only waits for it
            return
        self.quitting = True
        super().handle_quit(sig, frame)
