"""Synthetic Pascal VOC data: shapes on textured backgrounds.

The default dataset of `make demo` and the workhorse of tests and benchmarks: a real VOC folder
(JPEGImages/, Annotations/, ImageSets/Main/) that any VOC tool can open, generated offline in
seconds. Image i depends only on (seed, i), so a larger set extends a smaller one with the same
seed, and the same seed always gives the same bytes.
"""

from __future__ import annotations

import colorsys
import os

import numpy as np
from lxml import etree
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

SHAPES = ("circle", "square", "triangle")
VAL_FRACTION = 0.2


def synthesize(
    out_dir: str,
    images: int,
    seed: int = 0,
    *,
    min_side: int = 224,
    max_side: int = 352,
    max_objects: int = 6,
    progress: bool = True,
) -> dict:
    """Write `images` annotated images to `out_dir`; returns counts per split and class."""
    if images < 1:
        raise ValueError("images must be at least 1")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "val": []}
    per_class = dict.fromkeys(SHAPES, 0)
    for i in tqdm(range(images), desc="synth", unit="img", disable=not progress):
        rng = np.random.default_rng([seed, i])
        stem = f"synth_{i:06d}"
        image, objects = _scene(rng, min_side, max_side, max_objects)
        image.save(os.path.join(out_dir, "JPEGImages", stem + ".jpg"), quality=92)
        xml = _annotation(stem + ".jpg", image.size, objects)
        with open(os.path.join(out_dir, "Annotations", stem + ".xml"), "wb") as f:
            f.write(xml)
        splits["val" if rng.random() < VAL_FRACTION else "train"].append(stem)
        for name, _ in objects:
            per_class[name] += 1
    for split, stems in splits.items():
        with open(os.path.join(out_dir, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("".join(s + "\n" for s in stems))
    return {
        "images": images,
        "splits": {k: len(v) for k, v in splits.items()},
        "objects": per_class,
    }


def _scene(rng: np.random.Generator, min_side: int, max_side: int, max_objects: int):
    width, height = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    placed: list[tuple[float, float, float, float]] = []
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        box = _free_box(rng, width, height, placed)
        if box is None:
            continue
        placed.append(box)
        name = SHAPES[int(rng.integers(len(SHAPES)))]
        _draw_shape(draw, name, box, _colour(rng), rng)
        objects.append((name, box))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    return image, objects


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth colour gradient, low-frequency noise and a few clutter strokes."""
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    t = np.linspace(0.0, 1.0, width)[None, :, None]
    s = np.linspace(0.0, 1.0, height)[:, None, None]
    angle = rng.uniform(0, 1)
    gradient = c0 + (c1 - c0) * (angle * t + (1 - angle) * s)
    coarse = rng.normal(0, 18, size=(height // 16 + 2, width // 16 + 2, 3))
    noise = (
        np.asarray(
            Image.fromarray(np.clip(coarse + 128, 0, 255).astype(np.uint8)).resize(
                (width, height), Image.Resampling.BICUBIC
            ),
            dtype=np.float32,
        )
        - 128.0
    )
    grain = rng.normal(0, 6, size=(height, width, 3))
    pixels = np.clip(gradient + noise + grain, 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 7))):  # clutter: lines that are not objects
        x0, x1 = rng.uniform(0, width, size=2)
        y0, y1 = rng.uniform(0, height, size=2)
        mean = gradient.mean(axis=(0, 1))
        shade = tuple(int(v) for v in np.clip(mean + rng.normal(0, 40, 3), 0, 255))
        draw.line([(x0, y0), (x1, y1)], fill=shade, width=int(rng.integers(1, 4)))
    return image


def _free_box(rng, width, height, placed, tries: int = 30):
    """A box that overlaps the ones already placed by at most a little (IoU < 0.15)."""
    short = min(width, height)
    for _ in range(tries):
        side = float(rng.uniform(0.12, 0.42) * short)
        aspect = float(rng.uniform(0.8, 1.25))
        w, h = side * aspect, side / aspect
        x0 = float(rng.uniform(0, width - w))
        y0 = float(rng.uniform(0, height - h))
        box = (x0, y0, x0 + w, y0 + h)
        if all(_iou(box, other) < 0.15 for other in placed):
            return box
    return None


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _colour(rng) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, box, colour, rng) -> None:
    x0, y0, x1, y1 = box
    outline = tuple(max(0, c - 60) for c in colour)
    if name == "circle":
        draw.ellipse(box, fill=colour, outline=outline, width=2)
    elif name == "square":
        draw.rectangle(box, fill=colour, outline=outline, width=2)
    else:
        apex_up = rng.random() < 0.5
        points = (
            [((x0 + x1) / 2, y0), (x1, y1), (x0, y1)]
            if apex_up
            else [(x0, y0), (x1, y0), ((x0 + x1) / 2, y1)]
        )
        draw.polygon(points, fill=colour, outline=outline, width=2)


def _annotation(filename: str, size: tuple[int, int], objects) -> bytes:
    root = etree.Element("annotation")
    etree.SubElement(root, "folder").text = "JPEGImages"
    etree.SubElement(root, "filename").text = filename
    size_node = etree.SubElement(root, "size")
    for tag, value in zip(("width", "height", "depth"), (*size, 3), strict=True):
        etree.SubElement(size_node, tag).text = str(value)
    etree.SubElement(root, "segmented").text = "0"
    for name, (x0, y0, x1, y1) in objects:
        obj = etree.SubElement(root, "object")
        etree.SubElement(obj, "name").text = name
        etree.SubElement(obj, "pose").text = "Unspecified"
        etree.SubElement(obj, "truncated").text = "0"
        etree.SubElement(obj, "difficult").text = "0"
        bnd = etree.SubElement(obj, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0, y0, x1, y1), strict=True):
            etree.SubElement(bnd, tag).text = str(int(round(value)))
    return etree.tostring(root, pretty_print=True, xml_declaration=False)
