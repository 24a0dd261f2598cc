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
    from kubedetect.evaluation.evaluate import evaluate as run

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
    from kubedetect.evaluation.evaluate import resolve_split
    from kubedetect.inference.ensemble import gain_and_cost
    from kubedetect.io.modelcard import ModelCard
    from kubedetect.network.quantize import quantize_model, report_table
    from kubedetect.network.quantize import report as measure

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
    text = "# Quantization\n\n" + report_table(result) + "\n"
    if ModelCard.load(model.path).kind == "ensemble":  # what fusing buys, and what it costs
        fusion = gain_and_cost(variants.path, config, shards=dataset.path)
        for row in fusion["rows"]:
            name = row["variant"]
            metrics.log_metric(f"{name}_fusion_gain_points", round(row["gain_map50_95_points"], 2))
            metrics.log_metric(f"{name}_fusion_latency_ratio", round(row["latency_ratio"], 2))
        text += "\n## The fusion against its best member alone\n\n" + fusion["table"] + "\n"
    with open(report.path, "w") as f:
        f.write(text)
    outputs = namedtuple("Outputs", ["int8_map50", "map50_drop"])
    int8 = rows.get("int8")
    if int8 is None:  # no int8 variant asked for: nothing the gate could pass
        return outputs(0.0, 100.0)
    variants.metadata["int8_map50"] = int8["map50"]
    return outputs(float(int8["map50"]), float(int8["map50_drop_points"]))


def quality_gate(
    variants: Input[Model],
    dataset: Input[Dataset],
    min_map: float,
    max_map_drop: float,
    serve_variant: str,
    champion_margin: float,
    serving_root: str,
    decision: Output[Markdown],
    metrics: Output[Metrics],
) -> NamedTuple("Outputs", [("Output", bool), ("variant", str), ("summary", str)]):  # noqa: UP014
    """Choose the variant to serve and let it through only if it is good enough, quantization
    did not spoil it, and it is not worse than the model in service: the fastest within
    max_map_drop on the CPU the quantize step measured, or serve_variant; at least min_map
    mAP@0.5; and at most champion_margin points of mAP@0.5:0.95 below the model in service
    (the registry at `serving_root` knows it; "" compares with none) on the same test split.
    The decision and both scores go to the run's metrics. ('Output', the name of a lone return
    value, stays the verdict's name, so conditions on it read as before.)"""
    import json
    import os
    from collections import namedtuple

    from kubedetect.evaluation.champion import compare
    from kubedetect.inference.registry import in_service
    from kubedetect.network.quantize import gate

    with open(os.path.join(variants.path, "report.json")) as f:
        result = gate(json.load(f), min_map, max_map_drop, serve_variant)
    if result.variant:
        champion = in_service(serving_root) if serving_root else None
        challenger = os.path.join(variants.path, result.variant)
        comparison = compare(challenger, champion, dataset.path, champion_margin)
        result = result.with_check(*comparison.check())
        for key, value in comparison.metrics().items():
            metrics.log_metric(key, round(float(value), 4))
    metrics.log_metric("deploy", 1.0 if result.passed else 0.0)
    with open(decision.path, "w") as f:
        f.write(result.markdown())
    print(f"quality gate: {result.summary()}")
    outputs = namedtuple("Outputs", ["Output", "variant", "summary"])
    return outputs(result.passed, result.variant, result.summary())
