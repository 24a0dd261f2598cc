"""Helpers shared by the data tests (this module holds no tests).

They are written apart from kubedetect on purpose: expected boxes are computed from the XML with
lxml and from the image with Pillow here, so that a test compares kubedetect's output with an
independent reading of the same files rather than with kubedetect's own parser.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from lxml import etree
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations shown with width and height swapped


# -- writing test data ---------------------------------------------------------------------------


def voc_xml(
    filename: str, size: tuple[int, int] | None, objects=(), *, folder="JPEGImages"
) -> bytes:
    """A Pascal VOC annotation as labelImg writes it. `objects`: (name, xmin, ymin, xmax, ymax)
    tuples, optionally followed by a dict of extra fields (difficult, truncated)."""
    root = etree.Element("annotation")
    etree.SubElement(root, "folder").text = folder
    etree.SubElement(root, "filename").text = filename
    if size is not None:
        node = etree.SubElement(root, "size")
        for tag, value in zip(("width", "height", "depth"), (*size, 3), strict=True):
            etree.SubElement(node, tag).text = str(value)
    for name, x0, y0, x1, y1, *extra in objects:
        fields = extra[0] if extra else {}
        obj = etree.SubElement(root, "object")
        etree.SubElement(obj, "name").text = name
        etree.SubElement(obj, "truncated").text = str(fields.get("truncated", 0))
        etree.SubElement(obj, "difficult").text = str(fields.get("difficult", 0))
        box = etree.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1), strict=True):
            etree.SubElement(box, tag).text = str(value)
    return etree.tostring(root, pretty_print=True)


def photo(width: int, height: int, seed: int = 0, *, mode: str = "RGB") -> Image.Image:
    """A noisy image (so that JPEG files differ and decoding does real work)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)
    return image.convert(mode) if mode != "RGB" else image


def jpeg_bytes(image: Image.Image, **save_args) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90, **save_args)
    return out.getvalue()


def png_bytes(image: Image.Image, **save_args) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", **save_args)
    return out.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def add_image(
    root: Path,
    image_rel: str,
    xml_rel: str,
    size=(96, 64),
    objects=(),
    *,
    seed=0,
    declared=None,
    data: bytes | None = None,
) -> None:
    """An image file and its annotation; `declared` overrides the <size> written in the XML."""
    if data is None:
        data = jpeg_bytes(photo(*size, seed=seed))
    write(root / image_rel, data)
    write(root / xml_rel, voc_xml(Path(image_rel).name, declared or size, objects))


# -- reading shards back -------------------------------------------------------------------------


def read_manifest(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / "dataset.json").read_text())


def read_shards(out_dir: Path) -> dict[str, dict]:
    """Every record of every split, read through tf.data with kubedetect.data.example.parse_example,
    keyed by source id (the annotation's path relative to the data folder)."""
    import tensorflow as tf

    from kubedetect.data.example import parse_example

    out_dir = Path(out_dir)
    classes = json.loads((out_dir / "labels.json").read_text())["classes"]
    records: dict[str, dict] = {}
    for split, entry in read_manifest(out_dir)["splits"].items():
        files = [str(out_dir / name) for name in entry["shards"]]
        for example in tf.data.TFRecordDataset(files).map(parse_example):
            source = example["source_id"].numpy().decode()
            assert source not in records, f"{source} written twice"
            records[source] = {
                "split": split,
                "image": example["image"].numpy(),
                "boxes": example["boxes"].numpy(),
                "names": [classes[int(c)] for c in example["classes"].numpy()],
                "class_ids": [int(c) for c in example["classes"].numpy()],
                "difficult": [bool(d) for d in example["difficult"].numpy()],
                "original_size": tuple(int(v) for v in example["original_size"].numpy()),
            }
    return records


def output_bytes(out_dir: Path) -> dict[str, bytes]:
    """Every file an output folder holds, by name."""
    return {p.name: p.read_bytes() for p in sorted(Path(out_dir).iterdir()) if p.is_file()}


# -- the expected result, computed independently -------------------------------------------------


def oriented_size(image_path: Path) -> tuple[int, int]:
    """Width and height of an image as viewers show it (EXIF orientation applied)."""
    with Image.open(image_path) as image:
        width, height = image.size
        orientation = image.getexif().get(0x0112)
    return (height, width) if orientation in _TRANSPOSED else (width, height)


def expected_boxes(xml: bytes, real_size: tuple[int, int]) -> list[tuple[str, tuple, bool]]:
    """(class name, normalised xmin/ymin/xmax/ymax, difficult) for each object that should
    reach the shards: coordinates rescaled from the declared <size> to the real image, boxes of
    zero or negative extent dropped, the rest clipped to the image and divided by its size."""
    root = etree.fromstring(xml)
    width, height = real_size
    declared_w = int(float(root.findtext("size/width") or 0))
    declared_h = int(float(root.findtext("size/height") or 0))
    sx = width / declared_w if declared_w > 0 else 1.0
    sy = height / declared_h if declared_h > 0 else 1.0
    result = []
    for obj in root.iter("object"):
        coords = [float(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")]
        x0, y0, x1, y1 = coords
        if x1 <= x0 or y1 <= y0:
            continue
        x0, x1 = (min(max(v * sx, 0.0), width) for v in (x0, x1))
        y0, y1 = (min(max(v * sy, 0.0), height) for v in (y0, y1))
        if x1 <= x0 or y1 <= y0:
            continue
        difficult = int(float(obj.findtext("difficult") or 0)) != 0
        result.append(
            (
                obj.findtext("name").strip(),
                (x0 / width, y0 / height, x1 / width, y1 / height),
                difficult,
            )
        )
    return result


def letterboxed(box: tuple, width: int, height: int, size: int) -> tuple:
    """A box normalised by its image's width and height, where preprocessing stores it: in the
    square of `size` pixels into which the image is letterboxed (scaled by size over its longer
    side, each side rounded to whole pixels, centred, the rest padding)."""
    scale = size / max(width, height)
    w, h = round(width * scale), round(height * scale)
    left, top = (size - w) // 2, (size - h) // 2
    x0, y0, x1, y1 = box
    return (
        (x0 * w + left) / size,
        (y0 * h + top) / size,
        (x1 * w + left) / size,
        (y1 * h + top) / size,
    )


def assert_boxes_match(record: dict, expected: list, source: str) -> None:
    """A shard record's objects equal the expected ones (boxes normalised by the source image's
    size, which the record stores letterboxed), in order (float32 storage allows 1e-6)."""
    names = [e[0] for e in expected]
    assert record["names"] == names, f"{source}: classes {record['names']} != {names}"
    height, width = record["original_size"]
    size = record["image"].shape[0]
    want = np.array(
        [letterboxed(e[1], width, height, size) for e in expected], dtype=np.float64
    ).reshape(-1, 4)
    np.testing.assert_allclose(record["boxes"], want, rtol=0, atol=1e-6, err_msg=source)
    assert record["difficult"] == [e[2] for e in expected], source


# -- the command line -----------------------------------------------------------------------------


def kubedetect(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `kubedetect` console script, as users do, and capture its output."""
    script = Path(sys.executable).with_name("kubedetect")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cli"]
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, cwd=cwd or REPO, timeout=300
    )


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height RGB pixels: a decompression bomb that a
    decoder would have to allocate width * height * 3 bytes for."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )
