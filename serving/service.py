"""What every protocol does with a request: images in, detections out.

A `Service` ties one model to its batcher and to the served settings. The protocol blueprints
call `detect`, which runs the model's three steps: preprocess on the request thread, predict in
a batch on the batcher thread (or on the request thread, when it has nothing to batch with),
postprocess back on the request thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from kubedetect.config import ServeConfig
from serving.batching import Batcher
from serving.errors import BadRequest, ModelNotFound
from serving.model import DecodeParameters, Detection, DetectorModel


@dataclass(frozen=True)
class ImageResult:
    width: int
    height: int
    detections: list[Detection]
    image: object | None = None  # the decoded image, when asked for (to draw on)


class Service:
    def __init__(self, config: ServeConfig, model: DetectorModel):
        self.config = config
        self.model = model
        self.batcher = Batcher(
            model.predict,
            warm_up=lambda: model.warm_up(range(1, config.max_batch_size + 1), config.warmup_runs),
            max_batch_size=config.max_batch_size,
            max_batch_delay_ms=config.max_batch_delay_ms,
            max_queue=config.max_queue,
        )

    @property
    def ready(self) -> bool:
        return self.batcher.ready

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
        many = len(images) > 1
        with self.batcher.incoming(len(images)) as announced:
            prepared = [
                self.model.preprocess(
                    data, keep_image=keep_image, source=f"image {i}" if many else "image"
                )
                for i, data in enumerate(images)
            ]
            outputs = self.batcher.submit([p.pixels for p in prepared], deadline, announced)
        return [
            ImageResult(
                p.width,
                p.height,
                self.model.postprocess(out, p.width, p.height, parameters),
                p.image,
            )
            for p, out in zip(prepared, outputs, strict=True)
        ]


def current_service() -> Service:
    return current_app.extensions["kubedetect"]
