"""Evaluation: a model against one split of the shards, its metrics and plots for the KFP UI."""

from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output


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
