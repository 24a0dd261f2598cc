"""The candidates to train, planned from the pipeline's `candidates` parameter: what the
ParallelFor fans out over (components/train.py trains each, one step and one TFJob)."""

from typing import List  # noqa: UP035 - KFP reads the annotation

from kfp.dsl import Markdown, Output


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
