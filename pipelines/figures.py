"""The figure that matters of each step of the kubedetect pipeline, for the console's step line.

Read from what the step left in its folder under the run: `executor_output.json` (its output
parameters and its artifacts' metadata, as the KFP UI shows them) and, for the plan and the
gate, their Markdown reports.
"""

from __future__ import annotations

import json
import os
import re

from kubedetect.console import shown

EPOCH = re.compile(r"\bepoch (\d+)/(\d+)\b")
EPOCHS = re.compile(r"\bfor (\d+) epochs of\b")  # "worker 0: training ... for 8 epochs of 49 steps"


def _step(label: str) -> str:
    return re.sub(r" \d+$", "", label)  # "preprocess shard 2" -> "preprocess shard"


def describe(label: str, root: str) -> str:
    """The step's figure, or "" for a step that has none to tell."""
    figure = FIGURES.get(_step(label))
    return figure(_outputs(root), root) if figure else ""


def task_output(root: str, name: str = "Output"):
    """A task's output parameter, from its folder; None before it finished, or without one."""
    try:
        return _parameter(_outputs(root), name)
    except OSError:
        return None


def training_progress(label: str, line: str) -> tuple[int, int] | None:
    """Epochs done of how many, from the chief's lines: none when training starts ("worker 0:
    training ... for 8 epochs of 49 steps"), then one more with each "worker 0: epoch 3/8"."""
    if _step(label) != "train" or "worker 0" not in line:
        return None
    if found := EPOCH.search(line):
        return int(found.group(1)), int(found.group(2))
    if found := EPOCHS.search(line):
        return 0, int(found.group(1))
    return None


def _outputs(root: str) -> dict:
    with open(os.path.join(root, "executor_output.json")) as f:
        return json.load(f)


def _metadata(outputs: dict, artifact: str) -> dict:
    return outputs["artifacts"][artifact]["artifacts"][0].get("metadata", {})


def _parameter(outputs: dict, name: str):
    return outputs.get("parameterValues", {}).get(name)


def _plan(outputs: dict, root: str) -> str:
    with open(os.path.join(root, "report")) as f:
        report = f.read()
    found = re.search(r"^(\d+) annotated images, classes: (.*)$", report, re.MULTILINE)
    problems = re.search(r"Problems found in the annotations \((\d+)\)", report)
    parts = []
    if found:
        parts.append(f"{found.group(1)} images, {len(found.group(2).split(', '))} classes")
    if problems:
        count = int(problems.group(1))
        parts.append(f"{count or 'no'} problem{'' if count == 1 else 's'} in the annotations")
    shards = len(_parameter(outputs, "Output") or [])
    parts.append(f"{shards} shard{'' if shards == 1 else 's'}")
    return ", ".join(parts)


def _shard(outputs: dict, root: str) -> str:
    return f"{_metadata(outputs, 'shard')['images']} images"


def _merge(outputs: dict, root: str) -> str:
    meta = _metadata(outputs, "dataset")
    return (
        f"{meta['train_images']} training and {meta['val_images']} validation images, "
        f"{len(meta['classes'])} classes"
    )


def _plan_candidates(outputs: dict, root: str) -> str:
    count = len(_parameter(outputs, "Output") or [])
    with open(os.path.join(root, "plan")) as f:  # "The boxes of the best 2 will be fused."
        fused = re.search(r"the best (\d+) will be fused", f.read())
    return f"{count} candidate{'' if count == 1 else 's'}" + (
        f", the best {fused.group(1)} to be fused" if fused else ""
    )


def _train(outputs: dict, root: str) -> str:
    meta = _metadata(outputs, "model")
    if "map50_95" not in meta:
        return "trained"
    return (
        f"val mAP@0.5:0.95 {meta['map50_95']:.3f}, mAP@0.5 {meta['map50']:.3f} "
        f"({meta.get('settings', '')})"
    )


def _select(outputs: dict, root: str) -> str:
    names = _parameter(outputs, "Output") or ""
    meta = _metadata(outputs, "chosen")
    if meta.get("members", 1) > 1:
        return f"{names} fused into one model"
    return f"{names} chosen (val mAP@0.5:0.95 {meta['map50_95']:.3f})"


def _evaluate(outputs: dict, root: str) -> str:
    meta = _metadata(outputs, "metrics")
    return (
        f"mAP@0.5 {meta['map50']:.3f}, mAP@0.5:0.95 {meta['map50_95']:.3f}, "
        f"precision {meta['precision']:.2f}, recall {meta['recall']:.2f}"
    )


def _quantize(outputs: dict, root: str) -> str:
    meta = _metadata(outputs, "metrics")
    variants = [key[: -len("_kb")] for key in meta if key.endswith("_kb") and key != "keras_kb"]
    text = f"{len(variants)} TFLite variants"
    if "int8_kb" in meta:
        drop = _parameter(outputs, "map50_drop")
        text += (
            f"; int8 {meta['int8_kb']:.0f} kB, mAP@0.5 {meta['int8_map50']:.3f} "
            f"({abs(drop):.2f} points {'below' if drop >= 0 else 'above'} float32)"
        )
    return text


def _gate(outputs: dict, root: str) -> str:
    with open(os.path.join(root, "decision")) as f:  # "- pass: int8 mAP@0.5 0.95 >= 0.50"
        checks = [line[2:] for line in f.read().splitlines() if line.startswith("- ")]
    verdict = "deploy" if _parameter(outputs, "Output") else "hold"
    return f"{verdict} ({'; '.join(c.replace('pass: ', '') for c in checks)})"


def _deploy(outputs: dict, root: str) -> str:
    installed = _parameter(outputs, "Output")
    if not installed:
        return "held: the model in service stays"
    try:  # the gate chose the variant: its model card says which
        with open(os.path.join(installed, "model.json")) as f:
            card = json.load(f)
        variant = card.get("variant") or "the"
        members = card.get("provenance", {}).get("members", 1)
    except (OSError, ValueError):
        variant, members = "the", 1
    what = f"ensemble of {members}" if members > 1 else "model"
    return f"{variant} {what} installed in {shown(installed)}"


FIGURES = {
    "plan shards": _plan,
    "preprocess shard": _shard,
    "merge shards": _merge,
    "plan candidates": _plan_candidates,
    "train": _train,
    "select candidates": _select,
    "evaluate": _evaluate,
    "quantize": _quantize,
    "quality gate": _gate,
    "deploy": _deploy,
}
