"""`kubedetect quantize`: four TFLite variants, each a folder that serving and evaluation take
as it is, and the --report that measures them all with the one evaluator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kubedetect.inference.runtime import TFLiteDetector
from kubedetect.io.labels import ClassMap
from kubedetect.io.modelcard import ModelCard

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
    from kubedetect.evaluation.evaluate import load_split

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
    from cli.main import main

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


# ----------------------------------------------------------------------------------------------
# Which variant wins on this CPU, and the gate's choice (on the fixture's real --report run).
# ----------------------------------------------------------------------------------------------


def test_the_report_names_the_cpu_and_says_per_variant_whether_it_beats_float32(quantized_models):
    """Every latency comes with the CPU it was measured on (model name and the SIMD extensions
    XNNPACK picks its kernels by, as /proc/cpuinfo lists them), and each variant is marked
    faster or slower than float32 on it."""
    from kubedetect.cpuinfo import SIMD_FLAGS, cpu_line

    report = json.loads((quantized_models / "report.json").read_text())
    with open("/proc/cpuinfo") as f:
        first = f.read().split("\n\n")[0]
    flags = next(line for line in first.splitlines() if line.startswith(("flags", "Features")))
    present = set(flags.split(":", 1)[1].split())
    assert report["cpu"]["flags"] == [f for f in SIMD_FLAGS if f in present]
    if "model name" in first:
        model = next(line for line in first.splitlines() if line.startswith("model name"))
        assert report["cpu"]["model"] == model.split(":", 1)[1].strip()
    assert f"on {cpu_line(report['cpu'])}," in (quantized_models / "report.md").read_text()
    rows = {r["variant"]: r for r in report["variants"]}
    assert rows["float32"]["faster_on_this_cpu"] is None and rows["keras"]["latency_ms"] is None
    for mode in ("float16", "dynamic", "int8"):
        assert rows[mode]["faster_on_this_cpu"] == (
            rows[mode]["latency_ms"] < rows["float32"]["latency_ms"]
        )
        verdict = "faster than float32" if rows[mode]["faster_on_this_cpu"] else "**slower** than"
        table = (quantized_models / "report.md").read_text().splitlines()
        assert any(line.startswith(f"| {mode} |") and verdict in line for line in table)


def test_the_gate_serves_the_fastest_variant_within_the_accuracy_budget(quantized_models):
    from kubedetect.network.quantize import EQUALLY_FAST, gate

    report = json.loads((quantized_models / "report.json").read_text())
    timed = [r for r in report["variants"] if r["latency_ms"] is not None]
    decision = gate(report, min_map=0.0, max_map_drop=100.0)
    chosen = next(r for r in timed if r["variant"] == decision.variant)
    fastest = min(r["latency_ms"] for r in timed)
    assert decision.passed and chosen["latency_ms"] <= fastest * (1 + EQUALLY_FAST)
    close = [r for r in timed if r["latency_ms"] <= fastest * (1 + EQUALLY_FAST)]
    assert all(r["size_bytes"] >= chosen["size_bytes"] for r in close)
    assert report["fastest_within_budget"]["variant"] == gate(report, 0.0, 2.0).variant
    markdown = decision.markdown()
    assert markdown.startswith("# Quality gate: deploy") and f"**{decision.variant}**" in markdown
    assert report["cpu"]["model"] in markdown

    # A budget the chosen variant misses: the next fastest within it, or nothing at all.
    tighter = chosen["map50_drop_points"] - 1e-6
    again = gate(report, min_map=0.0, max_map_drop=tighter)
    within = [r for r in timed if r["map50_drop_points"] <= tighter]
    assert again.variant != decision.variant and (again.variant == "") == (not within)
    if not within:
        assert not again.passed and "FAIL: a variant within" in again.markdown()

    # Good enough is still required of the fastest.
    held = gate(report, min_map=chosen["map50"] + 0.01, max_map_drop=100.0)
    assert not held.passed and held.variant == decision.variant
    assert f"FAIL: {decision.variant} mAP@0.5" in held.markdown()


def test_serve_variant_overrides_the_choice_and_the_gate_still_checks_it(quantized_models):
    from kubedetect.errors import KubedetectError
    from kubedetect.network.quantize import gate

    report = json.loads((quantized_models / "report.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    for mode in MODES:
        decision = gate(report, 0.0, 2.0, serve_variant=mode)
        assert decision.variant == mode and "as serve_variant asks" in decision.markdown()
        assert decision.passed == (rows[mode]["map50_drop_points"] <= 2.0)
    with pytest.raises(KubedetectError, match="serve_variant 'int4': not among"):
        gate(report, 0.0, 2.0, serve_variant="int4")


def test_cpu_flags_are_read_on_arm_too():
    """An Arm server's /proc/cpuinfo (Features, no model name): the dot-product extensions that
    make int8 fast there are found."""
    from kubedetect.cpuinfo import describe_cpu

    arm = (
        "processor\t: 0\nBogoMIPS\t: 243.75\n"
        "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
        "asimdrdm lrcpc dcpop asimddp ssbs i8mm bf16\nCPU implementer\t: 0x41\n\n"
        "processor\t: 1\nFeatures\t: fp asimd\n"
    )
    cpu = describe_cpu(arm)
    assert cpu["flags"] == ["asimd", "asimdhp", "asimddp", "i8mm", "bf16"]
    assert cpu["model"]  # the architecture, where the CPU names no model
