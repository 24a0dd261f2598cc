"""An ordered, bounded process pool: the task queue behind preprocessing and data checks.

Results come back in input order, so the output does not depend on how many workers there are
or how the OS schedules them: shards are byte-identical for any `--workers`. At most `window`
chunks are in flight, so memory stays bounded however large the dataset; the producer waits for
the oldest chunk before submitting another (backpressure).

Workers are started with 'spawn': they import only what the task needs (Pillow, numpy), never
the TensorFlow that the parent may hold, and never inherit its threads.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    chunk_fn: Callable[[list[T]], list[R]],
    items: Iterable[T],
    *,
    workers: int,
    chunk_size: int = 16,
    window_per_worker: int = 3,
) -> Iterator[R]:
    """Yield chunk_fn's results for `items`, in order, computed by `workers` processes."""
    iterator = iter(items)
    chunks = iter(lambda: list(islice(iterator, chunk_size)), [])
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[Future] = deque()
        for chunk in chunks:
            pending.append(pool.submit(chunk_fn, chunk))
            if len(pending) >= workers * window_per_worker:
                break
        while pending:
            results = pending.popleft().result()
            next_chunk = next(chunks, None)
            if next_chunk is not None:
                pending.append(pool.submit(chunk_fn, next_chunk))
            yield from results
