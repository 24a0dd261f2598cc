"""The shards made by the ParallelFor, merged into one dataset with one report."""

from typing import List  # noqa: UP035 - KFP reads typing.List in signatures

from kfp.dsl import Dataset, Input, Markdown, Output


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
