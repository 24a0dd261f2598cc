"""Post-training quantization: the exported Keras detector to TFLite variants.

Each variant is a folder that `kubedetect serve` and `kubedetect evaluate` take as it is:
`model.tflite`, `model.json` (input dtype with scale and zero point, output quantization,
classes, sha256) and `labels.json`.

- float32: the reference, converted as is.
- float16: weights stored as float16 (half the size), computed in float32.
- dynamic: weights int8, activations float, quantized on the fly.
- int8: weights and activations int8 (per-channel weight ranges), calibrated on images drawn
  from the training shards; int8 input (pixel - 128) and int8 outputs, which the runtime
  dequantizes before the shared decode.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from kubedetect import fs
from kubedetect.labels import ClassMap
from kubedetect.modelcard import OUTPUTS, ModelCard, TensorSpec, sha256_bytes

MODES = ("float32", "float16", "dynamic", "int8")


def representative_images(shards: list[str], count: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Calibration input: `count` training images, shuffled with a fixed seed."""
    from kubedetect.records import parse_example  # noqa: PLC0415

    dataset = (
        tf.data.TFRecordDataset(shards)
        .shuffle(4096, seed=seed, reshuffle_each_iteration=False)
        .map(lambda s: parse_example(s)["image"])
        .take(count)
    )
    for image in dataset.as_numpy_iterator():
        yield image[None].astype(np.float32)


def convert(model, mode: str, calibration: list[np.ndarray] | None = None) -> bytes:
    """One Keras detector to TFLite bytes in the given mode."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif mode == "int8":
        if not calibration:
            raise ValueError("int8 quantization needs calibration images")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([image] for image in calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif mode != "float32":
        raise ValueError(f"unknown mode {mode!r}; choose from {', '.join(MODES)}")
    return converter.convert()


def describe(tflite: bytes) -> tuple[TensorSpec, dict[str, TensorSpec]]:
    """The input and named outputs of a converted model, with their quantization."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    runner = Interpreter(model_content=tflite).get_signature_runner()
    (name, detail), = runner.get_input_details().items()
    scale, zero_point = detail["quantization"]
    spec = TensorSpec(name, np.dtype(detail["dtype"]).name, float(scale), int(zero_point))
    outputs = {}
    for out_name, out in runner.get_output_details().items():
        scale, zero_point = out["quantization"]
        outputs[out_name] = TensorSpec(out_name, np.dtype(out["dtype"]).name, float(scale), int(zero_point))
    missing = [name for name in OUTPUTS if name not in outputs]
    if missing:
        raise ValueError(f"converted model lacks outputs {missing}; has {sorted(outputs)}")
    return spec, outputs


def write_variant(out_dir: str, mode: str, tflite: bytes, source: ModelCard) -> ModelCard:
    """Write `out_dir/<mode>/` with the model, its card and its labels."""
    folder = fs.join(out_dir, mode)
    fs.makedirs(folder)
    fs.write_bytes(fs.join(folder, "model.tflite"), tflite)
    input_spec, outputs = describe(tflite)
    card = ModelCard(
        kind="tflite",
        variant=mode,
        file="model.tflite",
        sha256=sha256_bytes(tflite),
        classes=source.classes,
        input_size=source.input_size,
        stride=source.stride,
        input=input_spec,
        outputs=outputs,
        preprocessing=source.preprocessing,
        decode=source.decode,
        provenance={"source_model_sha256": source.sha256, "quantization": mode} | source.provenance,
    )
    card.save(folder)
    ClassMap(source.classes).save(folder)
    return card


def variant_dir(out_dir: str, mode: str) -> str:
    return os.path.join(out_dir, mode) if not fs.is_uri(out_dir) else fs.join(out_dir, mode)
