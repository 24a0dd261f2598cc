"""`kubedetect evaluate MODEL SHARDS_DIR`: a model against one split of the shards.

MODEL is a training export (Keras) or a TFLite variant (its folder or its .tflite file); either
runs through `kubedetect.inference.detectors` and the shared decode. The split's images are the ones
preprocessing stored (already letterboxed to the model's input size), so every model is measured
on exactly the same pixels; boxes are scored in each image's original pixels. The split 'auto'
(the default) is the final report's: `test` where the shards have one, else `val`. Writes
DIR/metrics.json and, unless told not to, the plots.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from kubedetect.config import EvalConfig
from kubedetect.errors import KubedetectError
from kubedetect.evaluation.coco import GroundTruth, confusion_matrix
from kubedetect.evaluation.coco import evaluate as coco_evaluate
from kubedetect.flags import to_dict
from kubedetect.inference.decode import Detections
from kubedetect.io import fs
from kubedetect.io.images import Frame
from kubedetect.resources import available_cores

MAP_SCORE_FLOOR = 0.001  # mAP takes every detection above this (COCO keeps the top 100 per image)


@dataclass
class EvalSet:
    """One split's true objects, and the stored pixels of all its images (`load_split`) or of the
    first few only (`predict_split`, which streams the rest)."""

    images: np.ndarray  # uint8 [N, S, S, 3]
    truths: list[GroundTruth]
    source_ids: list[str]
    classes: tuple[str, ...]


def split_examples(shards_dir: str, split: str, max_images: int = 0, *, pixels: bool = True):
    """The split's examples one at a time, as numpy, in shard order: streamed from the shards,
    never the whole split in memory. Without `pixels`, the images are not decoded."""
    import tensorflow as tf  # noqa: PLC0415

    from kubedetect.data.example import parse_example  # noqa: PLC0415
    from kubedetect.data.shards import shard_paths  # noqa: PLC0415

    wanted = {"boxes", "classes", "difficult", "original_size", "source_id"}
    if pixels:
        wanted.add("image")

    def parse(serialized):
        example = parse_example(serialized)
        return {k: v for k, v in example.items() if k in wanted}

    dataset = tf.data.TFRecordDataset(shard_paths(shards_dir, split))
    if max_images:
        dataset = dataset.take(max_images)
    return dataset.map(parse).prefetch(2).as_numpy_iterator()


def final_split(manifest: dict) -> str:
    """The split a final report is made on: `test` where the data has one (images the training
    never saw, not even to pick its best checkpoint), else `val`."""
    return "test" if manifest["splits"].get("test", {}).get("images") else "val"


def resolve_split(shards_dir: str, split: str) -> str:
    """`split`, with 'auto' resolved to the final report's (`final_split`)."""
    from kubedetect.data.shards import load_manifest  # noqa: PLC0415

    return final_split(load_manifest(shards_dir)) if split == "auto" else split


def ground_truth(example: dict, manifest: dict) -> GroundTruth:
    """An example's true objects, with the frame that maps them (and the detections) back to
    its original pixels: the manifest says how its image was fitted into the square."""
    from kubedetect.data.shards import resize_mode  # noqa: PLC0415

    height, width = (int(v) for v in example["original_size"])
    return GroundTruth(
        boxes=example["boxes"].reshape(-1, 4),
        class_ids=example["classes"].astype(np.int64),
        difficult=example["difficult"].astype(bool),
        frame=Frame.of(width, height, int(manifest["image_size"]), resize_mode(manifest)),
    )


def read_truths(shards_dir: str, split: str, max_images: int = 0) -> EvalSet:
    """The true objects of a split, without its pixels (images is empty)."""
    from kubedetect.data.shards import load_manifest  # noqa: PLC0415

    manifest = load_manifest(shards_dir)
    truths, ids = [], []
    for example in split_examples(shards_dir, split, max_images, pixels=False):
        truths.append(ground_truth(example, manifest))
        ids.append(example["source_id"].decode())
    if not truths:
        raise KubedetectError(f"{shards_dir}: the '{split}' split holds no images")
    classes = tuple(manifest["classes"])
    return EvalSet(np.zeros((0, 0, 0, 3), np.uint8), truths, ids, classes)


def load_split(shards_dir: str, split: str = "val", max_images: int = 0) -> EvalSet:
    """A whole split in memory, for callers that run several models on the same pixels (the
    quantization report). One copy: the images are written into one preallocated array."""
    from kubedetect.data.shards import load_manifest  # noqa: PLC0415

    manifest = load_manifest(shards_dir)
    split = final_split(manifest) if split == "auto" else split
    size = int(manifest["image_size"])
    count = int(manifest["splits"].get(split, {}).get("images", 0))
    count = min(count, max_images) if max_images else count
    images = np.empty((count, size, size, 3), np.uint8)
    truths, ids = [], []
    for i, example in enumerate(split_examples(shards_dir, split, count)):
        images[i] = example["image"]
        truths.append(ground_truth(example, manifest))
        ids.append(example["source_id"].decode())
    if not truths:
        raise KubedetectError(f"{shards_dir}: the '{split}' split holds no images")
    return EvalSet(images[: len(truths)], truths, ids, tuple(manifest["classes"]))


def predict_split(
    predict,
    shards_dir: str,
    split: str,
    *,
    max_images: int = 0,
    batch_size: int,
    max_detections: int,
    keep_images: int = 0,
    progress: bool = False,
) -> tuple[list[Detections], EvalSet]:
    """Detections for every image of a split, streamed from the shards a batch at a time; the
    split's truths, and the pixels of its first `keep_images` images (for the plots)."""
    from kubedetect.data.shards import load_manifest  # noqa: PLC0415

    manifest = load_manifest(shards_dir)
    total = int(manifest["splits"].get(split, {}).get("images", 0))
    total = min(total, max_images) if max_images else total
    found: list[Detections] = []
    truths, ids, kept, batch = [], [], [], []

    def flush():
        found.extend(
            predict(np.stack(batch), score_threshold=MAP_SCORE_FLOOR, max_detections=max_detections)
        )
        batch.clear()

    examples = split_examples(shards_dir, split, max_images)
    bar = tqdm(examples, total=total, desc="predict", unit="img", disable=not progress, leave=False)
    for example in bar:
        truths.append(ground_truth(example, manifest))
        ids.append(example["source_id"].decode())
        if len(kept) < keep_images:
            kept.append(example["image"])
        batch.append(example["image"])
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not truths:
        raise KubedetectError(f"{shards_dir}: the '{split}' split holds no images")
    size = int(manifest["image_size"])
    images = np.stack(kept) if kept else np.zeros((0, size, size, 3), np.uint8)
    return found, EvalSet(images, truths, ids, tuple(manifest["classes"]))


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
    """Evaluate a model on a split; writes out_dir/metrics.json (and plots) if out_dir is given.

    The split is streamed from the shards (only the plots' few images are kept), unless `data`
    holds it already (the quantization report runs every variant on one copy)."""
    config = config or EvalConfig()
    from kubedetect.data.shards import load_manifest, shard_paths  # noqa: PLC0415
    from kubedetect.inference.detectors import load_detector  # noqa: PLC0415

    threads = config.threads or available_cores()
    _size_tensorflow(threads)
    detector = load_detector(model_path, num_threads=threads)
    split = config.split
    if data is None:
        manifest = load_manifest(shards_dir)
        split = final_split(manifest) if split == "auto" else split
        classes, image_size = tuple(manifest["classes"]), int(manifest["image_size"])
        shard_paths(shards_dir, split)  # a clear error for a split that is not there
    else:
        classes, image_size = data.classes, int(data.images.shape[1])
    if tuple(detector.classes) != classes:
        raise KubedetectError(
            f"{model_path} knows classes {list(detector.classes)} but {shards_dir} has "
            f"{list(classes)}: evaluate a model on the data it was trained for"
        )
    if detector.input_size != image_size:
        raise KubedetectError(
            f"{model_path} takes {detector.input_size} px images but {shards_dir} stores "
            f"{image_size} px ones: preprocess with --image-size {detector.input_size}"
        )
    threshold = (
        detector.card.decode["score_threshold"]
        if config.score_threshold is None
        else config.score_threshold
    )
    if data is None:
        found, data = predict_split(
            detector.predict,
            shards_dir,
            split,
            max_images=config.max_images,
            batch_size=config.batch_size,
            max_detections=config.max_detections,
            keep_images=config.grid_images if out_dir and config.plots else 0,
            progress=progress,
        )
    else:
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
        "split": split,
        **metrics,
        "config": to_dict(config),
    }
    if out_dir:
        fs.makedirs(out_dir)
        fs.write_text(fs.join(out_dir, "metrics.json"), json.dumps(metrics, indent=1) + "\n")
        if config.plots:
            from kubedetect.evaluation import plots  # noqa: PLC0415

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


def _size_tensorflow(threads: int) -> None:
    """TensorFlow's op thread pools (a Keras model, and the tf.data reading the shards) sized to
    the cores this pod may use; by itself TensorFlow takes every core of the node."""
    from kubedetect.resources import configure_threads  # noqa: PLC0415

    configure_threads(threads)  # False where TensorFlow already runs here: its pools are made


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
