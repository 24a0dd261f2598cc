"""TFRecord files of `tf.train.Example` protos, written without TensorFlow.

Preprocessing workers serialise each image's example themselves, so the one process that writes
the shards only appends bytes. Its per-image work is the part no number of workers can share:
at a few microseconds an image it no longer takes a core's worth of time from them, and more
workers keep paying off on bigger machines. Two small, stable wire formats make this possible:

- `tf.train.Example` (tensorflow/core/example/example.proto and feature.proto): a map from
  feature name to a list of bytes, float32 or int64 values, encoded byte for byte as
  protobuf's Python runtime encodes it with deterministic serialization (what
  `tf.train.Example.SerializeToString(deterministic=True)` gives);
- the TFRecord framing (tensorflow/core/lib/io/record_writer.cc): the length, a masked CRC-32C
  of the length, the data, a masked CRC-32C of the data.

The tests check both against TensorFlow's own serializer, writer and reader.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Mapping

import google_crc32c

from kubedetect.io import fs

# Field tags (field number << 3 | wire type 2, length-delimited), as single bytes.
_FIRST, _SECOND, _THIRD = b"\x0a", b"\x12", b"\x1a"
_MASK_DELTA = 0xA282EAD8


def _varint(value: int) -> bytes:
    if value < 0:  # int64 values are two's complement, ten bytes long when negative
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + _varint(len(payload)) + payload


def bytes_feature(values: Iterable[bytes]) -> bytes:
    """A Feature holding a BytesList."""
    return _field(_FIRST, b"".join(_field(_FIRST, v) for v in values))


def float_feature(values: Iterable[float]) -> bytes:
    """A Feature holding a FloatList (packed float32, rounded to nearest as protobuf does)."""
    values = list(values)
    packed = struct.pack(f"<{len(values)}f", *values)
    return _field(_SECOND, _field(_FIRST, packed) if values else b"")


def int64_feature(values: Iterable[int]) -> bytes:
    """A Feature holding an Int64List (packed varints)."""
    packed = b"".join(_varint(int(v)) for v in values)
    return _field(_THIRD, _field(_FIRST, packed) if packed else b"")


def _map_order(name: str) -> tuple[int, ...]:
    """Where deterministic serialization puts a map key: in byte order, except that a key comes
    after the longer keys it begins (`a/b` before `a`), as protobuf's Python runtime (upb)
    orders them."""
    return (*name.encode("utf-8"), 256)


def example(features: Mapping[str, bytes]) -> bytes:
    """A serialized tf.train.Example from named Features (made by the *_feature functions)."""
    entries = b"".join(
        _field(_FIRST, _field(_FIRST, name.encode("utf-8")) + _field(_SECOND, features[name]))
        for name in sorted(features, key=_map_order)
    )
    return _field(_FIRST, entries)


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    """One record as a TFRecord file stores it."""
    length = struct.pack("<Q", len(data))
    return b"".join(
        (length, struct.pack("<I", _masked_crc(length)), data, struct.pack("<I", _masked_crc(data)))
    )


class TFRecordWriter:
    """Records appended to `path` (a local path or a tf.io.gfile URI); use as a context manager.

    It keeps the sha256 of what it wrote, so that a manifest's checksums cost no second read.
    Nothing is renamed here: callers that need readers never to see half a file write to a
    temporary name and rename it (`fs.rename`), as the shards do.
    """

    def __init__(self, path: str):
        self._file = fs.open_write(path)
        self._digest = hashlib.sha256()

    def write(self, record: bytes) -> None:
        self.write_framed(frame(record))

    def write_framed(self, framed: bytes) -> None:
        """Append a record that `frame` has already framed (perhaps in another process)."""
        self._file.write(framed)
        self._digest.update(framed)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
