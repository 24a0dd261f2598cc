"""Evaluation, quantization and the quality gate: the numbers that decide a deployment."""

from typing import NamedTuple

from kfp.dsl import HTML, Dataset, Input, Markdown, Metrics, Model, Output


def evaluate(
    model: Input[Model],
    dataset: Input[Dataset],
    split: str,
    metrics: Output[Metrics],
    plots: Output[HTML],
):
    """COCO metrics of the exported model on a split ('auto': test where the data has one, else
    val), shown in the KFP UI, with its plots."""
    import tempfile

    from components.html import plots_page
    from kubedetect.config import EvalConfig
    from kubedetect.evaluate import evaluate as run

    folder = tempfile.mkdtemp(prefix="evaluation-")
    result = run(model.path, dataset.path, folder, EvalConfig(split=split), progress=False)
    for key in ("map50", "map50_95", "precision", "recall"):
        metrics.log_metric(key, round(float(result[key]), 4))
    for name, entry in result["per_class"].items():
        if entry["ap50"] is not None:  # None: no such object in the split
            metrics.log_metric(f"ap50_{name}", round(float(entry["ap50"]), 4))
    with open(plots.path, "w") as f:
        f.write(plots_page(f"Evaluation on {result['split']}", result, folder))


def quantize(
    model: Input[Model],
    dataset: Input[Dataset],
    modes: str,
    variants: Output[Model],
    report: Output[Markdown],
    metrics: Output[Metrics],
) -> NamedTuple("Outputs", [("int8_map50", float), ("map50_drop", float)]):  # noqa: UP014
    """Every TFLite variant, each measured (size, latency, mAP) against the float model, on the
    final report's split (test where the data has one, else val): what the gate decides on."""
    from collections import namedtuple

    from kubedetect.config import QuantizeConfig
    from kubedetect.evaluate import resolve_split
    from kubedetect.quantize import quantize_model, report_table
    from kubedetect.quantize import report as measure

    config = QuantizeConfig(
        modes=tuple(modes.split(",")),
        shards=dataset.path,
        report=True,
        split=resolve_split(dataset.path, "auto"),
    )
    quantize_model(model.path, variants.path, config)
    result = measure(model.path, variants.path, config)
    rows = {row["variant"]: row for row in result["variants"]}
    for name, row in rows.items():
        metrics.log_metric(f"{name}_map50", round(float(row["map50"]), 4))
        metrics.log_metric(f"{name}_kb", round(row["size_bytes"] / 1024, 1))
        if row["latency_ms"] is not None:
            metrics.log_metric(f"{name}_latency_ms", round(float(row["latency_ms"]), 3))
    with open(report.path, "w") as f:
        f.write("# Quantization\n\n" + report_table(result) + "\n")
    outputs = namedtuple("Outputs", ["int8_map50", "map50_drop"])
    int8 = rows.get("int8")
    if int8 is None:  # no int8 variant asked for: nothing the gate could pass
        return outputs(0.0, 100.0)
    variants.metadata["int8_map50"] = int8["map50"]
    return outputs(float(int8["map50"]), float(int8["map50_drop_points"]))


def quality_gate(
    variants: Input[Model],
    min_map: float,
    max_map_drop: float,
    serve_variant: str,
    decision: Output[Markdown],
) -> NamedTuple("Outputs", [("Output", bool), ("variant", str)]):  # noqa: UP014
    """Choose the variant to serve and let it through only if it is good enough and
    quantization did not spoil it: the fastest within max_map_drop on the CPU the quantize step
    measured, or serve_variant. ('Output', the name of a lone return value, stays the verdict's
    name, so conditions on it read as before.)"""
    import json
    import os
    from collections import namedtuple

    from kubedetect.quantize import gate

    with open(os.path.join(variants.path, "report.json")) as f:
        result = gate(json.load(f), min_map, max_map_drop, serve_variant)
    with open(decision.path, "w") as f:
        f.write(result.markdown())
    verdict = "deploy" if result.passed else "hold"
    print(f"quality gate: {verdict} {result.variant} ({'; '.join(t for t, _ in result.checks)})")
    return namedtuple("Outputs", ["Output", "variant"])(result.passed, result.variant)
