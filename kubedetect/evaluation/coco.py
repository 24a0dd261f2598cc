"""Detection metrics: COCO-style, through pycocotools (the standard; AP is not re-implemented).

The ground truth and the detections are handed to pycocotools in memory, with boxes in each
image's original pixel frame (so COCO's small/medium/large areas mean what they usually mean),
both mapped there from the model's input by the shared decode's `to_original`.
Pascal VOC "difficult" objects become COCO crowd regions: a detection on one is neither right
nor wrong, and missing one costs nothing, as in VOC evaluation.

From pycocotools' own per-image matching we also read precision and recall at one score
threshold and IoU, the operating point a served model runs at. The confusion matrix is the one
thing counted here: a class-agnostic greedy match at that IoU, so that a box found with the
wrong class shows up as a confusion rather than as a miss and a false alarm.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kubedetect.errors import KubedetectError
from kubedetect.inference.decode import Detections, to_original
from kubedetect.io.images import Frame

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # COCO's


@dataclass(frozen=True)
class GroundTruth:
    """The true objects of one image: boxes (xmin, ymin, xmax, ymax) normalised in the model's
    input, as the shards store them and the model predicts them."""

    boxes: np.ndarray  # float32 [N, 4]
    class_ids: np.ndarray  # int [N]
    difficult: np.ndarray  # bool [N]
    frame: Frame  # where the original image sat in the input: the pixel frame of the evaluation


def _pixel_xywh(boxes: np.ndarray, frame: Frame) -> np.ndarray:
    b = to_original(boxes, frame).astype(np.float64)
    return np.stack([b[:, 0], b[:, 1], b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=-1)


def _coco(truths: Sequence[GroundTruth], detections: Sequence[Detections], classes: Sequence[str]):
    from pycocotools.coco import COCO  # noqa: PLC0415 - only evaluation needs it

    images, annotations, results = [], [], []
    for image_id, (truth, found) in enumerate(zip(truths, detections, strict=True), start=1):
        images.append({"id": image_id, "width": truth.frame.width, "height": truth.frame.height})
        for box, cls, hard in zip(
            _pixel_xywh(truth.boxes, truth.frame),
            truth.class_ids,
            truth.difficult,
            strict=True,
        ):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [float(v) for v in box],
                    "area": float(box[2] * box[3]),
                    "iscrowd": int(bool(hard)),
                }
            )
        for box, score, cls in zip(
            _pixel_xywh(found.boxes, truth.frame),
            found.scores,
            found.class_ids,
            strict=True,
        ):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [float(v) for v in box],
                    "score": float(score),
                }
            )
    ground = COCO()
    ground.dataset = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        ground.createIndex()
        found = ground.loadRes(results) if results else None
    return ground, found


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def evaluate(
    truths: Sequence[GroundTruth],
    detections: Sequence[Detections],
    classes: Sequence[str],
    *,
    score_threshold: float,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
) -> dict:
    """COCO metrics, per-class AP and PR curves, and precision/recall at the operating point.

    Returns a JSON-ready dict: map50, map50_95, per_class {name: {ap50, ap50_95, precision,
    recall, objects}}, precision, recall, pr_curves {name: {recall, precision}}. A class without
    any true object has AP None (COCO's -1).
    """
    from pycocotools.cocoeval import COCOeval  # noqa: PLC0415

    if len(truths) != len(detections):
        raise KubedetectError(f"{len(truths)} images but {len(detections)} detection lists")
    matches = np.isclose(IOU_THRESHOLDS, iou_threshold)
    if not matches.any():
        raise KubedetectError(
            f"--iou-threshold must be one of COCO's 0.50, 0.55, ..., 0.95; got {iou_threshold}"
        )
    t = int(np.argmax(matches))
    ground, found = _coco(truths, detections, classes)
    objects = {
        name: int(sum(np.sum((g.class_ids == k) & ~g.difficult) for g in truths))
        for k, name in enumerate(classes)
    }
    empty = {
        "map50": 0.0,
        "map50_95": 0.0,
        "precision": 0.0,
        "recall": 0.0,
        "per_class": {
            name: {
                "ap50": 0.0 if objects[name] else None,
                "ap50_95": 0.0 if objects[name] else None,
                "precision": 0.0,
                "recall": 0.0,
                "objects": objects[name],
            }
            for name in classes
        },
        "pr_curves": {},
    }
    if found is None:  # no detection at all: pycocotools cannot load an empty result list
        return _finish(empty, truths, score_threshold, iou_threshold)

    coco = COCOeval(ground, found, iouType="bbox")
    coco.params.maxDets = [1, 10, max_detections]
    with contextlib.redirect_stdout(io.StringIO()):
        coco.evaluate()
        coco.accumulate()
        coco.summarize()
    precision = coco.eval["precision"]  # [T, R, K, A, M]: IoU, recall, class, area, maxDets
    recall_points = coco.params.recThrs

    # Precision and recall at the operating point, from pycocotools' own matching.
    tp = np.zeros(len(classes), dtype=np.int64)
    fp = np.zeros(len(classes), dtype=np.int64)
    area_all = coco.params.areaRng[coco.params.areaRngLbl.index("all")]
    for entry in coco.evalImgs:
        if entry is None or entry["aRng"] != area_all or entry["maxDet"] != max_detections:
            continue
        k = entry["category_id"] - 1
        scores = np.asarray(entry["dtScores"])
        counted = (scores >= score_threshold) & ~np.asarray(entry["dtIgnore"], dtype=bool).reshape(
            len(IOU_THRESHOLDS), -1
        )[t]
        matched = np.asarray(entry["dtMatches"]).reshape(len(IOU_THRESHOLDS), -1)[t] > 0
        tp[k] += int(np.sum(counted & matched))
        fp[k] += int(np.sum(counted & ~matched))

    per_class, curves = {}, {}
    for k, name in enumerate(classes):
        per_class[name] = {
            "ap50": _mean_valid(precision[0, :, k, 0, -1]) if objects[name] else None,
            "ap50_95": _mean_valid(precision[:, :, k, 0, -1]) if objects[name] else None,
            "precision": float(tp[k] / (tp[k] + fp[k])) if tp[k] + fp[k] else 0.0,
            "recall": float(tp[k] / objects[name]) if objects[name] else 0.0,
            "objects": objects[name],
        }
        curve = precision[t, :, k, 0, -1]
        curves[name] = {
            "recall": recall_points.round(4).tolist(),
            "precision": np.where(curve > -1, curve, 0.0).round(4).tolist(),
        }
    total_objects = sum(objects.values())
    result = {
        "map50": _none_to_zero(coco.stats[1]),
        "map50_95": _none_to_zero(coco.stats[0]),
        "precision": float(tp.sum() / (tp.sum() + fp.sum())) if tp.sum() + fp.sum() else 0.0,
        "recall": float(tp.sum() / total_objects) if total_objects else 0.0,
        "per_class": per_class,
        "pr_curves": curves,
    }
    return _finish(result, truths, score_threshold, iou_threshold)


def _none_to_zero(value: float) -> float:
    return float(value) if value > -1 else 0.0


def _finish(result: dict, truths, score_threshold, iou_threshold) -> dict:
    result["score_threshold"] = float(score_threshold)
    result["iou_threshold"] = float(iou_threshold)
    result["images"] = len(truths)
    result["objects"] = int(sum(np.sum(~g.difficult) for g in truths))
    return result


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N, 4] with every box in b [M, 4] (xmin, ymin, xmax, ymax)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def confusion_matrix(
    truths: Sequence[GroundTruth],
    detections: Sequence[Detections],
    num_classes: int,
    *,
    score_threshold: float,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """[C + 1, C + 1] counts: rows are true classes, columns predicted ones; the last row and
    column are "background" (a false alarm, a missed object). Difficult objects are left out."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    background = num_classes
    for truth, found in zip(truths, detections, strict=True):
        found = found.filter(score_threshold)
        iou = box_iou(truth.boxes, found.boxes) * (truth.boxes.shape[0] > 0)
        true_taken = np.zeros(len(truth.class_ids), dtype=bool)
        for d in np.argsort(-found.scores, kind="stable"):
            candidates = np.where(~true_taken & (iou[:, d] >= iou_threshold))[0] if iou.size else []
            if len(candidates) == 0:
                matrix[background, found.class_ids[d]] += 1
                continue
            g = candidates[np.argmax(iou[candidates, d])]
            true_taken[g] = True
            if not truth.difficult[g]:
                matrix[truth.class_ids[g], found.class_ids[d]] += 1
        for g in np.where(~true_taken & ~truth.difficult)[0]:
            matrix[truth.class_ids[g], background] += 1
    return matrix
