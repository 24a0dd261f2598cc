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

Memory does not grow with the number of boxes: the Gaussians are made BOX_CHUNK boxes at a
time and folded into the maps (a max-scatter into each box's class channel, and the strongest
box per cell), so one image holds at most BOX_CHUNK x H x W of them. Making every box's
Gaussian in every class channel at once, as an earlier version did, took boxes x cells x
classes floats: 2.6 GB for one 512 px image with 500 boxes of 80 classes. The maps are the
same to the bit (tests/test_train_targets.py compares both on random and overlapping boxes).
"""

from __future__ import annotations

import tensorflow as tf

GAUSSIAN_ALPHA = 0.54  # sigma = alpha * side / 6 (TTFNet)
MIN_SIGMA = 0.35  # cells: even tiny objects get a soft neighbourhood
SIZE_REGION = 0.3  # cells where an object's Gaussian is below this regress no size
# Boxes whose Gaussians are made at once: most images have fewer, so one pass, and a crowded
# one (hundreds of boxes) takes several passes of 32 x H x W floats (2 MB at 512 px) each.
BOX_CHUNK = 32


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
    count = tf.shape(classes)[0]

    xs = tf.range(w, dtype=tf.float32)[None, None, :]
    ys = tf.range(h, dtype=tf.float32)[None, :, None]

    def fold(start, by_class, strength, owner):
        """Fold boxes [start, start + BOX_CHUNK) into the maps.

        by_class [C, H, W]: the strongest Gaussian of each class; strength [H, W]: the strongest
        of any box, owner [H, W]: that box's number (from 1; 0 where no Gaussian reaches)."""
        end = tf.minimum(start + BOX_CHUNK, count)
        cx_, cy_, sx, sy = (v[start:end] for v in (ix, iy, sigma_x, sigma_y))
        gaussians = tf.exp(
            -tf.square(xs - cx_[:, None, None]) / (2 * tf.square(sx[:, None, None]))
            - tf.square(ys - cy_[:, None, None]) / (2 * tf.square(sy[:, None, None]))
        )  # [K, H, W]; exactly 1 at each centre cell
        by_class = tf.tensor_scatter_nd_max(by_class, classes[start:end, None], gaussians)
        # The first box wins a tie, within a chunk (argmax) and across chunks (strictly greater).
        best = tf.reduce_max(gaussians, axis=0)
        winner = tf.argmax(gaussians, axis=0, output_type=tf.int32) + start + 1
        stronger = best > strength
        return (
            end,
            by_class,
            tf.where(stronger, best, strength),
            tf.where(stronger, winner, owner),
        )

    _, by_class, strength, owner = tf.while_loop(
        lambda start, *_: start < count,
        fold,
        (
            tf.constant(0),
            tf.zeros([num_classes, h, w]),
            tf.zeros([h, w]),
            tf.zeros([h, w], tf.int32),
        ),
        parallel_iterations=1,  # one chunk's Gaussians at a time, not ten computed ahead
    )
    heatmap = tf.transpose(by_class, [1, 2, 0])

    centre_cells = tf.cast(tf.stack([iy, ix], axis=-1), tf.int32)  # [N, 2]
    positives = tf.tensor_scatter_nd_update(
        tf.zeros([h, w, num_classes]),
        tf.concat([centre_cells, classes[:, None]], axis=-1),
        tf.ones_like(cx),
    )
    heatmap = tf.maximum(heatmap, positives)

    # Size: each cell regresses the object whose Gaussian is strongest there.
    sizes = tf.concat([tf.zeros([1, 2]), tf.stack([x1 - x0, y1 - y0], axis=-1)], axis=0)
    size = tf.gather(sizes, owner)
    weight = tf.where(strength >= SIZE_REGION, strength, 0.0)
    per_object = tf.math.unsorted_segment_sum(
        tf.reshape(weight, [-1]), tf.reshape(owner, [-1]), count + 1
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
