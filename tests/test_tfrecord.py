"""The TensorFlow-free TFRecord writer: its examples are the bytes TensorFlow's own protobuf
serializer makes, its files the bytes tf.io.TFRecordWriter writes, and tf.data reads them back;
a preprocessing run never imports TensorFlow."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap

import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from kubedetect.io import tfrecord


def tf_feature(kind: str, values) -> tf.train.Feature:
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def ours(kind: str, values) -> bytes:
    encode = {
        "bytes": tfrecord.bytes_feature,
        "float": tfrecord.float_feature,
        "int64": tfrecord.int64_feature,
    }[kind]
    return encode(values)


def tensorflow_bytes(features: dict[str, tuple[str, list]]) -> bytes:
    proto = tf.train.Example(
        features=tf.train.Features(feature={k: tf_feature(*v) for k, v in features.items()})
    )
    return proto.SerializeToString(deterministic=True)


def our_bytes(features: dict[str, tuple[str, list]]) -> bytes:
    return tfrecord.example({k: ours(*v) for k, v in features.items()})


DETECTION = {
    "image/encoded": ("bytes", [b"\xff\xd8" + bytes(range(256)) * 40]),
    "image/height": ("int64", [256]),
    "image/source_id": ("bytes", ["Annotations/été.xml".encode()]),
    "image/object/bbox/xmin": ("float", [0.1, 0.25, 1.0 / 3.0]),
    "image/object/class/label": ("int64", [0, 5, 2]),
    "image/object/class/text": ("bytes", [b"ace", b"ten", b"king"]),
    "image/object/difficult": ("int64", []),  # an image without difficult flags
    "image/object/bbox/ymin": ("float", []),  # ... and a feature with no values at all
    "image/offset": ("int64", [-1, -(2**63), 2**63 - 1, 2**35]),
}


def test_an_example_is_byte_for_byte_what_tensorflow_serializes():
    assert our_bytes(DETECTION) == tensorflow_bytes(DETECTION)
    assert our_bytes({}) == tensorflow_bytes({})


kinds = st.sampled_from(["bytes", "float", "int64"])
values = {
    "bytes": st.lists(st.binary(max_size=300), max_size=5),
    "float": st.lists(st.floats(width=32, allow_nan=False, allow_infinity=True), max_size=20),
    "int64": st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=20),
}
features = st.dictionaries(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz/_0123456789", min_size=1, max_size=30),
    kinds.flatmap(lambda kind: values[kind].map(lambda v, kind=kind: (kind, v))),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(features)
def test_any_example_matches_tensorflow(example_features):
    assert our_bytes(example_features) == tensorflow_bytes(example_features)


def test_files_are_what_tensorflow_writes_and_tf_data_reads(tmp_path):
    records = [our_bytes(DETECTION), b"", our_bytes({}), bytes(70_000)]
    with tfrecord.TFRecordWriter(str(tmp_path / "ours.tfrecord")) as writer:
        for record in records:
            writer.write(record)
    with tf.io.TFRecordWriter(str(tmp_path / "theirs.tfrecord")) as theirs:
        for record in records:
            theirs.write(record)
    written = (tmp_path / "ours.tfrecord").read_bytes()
    assert written == (tmp_path / "theirs.tfrecord").read_bytes()
    assert writer.sha256 == hashlib.sha256(written).hexdigest()
    read = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "ours.tfrecord"))]
    assert read == records


def test_a_preprocessing_run_never_imports_tensorflow(synth_dir, tmp_path):
    """Preprocessing steps (a ParallelFor pod per shard, the CLI) start in a fraction of a second
    instead of paying TensorFlow's import."""
    script = textwrap.dedent(
        f"""
        import sys
        from kubedetect.config import PreprocessConfig
        from kubedetect.data.shards import preprocess

        manifest = preprocess({str(synth_dir)!r}, {str(tmp_path / "out")!r},
                              PreprocessConfig(image_size=64, workers=2, progress=False))
        assert manifest["splits"]["train"]["images"] > 0, manifest["splits"]
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        print(len(loaded), loaded[:5])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "0", done.stdout
