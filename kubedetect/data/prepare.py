"""The per-image work done in worker processes: read, decode, check, resize, encode, serialise.

Pillow only (not even numpy), so worker processes start in a fraction of a second and never
import TensorFlow; even the tf.train.Example is serialised and framed here (kubedetect.io.tfrecord),
leaving the writing process nothing but appending bytes. Every defect is returned as a Problem;
nothing here raises for bad data.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace
from functools import partial

from PIL import Image

from kubedetect.data.example import to_example
from kubedetect.data.pool import OrderedPool
from kubedetect.data.record import Record
from kubedetect.data.report import Problem
from kubedetect.errors import ImageError
from kubedetect.io import fs
from kubedetect.io.images import Frame, decode_image, encode_jpeg, fit
from kubedetect.io.tfrecord import frame

BLOCKS_KEPT = 4


def worker_setup() -> None:
    """The image worker processes' start-up (the pool's initializer).

    Pillow hands every freed image buffer back to the OS unless its block allocator is told to
    keep some (PILLOW_BLOCKS_MAX, 0 by default). Each image here passes through three or four
    buffers of similar size, so a fresh worker would map and fault in new pages for every one of
    them: the workers ran 20 % slower that way. A worker is one thread working through
    thousands of images, and 4 cached blocks keep its memory flat. Only here, not at import: in
    a threaded process (the server), blocks freed by one thread and reused by another made
    resident memory grow. The environment variable still decides when it is set.
    """
    if "PILLOW_BLOCKS_MAX" not in os.environ:
        Image.core.set_blocks_max(BLOCKS_KEPT)


@dataclass(frozen=True)
class PrepareSettings:
    root: str
    image_size: int
    jpeg_quality: int
    max_image_pixels: int
    encode: bool = True  # False: check only (data check), no resize or encode


@dataclass(frozen=True)
class Prepared:
    """A record once its image has been read: usable (`jpeg`/boxes set) or not (`ok` False)."""

    record: Record
    ok: bool
    problems: tuple[Problem, ...]
    sha256: str = ""
    width: int = 0  # the real (oriented) size of the source image
    height: int = 0
    # xmin, ymin, xmax, ymax normalised to [0, 1] in the stored (letterboxed) image: where the
    # model sees them (`Frame.to_input` of the boxes in the source image's pixels)
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    class_ids: tuple[int, ...] = ()
    difficult: tuple[bool, ...] = ()
    truncated: tuple[bool, ...] = ()
    # The serialized tf.train.Example (resized image included), already framed as a TFRecord
    # record: the framing's two checksums are computed here, in the workers, and the one process
    # that writes the shards only appends these bytes.
    record_bytes: bytes | None = None


def prepare(record: Record, settings: PrepareSettings, classes: tuple[str, ...] = ()) -> Prepared:
    """One record's image read and checked; with `settings.encode`, its example made too, which
    names each box's class from `classes` (the class map's names, in id order)."""
    source = record.image
    try:
        data = fs.read_bytes(fs.join(settings.root, record.image))
    except OSError as exc:
        problem = Problem(source, "bad_image", f"not readable ({exc}): skipped")
        return Prepared(record, False, (problem,))
    digest = hashlib.sha256(data).hexdigest()
    try:
        decoded = decode_image(
            data,
            max_pixels=settings.max_image_pixels,
            draft_size=settings.image_size,
            source=source,
        )
    except ImageError as exc:
        detail = str(exc).removeprefix(f"{source}: ")
        problem = Problem(source, "bad_image", f"{detail}: skipped")
        return Prepared(record, False, (problem,), digest)

    problems: list[Problem] = []
    width, height = decoded.width, decoded.height
    sx, sy = 1.0, 1.0
    if record.declared_width and (record.declared_width, record.declared_height) != (width, height):
        sx, sy = width / record.declared_width, height / record.declared_height
        problems.append(
            Problem(
                record.key,
                "size_mismatch",
                f"<size> says {record.declared_width}x{record.declared_height}, the image is "
                f"{width}x{height}: boxes rescaled",
            )
        )

    placement = Frame.of(width, height, settings.image_size)  # letterboxed into the square
    kept = []
    for box in record.boxes:
        x0, y0, x1, y1 = box.xmin * sx, box.ymin * sy, box.xmax * sx, box.ymax * sy
        cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
        cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        where = f"object {box.index} [{x0:g}, {y0:g}, {x1:g}, {y1:g}]"
        if cx1 <= cx0 or cy1 <= cy0:
            problems.append(
                Problem(
                    record.key,
                    "degenerate_box",
                    f"{where} lies outside the {width}x{height} image: dropped",
                )
            )
            continue
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            problems.append(
                Problem(
                    record.key,
                    "clipped_box",
                    f"{where} exceeds the {width}x{height} image: clipped",
                )
            )
        kept.append((*placement.to_input(cx0, cy0), *placement.to_input(cx1, cy1), box))

    prepared = Prepared(
        record=record,
        ok=True,
        problems=tuple(problems),
        sha256=digest,
        width=width,
        height=height,
        boxes=tuple(k[:4] for k in kept),
        class_ids=tuple(k[4].class_id for k in kept),
        difficult=tuple(k[4].difficult for k in kept),
        truncated=tuple(k[4].truncated for k in kept),
    )
    if not settings.encode:
        return prepared
    jpeg = encode_jpeg(fit(decoded.image, placement), settings.jpeg_quality)
    example = to_example(prepared, jpeg, settings.image_size, classes)
    return replace(prepared, record_bytes=frame(example))


def prepare_many(
    records: list[Record], settings: PrepareSettings, classes: tuple[str, ...] = ()
) -> list[Prepared]:
    """One task of the worker pool: a chunk of records, to amortise inter-process overhead."""
    return [prepare(r, settings, classes) for r in records]


def image_pool(settings: PrepareSettings, workers: int) -> OrderedPool:
    """The worker processes that prepare images with `settings`, in order, a bounded number in
    flight (kubedetect.data.pool.OrderedPool). They start, and import their modules, as soon as
    it is entered: callers enter it before scanning the annotations, so both overlap."""
    return OrderedPool(
        partial(prepare_many, settings=settings),
        workers=workers,
        name=lambda r: r.image,
        initializer=worker_setup,
    )
