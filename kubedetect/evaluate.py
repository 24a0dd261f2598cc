"""`kubedetect evaluate MODEL SHARDS_DIR`: a model against one split of the shards.

MODEL is a training export (Keras) or a TFLite variant (its folder or its .tflite file); either
runs through `kubedetect.detectors` and the shared decode. The split's images are the ones
preprocessing stored (already at the model's input size), so every model is measured on
exactly the same pixels. Writes DIR/metrics.json and, unless told not to, the plots.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from kubedetect import fs
from kubedetect.config import EvalConfig, to_dict
from kubedetect.decode import Detections
from kubedetect.errors import KubedetectError
from kubedetect.metrics import GroundTruth, confusion_matrix
from kubedetect.metrics import evaluate as coco_evaluate
from kubedetect.resources import available_cores

MAP_SCORE_FLOOR = 0.001  # mAP takes every detection above this (COCO keeps the top 100 per image)


@dataclass
class EvalSet:
    """One split in memory: the stored pixels and the true objects."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    truths: list[GroundTruth]
    source_ids: list[str]
    classes: tuple[str, ...]

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])


def load_split(shards_dir: str, split: str = "val", max_images: int = 0) -> EvalSet:
    import tensorflow as tf  # noqa: PLC0415

    from kubedetect.preprocess import load_manifest, shard_paths  # noqa: PLC0415
    from kubedetect.records import parse_example  # noqa: PLC0415

    manifest = load_manifest(shards_dir)
    files = shard_paths(shards_dir, split)
    dataset = tf.data.TFRecordDataset(files).map(parse_example)
    if max_images:
        dataset = dataset.take(max_images)
    images, truths, ids = [], [], []
    for example in dataset.as_numpy_iterator():
        images.append(example["image"])
        height, width = (int(v) for v in example["original_size"])
        truths.append(
            GroundTruth(
                boxes=example["boxes"].reshape(-1, 4),
                class_ids=example["classes"].astype(np.int64),
                difficult=example["difficult"].astype(bool),
                width=width,
                height=height,
            )
        )
        ids.append(example["source_id"].decode())
    if not images:
        raise KubedetectError(f"{shards_dir}: the '{split}' split holds no images")
    return EvalSet(np.stack(images), truths, ids, tuple(manifest["classes"]))


def predict_all(
    predict, images: np.ndarray, *, batch_size: int, max_detections: int, progress: bool = False
) -> list[Detections]:
    """Detections for every image, in batches; `predict` is a detector's predict method."""
    found: list[Detections] = []
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc="predict", unit="batch", disable=not progress, leave=False):
        found += predict(
            images[start : start + batch_size],
            score_threshold=MAP_SCORE_FLOOR,
            max_detections=max_detections,
        )
    return found


def evaluate_detections(
    data: EvalSet,
    found: list[Detections],
    *,
    score_threshold: float,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
) -> dict:
    metrics = coco_evaluate(
        data.truths,
        found,
        data.classes,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
        max_detections=max_detections,
    )
    metrics["confusion_matrix"] = {
        "labels": [*data.classes, "background"],
        "counts": confusion_matrix(
            data.truths,
            found,
            len(data.classes),
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
        ).tolist(),
    }
    return metrics


def evaluate(
    model_path: str,
    shards_dir: str,
    out_dir: str | None = None,
    config: EvalConfig | None = None,
    *,
    progress: bool = True,
    data: EvalSet | None = None,
) -> dict:
    """Evaluate a model on a split; writes out_dir/metrics.json (and plots) if out_dir is given."""
    config = config or EvalConfig()
    from kubedetect.detectors import load_detector  # noqa: PLC0415

    threads = config.threads or available_cores()
    detector = load_detector(model_path, num_threads=threads)
    data = data or load_split(shards_dir, config.split, config.max_images)
    if tuple(detector.classes) != data.classes:
        raise KubedetectError(
            f"{model_path} knows classes {list(detector.classes)} but {shards_dir} has "
            f"{list(data.classes)}: evaluate a model on the data it was trained for"
        )
    if detector.input_size != data.image_size:
        raise KubedetectError(
            f"{model_path} takes {detector.input_size} px images but {shards_dir} stores "
            f"{data.image_size} px ones: preprocess with --image-size {detector.input_size}"
        )
    threshold = (
        detector.card.decode["score_threshold"]
        if config.score_threshold is None
        else config.score_threshold
    )
    found = predict_all(
        detector.predict,
        data.images,
        batch_size=config.batch_size,
        max_detections=config.max_detections,
        progress=progress,
    )
    metrics = evaluate_detections(
        data,
        found,
        score_threshold=threshold,
        iou_threshold=config.iou_threshold,
        max_detections=config.max_detections,
    )
    metrics = {
        "model": os.path.abspath(model_path) if not fs.is_uri(model_path) else model_path,
        "kind": detector.card.kind,
        "variant": detector.card.variant,
        "shards": shards_dir,
        "split": config.split,
        **metrics,
        "config": to_dict(config),
    }
    if out_dir:
        fs.makedirs(out_dir)
        fs.write_text(fs.join(out_dir, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
        if config.plots:
            from kubedetect import plots  # noqa: PLC0415

            folder = model_path if os.path.isdir(model_path) else os.path.dirname(model_path)
            history = os.path.join(folder, "history.csv")
            metrics["plots"] = plots.evaluation_plots(
                out_dir,
                metrics,
                data,
                found,
                threshold,
                config.grid_images,
                history if os.path.exists(history) else None,
            )
            fs.write_text(fs.join(out_dir, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
    return metrics


def summary(metrics: dict) -> str:
    """A few lines for people: the headline numbers and the per-class table."""
    lines = [
        f"{metrics.get('variant', '')} on {metrics.get('split', '')}: {metrics['images']} images, "
        f"{metrics['objects']} objects",
        f"mAP@0.5 {metrics['map50']:.3f}  mAP@0.5:0.95 {metrics['map50_95']:.3f}  "
        f"precision {metrics['precision']:.3f} recall {metrics['recall']:.3f} "
        f"(score >= {metrics['score_threshold']:g}, IoU >= {metrics['iou_threshold']:g})",
        f"{'class':<16} {'AP50':>6} {'AP':>6} {'P':>6} {'R':>6} {'objects':>8}",
    ]
    for name, row in metrics["per_class"].items():
        ap50 = "-" if row["ap50"] is None else f"{row['ap50']:.3f}"
        ap = "-" if row["ap50_95"] is None else f"{row['ap50_95']:.3f}"
        lines.append(
            f"{name:<16} {ap50:>6} {ap:>6} {row['precision']:>6.3f} {row['recall']:>6.3f} "
            f"{row['objects']:>8}"
        )
    return "\n".join(lines)
