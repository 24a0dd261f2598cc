"""The batcher, on the real model: batches form, the queue is bounded, requests time out, and a
failing interpreter turns the worker not ready until it has been rebuilt.

The interpreter call is wrapped with a gate (a threading.Event) so that the interpreter can be
held busy at a known moment, or with a switch that makes it raise; everything else is the
batcher and model as served.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from serving.batching import Batcher
from serving.errors import InferenceFailed, NotReady, QueueFull, TimedOut
from serving.lifecycle import DetectorModel


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


def started(batcher: Batcher) -> Batcher:
    batcher.start()
    assert batcher.wait_ready(10), batcher.problem()
    return batcher


def no_warm_up(rebuild: bool) -> None:
    pass


def test_queued_requests_run_together_up_to_the_batch_size_with_their_own_results(model):
    gated = Gated(model)
    batcher = started(Batcher(gated, warm_up=no_warm_up, max_batch_size=4, max_queue=8))
    try:
        t0, _ = in_thread(batcher, images(model, 1, seed=1))
        assert gated.entered.wait(5)  # the interpreter is now busy with the first image
        pixels = images(model, 6, seed=2)
        threads = [in_thread(batcher, [p]) for p in pixels]
        wait_until(lambda: batcher.queued == 6)
        gated.gate.set()
        for thread, _ in [(t0, None), *threads]:
            thread.join(30)
        # One image alone, then the six waiting ones in batches of at most four, all on the
        # batcher thread (the only one that touches the interpreter).
        assert gated.sizes == [1, 4, 2]
        requesters = {t0.ident, *(t.ident for t, _ in threads)}
        assert len(set(gated.threads)) == 1 and not set(gated.threads) & requesters
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
    batcher = started(Batcher(gated, warm_up=no_warm_up, max_batch_size=8, max_queue=2))
    try:
        t0, _ = in_thread(batcher, images(model, 1))
        assert gated.entered.wait(5)
        t1, box1 = in_thread(batcher, images(model, 2))  # fills the queue
        wait_until(lambda: batcher.queued == 2)
        with pytest.raises(QueueFull) as refused:
            batcher.submit(images(model, 1), time.monotonic() + 30)
        assert refused.value.status == 503 and refused.value.retry_after
        gated.gate.set()
        t0.join(30)
        t1.join(30)
        assert len(box1["result"]) == 2
        assert gated.sizes == [1, 2]  # the refused image never reached the interpreter
        assert batcher.queued == 0
    finally:
        gated.gate.set()
        batcher.stop()


def test_a_request_past_its_deadline_gets_503_and_its_image_is_skipped(model):
    gated = Gated(model)
    batcher = started(Batcher(gated, warm_up=no_warm_up, max_batch_size=8, max_queue=4))
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
    batcher = Batcher(model.predict, warm_up=no_warm_up)
    with pytest.raises(NotReady, match="not ready yet"):
        batcher.submit(images(model, 1), time.monotonic() + 5)

    def broken(rebuild):
        raise RuntimeError("interpreter cannot allocate tensors")

    failing = Batcher(model.predict, warm_up=broken)
    failing.start()
    assert not failing.wait_ready(5) and failing.state == "failed"
    with pytest.raises(NotReady, match="failed: RuntimeError: interpreter cannot allocate"):
        failing.submit(images(model, 1), time.monotonic() + 5)


class Breakable:
    """model.predict, or, while `broken` is set, an interpreter that raises (not a ServingError:
    what LiteRT raises when it fails) or, with `wrong` set, one that loses an output."""

    def __init__(self, model: DetectorModel):
        self.model = model
        self.broken = threading.Event()
        self.wrong = False
        self.rebuilds = 0

    def __call__(self, batch: np.ndarray):
        if self.broken.is_set():
            if self.wrong:
                return self.model.predict(batch)[1:]
            raise RuntimeError("Invoke failed: tensor arena corrupted")
        return self.model.predict(batch)

    def warm_up(self, rebuild: bool) -> None:
        """As DetectorModel.warm_up: one image through, its one output taken."""
        self.rebuilds += rebuild
        (_,) = self(np.zeros((1, self.model.input_size, self.model.input_size, 3), np.uint8))


@pytest.mark.parametrize("wrong", [False, True], ids=["interpreter-raises", "lost-output"])
def test_a_failing_interpreter_turns_the_worker_not_ready_until_rebuilt(model, wrong):
    """The interpreter fails: the requests of its batch get 503 (retry), the worker says it is
    not ready and why, and rebuilds its interpreters until one works; then it is ready again
    and serves. (The batcher thread used to die on the lost output, and to stay 'ready' in both
    cases while every request timed out or failed.)"""
    interpreter = Breakable(model)
    interpreter.wrong = wrong
    gave_up = []
    batcher = started(
        Batcher(interpreter, warm_up=interpreter.warm_up, on_give_up=gave_up.append, max_queue=8)
    )
    try:
        interpreter.broken.set()
        with pytest.raises(InferenceFailed) as failed:
            batcher.submit(images(model, 2), time.monotonic() + 10)
        assert failed.value.status == 503 and failed.value.retry_after
        assert not batcher.ready
        assert "restarting after a failure" in batcher.problem()
        with pytest.raises(NotReady):
            batcher.submit(images(model, 1), time.monotonic() + 10)
        time.sleep(1.0)  # rebuilds fail meanwhile: still not ready
        assert not batcher.ready
        interpreter.broken.clear()
        assert batcher.wait_ready(30), batcher.problem()
        assert len(batcher.submit(images(model, 3), time.monotonic() + 10)) == 3
        assert interpreter.rebuilds >= 2 and gave_up == []
    finally:
        interpreter.broken.clear()
        batcher.stop()


def test_a_worker_whose_interpreter_cannot_be_rebuilt_gives_up(model):
    interpreter = Breakable(model)
    gave_up = []
    batcher = started(
        Batcher(interpreter, warm_up=interpreter.warm_up, on_give_up=gave_up.append, max_restarts=1)
    )
    interpreter.broken.set()
    with pytest.raises(InferenceFailed):
        batcher.submit(images(model, 1), time.monotonic() + 10)
    wait_until(lambda: gave_up, timeout=20)
    assert batcher.state == "failed" and "cannot be rebuilt" in gave_up[0]
    assert "Invoke failed" in batcher.problem()


def test_a_hung_interpreter_turns_the_worker_not_ready_and_it_gives_up(model):
    """No thread can interrupt an interpreter that never returns: past `stall_seconds` the
    worker says so and gives up (in Gunicorn: exits, and the master starts a fresh one)."""
    gated = Gated(model)
    gave_up = []
    batcher = started(
        Batcher(gated, warm_up=no_warm_up, on_give_up=gave_up.append, stall_seconds=0.3)
    )
    try:
        thread, box = in_thread(batcher, images(model, 1), timeout=0.5)
        assert gated.entered.wait(5)
        assert batcher.ready
        time.sleep(0.4)
        assert not batcher.ready and "has not returned" in batcher.problem()
        assert len(gave_up) == 1
        thread.join(5)
        assert isinstance(box["error"], TimedOut)
    finally:
        gated.gate.set()
        batcher.stop()
