"""An ordered, bounded process pool: the task queue behind preprocessing and data checks.

Results come back in input order, so the output does not depend on how many workers there are
or how the OS schedules them: shards are byte-identical for any `--workers`. At most `window`
chunks are in flight, so memory stays bounded however large the dataset; no more work is sent
while the oldest chunk is outstanding and the window is full (backpressure).

Workers are started with 'spawn': they import only what the task needs (Pillow), never the
TensorFlow that the parent may hold, and never inherit its threads. Starting a worker (a fresh
interpreter importing the task's module) costs about a tenth of a second, so a pool can be
started before its items are known: the workers boot while the caller scans the data.

Each worker talks to the parent over its own socket pair, and the parent's one thread does all
the dispatching: it sends a worker its next chunk when a result comes back from it. There are no
helper threads. `concurrent.futures.ProcessPoolExecutor` moves every task and result through two
helper threads of the parent (a manager and a queue feeder), waking them and the caller several
times a chunk; on two cores that bookkeeping (about 40 ms of CPU a run over the 363 cards photos)
was taken from the workers, and its imports lengthened every worker's start-up.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import sys
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sized
from itertools import islice
from multiprocessing.connection import Connection, wait
from typing import Generic, TypeVar

from kubedetect.errors import KubedetectError

T = TypeVar("T")
R = TypeVar("R")

# Images take milliseconds each: chunks of a few amortise the inter-process overhead (well under
# a millisecond a chunk) while keeping the workers' finishing times close together at the end.
CHUNK_SIZE = 4
WINDOW_PER_WORKER = 4
# Chunks sent to one worker ahead of its results: one to work on, one waiting in its socket, so
# that it never waits for the parent between chunks.
QUEUED_PER_WORKER = 2
# Near the end, chunks shrink (to a TAIL_SPREAD-th of each worker's share of what is left, and at
# last to single items), so that the workers finish together: one worker busy with a last full
# chunk while the others are done is time no number of workers can win back.
TAIL_SPREAD = 4


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker: the cause of the same exception here."""


class WorkerDied(Exception):
    """A worker's connection closed while it owed results: the process died."""


def _serve(conn: Connection, chunk_fn: Callable, initializer: Callable[[], None] | None) -> None:
    """A worker's life: run chunks from `conn` until told to stop (None) or the parent is gone.

    Spawning a process unpickles this call, which imports `chunk_fn`'s module: a worker is
    ready for its first chunk as soon as it has started. Ctrl-C reaches the whole process group;
    the parent decides what happens then (it kills its workers), so workers ignore it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer()
    while _serve_one(conn, chunk_fn):
        pass
    # A worker holds nothing that needs finalising, and an interpreter's teardown (about 15 ms
    # with Pillow loaded) is time the parent waits for at the end of every run: skip it.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve_one(conn: Connection, chunk_fn: Callable) -> bool:
    """Run one chunk and send back its results or its error; False when it is time to stop."""
    try:
        task = conn.recv()
    except (EOFError, OSError):  # the parent is gone
        return False
    if task is None:
        return False
    chunk, context = task
    try:
        reply = (True, chunk_fn(chunk, **context), "")
    except Exception as exc:  # noqa: BLE001 - every error goes back to the parent
        reply = (False, exc, traceback.format_exc())
    try:
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError):  # an unpicklable error
            conn.send((False, RuntimeError(repr(reply[1])), reply[2]))
    except OSError:  # the parent is gone
        return False
    return True


class _Worker:
    """One worker process, the parent's end of its connection, and the chunks it owes."""

    def __init__(self, context, chunk_fn: Callable, initializer: Callable[[], None] | None):
        self.conn, child_end = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_serve, args=(child_end, chunk_fn, initializer), daemon=True
        )
        self.process.start()
        child_end.close()  # the worker's is then the only copy: its death reads as end of file
        self.owed: deque[int] = deque()  # indices of the chunks sent to it, oldest first
        self.stopped = False

    def send(self, index: int, chunk: list, context: dict) -> None:
        try:
            self.conn.send((chunk, context))
        except OSError:  # broken pipe, connection reset: the worker is gone
            raise WorkerDied from None
        self.owed.append(index)

    def receive(self) -> tuple[int, list]:
        """The oldest owed chunk's index and results."""
        try:
            ok, payload, remote_traceback = self.conn.recv()
        except (EOFError, OSError):
            raise WorkerDied from None
        index = self.owed.popleft()
        if not ok:
            raise payload from RemoteTraceback(remote_traceback)
        return index, payload

    def stop(self) -> None:
        """Ask the worker to exit (it owes nothing)."""
        if not self.stopped:
            self.stopped = True
            with contextlib.suppress(OSError):  # already gone
                self.conn.send(None)


class OrderedPool(Generic[T, R]):
    """`workers` processes applying `chunk_fn` to chunks of items; use as a context manager.

    On entering, every worker is started. A pool serves one `map`: once the last chunk is back
    the workers are told to exit, and they wind down while the caller deals with the last
    results. Leaving the `with` block early (an error, a result not wanted) kills the workers.

    A worker that dies (killed for memory, or crashed inside a C decoder) makes `map` raise a
    KubedetectError naming the items that were in flight (`name` says how). An exception raised
    by `chunk_fn` is raised again in this process, with the worker's traceback.
    """

    def __init__(
        self,
        chunk_fn: Callable[[list[T]], list[R]],
        *,
        workers: int,
        chunk_size: int = CHUNK_SIZE,
        window_per_worker: int = WINDOW_PER_WORKER,
        name: Callable[[T], str] = str,
        initializer: Callable[[], None] | None = None,
    ):
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.chunk_fn = chunk_fn
        self.workers = workers
        self.chunk_size = chunk_size
        self.window = workers * window_per_worker
        self.name = name
        self.initializer = initializer  # run once in each worker process, as it starts
        self._workers: list[_Worker] | None = None

    def __enter__(self) -> OrderedPool[T, R]:
        context = multiprocessing.get_context("spawn")
        self._workers = [
            _Worker(context, self.chunk_fn, self.initializer) for _ in range(self.workers)
        ]
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._workers is not None
        for worker in self._workers:
            if worker.owed:  # left before its results were read: it may never read a stop
                worker.process.kill()
            else:
                worker.stop()
        for worker in self._workers:
            worker.process.join()
            worker.conn.close()
        self._workers = None

    def map(self, items: Iterable[T], **context) -> Iterator[R]:
        """chunk_fn's results for `items`, in order. `context` is passed to every chunk's call:
        what becomes known only after the pool started (it starts before the data is scanned)."""
        workers = self._workers
        if workers is None:
            raise RuntimeError("OrderedPool.map outside its `with` block")
        chunks = enumerate(self._chunks(items))
        in_flight: dict[int, list[T]] = {}  # sent and not yet yielded, by chunk index
        done: dict[int, list[R]] = {}  # results that arrived before an older chunk's
        next_index = 0  # the chunk whose results are yielded next
        exhausted = False

        def feed(worker: _Worker) -> None:
            """Send `worker` chunks while it has room and the window allows; stop it once
            there is nothing left for it, so that it exits while the others finish."""
            nonlocal exhausted
            while (
                not exhausted
                and len(worker.owed) < QUEUED_PER_WORKER
                and len(in_flight) < self.window
            ):
                index, chunk = next(chunks, (None, None))
                if chunk is None:
                    exhausted = True
                else:
                    in_flight[index] = chunk
                    worker.send(index, chunk, context)
            if exhausted and not worker.owed:
                worker.stop()

        try:
            for worker in workers:
                feed(worker)
            while in_flight:
                busy = {worker.conn: worker for worker in workers if worker.owed}
                for conn in wait(list(busy)):
                    index, results = busy[conn].receive()
                    done[index] = results
                    feed(busy[conn])
                while next_index in done:
                    results = done.pop(next_index)
                    del in_flight[next_index]
                    next_index += 1
                    for worker in workers:
                        feed(worker)
                    yield from results
        except WorkerDied:
            raise self._died([item for chunk in in_flight.values() for item in chunk]) from None

    def _chunks(self, items: Iterable[T]) -> Iterator[list[T]]:
        """`items` in chunks of `chunk_size`, smaller at the end when the count is known."""
        iterator = iter(items)
        if self.workers == 1 or not isinstance(items, Sized):
            yield from iter(lambda: list(islice(iterator, self.chunk_size)), [])
            return
        remaining = len(items)
        while remaining > 0:
            share = -(-remaining // (self.workers * TAIL_SPREAD))  # rounded up
            chunk = list(islice(iterator, min(self.chunk_size, share)))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk

    def _died(self, in_flight: list[T]) -> KubedetectError:
        names = [self.name(item) for item in in_flight]
        shown = ", ".join(names[:40]) + (f" and {len(names) - 40} more" if len(names) > 40 else "")
        return KubedetectError(
            f"a worker process died (killed, perhaps for memory, or crashed inside a decoder) "
            f"while these were being processed: {shown}; run again with --workers 1 to narrow "
            "it down"
        )


def ordered_map(
    chunk_fn: Callable[[list[T]], list[R]],
    items: Iterable[T],
    *,
    workers: int,
    chunk_size: int = CHUNK_SIZE,
    window_per_worker: int = WINDOW_PER_WORKER,
) -> Iterator[R]:
    """Yield chunk_fn's results for `items`, in order, computed by `workers` processes."""
    with OrderedPool(
        chunk_fn, workers=workers, chunk_size=chunk_size, window_per_worker=window_per_worker
    ) as pool:
        yield from pool.map(items)
