"""Quantization: the trained model to its TFLite variants, each measured against the float model
(size, latency, mAP), the figures the quality gate reads."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output


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
    from kubedetect.io.modelcard import ModelCard
    from kubedetect.network.quantize import quantize_model, report_table
    from kubedetect.network.quantize import report as measure
    from kubedetect.network.quantize_ensemble import gain_and_cost

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
