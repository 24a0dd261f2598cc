"""Running a TFLite model folder on the LiteRT interpreter: the one runtime of evaluation,
quantization reports, benchmarks and serving.

It reads `model.json`, refuses a model file whose sha256 does not match, feeds the input in the
dtype the model expects (quantizing raw pixels for int8 models), dequantizes the outputs and
hands them to the shared decode. No TensorFlow: LiteRT (ai-edge-litert) and numpy only.

An interpreter is not thread-safe, and resizing its input re-plans its memory; a runtime keeps
one interpreter per batch size it has seen and must be used from one thread at a time (serving
gives each Gunicorn worker's batching thread its own).
"""

from __future__ import annotations

import numpy as np

from kubedetect.errors import KubedetectError
from kubedetect.inference.decode import Detections, decode, dequantize
from kubedetect.io import fs
from kubedetect.io.images import Frame, load_for_model
from kubedetect.io.modelcard import ModelCard, TensorSpec

_PIXEL_MINUS_128 = (1.0, -128, np.dtype(np.uint8), np.dtype(np.int8))


class Detector:
    """What every kind of model shares: its card, its float output maps for a batch of raw
    pixels (`raw_outputs`), and the one decode of those maps, at the card's defaults unless
    told otherwise."""

    card: ModelCard

    def raw_outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(
        self,
        pixels: np.ndarray,
        *,
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> list[Detections]:
        """Detections for a batch of resized images (uint8 [B, S, S, 3])."""
        defaults = self.card.decode
        if score_threshold is None:
            score_threshold = defaults["score_threshold"]
        if max_detections is None:
            max_detections = defaults["max_detections"]
        outputs = self.raw_outputs(pixels)
        return [
            self.decode_image(
                {name: maps[i] for name, maps in outputs.items()},
                score_threshold=score_threshold,
                max_detections=max_detections,
            )
            for i in range(len(pixels))
        ]

    def decode_image(
        self, outputs: dict[str, np.ndarray], *, score_threshold: float, max_detections: int
    ) -> Detections:
        """One image's float output maps (raw_outputs' less the batch axis) to detections: the
        shared decode (an ensemble decodes each member's and fuses them)."""
        return decode(
            outputs["heatmap"],
            outputs["size"],
            outputs["offset"],
            score_threshold=score_threshold,
            max_detections=max_detections,
        )


class TFLiteDetector(Detector):
    def __init__(self, model_dir: str, *, num_threads: int = 1, verify: bool = True):
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 - optional dependency

        self.model_dir = model_dir
        self.card = ModelCard.load(model_dir)
        if self.card.kind != "tflite":
            raise KubedetectError(f"{model_dir}: holds a {self.card.kind} model, not a TFLite one")
        path = self.card.verify(model_dir) if verify else fs.join(model_dir, self.card.file)
        self._model = fs.read_bytes(path)
        self._make = lambda: Interpreter(model_content=self._model, num_threads=num_threads)
        self._runners: dict[int, object] = {}
        self.num_threads = num_threads
        self.input_size = self.card.input_size
        self.classes = self.card.classes

    def _runner(self, batch: int):
        runner = self._runners.get(batch)
        if runner is None:
            interpreter = self._make()
            runner = interpreter.get_signature_runner()
            self._input_name = next(iter(runner.get_input_details()))
            # A first call at this batch size sizes the tensors once; later calls reuse them.
            runner(**{self._input_name: np.zeros(self._input_shape(batch), self._input_dtype)})
            self._runners[batch] = runner
        return runner

    @property
    def _input_dtype(self) -> np.dtype:
        return np.dtype(self.card.input.dtype)

    def _input_shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, self.input_size, self.input_size, 3)

    def quantize_input(self, pixels: np.ndarray) -> np.ndarray:
        """Raw uint8 RGB pixels [B, S, S, 3] to the model's input tensor."""
        spec: TensorSpec = self.card.input
        if (spec.scale, spec.zero_point, pixels.dtype, self._input_dtype) == _PIXEL_MINUS_128:
            # The int8 variant's own input (scale 1, zero point -128): pixel - 128, which for
            # uint8 is flipping the top bit. One pass instead of six over every image.
            return (pixels ^ np.uint8(0x80)).view(np.int8)
        if spec.scale:
            info = np.iinfo(self._input_dtype)
            q = np.round(pixels.astype(np.float32) / spec.scale) + spec.zero_point
            return np.clip(q, info.min, info.max).astype(self._input_dtype)
        return pixels.astype(self._input_dtype)

    def invoke(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        """Run the interpreter on an input already in the model's dtype (see quantize_input);
        the outputs as the model gives them (int8 for int8 models). What latency is timed on."""
        return self._runner(tensor.shape[0])(**{self._input_name: tensor})

    def raw_outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch and return the float (dequantized) output maps."""
        if pixels.ndim != 4 or pixels.shape[1:] != (self.input_size, self.input_size, 3):
            raise KubedetectError(
                f"expected images of shape [B, {self.input_size}, {self.input_size}, 3], "
                f"got {list(pixels.shape)}"
            )
        out = self.invoke(self.quantize_input(pixels))
        return {
            name: dequantize(out[spec.name], spec.scale, spec.zero_point)
            for name, spec in self.card.outputs.items()
        }

    def detect(
        self, image: bytes, *, max_pixels: int = 80_000_000, **kwargs
    ) -> tuple[Detections, Frame]:
        """One encoded image to detections, with the frame that maps them back to its pixels
        (`Detections.in_original`)."""
        pixels, frame = load_for_model(
            image, size=self.input_size, max_pixels=max_pixels, resize=self.card.resize
        )
        return self.predict(pixels[None], **kwargs)[0], frame
