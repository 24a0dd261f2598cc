"""Boxes drawn on the image, for `/v1/detect?format=jpeg`: a picture to check at a glance.

The picture is the reduced image the model's input was made from (kubedetect.io.images shrinks a
large image by up to 8 while decoding it), not the original: a 40-megapixel upload is never
decoded twice, nor copied at full size to draw on.
"""

from __future__ import annotations

import colorsys
import io

from PIL import Image, ImageDraw, ImageFont

from serving.lifecycle import Detection


def class_colour(class_id: int) -> tuple[int, int, int]:
    """Well-separated hues by the golden ratio (the web page uses the same formula)."""
    r, g, b = colorsys.hsv_to_rgb((class_id * 0.618033988749895) % 1.0, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(
    image: Image.Image, detections: list[Detection], original_width: int, quality: int = 90
) -> bytes:
    """JPEG bytes of `image` with each detection's box and `label score` on it; the boxes are
    in the pixels of the original image, `original_width` wide, which `image` may be a
    reduction of."""
    image = image.copy()
    scale = image.width / original_width
    draw = ImageDraw.Draw(image)
    line = max(2, round(min(image.size) / 200))
    font = ImageFont.load_default(size=max(12, round(min(image.size) / 30)))
    for det in reversed(detections):  # lowest score first: the best label ends up on top
        colour = class_colour(det.class_id)
        xmin, ymin, xmax, ymax = (v * scale for v in det.box)
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
