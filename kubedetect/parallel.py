"""An ordered, bounded process pool: the task queue behind preprocessing and data checks.

Results come back in input order, so the output does not depend on how many workers there are
or how the OS schedules them: shards are byte-identical for any `--workers`. At most `window`
chunks are in flight, so memory stays bounded however large the dataset; the producer waits for
the oldest chunk before submitting another (backpressure).

Workers are started with 'spawn': they import only what the task needs (Pillow), never the
TensorFlow that the parent may hold, and never inherit its threads. Starting a worker (a fresh
interpreter importing the task's module) costs a few tenths of a second, so a pool can be started
before its items are known: the workers boot while the caller scans the data.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import islice
from typing import Generic, TypeVar

from kubedetect.errors import KubedetectError

T = TypeVar("T")
R = TypeVar("R")

# Images take milliseconds each: chunks of a few amortise the inter-process overhead (well under
# a millisecond a task) while keeping the workers' finishing times close together at the end.
CHUNK_SIZE = 4
WINDOW_PER_WORKER = 4


class OrderedPool(Generic[T, R]):
    """`workers` processes applying `chunk_fn` to chunks of items; use as a context manager.

    On entering, every worker is started and given an empty chunk, so that it imports
    `chunk_fn`'s module at once rather than when the first real chunk arrives. A pool serves one
    `map`: once the last chunk is back the workers are told to exit, and they wind down while the
    caller deals with the last results.

    A worker that dies (killed for memory, or crashed inside a C decoder) breaks the pool; `map`
    then raises a KubedetectError naming the items that were in flight (`name` says how).
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
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> OrderedPool[T, R]:
        context = multiprocessing.get_context("spawn")
        self._pool = ProcessPoolExecutor(
            max_workers=self.workers, mp_context=context, initializer=self.initializer
        )
        for _ in range(self.workers):  # each submit starts one more process, up to `workers`
            self._pool.submit(self.chunk_fn, [])
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._pool is not None
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = None

    def map(self, items: Iterable[T], **context) -> Iterator[R]:
        """chunk_fn's results for `items`, in order. `context` is passed to every chunk's call:
        what becomes known only after the pool started (it starts before the data is scanned)."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("OrderedPool.map outside its `with` block")
        iterator = iter(items)
        chunks = iter(lambda: list(islice(iterator, self.chunk_size)), [])
        pending: deque[tuple[Future, list[T]]] = deque()
        try:
            for chunk in chunks:
                pending.append((pool.submit(self.chunk_fn, chunk, **context), chunk))
                if len(pending) >= self.window:
                    break
            while pending:
                results = pending[0][0].result()
                pending.popleft()
                next_chunk = next(chunks, None)
                if next_chunk is not None:
                    pending.append((pool.submit(self.chunk_fn, next_chunk, **context), next_chunk))
                elif not pending:
                    pool.shutdown(wait=False)  # __exit__ joins the workers, by then mostly gone
                yield from results
        except BrokenProcessPool:
            raise self._died([item for _, chunk in pending for item in chunk]) from None

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
