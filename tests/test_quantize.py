"""`kubedetect quantize`: four TFLite variants, each a folder that serving and evaluation take
as it is, and the --report that measures them all with the one evaluator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kubedetect.labels import ClassMap
from kubedetect.modelcard import ModelCard
from kubedetect.runtime import TFLiteDetector

MODES = ("float32", "float16", "dynamic", "int8")


def test_every_variant_is_a_self_describing_folder(quantized_models, trained_model):
    source = ModelCard.load(str(trained_model))
    for mode in MODES:
        folder = quantized_models / mode
        card = ModelCard.load(str(folder))
        assert card.kind == "tflite" and card.variant == mode and card.file == "model.tflite"
        card.verify(str(folder))  # sha256 of the file matches
        assert card.classes == source.classes == ClassMap.load(str(folder)).names
        assert card.input_size == source.input_size and card.stride == source.stride
        assert card.provenance["source_model_sha256"] == source.sha256
        assert card.provenance["quantization"] == mode
        assert set(card.outputs) == {"heatmap", "size", "offset"}
    int8 = ModelCard.load(str(quantized_models / "int8"))
    assert int8.input.dtype == "int8" and int8.input.scale == 1.0 and int8.input.zero_point == -128
    assert all(spec.dtype == "int8" and spec.scale > 0 for spec in int8.outputs.values())
    assert ModelCard.load(str(quantized_models / "float32")).input.dtype == "float32"


def test_every_variant_runs_on_the_runtime_and_agrees_with_float32(
    quantized_models, trained_shards
):
    from kubedetect.evaluate import load_split

    images = load_split(str(trained_shards), "val", max_images=4).images
    reference = TFLiteDetector(str(quantized_models / "float32")).raw_outputs(images)
    for mode in MODES:
        outputs = TFLiteDetector(str(quantized_models / mode), num_threads=2).raw_outputs(images)
        for name, value in outputs.items():
            assert value.dtype == np.float32 and value.shape == reference[name].shape
        error = np.abs(outputs["heatmap"] - reference["heatmap"]).max()
        assert error < {"float32": 1e-6, "float16": 0.02, "dynamic": 0.15, "int8": 0.15}[mode], mode


def test_sizes_shrink_with_quantization(quantized_models):
    size = {m: (quantized_models / m / "model.tflite").stat().st_size for m in MODES}
    assert (
        size["float16"] < size["float32"]
        and size["int8"] < size["float32"]
        and size["dynamic"] < size["float32"]
    )


def test_a_changed_model_file_is_refused(quantized_models, tmp_path):
    import shutil

    from kubedetect.errors import KubedetectError

    copy = tmp_path / "int8"
    shutil.copytree(quantized_models / "int8", copy)
    data = bytearray((copy / "model.tflite").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(KubedetectError, match="sha256"):
        TFLiteDetector(str(copy))


def test_unknown_mode_and_non_keras_input_are_clear_errors(
    trained_model, quantized_models, tmp_path, capsys
):
    from kubedetect.cli import main

    assert main(["quantize", str(trained_model), str(tmp_path / "x"), "--mode", "int4"]) == 1
    assert "int4" in capsys.readouterr().err
    assert (
        main(["quantize", str(quantized_models / "int8"), str(tmp_path / "y"), "--mode", "float32"])
        == 1
    )
    assert "kind keras" in capsys.readouterr().err


def test_report_measures_every_variant(quantized_models):
    """--report (the fixture ran `kubedetect quantize --report`): size, latency, mAP@0.5 and
    @0.5:0.95 and the drop against float32, for the Keras export and each variant, as
    report.json and a markdown table."""
    report = json.loads((quantized_models / "report.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    assert set(rows) == {"keras", *MODES} and report["reference"] == "float32"
    assert rows["float32"]["map50_drop_points"] == 0.0 and rows["float32"]["size_ratio"] == 1.0
    for mode in MODES:
        assert (
            rows[mode]["latency_ms"] > 0 and 0 < rows[mode]["map50_95"] <= rows[mode]["map50"] <= 1
        )
        assert rows[mode]["size_bytes"] == (quantized_models / mode / "model.tflite").stat().st_size
    assert rows["int8"]["size_ratio"] < 1.0
    # float32 TFLite is the Keras model, converted: the same mAP.
    assert rows["float32"]["map50"] == pytest.approx(rows["keras"]["map50"], abs=0.005)
    table = (quantized_models / "report.md").read_text()
    assert table.startswith("| variant |")
    assert all(f"| {mode} |" in table for mode in MODES)


def test_int8_input_is_each_pixel_quantized_by_the_cards_scale_and_zero_point(quantized_models):
    """Every uint8 pixel value reaches the int8 model as round(pixel / scale) + zero_point."""
    runtime = TFLiteDetector(str(quantized_models / "int8"))
    spec = runtime.card.input
    assert (spec.dtype, spec.scale, spec.zero_point) == ("int8", 1.0, -128)
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    expected = np.clip(np.round(pixels / spec.scale) + spec.zero_point, -128, 127)
    quantized = runtime.quantize_input(pixels)
    assert quantized.dtype == np.int8
    np.testing.assert_array_equal(quantized, expected.astype(np.int8))
