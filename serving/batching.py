"""The batcher: a bounded queue per worker, and one thread that runs the interpreter.

Each Gunicorn worker has `threads` request threads and one batcher thread. A request thread
decodes its images, puts them on the queue and waits; the batcher thread takes what is queued,
up to `max_batch_size` images, runs them as one batch and hands each request its own outputs.
The LiteRT interpreters are not thread-safe, and only the batcher thread ever touches them.

- Backpressure: the queue holds at most `max_queue` images. A request whose images do not fit
  is refused at once with 503 and Retry-After (none of its images is computed), instead of the
  server's memory and latency growing without bound; a load balancer then tries another replica.
- Latency: a batch is what is queued when the batcher thread comes for it; it waits for more
  (at most `max_batch_delay_ms`) only when told to. On a CPU a batch costs the interpreter about
  as much per image as single images do, so waiting buys nothing there (docs/SERVING.md).
- Deadlines: every request waits at most until its deadline (503 after that); an image whose
  request gave up is skipped, not computed.
- Supervision: the batcher thread runs the warm-up, then batches, under a supervisor loop. A
  model whose first warm-up fails leaves the worker live and never ready, saying why. If the
  interpreter fails on a batch later (or the thread's own code does), the batch's requests get
  503, the worker turns not ready, and the interpreters are rebuilt and warmed up again; the
  worker is ready once that succeeds. After `max_restarts` failed attempts in a row, a batch
  that has run for `stall_seconds` (a hung interpreter, which no thread can interrupt), or a
  batcher thread found dead, `on_give_up` is called: in Gunicorn the worker then exits, and the
  master starts a fresh one.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

from serving import prometheus
from serving.errors import InferenceFailed, NotReady, QueueFull, TimedOut

log = logging.getLogger("kubedetect.serving")


class _Job:
    """One image on its way through the batcher.

    `done` is a lock taken at creation and released by the batcher thread once `result` or
    `error` is set: the waiting request thread acquires it with its deadline as the timeout (a
    bare lock is the cheapest way for one thread to wake another).
    """

    __slots__ = ("pixels", "done", "result", "error", "abandoned")

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels
        self.done = threading.Lock()
        self.done.acquire()
        self.result = None
        self.error: Exception | None = None
        self.abandoned = False

    def finish(self, result=None, error: Exception | None = None) -> None:
        self.result, self.error = result, error
        self.done.release()


_STOP = object()


class Batcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], list],
        *,
        warm_up: Callable[[bool], None],
        max_batch_size: int = 8,
        max_batch_delay_ms: float = 0.0,
        max_queue: int = 32,
        max_restarts: int = 3,
        stall_seconds: float = 60.0,
        on_give_up: Callable[[str], None] | None = None,
    ):
        """`warm_up(rebuild)` builds and tries the interpreters; `rebuild` is True when they
        are being replaced after a failure."""
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1")
        self._predict = predict
        self._warm_up = warm_up
        self.max_batch_size = max_batch_size
        self.max_batch_delay = max_batch_delay_ms / 1000.0
        self.max_queue = max_queue
        self.max_restarts = max_restarts
        self.stall_seconds = stall_seconds
        self._on_give_up = on_give_up or (lambda reason: None)
        self._gave_up = False
        self._queue: queue.Queue = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self.state = "stopped"  # stopped -> loading -> ready, and back to loading on a failure
        self.failure: str | None = None  # why the worker is not ready, when it is not
        self.running_since: float | None = None  # when the batch in the interpreter started

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the batcher thread: warm-up first, then batches. Once per process: a thread
        started before a fork does not exist in the child, so a forked worker starts afresh."""
        if self._thread is not None and self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._queue = queue.Queue(self.max_queue)
        self.state, self.failure, self.running_since = "loading", None, None
        self._gave_up = False
        self._thread = threading.Thread(
            target=self._supervise, name="kubedetect-batcher", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None
        self.state = "stopped"

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.state == "loading" and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.ready

    @property
    def ready(self) -> bool:
        return self.problem() is None

    def problem(self) -> str | None:
        """Why this worker cannot serve now, or None when it can. A batch that has run for
        `stall_seconds` means a hung interpreter: the worker gives up (see the module's
        docstring)."""
        thread, started = self._thread, self.running_since
        if self.state in ("loading", "ready") and thread is not None and not thread.is_alive():
            self.state, self.failure = "failed", "the batcher thread has died"
            self._give_up(self.failure)
        if started is not None and time.monotonic() - started > self.stall_seconds:
            self.state = "failed"
            self.failure = f"inference has not returned for {time.monotonic() - started:.0f} s"
            self._give_up(self.failure)
        if self.state == "ready":
            return None
        if self.state == "failed":
            return f"the model failed: {self.failure}"
        if self.failure:
            return f"the model is restarting after a failure ({self.failure}); retry shortly"
        return "the model is not ready yet (loading or warming up); retry shortly"

    def check_ready(self) -> None:
        """Raise NotReady, saying why, unless the worker can serve."""
        problem = self.problem()
        if problem is not None:
            raise NotReady(problem)

    @property
    def queued(self) -> int:
        """Images in the queue, not yet taken by the batcher thread."""
        return self._queue.qsize()

    # -- what request threads call ---------------------------------------------------------------

    def submit(self, images: list[np.ndarray], deadline: float) -> list:
        """Run images (each uint8 [S, S, 3]) and return their outputs, in order.

        Raises NotReady while the worker cannot serve, QueueFull when the images do not fit in
        the queue (none is run then), TimedOut when `deadline` (time.monotonic()) passes first,
        and InferenceFailed when the interpreter fails on their batch.
        """
        self.check_ready()
        jobs = [_Job(pixels) for pixels in images]
        for i, job in enumerate(jobs):
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                for queued in jobs[:i]:
                    queued.abandoned = True
                raise QueueFull(
                    f"the server is busy: {self.max_queue} images are already waiting; "
                    "retry shortly"
                ) from None
        for job in jobs:
            if not job.done.acquire(timeout=max(0.0, deadline - time.monotonic())):
                for pending in jobs:
                    pending.abandoned = True
                raise TimedOut("the request timed out waiting for the model; retry shortly")
            if job.error is not None:
                raise job.error
        return [job.result for job in jobs]

    # -- the batcher thread ----------------------------------------------------------------------

    def _supervise(self) -> None:
        rebuild, attempts = False, 0
        while True:
            started = time.perf_counter()
            try:
                self._warm_up(rebuild)
            except Exception as exc:
                self.failure = f"{type(exc).__name__}: {exc}"
                if not rebuild:  # a model that never ran here: stay live, never ready, say why
                    self.state = "failed"
                    log.error("model warm-up failed: %s", self.failure)
                    return
                attempts += 1
                log.error("rebuilding the interpreters failed (%d): %s", attempts, self.failure)
                if attempts > self.max_restarts:
                    self.state = "failed"
                    self._give_up(f"the interpreters cannot be rebuilt: {self.failure}")
                    return
                time.sleep(min(8.0, 0.5 * 2**attempts))
                continue
            attempts, self.state, self.failure = 0, "ready", None
            prometheus.MODEL_READY.set(1)
            log.info("model ready: warmed up in %.2f s", time.perf_counter() - started)
            try:
                if self._serve() is _STOP:
                    return
            except Exception as exc:  # a broken interpreter (or batcher): rebuild, then serve
                rebuild, self.state = True, "loading"
                self.failure = f"{type(exc).__name__}: {exc}"
                prometheus.MODEL_READY.set(0)
                log.exception("inference failed; rebuilding the interpreters")

    def _serve(self):
        """Run batches until told to stop (returns _STOP) or the interpreter fails (raises,
        after failing the batch's requests)."""
        while True:
            batch = self._collect(self._queue.get())
            if batch is _STOP:
                return _STOP
            if not batch:
                continue
            # Metrics are written once a batch: in multiprocess mode every write is a locked
            # write to a memory-mapped file. The queue depth is what waits as the batch starts.
            prometheus.QUEUE_DEPTH.set(self._queue.qsize())
            self.running_since = time.monotonic()
            try:
                outputs = self._predict(np.stack([job.pixels for job in batch]))
                if len(outputs) != len(batch):
                    raise ValueError(f"{len(outputs)} outputs for a batch of {len(batch)}")
            except Exception as exc:
                failure = InferenceFailed(
                    f"inference failed ({type(exc).__name__}: {exc}); the worker is "
                    "rebuilding its interpreter, retry shortly"
                )
                for job in batch:
                    job.finish(error=failure)
                raise
            finally:
                elapsed = time.monotonic() - self.running_since
                self.running_since = None
            prometheus.INFERENCE_SECONDS.observe(elapsed)
            prometheus.BATCH_SIZE.observe(len(batch))
            prometheus.IMAGES.inc(len(batch))
            for job, result in zip(batch, outputs, strict=True):
                job.finish(result)

    def _collect(self, first):
        """The first job plus what is queued behind it, up to a batch (waiting up to
        max_batch_delay for more, if set); jobs whose request gave up are left out."""
        if first is _STOP:
            return _STOP
        batch = [] if first.abandoned else [first]
        until = time.monotonic() + self.max_batch_delay
        while len(batch) < self.max_batch_size:
            try:
                remaining = until - time.monotonic()
                job = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if job is _STOP:
                self._queue.put(_STOP)  # stop after this batch
                break
            if not job.abandoned:
                batch.append(job)
        return batch

    def _give_up(self, reason: str) -> None:
        if self._gave_up:
            return
        self._gave_up = True
        prometheus.MODEL_READY.set(0)
        log.error("giving up on this worker: %s", reason)
        self._on_give_up(reason)
