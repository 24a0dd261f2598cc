"""Box-consistent augmentation: every change to the pixels is made to the boxes too.

In two halves, for speed on CPUs: per example, `sample` draws the parameters and
`transform_boxes` moves the boxes (cheap, so the targets can be made from the moved boxes);
per batch, `apply` moves the pixels with a handful of batched, multi-threaded ops
(`tf.image.crop_and_resize` does the crop, the zoom and the flip at once).

- scale/crop jitter: a random window, from a zoom-in (side 1 - j) to a zoom-out (side 1 + j,
  padded with grey), with a little aspect jitter, resized back to the input size. Boxes are
  clipped to it; a box that keeps less than 40 % of its area, or becomes thinner than two pixels,
  is dropped (it is no longer the object it was).
- horizontal flip, half of the time (a window whose left edge is right of its right edge).
- colour: brightness, contrast and saturation.

Random draws are stateless and take an explicit seed per example (derived from the run's seed
and the example's position in the stream), so a run is reproducible, and a resumed run sees
exactly the images the interrupted one would have seen.
"""

from __future__ import annotations

import tensorflow as tf

from kubedetect.io import images

PAD_VALUE = float(images.PAD_VALUE)  # grey, as around a letterboxed image
MIN_VISIBLE = 0.4
ASPECT_JITTER = 0.1
IDENTITY_WINDOW = (0.0, 0.0, 1.0, 1.0)  # (y1, x1, y2, x2), crop_and_resize's order
IDENTITY_COLOUR = (0.0, 1.0, 1.0)  # brightness, contrast, saturation


def sample(
    seed: tf.Tensor, *, scale_jitter: float, colour_jitter: float, scale: float = 1.0
) -> tuple[tf.Tensor, tf.Tensor]:
    """One example's window [4] (y1, x1, y2, x2, normalised) and colour [3] parameters; the
    window's side is `scale` +- `scale_jitter`."""
    seeds = tf.random.experimental.stateless_split(seed, num=7)
    centre = scale
    scale = tf.random.stateless_uniform([], seeds[0], centre - scale_jitter, centre + scale_jitter)
    aspect = tf.random.stateless_uniform([], seeds[1], 1.0 - ASPECT_JITTER, 1.0 + ASPECT_JITTER)
    if scale_jitter <= 0:
        scale, aspect = tf.constant(centre), tf.constant(1.0)
    width, height = scale * aspect, scale / aspect
    x = _origin(seeds[2], width)
    y = _origin(seeds[3], height)
    flip = tf.random.stateless_uniform([], seeds[4]) < 0.5
    x1, x2 = tf.where(flip, x + width, x), tf.where(flip, x, x + width)
    window = tf.stack([y, x1, y + height, x2])

    c = colour_jitter
    colour = tf.stack(
        [
            tf.random.stateless_uniform([], seeds[5], -c, c) * 127.5,
            tf.random.stateless_uniform([], seeds[6], 1.0 - c, 1.0 + c),
            tf.random.stateless_uniform([], tf.reverse(seeds[6], [0]), 1.0 - 2 * c, 1.0 + 2 * c),
        ]
    )
    return window, colour


def _origin(seed, side):
    low, high = tf.minimum(0.0, 1.0 - side), tf.maximum(0.0, 1.0 - side)
    return low + tf.random.stateless_uniform([], seed) * (high - low)


def transform_boxes(boxes: tf.Tensor, classes: tf.Tensor, window: tf.Tensor, image_size: int):
    """The boxes [N, 4] (xmin, ymin, xmax, ymax) as seen through `window`, clipped, and with the
    ones that left the picture dropped (their classes too)."""
    moved, keep = move_boxes(boxes, window, image_size)
    return tf.boolean_mask(moved, keep), tf.boolean_mask(classes, keep)


def move_boxes(boxes: tf.Tensor, window: tf.Tensor, image_size: int):
    """Boxes [..., 4] as seen through windows [..., 4] (broadcast), clipped to the picture, and
    whether each is still the object it was [...]: `transform_boxes` without dropping any."""
    y1, x1, y2, x2 = tf.unstack(window, axis=-1)
    xs = (tf.stack([boxes[..., 0], boxes[..., 2]], axis=-1) - x1[..., None]) / (x2 - x1)[..., None]
    ys = (tf.stack([boxes[..., 1], boxes[..., 3]], axis=-1) - y1[..., None]) / (y2 - y1)[..., None]
    moved = tf.stack(
        [
            tf.reduce_min(xs, -1),  # a flip swaps the edges
            tf.reduce_min(ys, -1),
            tf.reduce_max(xs, -1),
            tf.reduce_max(ys, -1),
        ],
        axis=-1,
    )
    clipped = tf.clip_by_value(moved, 0.0, 1.0)
    area = (moved[..., 2] - moved[..., 0]) * (moved[..., 3] - moved[..., 1])
    kept = (clipped[..., 2] - clipped[..., 0]) * (clipped[..., 3] - clipped[..., 1])
    min_side = 2.0 / image_size
    keep = (
        (kept >= MIN_VISIBLE * area)
        & (clipped[..., 2] - clipped[..., 0] >= min_side)
        & (clipped[..., 3] - clipped[..., 1] >= min_side)
    )
    return clipped, keep


def apply(images: tf.Tensor, windows: tf.Tensor, colours: tf.Tensor) -> tf.Tensor:
    """A batch of uint8 images [B, S, S, 3] through their windows and colours; float32 pixels."""
    size = tf.shape(images)[1]
    return recolour(crop(images, windows, tf.range(tf.shape(images)[0]), size), colours)


def crop(images: tf.Tensor, windows: tf.Tensor, sources: tf.Tensor, size) -> tf.Tensor:
    """The windows [K, 4] of images[sources] [K], each resized to size x size (float32)."""
    return tf.image.crop_and_resize(
        tf.cast(images, tf.float32),
        windows,
        sources,
        tf.stack([size, size]),
        extrapolation_value=PAD_VALUE,
    )


def recolour(pixels: tf.Tensor, colours: tf.Tensor) -> tf.Tensor:
    """Brightness, contrast and saturation [B, 3] applied to float pixels [B, S, S, 3].

    In one pass: they are affine in the pixel, its grey level and the image's mean (which
    saturation does not change), so
      ((grey + (p - grey) * s - mean) * c + mean + b) = c*s * p + c*(1 - s) * grey + C
    with C = (1 - c) * mean + b, instead of a pass over the batch for each."""
    brightness, contrast, saturation = (colours[:, i, None, None, None] for i in range(3))
    grey = tf.reduce_mean(pixels, axis=-1, keepdims=True)
    mean = tf.reduce_mean(grey, axis=[1, 2, 3], keepdims=True)
    shift = (1.0 - contrast) * mean + brightness
    pixels = contrast * saturation * pixels + (contrast * (1.0 - saturation) * grey + shift)
    return tf.clip_by_value(pixels, 0.0, 255.0)


def mosaic(images, windows, colours, boxes, classes, image_size: int):
    """Each image of a batch made of four: image i's top-left quarter shows image i's window,
    the other quarters the windows of images i + 1, i + 2 and i + 3 of the batch (wrapping
    around), each at half the size. Boxes [B, M, 4] and classes [B, M] (padded with class -1)
    follow; returns pixels [B, S, S, 3], boxes [B, 4M, 4], classes [B, 4M] and which of those
    boxes are real and still visible [B, 4M]."""
    batch = tf.shape(images)[0]
    half = image_size // 2
    sources = (tf.range(batch)[:, None] + tf.range(4)[None, :]) % batch  # [B, 4]
    quarter_windows = tf.gather(windows, sources)  # [B, 4, 4]
    crops = crop(images, tf.reshape(quarter_windows, [-1, 4]), tf.reshape(sources, [-1]), half)
    crops = tf.reshape(crops, [batch, 2, 2, half, half, 3])  # quarter q = 2 * row + column
    pixels = tf.reshape(tf.transpose(crops, [0, 1, 3, 2, 4, 5]), [batch, image_size, image_size, 3])
    moved, keep = move_boxes(tf.gather(boxes, sources), quarter_windows[:, :, None, :], half)
    corner = tf.constant([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [0.5, 0.5]])  # (x, y) of each
    moved = moved * 0.5 + tf.tile(corner, [1, 2])[None, :, None, :]
    quarter_classes = tf.gather(classes, sources)
    keep &= quarter_classes >= 0
    count = 4 * tf.shape(boxes)[1]
    return (
        recolour(pixels, colours),
        tf.reshape(moved, [batch, count, 4]),
        tf.reshape(quarter_classes, [batch, count]),
        tf.reshape(keep, [batch, count]),
    )
