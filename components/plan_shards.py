"""The fan-out of preprocessing: the data folder fingerprinted and cut into shards, one
`preprocess_shard` step each.

KFP serialises each component function's source into the step, so it imports what it uses inside
its body; the trainer image (or, locally, the project's virtualenv) provides kubedetect.

Caching: Kubeflow Pipelines reuses a step's outputs when its inputs are the same, and `data_uri`
is only a path. `plan_shards` (never cached) fingerprints the folder on every run
(kubedetect.data.fingerprint) and every `preprocess_shard` takes the fingerprint as an input, so
the shards, and everything after them, are made again exactly when the data has changed."""

from typing import List  # noqa: UP035 - KFP reads typing.List in signatures

from kfp.dsl import Markdown, Output


def plan_shards(
    data_uri: str,
    num_shards: int,
    classes: str,
    val_fraction: float,
    report: Output[Markdown],
) -> List[dict]:  # noqa: UP006
    """Read every annotation (no image yet), fail early on unusable input, show what was found,
    take the data folder's fingerprint, and return what to fan out over: one item per shard,
    its index and the fingerprint. (Inside the loop, so that each shard step gets it as an
    input: kfp.local hands a ParallelFor body no other task's outputs.)"""
    from kubedetect.config import DataConfig
    from kubedetect.data.fingerprint import fingerprint
    from kubedetect.data.report import KINDS
    from kubedetect.data.scan import scan

    data = DataConfig(
        classes=tuple(classes.split(",")) if classes else None, val_fraction=val_fraction
    )
    dataset = scan(data_uri, data)
    taken = fingerprint(data_uri)
    splits = {}
    for record in dataset.records:
        splits[record.split] = splits.get(record.split, 0) + 1
    lines = [
        f"# Data: {data_uri}",
        "",
        f"{len(dataset.records)} annotated images, classes: {', '.join(dataset.classes.names)}",
        "",
        f"Fingerprint `{taken.digest}` ({taken.files} files, {taken.bytes} bytes): the data "
        "steps run again whenever it changes.",
        "",
        "| split | images |",
        "|---|---|",
    ]
    lines += [f"| {split} | {count} |" for split, count in sorted(splits.items())]
    lines += ["", f"## Problems found in the annotations ({len(dataset.problems)})", ""]
    lines += [f"- `{p.file}`: **{p.kind}**: {p.detail}" for p in dataset.problems[:200]]
    lines += ["", "Problem kinds: " + "; ".join(f"{k}: {v}" for k, v in KINDS.items())]
    with open(report.path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"data fingerprint {taken.digest} ({taken.files} files under {data_uri})")
    return [{"shard_index": i, "data_fingerprint": taken.digest} for i in range(num_shards)]
