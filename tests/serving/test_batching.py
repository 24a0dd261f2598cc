"""The dynamic batcher, on the real model: batches form, the queue is bounded, requests time out.

The interpreter call is wrapped with a gate (a threading.Event) so that the interpreter can be
held busy at a known moment; everything else is the batcher and model as served.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from serving.batching import Batcher
from serving.errors import NotReady, QueueFull, ServingError, TimedOut
from serving.model import DetectorModel


@pytest.fixture(scope="module")
def model(model_dir) -> DetectorModel:
    model = DetectorModel("detector", str(model_dir))
    model.load()
    return model


class Gated:
    """model.predict, held at a gate, recording the batch sizes it was given."""

    def __init__(self, model: DetectorModel):
        self.model = model
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []
        self.threads: list[int] = []  # the thread that ran each batch

    def __call__(self, batch: np.ndarray):
        self.entered.set()
        self.gate.wait(30)
        self.sizes.append(len(batch))
        self.threads.append(threading.get_ident())
        return self.model.predict(batch)


def images(model: DetectorModel, n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    size = model.input_size
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]


def in_thread(batcher: Batcher, pixels: list[np.ndarray], timeout: float = 30.0):
    """Submit from another thread; returns (thread, box) where box gets the result or error."""
    box: dict = {}

    def run():
        try:
            box["result"] = batcher.submit(pixels, time.monotonic() + timeout)
        except Exception as exc:  # noqa: BLE001 - the test looks at which
            box["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, box


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def test_queued_requests_run_together_up_to_the_batch_size_with_their_own_results(model):
    gated = Gated(model)
    batcher = Batcher(
        gated, warm_up=lambda: None, max_batch_size=4, max_batch_delay_ms=50, max_queue=8
    )
    batcher.start()
    assert batcher.wait_ready(5)
    try:
        first = images(model, 1, seed=1)
        t0, box0 = in_thread(batcher, first)
        assert gated.entered.wait(5)  # the interpreter is now busy with the first image
        pixels = images(model, 6, seed=2)
        threads = [in_thread(batcher, [p]) for p in pixels]
        wait_until(lambda: batcher.waiting == 6)
        gated.gate.set()
        for thread, _ in [(t0, box0), *threads]:
            thread.join(30)
        # One image alone, then the six waiting ones in batches of at most four.
        assert gated.sizes == [1, 4, 2]
        # The lone one ran on its request's own thread, the batches on the batcher thread.
        assert gated.threads[0] == t0.ident
        requesters = {t0.ident, *(t.ident for t, _ in threads)}
        assert gated.threads[1] == gated.threads[2] not in requesters
        for p, (_, box) in zip(pixels, threads, strict=True):
            (result,) = box["result"]
            (alone,) = model.predict(p[None])
            for name in ("heatmap", "size", "offset"):
                np.testing.assert_allclose(result[name], alone[name], atol=1e-5)
    finally:
        gated.gate.set()
        batcher.stop()


def test_a_full_queue_refuses_at_once_and_runs_none_of_the_refused_images(model):
    gated = Gated(model)
    batcher = Batcher(
        gated, warm_up=lambda: None, max_batch_size=8, max_batch_delay_ms=1, max_queue=2
    )
    batcher.start()
    assert batcher.wait_ready(5)
    try:
        t0, _ = in_thread(batcher, images(model, 1))
        assert gated.entered.wait(5)
        t1, box1 = in_thread(batcher, images(model, 2))  # fills the queue
        wait_until(lambda: batcher.waiting == 2)
        with pytest.raises(QueueFull) as refused:
            batcher.submit(images(model, 1), time.monotonic() + 30)
        assert refused.value.status == 503 and refused.value.retry_after
        gated.gate.set()
        t0.join(30)
        t1.join(30)
        assert len(box1["result"]) == 2
        assert gated.sizes == [1, 2]  # the refused image never reached the interpreter
        assert batcher.queued == batcher.waiting == 0
    finally:
        gated.gate.set()
        batcher.stop()


def test_a_request_past_its_deadline_gets_503_and_its_image_is_skipped(model):
    gated = Gated(model)
    batcher = Batcher(
        gated, warm_up=lambda: None, max_batch_size=8, max_batch_delay_ms=1, max_queue=4
    )
    batcher.start()
    assert batcher.wait_ready(5)
    try:
        t0, _ = in_thread(batcher, images(model, 1))
        assert gated.entered.wait(5)
        with pytest.raises(TimedOut) as late:
            batcher.submit(images(model, 3), time.monotonic() + 0.05)
        assert late.value.status == 503
        gated.gate.set()
        t0.join(30)
        after = batcher.submit(images(model, 1), time.monotonic() + 30)  # still serving
        assert len(after) == 1
        assert gated.sizes == [1, 1]  # the three abandoned images were not computed
    finally:
        gated.gate.set()
        batcher.stop()


def test_not_ready_before_warm_up_and_a_failed_warm_up_says_why(model):
    batcher = Batcher(model.predict, warm_up=lambda: None)
    with pytest.raises(NotReady, match="not ready yet"):
        batcher.submit(images(model, 1), time.monotonic() + 5)

    def broken():
        raise RuntimeError("interpreter cannot allocate tensors")

    failing = Batcher(model.predict, warm_up=broken)
    failing.start()
    assert not failing.wait_ready(5) and failing.state == "failed"
    with pytest.raises(NotReady, match="failed to load: RuntimeError: interpreter cannot allocate"):
        failing.submit(images(model, 1), time.monotonic() + 5)


def test_a_batch_waits_for_announced_images_and_a_lone_one_does_not_wait(model):
    sizes: list[int] = []

    def predict(batch):
        sizes.append(len(batch))
        return model.predict(batch)

    # A delay far longer than the test: a batch that waited for it would time the request out.
    batcher = Batcher(predict, warm_up=lambda: None, max_batch_size=8, max_batch_delay_ms=60_000)
    batcher.start()
    assert batcher.wait_ready(5)
    try:
        (alone,) = batcher.submit(images(model, 1), time.monotonic() + 20)  # nothing announced
        assert sizes == [1] and alone["heatmap"].ndim == 3

        with batcher.incoming(1) as announced:  # another request thread is decoding an image
            thread, box = in_thread(batcher, images(model, 1, seed=5), timeout=20)
            # Submitted (not alone: an image is announced) and taken by the batcher thread,
            # which now waits for the announced image.
            wait_until(lambda: batcher.waiting == 1 and batcher.queued == 0)
            late = batcher.submit(images(model, 1, seed=6), time.monotonic() + 20, announced)
        thread.join(20)
        assert len(late) == 1 and len(box["result"]) == 1
        assert sizes == [1, 2]  # the announced image joined the waiting one
    finally:
        batcher.stop()


def test_a_lone_request_runs_on_its_own_thread_without_the_batcher(model):
    """Nothing to batch with: the request thread runs the interpreter itself (no hand-off to the
    batcher thread and back), and the metrics and errors are those of a batch."""
    ran: list[tuple[int, int]] = []  # (thread, batch size)

    def predict(batch):
        ran.append((threading.get_ident(), len(batch)))
        if batch[0, 0, 0, 0] == 7:
            raise RuntimeError("interpreter exploded")
        return model.predict(batch)

    batcher = Batcher(predict, warm_up=lambda: None, max_batch_size=2, max_batch_delay_ms=1)
    batcher.start()
    assert batcher.wait_ready(5)
    me = threading.get_ident()
    try:
        for _ in range(3):
            (result,) = batcher.submit(images(model, 1), time.monotonic() + 20)
            assert result["heatmap"].ndim == 3
        assert ran == [(me, 1)] * 3
        assert len(batcher.submit(images(model, 2), time.monotonic() + 20)) == 2
        assert ran[-1] == (me, 2)
        assert batcher.queued == batcher.waiting == 0

        # More images than a batch takes: the batcher thread splits them, as for any request.
        del ran[:]
        assert len(batcher.submit(images(model, 3), time.monotonic() + 20)) == 3
        assert [size for _, size in ran] == [2, 1] and all(thread != me for thread, _ in ran)

        broken = np.full((model.input_size, model.input_size, 3), 7, np.uint8)
        with pytest.raises(ServingError, match="inference failed: RuntimeError: interpreter"):
            batcher.submit([broken], time.monotonic() + 20)
        assert len(batcher.submit(images(model, 1), time.monotonic() + 20)) == 1  # still serving
        assert batcher.queued == batcher.waiting == 0
    finally:
        batcher.stop()
