"""Boxes drawn on the image, for `/v1/detect?format=jpeg`: a picture to check at a glance."""

from __future__ import annotations

import colorsys
import io

from PIL import Image, ImageDraw, ImageFont

from serving.model import Detection


def class_colour(class_id: int) -> tuple[int, int, int]:
    """Well-separated hues by the golden ratio (the web page uses the same formula)."""
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: Image.Image, detections: list[Detection], quality: int = 90) -> bytes:
    """JPEG bytes of `image` with each detection's box and `label score` on it."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    line = max(2, round(min(image.size) / 200))
    font = ImageFont.load_default(size=max(12, round(min(image.size) / 30)))
    for det in reversed(detections):  # lowest score first: the best label ends up on top
        colour = class_colour(det.class_id)
        xmin, ymin, xmax, ymax = det.box
        draw.rectangle((xmin, ymin, xmax, ymax), outline=colour, width=line)
        text = f"{det.label} {det.score:.2f}"
        left, top, right, bottom = draw.textbbox((xmin, ymin), text, font=font)
        lift = bottom - top + 2 * line
        y = ymin - lift if ymin - lift >= 0 else ymin
        draw.rectangle((xmin, y, xmin + right - left + 2 * line, y + lift), fill=colour)
        draw.text((xmin + line, y + line - (top - ymin)), text, fill=(0, 0, 0), font=font)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
