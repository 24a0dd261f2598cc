"""The candidates: planned from the `candidates` parameter, trained in the pipeline's ParallelFor
(components/train.py, one step and one TFJob each), and the best (or a fusion of the best few)
selected to go on to quantization, with their table and plot for the KFP UI."""

from typing import List  # noqa: UP035 - KFP reads the annotation

from kfp.dsl import HTML, Input, Markdown, Metrics, Model, Output


def plan_candidates(candidates: str, plan: Output[Markdown]) -> List[dict]:  # noqa: UP006
    """What to fan out over: one item per candidate ({"index", "name", "spec"}: the candidate
    as JSON), from the `kubedetect candidates` flags in `candidates` (e.g. "--seeds 0,1,2
    --ensemble-size 2"; "" is one candidate with the training's own settings). Bad flags stop
    the run here, before anything trains."""
    from kubedetect.errors import KubedetectError
    from kubedetect.training.candidates import parse_flags
    from kubedetect.training.candidates import plan as plan_of

    config = parse_flags(candidates)
    if config.parallel:
        raise KubedetectError(
            "candidates: --parallel is for `kubedetect candidates`; in the pipeline, set "
            "--candidate-parallelism when compiling"
        )
    planned = plan_of(config)
    lines = [f"# {len(planned)} candidate(s)", ""]
    lines += [f"- {c.name}: {c.describe()}" for c in planned]
    if config.ensemble_size > 1:
        lines += ["", f"The boxes of the best {config.ensemble_size} will be fused."]
    with open(plan.path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[2:]))
    return [{"index": c.index, "name": c.name, "spec": c.to_json()} for c in planned]


def select_candidates(
    models: Input[List[Model]],  # noqa: UP006
    candidates: str,
    chosen: Output[Model],
    table: Output[Markdown],
    plot: Output[HTML],
    metrics: Output[Metrics],
) -> str:
    """Rank the trained candidates by validation mAP@0.5:0.95 and write the one that goes on
    (the best, or an ensemble of the best `--ensemble-size` weighted by their scores) as
    `chosen`; the candidates' table and plot for the KFP UI. Returns the names chosen."""
    import os
    import tempfile

    from components.html import table_page
    from kubedetect.training.candidates import (
        TABLE_HEADER,
        Candidate,
        Result,
        choose,
        parse_flags,
        table_rows,
    )
    from kubedetect.training.candidates import plot as plot_of
    from kubedetect.training.candidates import table as table_of

    results = [
        Result(
            Candidate.from_json(model.metadata["candidate"]),
            model.path,
            float(model.metadata["map50"]),
            float(model.metadata["map50_95"]),
            float(model.metadata["train_seconds"]),
        )
        for model in models
    ]
    picked = choose(results, parse_flags(candidates), chosen.path)
    names = [r.candidate.name for r in picked]
    chosen.metadata["candidates"] = names
    chosen.metadata["members"] = len(picked)
    chosen.metadata["map50_95"] = picked[0].map50_95  # the best's (a fusion's is measured later)
    for r in results:
        metrics.log_metric(f"{r.candidate.name}_val_map50_95", round(r.map50_95, 4))
        metrics.log_metric(f"{r.candidate.name}_train_seconds", round(r.train_seconds, 1))
    metrics.log_metric("chosen_val_map50_95", round(picked[0].map50_95, 4))
    text = table_of(results, picked)
    with open(table.path, "w") as f:
        f.write("# Candidates\n\n" + text + "\n")
    rows, note = table_rows(results, picked)
    png = plot_of(results, picked, os.path.join(tempfile.mkdtemp(), "candidates.png"))
    with open(plot.path, "w") as f:
        f.write(table_page("Candidates", TABLE_HEADER, rows, note, png))
    print(text)
    return ", ".join(names)
