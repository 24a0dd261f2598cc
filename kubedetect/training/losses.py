"""The detector's losses, per example, so that `tf.nn.compute_average_loss` can average them over
the global batch: the same gradients whether the batch is on one worker or split over many.

- heatmap: CenterNet's penalty-reduced focal loss, normalised by the number of objects.
- size: L1 on (width, height) as fractions of the image, over each object's Gaussian region
  (weights sum to 1 per object), averaged over objects.
- offset: L1 on the centre's position in its cell, at centre cells, averaged over objects.
"""

from __future__ import annotations

import tensorflow as tf

WEIGHTS = {"heatmap": 1.0, "size": 5.0, "offset": 1.0}
_EPS = 1e-4


def focal(pred: tf.Tensor, heatmap: tf.Tensor, positives: tf.Tensor) -> tf.Tensor:
    p = tf.clip_by_value(tf.cast(pred, tf.float32), _EPS, 1.0 - _EPS)
    pos = -tf.math.log(p) * tf.square(1.0 - p) * positives
    far = tf.square(tf.square(1.0 - heatmap))  # (1 - heatmap)^4, without pow's exp and log
    neg = -tf.math.log(1.0 - p) * tf.square(p) * far * (1.0 - positives)
    objects = tf.reduce_sum(positives, axis=[1, 2, 3])
    return tf.reduce_sum(pos + neg, axis=[1, 2, 3]) / tf.maximum(objects, 1.0)


def weighted_l1(pred: tf.Tensor, target: tf.Tensor, weight: tf.Tensor) -> tf.Tensor:
    """Sum of weight x |pred - target| over the map, over the number of objects (the weight's
    total: 1 per object)."""
    error = tf.reduce_sum(tf.abs(tf.cast(pred, tf.float32) - target), axis=-1)
    objects = tf.reduce_sum(weight, axis=[1, 2])
    return tf.reduce_sum(weight * error, axis=[1, 2]) / tf.maximum(objects, 1.0)


def detection_losses(
    outputs: dict[str, tf.Tensor], targets: dict[str, tf.Tensor]
) -> dict[str, tf.Tensor]:
    """The loss terms, each [batch], and their weighted sum as 'total'."""
    terms = {
        "heatmap": focal(outputs["heatmap"], targets["heatmap"], targets["positives"]),
        "size": weighted_l1(outputs["size"], targets["size"], targets["size_weight"]),
        "offset": weighted_l1(outputs["offset"], targets["offset"], targets["centre"]),
    }
    terms["total"] = tf.add_n([WEIGHTS[name] * value for name, value in terms.items()])
    return terms
