"""Dynamic batching: the request threads of a worker share one interpreter at a time.

Each Gunicorn worker has `threads` request threads and one batcher thread. A request thread
decodes its image, puts the pixels on a queue and waits; the batcher takes what is queued, up to
`max_batch_size` images, runs them as one batch and hands each request its own outputs. The
LiteRT interpreters are not thread-safe: whoever runs them holds the interpreter lock.

- A lone request runs on its own thread: when nothing is queued, running or being decoded by
  another request thread, there is nothing to batch it with, and handing it to the batcher
  thread and back would cost two thread wake-ups (and their share of the GIL's hand-offs) for
  nothing. Requests that overlap still go through the batcher and run together.
- Latency: the batcher waits for more images (at most `max_batch_delay_ms`) only while other
  request threads are still decoding images that will join the queue; a lone request never
  pays the delay.
- Backpressure: at most `max_queue` images wait for the interpreter. Beyond that a request is
  refused at once with 503 and Retry-After instead of the server's memory and latency growing
  without bound; a load balancer then tries another replica.
- Timeouts: every request waits at most until its deadline (503 after that); an image whose
  request gave up is skipped, not computed.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from serving import metrics
from serving.errors import NotReady, QueueFull, ServingError, TimedOut

log = logging.getLogger("kubedetect.serving")


class _Job:
    """One image on its way through the batcher.

    `done` is a lock taken at creation and released by the batcher once `result` or `error` is
    set: the waiting request thread acquires it (with its deadline as the timeout). A bare lock
    is the cheapest way for one thread to wake another; `threading.Event` does the same through
    a Condition, several times the Python work per request.
    """

    __slots__ = ("pixels", "done", "result", "error", "abandoned")

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels
        self.done = threading.Lock()
        self.done.acquire()
        self.result = None
        self.error: Exception | None = None
        self.abandoned = False


class Announcement:
    """Images a request thread is decoding and has not queued yet."""

    __slots__ = ("count",)

    def __init__(self, count: int):
        self.count = count


_STOP = object()


class Batcher:
    def __init__(
        self,
        predict: Callable[[np.ndarray], list],
        *,
        warm_up: Callable[[], None],
        max_batch_size: int = 8,
        max_batch_delay_ms: float = 2.0,
        max_queue: int = 32,
    ):
        if max_batch_size < 1 or max_queue < 1:
            raise ValueError("max_batch_size and max_queue must be at least 1")
        self._predict = predict
        self._warm_up = warm_up
        self.max_batch_size = max_batch_size
        self.max_batch_delay = max_batch_delay_ms / 1000.0
        self.max_queue = max_queue
        self._reset()
        self._thread: threading.Thread | None = None
        self.state = "stopped"  # stopped -> loading -> ready (or failed)
        self.failure: str | None = None

    def _reset(self) -> None:
        """The state the request threads and the batcher thread share, new for this process: a
        lock held by another thread at the moment of a fork would stay held in the child."""
        # The bound on waiting images is kept by `_pending`, checked under `_lock` before anything
        # is queued, so the queue itself needs none: SimpleQueue is C, several times cheaper per
        # put and get than queue.Queue's Python locking.
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._incoming = 0  # images announced (being decoded) and not submitted yet
        self._pending = 0  # images submitted by requests that have not returned yet
        self._running = 0  # of those, images in the interpreter now
        self._lock = threading.Lock()
        self._interpreter = threading.Lock()  # held by whichever thread runs the model
        self._pid = os.getpid()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the batcher thread: warm-up first, then batches. Once per process (after fork).

        `wait_ready` waits for the warm-up: Gunicorn's workers do, before they accept a
        connection (serving.app.start_worker)."""
        if self._thread is not None and self._pid == os.getpid():
            return
        # A thread started before a fork does not exist in the child: start afresh there.
        self._reset()
        self.state = "loading"
        self._thread = threading.Thread(target=self._run, name="kubedetect-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None
        self.state = "stopped"

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def queued(self) -> int:
        """Images in the queue, not yet taken by the batcher thread."""
        return self._queue.qsize()

    @property
    def waiting(self) -> int:
        """Images submitted and not running yet (queued, or held by a forming batch): what
        `max_queue` bounds."""
        # Below zero for a moment when a batch holds images whose request has given up.
        return max(0, self._pending - self._running)

    def check_ready(self) -> None:
        """Raise NotReady, saying why, unless warm-up has finished."""
        if self.state == "failed":
            raise NotReady(f"the model failed to load: {self.failure}")
        if self.state != "ready":
            raise NotReady("the model is not ready yet (loading or warming up); retry shortly")

    def wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.state == "loading" and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.ready

    # -- what request threads call ---------------------------------------------------------------

    @contextmanager
    def incoming(self, count: int = 1) -> Iterator[Announcement]:
        """Announce images being decoded now, so that a forming batch waits for them; pass the
        announcement to `submit`, which withdraws each image as it joins the queue."""
        announcement = Announcement(count)
        with self._lock:
            self._incoming += count
        try:
            yield announcement
        finally:
            with self._lock:
                self._incoming -= announcement.count
            announcement.count = 0

    def submit(
        self, images: list[np.ndarray], deadline: float, announced: Announcement | None = None
    ) -> list:
        """Run images (each uint8 [S, S, 3]) and return their outputs, in order.

        Raises NotReady before warm-up has finished, QueueFull when `max_queue` would be passed
        (none are run then), TimedOut when `deadline` (time.monotonic()) passes first, and a
        ServingError when the interpreter fails.
        """
        self.check_ready()
        count = len(images)
        own = announced.count if announced is not None else 0
        with self._lock:
            if self.waiting + count > self.max_queue:
                raise QueueFull(
                    f"the server is busy: {self.max_queue} images are already waiting; "
                    "retry shortly"
                )
            # Alone: no other request's images are waiting, running or being decoded, and no
            # more images than one batch takes (the batcher splits a larger request).
            alone = self._pending == 0 and self._incoming == own and count <= self.max_batch_size
            self._pending += count
            if alone and announced is not None:
                self._incoming -= own
                announced.count = 0
        try:
            if alone:
                with self._interpreter:
                    return self._infer(np.stack(images))
            return self._through_batcher(images, deadline, announced)
        finally:
            with self._lock:
                self._pending -= count

    def _through_batcher(
        self, images: list[np.ndarray], deadline: float, announced: Announcement | None
    ) -> list:
        jobs = [_Job(pixels) for pixels in images]
        for job in jobs:
            if announced is not None and announced.count > 0:
                # Withdrawn just before it is queued: a batcher that sees no more incoming
                # images may miss this one (it runs in the next batch) but never waits in vain.
                with self._lock:
                    self._incoming -= 1
                announced.count -= 1
            self._queue.put(job)
        for job in jobs:
            if not job.done.acquire(timeout=max(0.0, deadline - time.monotonic())):
                for pending in jobs:
                    pending.abandoned = True
                raise TimedOut("the request timed out waiting for the model; retry shortly")
            if job.error is not None:
                raise job.error
        return [job.result for job in jobs]

    # -- the batcher thread ----------------------------------------------------------------------

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            self._warm_up()
        except Exception as exc:  # a model that cannot run: stay live, never ready, say why
            self.failure = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            log.error("model warm-up failed: %s", self.failure)
            return
        self.state = "ready"
        metrics.MODEL_READY.set(1)
        log.info("model ready: warmed up in %.2f s", time.perf_counter() - started)
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            # The lock first, then the batch: what queues up while a lone request runs on its
            # own thread joins this batch instead of leaving behind it.
            with self._interpreter:
                batch = self._collect(first)
                if batch:
                    self._run_batch(batch)

    def _collect(self, first: _Job) -> list[_Job]:
        """The first job plus whatever joins it: all queued ones, and incoming ones for a while.
        Jobs whose request gave up are left out."""
        batch = [] if first.abandoned else [first]
        deadline = time.monotonic() + self.max_batch_delay
        while len(batch) < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._incoming == 0:
                    break
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
            if item is _STOP:
                self._queue.put(_STOP)  # stop after this batch
                break
            if not item.abandoned:
                batch.append(item)
        return batch

    def _run_batch(self, batch: list[_Job]) -> None:
        try:
            outputs = self._infer(np.stack([job.pixels for job in batch]))
        except ServingError as error:  # each waiting request learns why
            for job in batch:
                job.error = error
                job.done.release()
            return
        for job, result in zip(batch, outputs, strict=True):
            job.result = result
            job.done.release()

    def _infer(self, pixels: np.ndarray) -> list:
        """Run a batch (the caller holds the interpreter lock) and record it in the metrics."""
        # Metrics are written once a batch, not once an image: in multiprocess mode every write
        # is a locked write to a memory-mapped file, several per request otherwise. The queue
        # depth is what is left waiting as the batch starts (0 once the server is idle).
        self._running = len(pixels)
        metrics.QUEUE_DEPTH.set(self.queued)
        started = time.perf_counter()
        try:
            outputs = self._predict(pixels)
        except Exception as exc:  # the interpreter failed: the requests learn why, not a 500
            log.exception("inference failed on a batch of %d", len(pixels))
            raise ServingError(f"inference failed: {type(exc).__name__}: {exc}") from None
        finally:
            self._running = 0
        metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(pixels))
        metrics.IMAGES.inc(len(pixels))
        return outputs
