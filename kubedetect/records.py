"""The TFRecord format of the shards: one `tf.train.Example` per image.

Feature names follow the TensorFlow Object Detection API, so the shards are readable by tools
that know that convention. Boxes are normalised to [0, 1] as (xmin, ymin, xmax, ymax), which,
because images are stretched to the square training size, are also their coordinates in the
stored image.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from kubedetect.data.prepare import Prepared
from kubedetect.labels import ClassMap

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string),
    "image/height": tf.io.FixedLenFeature([], tf.int64),
    "image/width": tf.io.FixedLenFeature([], tf.int64),
    "image/original/height": tf.io.FixedLenFeature([], tf.int64),
    "image/original/width": tf.io.FixedLenFeature([], tf.int64),
    "image/source_id": tf.io.FixedLenFeature([], tf.string),
    "image/filename": tf.io.FixedLenFeature([], tf.string),
    "image/sha256": tf.io.FixedLenFeature([], tf.string),
    "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
    "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
    "image/object/class/label": tf.io.VarLenFeature(tf.int64),
    "image/object/class/text": tf.io.VarLenFeature(tf.string),
    "image/object/difficult": tf.io.VarLenFeature(tf.int64),
    "image/object/truncated": tf.io.VarLenFeature(tf.int64),
}


def _bytes(values):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def _floats(values):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))


def _ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def to_example(prepared: Prepared, classes: ClassMap, image_size: int) -> bytes:
    # float32, as stored: the same rounding whichever way the floats reach the protobuf.
    boxes = np.asarray(prepared.boxes, dtype=np.float32).reshape(-1, 4)
    feature = {
        "image/encoded": _bytes([prepared.jpeg]),
        "image/format": _bytes([b"jpeg"]),
        "image/height": _ints([image_size]),
        "image/width": _ints([image_size]),
        "image/original/height": _ints([prepared.height]),
        "image/original/width": _ints([prepared.width]),
        "image/source_id": _bytes([prepared.record.key.encode()]),
        "image/filename": _bytes([prepared.record.image.encode()]),
        "image/sha256": _bytes([prepared.sha256.encode()]),
        "image/object/bbox/xmin": _floats(boxes[:, 0].tolist()),
        "image/object/bbox/ymin": _floats(boxes[:, 1].tolist()),
        "image/object/bbox/xmax": _floats(boxes[:, 2].tolist()),
        "image/object/bbox/ymax": _floats(boxes[:, 3].tolist()),
        "image/object/class/label": _ints(list(prepared.class_ids)),
        "image/object/class/text": _bytes([classes.name(c).encode() for c in prepared.class_ids]),
        "image/object/difficult": _ints([int(d) for d in prepared.difficult]),
        "image/object/truncated": _ints([int(t) for t in prepared.truncated]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """One serialized example to tensors: image uint8 [S, S, 3], boxes float32 [N, 4]
    (xmin, ymin, xmax, ymax in [0, 1]), classes int32 [N], and the identifying fields."""
    parsed = tf.io.parse_single_example(serialized, FEATURES)
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
