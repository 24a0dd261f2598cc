"""The TFRecord format of the shards: one `tf.train.Example` per image.

Feature names follow the TensorFlow Object Detection API, so the shards are readable by tools
that know that convention. Boxes are normalised to [0, 1] as (xmin, ymin, xmax, ymax), which,
because images are stretched to the square training size, are also their coordinates in the
stored image.

Writing needs no TensorFlow (the examples are made in the preprocessing workers by
`kubedetect.io.tfrecord`); reading them back, for training and evaluation, is TensorFlow's.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from kubedetect.io.tfrecord import bytes_feature, example, float_feature, int64_feature

if TYPE_CHECKING:
    import tensorflow as tf

    from kubedetect.data.prepare import Prepared


def to_example(prepared: Prepared, jpeg: bytes, image_size: int, classes: tuple[str, ...]) -> bytes:
    """The serialized example of one prepared image, its resized JPEG, the training size and the
    class names (in id order).

    Written in the worker processes, without TensorFlow (kubedetect.io.tfrecord). Box coordinates
    are stored as float32, rounded to nearest, as any protobuf writer rounds them.
    """
    boxes, names = prepared.boxes, [classes[c].encode() for c in prepared.class_ids]
    return example(
        {
            "image/encoded": bytes_feature([jpeg]),
            "image/format": bytes_feature([b"jpeg"]),
            "image/height": int64_feature([image_size]),
            "image/width": int64_feature([image_size]),
            "image/original/height": int64_feature([prepared.height]),
            "image/original/width": int64_feature([prepared.width]),
            "image/source_id": bytes_feature([prepared.record.key.encode()]),
            "image/filename": bytes_feature([prepared.record.image.encode()]),
            "image/sha256": bytes_feature([prepared.sha256.encode()]),
            "image/object/bbox/xmin": float_feature(b[0] for b in boxes),
            "image/object/bbox/ymin": float_feature(b[1] for b in boxes),
            "image/object/bbox/xmax": float_feature(b[2] for b in boxes),
            "image/object/bbox/ymax": float_feature(b[3] for b in boxes),
            "image/object/class/label": int64_feature(prepared.class_ids),
            "image/object/class/text": bytes_feature(names),
            "image/object/difficult": int64_feature(int(d) for d in prepared.difficult),
            "image/object/truncated": int64_feature(int(t) for t in prepared.truncated),
        }
    )


@cache
def features() -> dict:
    """The parsing spec of every feature (TensorFlow is imported on first use only)."""
    import tensorflow as tf  # noqa: PLC0415

    fixed, var = tf.io.FixedLenFeature, tf.io.VarLenFeature
    return {
        "image/encoded": fixed([], tf.string),
        "image/format": fixed([], tf.string),
        "image/height": fixed([], tf.int64),
        "image/width": fixed([], tf.int64),
        "image/original/height": fixed([], tf.int64),
        "image/original/width": fixed([], tf.int64),
        "image/source_id": fixed([], tf.string),
        "image/filename": fixed([], tf.string),
        "image/sha256": fixed([], tf.string),
        "image/object/bbox/xmin": var(tf.float32),
        "image/object/bbox/ymin": var(tf.float32),
        "image/object/bbox/xmax": var(tf.float32),
        "image/object/bbox/ymax": var(tf.float32),
        "image/object/class/label": var(tf.int64),
        "image/object/class/text": var(tf.string),
        "image/object/difficult": var(tf.int64),
        "image/object/truncated": var(tf.int64),
    }


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """One serialized example to tensors: image uint8 [S, S, 3], boxes float32 [N, 4]
    (xmin, ymin, xmax, ymax in [0, 1]), classes int32 [N], and the identifying fields."""
    import tensorflow as tf  # noqa: PLC0415

    parsed = tf.io.parse_single_example(serialized, features())
    dense = {k: tf.sparse.to_dense(v) for k, v in parsed.items() if isinstance(v, tf.SparseTensor)}
    boxes = tf.stack(
        [dense[f"image/object/bbox/{c}"] for c in ("xmin", "ymin", "xmax", "ymax")], axis=-1
    )
    return {
        "image": tf.io.decode_jpeg(parsed["image/encoded"], channels=3),
        "boxes": tf.reshape(boxes, [-1, 4]),
        "classes": tf.cast(dense["image/object/class/label"], tf.int32),
        "difficult": tf.cast(dense["image/object/difficult"], tf.bool),
        "source_id": parsed["image/source_id"],
        "original_size": tf.stack(
            [parsed["image/original/height"], parsed["image/original/width"]]
        ),
    }
