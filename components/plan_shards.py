"""Data components: plan the fan-out, preprocess one shard, merge the shards.

KFP serialises each component function's source into the step, so each one imports what it
uses inside its body; the trainer image (or, locally, the project's virtualenv) provides the
kubedetect package they import.

Caching: Kubeflow Pipelines reuses a step's outputs when its inputs are the same, and `data_uri`
is only a path. `plan_shards` (never cached) fingerprints the folder on every run
(kubedetect.data.fingerprint) and every `preprocess_shard` takes the fingerprint as an input, so
the shards, and everything after them, are made again exactly when the data has changed.
"""

from typing import List  # noqa: UP035 - KFP reads typing.List in signatures

from kfp.dsl import Dataset, Input, Markdown, Output


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


def preprocess_shard(
    data_uri: str,
    shard_index: int,
    num_shards: int,
    image_size: int,
    classes: str,
    val_fraction: float,
    data_fingerprint: str,
    shard: Output[Dataset],
):
    """Decode, check, resize and write one shard of every split.

    `data_fingerprint` is not read here: it is part of the step's cache key, so that a changed
    folder is never answered with the shards of its earlier contents."""
    from kubedetect.config import DataConfig, PreprocessConfig
    from kubedetect.data.shards import preprocess

    config = PreprocessConfig(image_size=image_size, num_shards=num_shards, shard_index=shard_index)
    data = DataConfig(
        classes=tuple(classes.split(",")) if classes else None, val_fraction=val_fraction
    )
    part = preprocess(data_uri, shard.path, config, data)
    shard.metadata["shard_index"] = shard_index
    shard.metadata["images"] = len(part["images"])
    shard.metadata["data_fingerprint"] = data_fingerprint


def merge_shards(shards: Input[List[Dataset]], dataset: Output[Dataset], report: Output[Markdown]):  # noqa: UP006
    """Gather the shards into one dataset and write its manifest and problem report."""
    import os
    import shutil

    from kubedetect.data.shards import merge_shards as merge
    from kubedetect.data.shards import report_of

    os.makedirs(dataset.path, exist_ok=True)
    for shard in shards:
        for name in os.listdir(shard.path):
            shutil.copy2(os.path.join(shard.path, name), os.path.join(dataset.path, name))
    manifest = merge(dataset.path)
    summary = report_of(manifest)
    for split, entry in manifest["splits"].items():
        dataset.metadata[f"{split}_images"] = entry["images"]
    dataset.metadata["classes"] = manifest["classes"]
    fingerprints = {shard.metadata.get("data_fingerprint") for shard in shards}
    if len(fingerprints) == 1:
        dataset.metadata["data_fingerprint"] = fingerprints.pop()
    with open(report.path, "w") as f:
        f.write("# Dataset\n\n```\n" + summary.summary() + "\n```\n")
        f.write("\n## Problems\n\n")
        f.write(
            "\n".join(f"- `{p.file}`: **{p.kind}**: {p.detail}" for p in summary.problems) or "none"
        )
        f.write("\n")
