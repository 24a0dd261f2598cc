"""Any model folder (or .tflite file) as one kind of object: images in, detections out.

Evaluation and the quantization report take a Keras export and a TFLite variant alike. Both
feed raw uint8 pixels, and both hand float output maps to the one shared decode
(`kubedetect.inference.decode`), so a difference in their metrics is a difference in the models.
TFLite models run on `kubedetect.inference.runtime.TFLiteDetector` (LiteRT), as in serving.
"""

from __future__ import annotations

import os

import numpy as np

from kubedetect.errors import KubedetectError
from kubedetect.inference.runtime import Detector, TFLiteDetector
from kubedetect.io.modelcard import ModelCard


class KerasDetector(Detector):
    """The training export (model.keras), run by TensorFlow in inference mode."""

    def __init__(self, model_dir: str, *, verify: bool = True):
        import keras  # noqa: PLC0415 - TensorFlow only where a Keras model runs

        self.model_dir = model_dir
        self.card = ModelCard.load(model_dir)
        if self.card.kind != "keras":
            raise KubedetectError(f"{model_dir}: holds a {self.card.kind} model, not a Keras one")
        path = self.card.verify(model_dir) if verify else os.path.join(model_dir, self.card.file)
        self.model = keras.saving.load_model(path, compile=False)
        self.input_size = self.card.input_size
        self.classes = self.card.classes
        self._forward = forward_function(self.model)

    def raw_outputs(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return {
            k: v.numpy() for k, v in self._forward(np.asarray(pixels, dtype=np.float32)).items()
        }


def forward_function(model):
    """The model's inference pass as a compiled function (BatchNorm in inference mode: a Keras 3
    functional model called without training=False may run it in training mode)."""
    import tensorflow as tf  # noqa: PLC0415

    @tf.function(reduce_retracing=True)
    def forward(pixels):
        return model(pixels, training=False)

    return forward


def load_detector(path: str, *, num_threads: int = 1, verify: bool = True):
    """A KerasDetector, a TFLiteDetector or an Ensemble of either for a model folder (or a
    .tflite file in one)."""
    if os.path.isfile(path):
        folder, name = os.path.split(os.path.abspath(path))
        card = ModelCard.load(folder)
        if card.file != name:
            raise KubedetectError(
                f"{path}: its folder's model.json describes {card.file}, not {name}; "
                "pass the folder of the variant"
            )
    elif os.path.isdir(path):
        folder, card = path, ModelCard.load(path)
    else:
        raise KubedetectError(f"{path}: no such model folder or file")
    if card.kind == "keras":
        return KerasDetector(folder, verify=verify)
    if card.kind == "tflite":
        return TFLiteDetector(folder, num_threads=num_threads, verify=verify)
    if card.kind == "ensemble":
        from kubedetect.inference.ensemble import Ensemble  # noqa: PLC0415

        return Ensemble(folder, num_threads=num_threads, verify=verify)
    raise KubedetectError(f"{folder}: unknown model kind {card.kind!r} in model.json")
