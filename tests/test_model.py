"""The detector: its output contract, and that all of it becomes full-int8 TFLite that XNNPACK
runs in one piece."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kubedetect.config import ModelConfig  # noqa: E402
from kubedetect.model import STRIDE, build_detector  # noqa: E402
from kubedetect.quantize import convert  # noqa: E402


@pytest.fixture(scope="module")
def small_model():
    return build_detector(4, 64, ModelConfig(width=4))


def test_outputs_keep_the_contract(small_model):
    """Dict outputs at stride 4: a C-class heatmap, sizes and offsets, all in [0, 1]."""
    pixels = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3)).astype(np.float32)
    out = small_model(pixels, training=False)
    assert set(out) == {"heatmap", "size", "offset"}
    assert out["heatmap"].shape == (2, 64 // STRIDE, 64 // STRIDE, 4)
    assert out["size"].shape == out["offset"].shape == (2, 16, 16, 2)
    for value in out.values():
        assert value.dtype == tf.float32
        assert float(tf.reduce_min(value)) >= 0.0 and float(tf.reduce_max(value)) <= 1.0
    # A fresh heatmap starts near the focal-loss prior, not at 0.5.
    assert float(tf.reduce_mean(out["heatmap"])) < 0.05


def test_input_size_and_width_are_configurable():
    model = build_detector(2, 96, ModelConfig(width=6))
    assert model.input_shape == (None, 96, 96, 3)
    assert model.output["heatmap"].shape[1:] == (24, 24, 2)
    assert build_detector(2, 96, ModelConfig(width=12)).count_params() > 2 * model.count_params()
    with pytest.raises(ValueError, match="multiple of 32"):
        build_detector(2, 100)


def test_mobilenetv2_backbone_builds_offline():
    """The optional backbone, without pretrained weights (no download here)."""
    model = build_detector(3, 96, ModelConfig(backbone="mobilenetv2", width=8, weights=None))
    assert model.output["heatmap"].shape[1:] == (24, 24, 3)


def test_full_int8_conversion_runs_in_one_xnnpack_partition(small_model):
    """Every op converts to int8 (no float fallback: the converter is told builtins-int8 only),
    and XNNPACK takes the whole graph: one delegate node from the input to all three outputs."""
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(1)
    calibration = [rng.integers(0, 256, (1, 64, 64, 3)).astype(np.float32) for _ in range(8)]
    tflite = convert(small_model, "int8", calibration)
    interpreter = Interpreter(model_content=tflite, num_threads=1)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()  # read-only inspection of the delegated graph
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    assert len(delegates) == 1
    (graph_input,) = interpreter.get_input_details()
    assert graph_input["dtype"] == np.int8
    assert graph_input["quantization"] == (1.0, -128)  # pixel - 128: no QUANTIZE op needed
    outputs = {d["index"] for d in interpreter.get_output_details()}
    assert graph_input["index"] in set(delegates[0]["inputs"])
    assert outputs <= set(delegates[0]["outputs"])
    assert {op["op_name"] for op in ops} <= {
        "DELEGATE",
        "CONV_2D",
        "ADD",
        "MUL",
        "RESIZE_BILINEAR",
        "LOGISTIC",
    }


def test_float32_tflite_computes_what_keras_computes_in_inference_mode():
    """The converter traces inference mode (BatchNorm with running statistics): the TFLite
    float32 model's outputs equal Keras' model(x, training=False)."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    model = build_detector(3, 64, ModelConfig(width=4))
    # Running statistics that differ from any batch's, so a training-mode trace would show.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, 0.3, np.float32))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 2.0, np.float32))
    pixels = np.random.default_rng(2).integers(0, 256, (1, 64, 64, 3)).astype(np.float32)
    expected = {k: v.numpy() for k, v in model(pixels, training=False).items()}
    runner = Interpreter(model_content=convert(model, "float32")).get_signature_runner()
    got = runner(image=pixels)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=2e-5)
