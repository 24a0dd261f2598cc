"""What every protocol does with a request: images in, detections out.

A `Service` ties one model to its batcher, its decode budget and the served settings. The
protocol blueprints call `detect`, which runs the model's three steps: preprocess on the request
thread (decoding within the worker's decode budget, serving/memory.py), predict in a batch on
the batcher thread, postprocess back on the request thread.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
from dataclasses import dataclass

from flask import current_app

from kubedetect.config import ServeConfig
from serving.batching import Batcher
from serving.errors import BadRequest, ModelNotFound
from serving.lifecycle import DecodeParameters, Detection, DetectorModel
from serving.memory import DecodeBudget, MemoryPlan

log = logging.getLogger("kubedetect.serving")


@dataclass(frozen=True)
class ImageResult:
    width: int
    height: int
    detections: list[Detection]
    image: object | None = None  # the decoded (reduced) image, when asked for (to draw on)


class Service:
    def __init__(self, config: ServeConfig, model: DetectorModel):
        self.config = config
        self.model = model
        self.batcher = Batcher(
            model.predict,
            warm_up=lambda rebuild: model.warm_up(
                range(1, config.max_batch_size + 1), config.warmup_runs, rebuild=rebuild
            ),
            max_batch_size=config.max_batch_size,
            max_batch_delay_ms=config.max_batch_delay_ms,
            max_queue=config.max_queue,
            stall_seconds=max(30.0, 3 * config.request_timeout),
            on_give_up=self._give_up,
        )
        self.in_gunicorn = False  # set by serving.app.start_worker in a Gunicorn worker
        self.plan: MemoryPlan | None = None
        self.budget: DecodeBudget | None = None  # made in each worker once it is warm

    def plan_memory(self, limit: int, *, workers: int = 1, master: int = 0) -> MemoryPlan:
        """Divide this worker's share of `limit` (see serving/memory.py); the decode budget is
        what is left once the worker is warm."""
        self.plan = MemoryPlan.make(
            limit=limit,
            workers=workers,
            threads=self.config.threads,
            max_body_bytes=self.config.max_body_bytes,
            master=master,
        )
        self.budget = DecodeBudget(self.plan.decode)
        log.info(self.plan.describe())
        return self.plan

    @property
    def ready(self) -> bool:
        return self.batcher.ready

    def problem(self) -> str | None:
        """Why this worker cannot serve now (None when it can): what readiness answers."""
        return self.batcher.problem()

    def check_model(self, name: str) -> DetectorModel:
        if name != self.model.name:
            raise ModelNotFound(f"no model named {name!r}; this server serves {self.model.name!r}")
        return self.model

    def check_ready(self) -> None:
        self.batcher.check_ready()

    def detect(
        self,
        images: list[bytes],
        parameters: DecodeParameters,
        *,
        deadline: float,
        keep_image: bool = False,
    ) -> list[ImageResult]:
        """Detections for each encoded image, in order; errors name the image at fault."""
        if not images:
            raise BadRequest("no image in the request")
        if len(images) > self.config.max_queue:
            raise BadRequest(
                f"{len(images)} images in one request; at most {self.config.max_queue} are allowed"
            )
        self.check_ready()
        prepared = []
        for i, data in enumerate(images):
            source = f"image {i}" if len(images) > 1 else "image"
            reserve = (
                functools.partial(self.budget.reserve, deadline=deadline, source=source)
                if self.budget is not None
                else None
            )
            prepared.append(
                self.model.preprocess(data, keep_image=keep_image, source=source, reserve=reserve)
            )
        outputs = self.batcher.submit([p.pixels for p in prepared], deadline)
        return [
            ImageResult(
                p.width,
                p.height,
                self.model.postprocess(out, p.width, p.height, parameters),
                p.image,
            )
            for p, out in zip(prepared, outputs, strict=True)
        ]

    def _give_up(self, reason: str) -> None:
        """The batcher cannot go on. In a Gunicorn worker (`in_gunicorn`), end the worker
        gracefully (its in-flight requests finish) so that the master starts a fresh one.
        Elsewhere (the Flask test client) the process is not ours to end: it stays up, not
        ready, saying why."""
        if self.in_gunicorn:
            os.kill(os.getpid(), signal.SIGTERM)


def current_service() -> Service:
    return current_app.extensions["kubedetect"]
