"""The worker pool behind preprocessing and data checks (kubedetect.parallel): results in input
order whatever the workers' timing, and a clear error when a worker process dies."""

from __future__ import annotations

import os
import time

import pytest

from kubedetect.errors import KubedetectError
from kubedetect.parallel import OrderedPool, ordered_map


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
