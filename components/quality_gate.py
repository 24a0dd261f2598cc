"""The quality gate: whether the quantized model may replace the one in service, and which
variant is deployed."""

from typing import NamedTuple

from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output


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
