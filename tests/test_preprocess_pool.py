"""The worker pool behind preprocessing and data checks (kubedetect.data.pool): results in input
order whatever the workers' timing, and a clear error when a worker process dies."""

from __future__ import annotations

import multiprocessing
import os
import time

import pytest

from kubedetect.data.pool import OrderedPool, ordered_map
from kubedetect.errors import KubedetectError


def square_unevenly(chunk: list[int]) -> list[int]:
    """Squares, with later items of a chunk finishing sooner than earlier ones elsewhere."""
    time.sleep(0.002 * (len(chunk) and (7 - chunk[0] % 7)))
    return [i * i for i in chunk]


def die_on_13(chunk: list[int]) -> list[int]:
    if 13 in chunk:
        os._exit(3)  # as a worker killed by the OOM killer, or crashed in a C decoder
    return chunk


@pytest.mark.parametrize("workers, chunk_size", [(1, 4), (2, 1), (2, 3), (3, 5)])
def test_results_come_back_in_input_order(workers, chunk_size):
    items = list(range(60))
    results = list(ordered_map(square_unevenly, items, workers=workers, chunk_size=chunk_size))
    assert results == [i * i for i in items]


def chunk_lengths(chunk: list[int]) -> list[int]:
    return [len(chunk)] * len(chunk)


def test_chunks_shrink_at_the_end_so_the_workers_finish_together():
    lengths = list(ordered_map(chunk_lengths, list(range(100)), workers=2, chunk_size=4))
    assert len(lengths) == 100
    assert lengths[:40] == [4] * 40  # full chunks while much is left
    assert lengths[-6:] == [1] * 6  # single items last: no worker is left with a long last task


def test_items_of_unknown_count_come_back_in_order_too():
    results = list(ordered_map(square_unevenly, (i for i in range(30)), workers=2, chunk_size=3))
    assert results == [i * i for i in range(30)]


def test_no_items_no_results():
    assert list(ordered_map(square_unevenly, [], workers=2)) == []


def test_a_dying_worker_is_a_clear_error_naming_what_was_in_flight():
    pool = OrderedPool(die_on_13, workers=2, chunk_size=2, name=lambda i: f"image-{i}.jpg")
    seen = []
    with pytest.raises(KubedetectError) as error, pool:
        seen.extend(pool.map(range(40)))
    message = str(error.value)
    assert "a worker process died" in message and "image-13.jpg" in message
    assert "--workers 1" in message
    assert seen == list(range(len(seen))) and len(seen) <= 12  # what came before, in order


class Unlucky(ValueError):
    pass


def fail_on_7(chunk: list[int]) -> list[int]:
    if 7 in chunk:
        raise Unlucky(f"no 7s here: {chunk}")
    return chunk


def test_an_error_in_the_task_reaches_the_caller_as_itself_with_the_workers_traceback():
    with pytest.raises(Unlucky, match="no 7s here") as error:
        list(ordered_map(fail_on_7, range(40), workers=2, chunk_size=2))
    assert "fail_on_7" in str(error.value.__cause__)  # where in the worker it was raised


def test_leaving_before_the_results_are_read_stops_the_workers():
    before = set(multiprocessing.active_children())
    pool = OrderedPool(square_unevenly, workers=2, chunk_size=2)
    with pool:
        results = pool.map(range(100))
        assert next(results) == 0  # the rest stay in flight, unread
        workers = set(multiprocessing.active_children()) - before
    assert len(workers) == 2 and not any(worker.is_alive() for worker in workers)
