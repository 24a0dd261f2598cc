"""`model.json`: what a model folder holds and how to feed it, read by everything that runs models.

A model folder is self-describing: the model file and its sha256 (checked before serving), the
input size and dtype with its quantization (so int8 models are fed int8), each output's
quantization (so int8 outputs are dequantized before the shared decode), the class names, the
preprocessing it was trained with, and where it came from (training settings and metrics).
The Keras export of training and every TFLite variant of quantization carry one. TF-free.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from kubedetect.errors import KubedetectError
from kubedetect.io import fs

FORMAT = "kubedetect.model/v1"  # the card format, not a module path: every model folder holds it
FILENAME = "model.json"
OUTPUTS = ("heatmap", "size", "offset")

# How images become model input. Written into every card and checked by every consumer, so a
# model trained one way is never fed another way.
PREPROCESSING = {
    # fitted into input_size x input_size keeping the aspect ratio, padded with pad_value
    # (kubedetect.io.images.Frame); models of earlier versions say "stretch" (aspect ratio not kept)
    "resize": "letterbox",
    "pad_value": 114,
    "resample": "bilinear-antialiased",  # Pillow's BILINEAR (see kubedetect.io.images)
    "channels": "RGB",
    "pixel_range": [0, 255],  # raw pixel values; the model normalises inside
    "exif_orientation": "applied",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, int8, uint8
    scale: float = 0.0  # quantized tensors: real = (q - zero_point) * scale; 0 for float tensors
    zero_point: int = 0


@dataclass(frozen=True)
class ModelCard:
    kind: str  # "keras" (training export) or "tflite" (a quantization variant)
    variant: str  # "float" for Keras; "float32", "float16", "dynamic" or "int8" for TFLite
    file: str  # the model file, relative to the folder
    sha256: str
    classes: tuple[str, ...]
    input_size: int
    stride: int  # input pixels per output cell
    input: TensorSpec
    outputs: dict[str, TensorSpec]
    preprocessing: dict[str, Any] = field(default_factory=lambda: dict(PREPROCESSING))
    decode: dict[str, Any] = field(
        default_factory=lambda: {"score_threshold": 0.3, "max_detections": 100}
    )
    provenance: dict[str, Any] = field(default_factory=dict)  # training config, metrics, sources

    @property
    def resize(self) -> str:
        """How images are fitted into the input (kubedetect.io.images.RESIZE_MODES)."""
        return self.preprocessing.get("resize", "stretch")

    def to_dict(self) -> dict[str, Any]:
        payload = {"format": FORMAT} | asdict(self)
        payload["classes"] = list(self.classes)
        return payload

    def save(self, folder: str) -> str:
        path = fs.join(folder, FILENAME)
        fs.write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, folder: str) -> ModelCard:
        path = fs.join(folder, FILENAME)
        if not fs.exists(path):
            raise KubedetectError(f"{folder}: no {FILENAME}; is this a kubedetect model folder?")
        try:
            payload = json.loads(fs.read_text(path))
        except ValueError as exc:
            raise KubedetectError(f"{path}: not JSON ({exc})") from None
        if payload.pop("format", None) != FORMAT:
            raise KubedetectError(f"{path}: not a {FORMAT} model card")
        try:
            payload["classes"] = tuple(payload["classes"])
            payload["input"] = TensorSpec(**payload["input"])
            payload["outputs"] = {k: TensorSpec(**v) for k, v in payload["outputs"].items()}
            card = cls(**payload)
        except (KeyError, TypeError) as exc:
            raise KubedetectError(f"{path}: malformed model card ({exc})") from None
        missing = [name for name in OUTPUTS if name not in card.outputs]
        if missing:
            raise KubedetectError(f"{path}: outputs {missing} are not described")
        return card

    def verify(self, folder: str) -> str:
        """The model file's path, once its bytes are checked against the card's sha256."""
        path = fs.join(folder, self.file)
        if not fs.exists(path):
            raise KubedetectError(f"{path}: the model file named by {FILENAME} is missing")
        actual = fs.sha256_file(path)
        if actual != self.sha256:
            raise KubedetectError(
                f"{path}: sha256 {actual[:12]}... does not match {FILENAME} "
                f"({self.sha256[:12]}...): "
                "the file was changed or damaged"
            )
        return path


def preprocessing_for(resize: str) -> dict[str, Any]:
    """The card's preprocessing for a model trained on shards fitted by `resize` (the dataset's
    manifest says which)."""
    if resize == "letterbox":
        return dict(PREPROCESSING)
    return {k: v for k, v in PREPROCESSING.items() if k != "pad_value"} | {"resize": resize}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
