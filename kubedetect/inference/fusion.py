"""Weighted box fusion: the detections of several models of one image, as one set of boxes.

Solovyev, Wang and Gabruseva, "Weighted boxes fusion: Ensembling boxes from different object
detection models" (Image and Vision Computing 107, 2021; arXiv:1910.13302). Where non-maximum
suppression keeps one box of each overlapping group and drops the rest, fusion averages them:
models that agree move the box to where they agree, and a box found by one model of three keeps
a third of its score. Per class, boxes are taken in descending order of score:

1. each box's score is multiplied by its model's weight (boxes below `skip_threshold` before
   that are left out);
2. a box joins the fused box it overlaps most, if that overlap (IoU) is above `iou_threshold`,
   else it starts a new one;
3. a fused box is the score-weighted mean of its members' corners, and its score their mean
   score;
4. at the end, each fused box's score is scaled by min(members, models) / sum of the weights: a
   box all models found keeps its score, one only some found loses in proportion (the paper's
   rescaling, with weights as the authors' implementation applies them).

Weights only matter relative to each other. Boxes are normalised (xmin, ymin, xmax, ymax) in the
model's input, as the shared decode gives them (kubedetect.inference.decode): fusion happens before
boxes are mapped to an image's pixels, so every member of an ensemble must take the same input.
Numpy only: serving fuses without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kubedetect.inference.decode import Detections

IOU_THRESHOLD = 0.55  # the paper's default for fusing the boxes of different models


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one box [4] with each of `boxes` [N, 4] (0 where they do not overlap)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def fuse(
    members: Sequence[Detections],
    weights: Sequence[float] | None = None,
    *,
    iou_threshold: float = IOU_THRESHOLD,
    skip_threshold: float = 0.0,
    max_detections: int | None = None,
) -> Detections:
    """One image's detections by several models (`members`, each as the decode gives them),
    fused; `weights` one per model (default: equal). Sorted by descending score."""
    if not members:
        raise ValueError("fusion needs the detections of at least one model")
    weights = np.ones(len(members)) if weights is None else np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(members),) or not np.all(weights > 0):
        raise ValueError(f"expected {len(members)} positive weights, got {list(weights)}")
    boxes = np.concatenate([np.asarray(m.boxes, np.float64).reshape(-1, 4) for m in members])
    scores = np.concatenate([np.asarray(m.scores, np.float64) for m in members])
    classes = np.concatenate([np.asarray(m.class_ids, np.int64) for m in members])
    model_weight = np.concatenate(
        [np.full(len(m), w) for m, w in zip(members, weights, strict=True)]
    )
    keep = scores >= skip_threshold
    boxes, classes = boxes[keep], classes[keep]
    weighted = scores[keep] * model_weight[keep]

    fused_boxes, fused_scores, fused_classes = [], [], []
    for class_id in np.unique(classes):
        mine = np.flatnonzero(classes == class_id)
        order = mine[np.argsort(-weighted[mine], kind="stable")]
        corners = np.empty((0, 4))  # the fused boxes of this class so far
        sums = []  # per fused box: [sum of score x corners (4), sum of scores, members]
        for i in order:
            overlap = iou(boxes[i], corners) if len(corners) else np.empty(0)
            best = int(np.argmax(overlap)) if len(overlap) else -1
            if best < 0 or overlap[best] <= iou_threshold:
                sums.append(np.concatenate([weighted[i] * boxes[i], [weighted[i], 1.0]]))
                corners = np.vstack([corners, boxes[i]])
                continue
            sums[best] += np.concatenate([weighted[i] * boxes[i], [weighted[i], 1.0]])
            corners[best] = sums[best][:4] / sums[best][4]
        for total, box in zip(sums, corners, strict=True):
            count = total[5]
            mean_score = total[4] / count
            fused_scores.append(mean_score * min(count, len(members)) / weights.sum())
            fused_boxes.append(box)
            fused_classes.append(class_id)

    order = np.argsort(-np.asarray(fused_scores, np.float64), kind="stable")[:max_detections]
    return Detections(
        boxes=np.asarray(fused_boxes, np.float32).reshape(-1, 4)[order],
        scores=np.asarray(fused_scores, np.float32)[order],
        class_ids=np.asarray(fused_classes, np.int32)[order],
    )
