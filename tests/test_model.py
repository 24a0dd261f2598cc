"""The detector: its output contract, and that all of it becomes full-int8 TFLite that XNNPACK
runs in one piece."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from kubedetect.config import ModelConfig  # noqa: E402
from kubedetect.network.architecture import STRIDE, build_detector  # noqa: E402
from kubedetect.network.quantize import convert  # noqa: E402


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


@pytest.fixture(scope="module")
def large_model():
    return build_detector(4, 64, ModelConfig(model_size="large"))


@pytest.mark.parametrize("size", ["tiny", "large"])
def test_full_int8_conversion_runs_in_one_xnnpack_partition(request, size):
    """Every op converts to int8 (no float fallback: the converter is told builtins-int8 only),
    and XNNPACK takes the whole graph: one delegate node from the input to all three outputs."""
    from ai_edge_litert.interpreter import Interpreter

    model = request.getfixturevalue({"tiny": "small_model", "large": "large_model"}[size])
    rng = np.random.default_rng(1)
    calibration = [rng.integers(0, 256, (1, 64, 64, 3)).astype(np.float32) for _ in range(8)]
    tflite = convert(model, "int8", calibration)
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


def test_the_large_model_is_wider_and_deeper_with_the_same_outputs(small_model, large_model):
    """--model-size large: the same three maps at stride 4, from a backbone and neck about 15x
    the tiny one's parameters and 13x its work (parameters and FLOPs at 256 px are in
    docs/BENCHMARKS.md)."""
    from kubedetect.network.architecture import SIZES, count_flops

    tiny = build_detector(4, 256, ModelConfig())
    large = build_detector(4, 256, ModelConfig(model_size="large"))
    assert 2_800_000 < large.count_params() < 3_300_000 and tiny.count_params() < 220_000
    assert count_flops(large) > 10 * count_flops(tiny)
    names = {layer.name for layer in large.layers}
    assert {"c5_block2_a", "p2_conv2"} <= names  # deeper: two blocks a stage, two convs a level
    assert large.get_layer("stem").filters == SIZES["large"].width == 3 * SIZES["tiny"].width
    pixels = np.random.default_rng(3).integers(0, 256, (1, 64, 64, 3)).astype(np.float32)
    ours, theirs = small_model(pixels), large_model(pixels)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
    with pytest.raises(Exception, match="--model-size huge: unknown"):
        build_detector(4, 64, ModelConfig(model_size="huge"))


def test_flops_are_counted_per_convolution():
    """2 x output cells x output channels x kernel area x input channels for a convolution;
    x kernel area only for a depthwise one."""
    import keras

    from kubedetect.network.architecture import count_flops

    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(image)  # 16 x 16 x 8 out
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 16 x 16 x 8
    x = keras.layers.Conv2D(4, 1)(x)  # 16 x 16 x 4
    expected = 2 * (16 * 16 * 8 * 9 * 3 + 16 * 16 * 8 * 9 + 16 * 16 * 4 * 8)
    assert count_flops(keras.Model(image, x)) == expected


def test_the_large_model_decodes_through_the_shared_path(large_model, tmp_path):
    """Its int8 TFLite folder runs on the one runtime and the one decode, as serving runs it."""
    from kubedetect.inference.decode import decode_batch
    from kubedetect.inference.runtime import TFLiteDetector
    from kubedetect.io.modelcard import ModelCard, TensorSpec
    from kubedetect.network.quantize import write_variant

    rng = np.random.default_rng(4)
    calibration = [rng.integers(0, 256, (1, 64, 64, 3)).astype(np.float32) for _ in range(4)]
    source = ModelCard(
        kind="keras", variant="float", file="model.keras", sha256="0" * 64,
        classes=("a", "b", "c", "d"), input_size=64, stride=STRIDE,
        input=TensorSpec("image", "float32"),
        outputs={n: TensorSpec(n, "float32") for n in ("heatmap", "size", "offset")},
    )  # fmt: skip
    write_variant(str(tmp_path), "int8", convert(large_model, "int8", calibration), source)
    detector = TFLiteDetector(str(tmp_path / "int8"))
    pixels = rng.integers(0, 256, (2, 64, 64, 3)).astype(np.uint8)
    raw = detector.raw_outputs(pixels)
    assert raw["heatmap"].shape == (2, 16, 16, 4) and raw["size"].shape == (2, 16, 16, 2)
    found = detector.predict(pixels, score_threshold=0.0, max_detections=5)
    # An untrained model's int8 heatmap can be flat (every cell one quantization step), where
    # the shared decode keeps one peak per class: what it returns is exactly the decode of the
    # dequantized maps, at most max_detections of them, inside the image.
    expected = decode_batch(raw, score_threshold=0.0, max_detections=5)
    assert len(found) == 2
    for detections, reference in zip(found, expected, strict=True):
        assert 1 <= len(detections) <= 5
        np.testing.assert_array_equal(detections.boxes, reference.boxes)
        np.testing.assert_array_equal(detections.scores, reference.scores)
        assert np.all((detections.boxes >= 0) & (detections.boxes <= 1))


def test_gpu_workers_train_the_large_model_unless_told_otherwise(capsys):
    """`kubedetect train --emit-tfjob`: with GPUs per worker the workers get --model-size large;
    a size given on the command line (even tiny, the default elsewhere) is kept; without GPUs
    nothing is added."""
    import yaml

    from cli.main import main

    def worker_args(*flags: str) -> list[str]:
        assert main(["train", "gs://b/shards", "gs://b/model", "--emit-tfjob", *flags]) == 0
        job = yaml.safe_load(capsys.readouterr().out)
        return job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]

    gpu = ["--gpus-per-worker", "1", "--image", "trainer:1"]
    assert worker_args(*gpu)[2:4] == ["--model-size", "large"]
    assert worker_args(*gpu, "--model-size", "tiny").count("--model-size") == 1
    assert "tiny" in worker_args(*gpu, "--model-size", "tiny")
    assert "--model-size" not in worker_args()
