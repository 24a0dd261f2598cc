"""From the detector's output maps to boxes: the one decode used by evaluation and serving.

The detector is CenterNet-style: for each class a heatmap whose peaks are object centres, and at
every cell the object's size and the centre's sub-cell offset. Decoding keeps cells that are the
maximum of their 3x3 neighbourhood (which does the work of non-maximum suppression), takes the
top-scoring ones above a threshold, and turns them into boxes, normalised in the model's square
input; `in_original` maps them back into the original image's pixels through the image's
`kubedetect.io.images.Frame` (where the letterboxed image sat in the input). Numpy only, so the
serving path needs no TensorFlow; quantized (int8) outputs are dequantized first and then take
the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kubedetect.io.images import Frame


@dataclass(frozen=True)
class Detections:
    """Detections in one image: boxes as (xmin, ymin, xmax, ymax) normalised to [0, 1] in the
    model's input."""

    boxes: np.ndarray  # float32 [N, 4]
    scores: np.ndarray  # float32 [N], descending
    class_ids: np.ndarray  # int32 [N]

    def __len__(self) -> int:
        return len(self.scores)

    def in_original(self, frame: Frame) -> np.ndarray:
        """Boxes [N, 4] in the pixels of the original image (`frame`: where it sat in the
        input)."""
        return to_original(self.boxes, frame)

    def filter(self, score_threshold: float = 0.0, max_detections: int | None = None) -> Detections:
        keep = self.scores >= score_threshold
        boxes, scores, classes = self.boxes[keep], self.scores[keep], self.class_ids[keep]
        if max_detections is not None:
            boxes, scores, classes = (
                boxes[:max_detections],
                scores[:max_detections],
                classes[:max_detections],
            )
        return Detections(boxes, scores, classes)


def to_original(boxes: np.ndarray, frame: Frame) -> np.ndarray:
    """Boxes [N, 4] normalised in the model's input to the original image's pixels, clipped to
    the image (a box reaching into the letterbox's padding ends at the image's edge)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    x0, y0 = frame.to_original(boxes[:, 0], boxes[:, 1])
    x1, y1 = frame.to_original(boxes[:, 2], boxes[:, 3])
    pixels = np.stack([x0, y0, x1, y1], axis=-1)
    limits = np.array([frame.width, frame.height, frame.width, frame.height], dtype=np.float64)
    return np.clip(pixels, 0.0, limits).astype(np.float32)


def dequantize(values: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Quantized tensor values to floats (identity for float tensors, whose scale is 0)."""
    if not scale:
        return values.astype(np.float32, copy=False)
    return (values.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


def peaks(heatmap: np.ndarray) -> np.ndarray:
    """A mask of the cells that are the maximum of their 3x3 neighbourhood, per class.

    Of equal neighbours only the first in raster order counts: int8 outputs quantize scores to
    steps of 1/256, and a peak spread over two equal cells would otherwise become two
    detections of one object (a false alarm, with a score as high as the true one).
    """
    h, w, _ = heatmap.shape
    padded = np.pad(heatmap, ((1, 1), (1, 1), (0, 0)), constant_values=-np.inf)
    keep = np.ones(heatmap.shape, dtype=bool)
    for dy in range(3):
        for dx in range(3):
            if (dy, dx) == (1, 1):
                continue
            neighbour = padded[dy : dy + h, dx : dx + w]
            earlier = (dy, dx) < (1, 1)  # the neighbour comes first in raster order
            keep &= (heatmap > neighbour) if earlier else (heatmap >= neighbour)
    return keep


def decode(
    heatmap: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
    *,
    score_threshold: float = 0.05,
    max_detections: int = 100,
) -> Detections:
    """Decode one image's float outputs.

    heatmap: [H, W, C] class scores in [0, 1]; size: [H, W, 2] box width and height as fractions
    of the image; offset: [H, W, 2] the centre's position within its cell, in cells.
    """
    height, width, _ = heatmap.shape
    candidates = np.where(peaks(heatmap), heatmap, 0.0)
    flat = candidates.reshape(-1)
    k = min(max_detections, flat.size)
    top = np.argpartition(-flat, k - 1)[:k] if k < flat.size else np.arange(flat.size)
    top = top[flat[top] >= max(score_threshold, np.finfo(np.float32).tiny)]
    top = top[np.argsort(-flat[top], kind="stable")]
    cells, class_ids = np.divmod(top, heatmap.shape[2])
    ys, xs = np.divmod(cells, width)
    cx = (xs + offset[ys, xs, 0]) / width
    cy = (ys + offset[ys, xs, 1]) / height
    bw, bh = np.maximum(size[ys, xs, 0], 0.0), np.maximum(size[ys, xs, 1], 0.0)
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=-1)
    return Detections(
        boxes=np.clip(boxes, 0.0, 1.0).astype(np.float32).reshape(-1, 4),
        scores=flat[top].astype(np.float32),
        class_ids=class_ids.astype(np.int32),
    )


def decode_batch(outputs: dict[str, np.ndarray], **kwargs) -> list[Detections]:
    """Decode float outputs of a batch: {'heatmap': [B,H,W,C], 'size': [B,H,W,2], 'offset': ...}."""
    return [
        decode(outputs["heatmap"][i], outputs["size"][i], outputs["offset"][i], **kwargs)
        for i in range(outputs["heatmap"].shape[0])
    ]
