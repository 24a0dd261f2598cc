"""Synthetic Pascal VOC data: shapes on textured backgrounds.

The default dataset of `make demo` and the workhorse of tests and benchmarks: a real VOC folder
(JPEGImages/, Annotations/, ImageSets/Main/) that any VOC tool can open, generated offline in
seconds. Image i depends only on (seed, i), so a larger set extends a smaller one with the same
seed, and the same seed always gives the same bytes.
"""

from __future__ import annotations

import colorsys
import contextlib
import os
import statistics

import numpy as np
from lxml import etree
from PIL import Image, ImageChops, ImageDraw, ImageFilter
from tqdm import tqdm

from kubedetect.data.pool import OrderedPool
from kubedetect.resources import available_cores

SHAPES = ("circle", "square", "triangle")
VAL_FRACTION = 0.2
MIN_IMAGES_PER_WORKER = 32


def synthesize(
    out_dir: str,
    images: int,
    seed: int = 0,
    *,
    min_side: int = 224,
    max_side: int = 352,
    max_objects: int = 6,
    progress: bool = True,
    workers: int = 0,
) -> dict:
    """Write `images` annotated images to `out_dir`; returns counts per split and class.

    `workers` processes draw and write the images (0: one per available core, fewer for a small
    set); each image depends on (seed, i) alone, so the files are the same for any number.
    """
    if images < 1:
        raise ValueError("images must be at least 1")
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    workers = workers if workers > 0 else available_cores()
    # A worker process starts in about a tenth of a second: worth it from a few dozen images on.
    workers = max(1, min(workers, images // MIN_IMAGES_PER_WORKER))
    scene = {"min_side": min_side, "max_side": max_side, "max_objects": max_objects}
    splits: dict[str, list[str]] = {"train": [], "val": []}
    per_class = dict.fromkeys(SHAPES, 0)
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(OrderedPool(write_images, workers=workers))
            written = pool.map(range(images), out_dir=out_dir, seed=seed, **scene)
        else:
            written = write_images(range(images), out_dir=out_dir, seed=seed, **scene)
        bar = tqdm(written, total=images, desc="synth", unit="img", disable=not progress or None)
        for stem, split, names in bar:
            splits[split].append(stem)
            for name in names:
                per_class[name] += 1
    for split, stems in splits.items():
        with open(os.path.join(out_dir, "ImageSets", "Main", f"{split}.txt"), "w") as f:
            f.write("".join(s + "\n" for s in stems))
    return {
        "images": images,
        "splits": {k: len(v) for k, v in splits.items()},
        "objects": per_class,
    }


def write_images(
    indices, *, out_dir: str, seed: int, min_side: int, max_side: int, max_objects: int
) -> list[tuple[str, str, list[str]]]:
    """Draw and write images `indices` (a pool's chunk); their stems, splits and class names."""
    written = []
    for i in indices:
        rng = np.random.default_rng([seed, i])
        stem = f"synth_{i:06d}"
        image, objects = _scene(rng, min_side, max_side, max_objects)
        image.save(os.path.join(out_dir, "JPEGImages", stem + ".jpg"), quality=92)
        xml = _annotation(stem + ".jpg", image.size, objects)
        with open(os.path.join(out_dir, "Annotations", stem + ".xml"), "wb") as f:
            f.write(xml)
        split = "val" if rng.random() < VAL_FRACTION else "train"
        written.append((stem, split, [name for name, _ in objects]))
    return written


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


# Grain: a normal distribution (sd 6) sampled by its quantiles, one table per channel; random
# bytes index it. Drawing the normal samples themselves took a quarter of an image's time.
_GRAIN_OFFSET = 32
_GRAIN = [
    _GRAIN_OFFSET + round(statistics.NormalDist(0, 6).inv_cdf((k + 0.5) / 256)) for k in range(256)
] * 3


def _background(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth colour gradient, low-frequency noise and grain, and a few clutter strokes.

    The gradient and the low-frequency noise are drawn together on a coarse grid (a pixel every
    16) and enlarged by Pillow's bicubic resize, which is exact for a linear gradient; grain is
    added in 8 bits. About 2 ms for a 300 px image, where full-size float arrays took 12.
    """
    c0, c1 = rng.uniform(40, 215, size=(2, 3))
    angle = rng.uniform(0, 1)
    columns, rows = width // 16 + 2, height // 16 + 2
    # Where each coarse pixel's centre lands in the image, as a fraction of its width or height.
    t = ((np.arange(columns) + 0.5) * width / columns - 0.5) / max(1, width - 1)
    s = ((np.arange(rows) + 0.5) * height / rows - 0.5) / max(1, height - 1)
    ramp = angle * t[None, :, None] + (1 - angle) * s[:, None, None]
    coarse = c0 + (c1 - c0) * ramp + rng.normal(0, 18, size=(rows, columns, 3))
    smooth = Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8), "RGB").resize(
        (width, height), Image.Resampling.BICUBIC
    )
    grain = Image.frombytes("RGB", (width, height), rng.bytes(width * height * 3)).point(_GRAIN)
    image = ImageChops.add(smooth, grain, offset=-_GRAIN_OFFSET)
    draw = ImageDraw.Draw(image)
    mean = (c0 + c1) / 2  # the gradient's mean colour
    for _ in range(int(rng.integers(2, 7))):  # clutter: lines that are not objects
        x0, x1 = rng.uniform(0, width, size=2)
        y0, y1 = rng.uniform(0, height, size=2)
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
