"""The detector's lifecycle and its three steps, kept apart from every protocol.

As in KServe's `kserve.Model`, a model is loaded, warmed up and then ready, and a request goes
through `preprocess` (encoded image bytes to the model's input pixels), `predict` (a batch of
pixels through the interpreter) and `postprocess` (the shared decode, boxes in the original
image's pixels, class names). The protocol blueprints only translate their wire formats to and
from these steps, so /v1/detect, KServe V1 and the Open Inference Protocol cannot disagree.

Threads: `load` reads and checks the model file (it may run in Gunicorn's master before the
workers fork: no interpreter exists yet). `warm_up` and `predict` create and use the LiteRT
interpreters, which are not thread-safe: one thread at a time runs them, under the batcher's
interpreter lock (the worker waits for the warm-up before it accepts a connection).
`preprocess` and `postprocess` touch no interpreter and run on the request threads, in parallel.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
from PIL import Image

from kubedetect.errors import ImageError
from kubedetect.inference.ensemble import open_tflite
from kubedetect.inference.runtime import Detector
from kubedetect.io.images import Frame, decode_image, encode_jpeg, fit_rgb
from serving.errors import BadRequest, NotAnImage

MAX_DETECTIONS_LIMIT = 1000  # a client may ask for fewer, never for more
_IN_MEMORY_FILE = re.compile(r"<_io\.BytesIO object at 0x[0-9a-f]+>")


@dataclass(frozen=True)
class RequestImage:
    """One request image, ready for the interpreter."""

    pixels: np.ndarray  # uint8 [S, S, 3], letterboxed exactly as in training
    width: int  # the original (EXIF-oriented) size: boxes are returned in this frame
    height: int
    image: Image.Image | None = None  # what `pixels` were resized from, kept to draw boxes on


@dataclass(frozen=True)
class Detection:
    label: str
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in original-image pixels

    def to_dict(self) -> dict:
        xmin, ymin, xmax, ymax = self.box
        return {
            "label": self.label,
            "class_id": self.class_id,
            "score": round(self.score, 5),
            "box": {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax},
        }


@dataclass(frozen=True)
class DecodeParameters:
    score_threshold: float
    max_detections: int


class DetectorModel:
    """A TFLite detector folder (model.tflite + model.json) served under `name`."""

    def __init__(
        self,
        name: str,
        model_dir: str,
        *,
        num_threads: int = 1,
        max_image_pixels: int = 40_000_000,
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ):
        self.name = name
        self.model_dir = model_dir
        self.num_threads = num_threads
        self.max_image_pixels = max_image_pixels
        self._score_threshold = score_threshold
        self._max_detections = max_detections
        self.runtime: Detector | None = None  # a TFLiteDetector, or an Ensemble of them
        self.ready = False

    # -- lifecycle -------------------------------------------------------------------------------

    def load(self) -> None:
        """Read model.json and the model file (an ensemble's: every member's), refusing a file
        whose sha256 does not match."""
        self.runtime = open_tflite(self.model_dir, num_threads=self.num_threads)
        self.card = self.runtime.card
        self.classes = self.card.classes
        self.input_size = self.card.input_size
        self.resize = self.card.resize  # how the model's training images were fitted
        self.defaults = self.parameters(self._score_threshold, self._max_detections)

    def warm_up(self, batch_sizes: range, runs: int = 1, *, rebuild: bool = False) -> None:
        """Build the interpreter of every batch size and run it, then declare the model ready.

        The first inference at a batch size allocates the interpreter's tensors; doing it here
        keeps that cost out of the first requests, and readiness means "answers at full speed".
        `rebuild` replaces the interpreters first (after one failed): read and checked again.
        """
        self.ready = False
        if rebuild:
            self.runtime = open_tflite(self.model_dir, num_threads=self.num_threads)
        for batch in batch_sizes:
            zeros = np.zeros((batch, self.input_size, self.input_size, 3), np.uint8)
            for _ in range(max(1, runs)):
                self.predict(zeros)
        # One image through all three steps: Pillow's decoders and numpy's first calls cost
        # tens of milliseconds once per process, which would otherwise fall on a first client.
        grey = np.full((self.input_size, self.input_size, 3), 128, np.uint8)
        prepared = self.preprocess(encode_jpeg(grey, 90))
        (outputs,) = self.predict(prepared.pixels[None])
        self.postprocess(outputs, prepared.width, prepared.height, self.defaults)
        self.ready = True

    # -- the three steps -------------------------------------------------------------------------

    def preprocess(
        self,
        data: bytes,
        *,
        keep_image: bool = False,
        source: str = "image",
        reserve: Callable[[int], AbstractContextManager] | None = None,
    ) -> RequestImage:
        """Encoded image bytes to the model's input, with the kubedetect.io.images loader.

        The image is decoded reduced (to between one and two times the input size on its
        shorter side, eight times smaller at most), within what `reserve` grants; with
        `keep_image` that reduced image is kept, to draw on: no second, full-size decode."""
        try:
            decoded = decode_image(
                data,
                max_pixels=self.max_image_pixels,
                draft_size=self.input_size,
                source=source,
                reserve=reserve,
            )
        except ImageError as exc:
            # Pillow names its in-memory file ("<_io.BytesIO object at 0x...>"): no use to a client.
            raise NotAnImage(_IN_MEMORY_FILE.sub("data", str(exc))) from None
        pixels = fit_rgb(decoded.image, self.frame(decoded.width, decoded.height))
        kept = decoded.image if keep_image else None
        return RequestImage(pixels, decoded.width, decoded.height, kept)

    def frame(self, width: int, height: int) -> Frame:
        """Where an image of this (original) size sits in the model's input: the one transform
        of kubedetect.io.images, as in training and evaluation."""
        return Frame.of(width, height, self.input_size, self.resize)

    def predict(self, batch: np.ndarray) -> list[dict[str, np.ndarray]]:
        """A batch of input pixels [B, S, S, 3] to each image's float output maps (an
        ensemble's: every member's, run in turn)."""
        outputs = self.runtime.raw_outputs(batch)
        return [{name: maps[i] for name, maps in outputs.items()} for i in range(len(batch))]

    def postprocess(
        self, outputs: dict[str, np.ndarray], width: int, height: int, parameters: DecodeParameters
    ) -> list[Detection]:
        """One image's output maps to named detections in its original pixel frame: the shared
        decode (for an ensemble, each member's, then weighted box fusion)."""
        found = self.runtime.decode_image(
            outputs,
            score_threshold=parameters.score_threshold,
            max_detections=parameters.max_detections,
        )
        boxes = found.in_original(self.frame(width, height))
        return [
            Detection(
                label=self.classes[int(class_id)],
                class_id=int(class_id),
                score=float(score),
                box=tuple(round(float(v), 2) for v in box),
            )
            for box, score, class_id in zip(boxes, found.scores, found.class_ids, strict=True)
        ]

    # -- what clients may ask for ----------------------------------------------------------------

    def parameters_from(self, given: dict) -> DecodeParameters:
        """Decode parameters from a JSON object, where a key given as null is an error."""
        if not isinstance(given, dict):
            raise BadRequest('"parameters": expected an object')
        for name in ("score_threshold", "max_detections"):
            if name in given and given[name] is None:
                raise BadRequest(f"{name}: expected a number, got null")
        return self.parameters(given.get("score_threshold"), given.get("max_detections"))

    def parameters(self, score_threshold=None, max_detections=None) -> DecodeParameters:
        """Decode parameters from a request (strings or numbers), defaulting to the served ones."""
        defaults = getattr(self, "defaults", None)
        if score_threshold is None:
            score_threshold = (
                defaults.score_threshold if defaults else self.card.decode["score_threshold"]
            )
        if max_detections is None:
            max_detections = (
                defaults.max_detections if defaults else self.card.decode["max_detections"]
            )
        try:
            threshold = float(score_threshold)
        except (TypeError, ValueError):
            raise BadRequest(
                f"score_threshold: expected a number, got {score_threshold!r}"
            ) from None
        if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0) or isinstance(
            score_threshold, bool
        ):
            raise BadRequest(
                f"score_threshold: expected a number from 0 to 1, got {score_threshold!r}"
            )
        try:
            if isinstance(max_detections, bool) or float(max_detections) != int(
                float(max_detections)
            ):
                raise ValueError
            count = int(float(max_detections))
        except (TypeError, ValueError, OverflowError):
            raise BadRequest(
                f"max_detections: expected a whole number, got {max_detections!r}"
            ) from None
        if not 1 <= count <= MAX_DETECTIONS_LIMIT:
            raise BadRequest(
                f"max_detections: expected 1 to {MAX_DETECTIONS_LIMIT}, got {max_detections!r}"
            )
        return DecodeParameters(threshold, count)

    def metadata(self) -> dict:
        """What the model is: for /v1/models/<name>, /v2/models/<name> and the web page."""
        return {
            "name": self.name,
            "variant": self.card.variant,
            "classes": list(self.classes),
            "input_size": self.input_size,
            "sha256": self.card.sha256,
            "members": len(getattr(self.runtime, "members", ())) or 1,  # >1: a fused ensemble
            "score_threshold": self.defaults.score_threshold,
            "max_detections": self.defaults.max_detections,
        }
