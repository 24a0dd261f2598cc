"""Training targets: what the detector's three maps should be for an image's boxes.

Made inside the tf.data pipeline (graph ops, any number of boxes), in the output frame of
H x W cells (the input size over the stride):

- heatmap [H, W, C]: for each object a Gaussian around its centre cell in its class channel
  (elliptical, sigma proportional to the box's width and height as in TTFNet), 1.0 exactly at
  the centre cell; overlapping objects take the maximum.
- size [H, W, 2] with size_weight [H, W]: the box (width, height) as fractions of the image,
  regressed not only at the centre cell but over the centre of each box, weighted by its
  Gaussian and normalised to sum to 1 per object (TTFNet: more regression samples, faster
  convergence; the decode reads the size at the peak, where the weight is largest).
- offset [H, W, 2] with centre [H, W]: the centre's position inside its cell, at centre cells.
- positives [H, W, C]: 1 at each object's centre cell and class.
"""

from __future__ import annotations

import tensorflow as tf

GAUSSIAN_ALPHA = 0.54  # sigma = alpha * side / 6 (TTFNet)
MIN_SIGMA = 0.35  # cells: even tiny objects get a soft neighbourhood
SIZE_REGION = 0.3  # cells where an object's Gaussian is below this regress no size


def encode(
    boxes: tf.Tensor, classes: tf.Tensor, num_classes: int, output_size: int
) -> dict[str, tf.Tensor]:
    """Targets for one image. boxes: [N, 4] (xmin, ymin, xmax, ymax) in [0, 1]; classes: [N]."""
    h = w = output_size
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    classes = tf.reshape(tf.cast(classes, tf.int32), [-1])
    x0, y0, x1, y1 = tf.unstack(boxes, num=4, axis=-1)
    cx, cy = (x0 + x1) / 2 * w, (y0 + y1) / 2 * h  # centres, in cells
    ix = tf.clip_by_value(tf.floor(cx), 0.0, w - 1.0)
    iy = tf.clip_by_value(tf.floor(cy), 0.0, h - 1.0)
    sigma_x = tf.maximum(GAUSSIAN_ALPHA * (x1 - x0) * w / 6, MIN_SIGMA)
    sigma_y = tf.maximum(GAUSSIAN_ALPHA * (y1 - y0) * h / 6, MIN_SIGMA)

    xs = tf.range(w, dtype=tf.float32)[None, None, :]
    ys = tf.range(h, dtype=tf.float32)[None, :, None]
    gaussians = tf.exp(
        -tf.square(xs - ix[:, None, None]) / (2 * tf.square(sigma_x[:, None, None]))
        - tf.square(ys - iy[:, None, None]) / (2 * tf.square(sigma_y[:, None, None]))
    )  # [N, H, W]; exactly 1 at each centre cell
    # A leading all-zero "no object" row keeps the reductions defined for images without boxes.
    gaussians = tf.concat([tf.zeros([1, h, w]), gaussians], axis=0)
    one_hot = tf.concat([tf.zeros([1, num_classes]), tf.one_hot(classes, num_classes)], axis=0)
    heatmap = tf.reduce_max(gaussians[..., None] * one_hot[:, None, None, :], axis=0)

    centre_cells = tf.cast(tf.stack([iy, ix], axis=-1), tf.int32)  # [N, 2]
    positives = tf.tensor_scatter_nd_update(
        tf.zeros([h, w, num_classes]),
        tf.concat([centre_cells, classes[:, None]], axis=-1),
        tf.ones_like(cx),
    )
    heatmap = tf.maximum(heatmap, positives)

    # Size: each cell regresses the object whose Gaussian is strongest there.
    owner = tf.argmax(gaussians, axis=0, output_type=tf.int32)  # [H, W], 0: no object
    strength = tf.reduce_max(gaussians, axis=0)
    sizes = tf.concat([tf.zeros([1, 2]), tf.stack([x1 - x0, y1 - y0], axis=-1)], axis=0)
    size = tf.gather(sizes, owner)
    weight = tf.where(strength >= SIZE_REGION, strength, 0.0)
    per_object = tf.math.unsorted_segment_sum(
        tf.reshape(weight, [-1]), tf.reshape(owner, [-1]), tf.shape(gaussians)[0]
    )
    size_weight = tf.math.divide_no_nan(weight, tf.gather(per_object, owner))

    offset = tf.tensor_scatter_nd_update(
        tf.zeros([h, w, 2]), centre_cells, tf.stack([cx - ix, cy - iy], axis=-1)
    )
    centre = tf.tensor_scatter_nd_update(tf.zeros([h, w]), centre_cells, tf.ones_like(cx))
    return {
        "heatmap": heatmap,
        "positives": positives,
        "size": size,
        "size_weight": size_weight,
        "offset": offset,
        "centre": centre,
    }
