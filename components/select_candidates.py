"""The best candidate, or a fusion of the best few, selected to go on to quantization, with their
table and plot for the KFP UI."""

from typing import List  # noqa: UP035 - KFP reads the annotation

from kfp.dsl import HTML, Input, Markdown, Metrics, Model, Output


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
