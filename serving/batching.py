"""Dynamic batching: the request threads of a worker take turns at the interpreter.

Each Gunicorn worker has `threads` request threads and one set of LiteRT interpreters (which
are not thread-safe). A request thread decodes its image, puts the pixels on a bounded queue
and then, if no other thread is at the interpreter, becomes the *leader*: it takes what is
queued, up to `max_batch_size` images, runs them as one batch and hands each waiting request
its own outputs. Threads that find a leader at work wait; when the leader is done, one of them
leads the next batch. There is no batcher thread: a request is never handed to another thread
and back, which on CPython costs two thread wake-ups and the GIL changing hands each time,
about as long as this small model's inference.

- Latency: a leader waits for more images (at most `max_batch_delay_ms`) only while other
  request threads are still decoding images that will join the queue; a lone request runs at
  once instead of paying the delay.
- Backpressure: the queue is bounded (`max_queue`). When it cannot take a request's images the
  request is refused at once with 503 and Retry-After instead of the server's memory and
  latency growing without bound; a load balancer then tries another replica.
- Timeouts: every request waits at most until its deadline (503 after that); an image whose
  request gave up is skipped, not computed.

Warm-up (`start`) runs in the calling thread: Gunicorn calls it in each worker before the worker
accepts its first connection, so a worker never answers "not ready" because it is warming up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from serving import metrics
from serving.errors import NotReady, QueueFull, ServingError, TimedOut

log = logging.getLogger("kubedetect.serving")


class _Request:
    """One submit call: its images and the lock it sleeps on until woken.

    Waking is a release of a held lock, the cheapest wake-up CPython has: a finished batch wakes
    the requests it finished and, if images are still queued, one request to lead the next
    batch, never every waiting thread.
    """

    __slots__ = ("jobs", "_wake", "_signalled")

    def __init__(self, images: list[np.ndarray]):
        self.jobs = [_Job(self, pixels) for pixels in images]
        self._wake = threading.Lock()
        self._wake.acquire()
        self._signalled = False

    @property
    def done(self) -> bool:
        return all(job.done for job in self.jobs)

    def wake(self) -> None:  # with the batcher's lock held
        if not self._signalled:
            self._signalled = True
            self._wake.release()

    def sleep(self, timeout: float) -> None:  # without the batcher's lock
        if self._wake.acquire(timeout=timeout):
            self._signalled = False  # (the lock is held again: the next wake releases it)


class _Job:
    """One image: queued, then taken into a batch, then done (with a result or an error)."""

    __slots__ = ("request", "pixels", "done", "result", "error", "abandoned")

    def __init__(self, request: _Request, pixels: np.ndarray):
        self.request = request
        self.pixels = pixels
        self.done = False
        self.result = None
        self.error: Exception | None = None
        self.abandoned = False


class Announcement:
    """Images a request thread is decoding and has not queued yet."""

    __slots__ = ("count",)

    def __init__(self, count: int):
        self.count = count


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
        self.state = "stopped"  # stopped -> loading -> ready (or failed)
        self.failure: str | None = None

    def _reset(self) -> None:
        # Everything shared by the request threads is guarded by one lock. A leader collecting a
        # batch waits for `_arrivals`; the other requests sleep on their own locks.
        self._lock = threading.Lock()
        self._arrivals = threading.Condition(self._lock)
        self._queue: deque[_Job] = deque()
        self._incoming = 0  # images announced (being decoded) and not queued yet
        self._leading = False  # a thread is collecting or running a batch
        self._pid = os.getpid()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Warm the model up, in this thread, then accept requests. Once per process.

        After a fork the child starts afresh: locks held by another thread at the moment of the
        fork would stay held forever in the child.
        """
        if self.state != "stopped" and self._pid == os.getpid():
            return
        self._reset()
        self.state = "loading"
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

    def stop(self) -> None:
        """Refuse new requests (NotReady); requests already queued are still answered."""
        self.state = "stopped"

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def queued(self) -> int:
        """Images waiting for the interpreter (not counting a batch being run)."""
        return len(self._queue)

    def check_ready(self) -> None:
        """Raise NotReady, saying why, unless warm-up has finished."""
        if self.state == "failed":
            raise NotReady(f"the model failed to load: {self.failure}")
        if self.state != "ready":
            raise NotReady("the model is not ready yet (loading or warming up); retry shortly")

    # -- what request threads call ---------------------------------------------------------------

    @contextmanager
    def incoming(self, count: int = 1) -> Iterator[Announcement]:
        """Announce images being decoded now, so that a forming batch waits for them; pass the
        announcement to `submit`, which withdraws the images as they join the queue."""
        announcement = Announcement(count)
        with self._lock:
            self._incoming += count
        try:
            yield announcement
        finally:
            with self._lock:
                self._incoming -= announcement.count
                announcement.count = 0
                self._arrivals.notify()  # a leader waiting for these need wait no longer

    def submit(
        self, images: list[np.ndarray], deadline: float, announced: Announcement | None = None
    ) -> list:
        """Run images (each uint8 [S, S, 3]) and return their outputs, in order.

        Raises NotReady before warm-up has finished, QueueFull when the queue cannot take all of
        them (none are run then), TimedOut when `deadline` (time.monotonic()) passes first.
        """
        self.check_ready()
        request = _Request(images)
        jobs = request.jobs
        self._lock.acquire()
        try:
            if announced is not None:
                self._incoming -= announced.count
                announced.count = 0
            if len(self._queue) + len(jobs) > self.max_queue:
                raise QueueFull(
                    f"the server is busy: {len(self._queue)} images are already waiting "
                    f"(at most {self.max_queue}); retry shortly"
                )
            self._queue.extend(jobs)
            self._arrivals.notify()  # a leader collecting a batch may take them
            while not request.done:
                if not self._leading and self._queue:
                    self._lead()
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._abandon(request)
                    raise TimedOut("the request timed out waiting for the model; retry shortly")
                self._lock.release()
                try:
                    request.sleep(remaining)
                finally:
                    self._lock.acquire()
        finally:
            self._lock.release()
        for job in jobs:
            if job.error is not None:
                raise job.error
        return [job.result for job in jobs]

    # -- the leader's work (always with the lock held) -------------------------------------------

    def _lead(self) -> None:
        """Collect a batch, run it with the lock released, hand out the results."""
        self._leading = True
        try:
            batch = self._collect()
            if batch:
                self._lock.release()  # others queue their images while the interpreter runs
                try:
                    outputs, error = self._run(batch)
                finally:
                    self._lock.acquire()
                for i, job in enumerate(batch):
                    job.result, job.error = (outputs[i], None) if error is None else (None, error)
                    job.done = True
                for request in {job.request for job in batch}:
                    if request.done:
                        request.wake()
        finally:
            self._leading = False
            self._pass_the_lead()

    def _pass_the_lead(self) -> None:
        """Wake the owner of the oldest queued image to lead the next batch (a leader whose own
        images are still queued is awake and leads it anyway)."""
        if self._queue:
            self._queue[0].request.wake()

    def _collect(self) -> list[_Job]:
        """Queued images, up to the batch size, and announced ones for up to the batch delay."""
        batch: list[_Job] = []
        wait_until = time.monotonic() + self.max_batch_delay
        while len(batch) < self.max_batch_size:
            if self._queue:
                job = self._queue.popleft()
                if not job.abandoned:
                    batch.append(job)
                continue
            remaining = wait_until - time.monotonic()
            if remaining <= 0 or self._incoming == 0:
                break
            self._arrivals.wait(remaining)
        metrics.QUEUE_DEPTH.set(len(self._queue))  # what is left waiting, as each batch forms
        return batch

    def _run(self, batch: list[_Job]) -> tuple[list, ServingError | None]:
        started = time.perf_counter()
        try:
            outputs = self._predict(np.stack([job.pixels for job in batch]))
        except Exception as exc:  # the interpreter failed: each waiting request learns why
            log.exception("inference failed on a batch of %d", len(batch))
            return [], ServingError(f"inference failed: {type(exc).__name__}: {exc}")
        metrics.INFERENCE_SECONDS.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(batch))
        metrics.IMAGES.inc(len(batch))
        return outputs, None

    def _abandon(self, request: _Request) -> None:
        """A request gave up: its images still queued are dropped, never computed. It may have
        been woken to lead: then the next request in line is."""
        for job in request.jobs:
            job.abandoned = True
        self._queue = deque(job for job in self._queue if not job.abandoned)
        metrics.QUEUE_DEPTH.set(len(self._queue))
        if not self._leading:
            self._pass_the_lead()
