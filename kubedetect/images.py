"""Image loading and resizing: the one implementation used by preprocessing, evaluation and serving.

A model sees exactly what it was trained on only if every path decodes and resizes images the
same way, so this is the single place that does it: decode by content (never by file extension),
apply the EXIF orientation the camera recorded, convert any mode to RGB, refuse decompression
bombs before decoding them, and stretch to the model's square input with Pillow's antialiased
bilinear filter. Pillow and numpy only: the serving image carries no TensorFlow. numpy is
imported only where an array is made: preprocessing workers go from bytes to JPEG with Pillow
alone, and start faster without it.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, UnidentifiedImageError

from kubedetect.errors import ImageError

if TYPE_CHECKING:
    import numpy as np

# Pillow's own bomb check would warn (or raise its own type) at its global limit; we enforce the
# caller's limit ourselves, before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None

# The photo formats kubedetect decodes, whatever a file is called. Images are untrusted input
# (uploads, scraped datasets), and Pillow can open dozens of formats, some through external
# programs (EPS through Ghostscript): only these decoders are ever given the bytes. The JPEG
# decoder also opens MPO, the multi-picture JPEG many phones write.
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP")

RESAMPLE = Image.Resampling.BILINEAR
_TRANSPOSING_ORIENTATIONS = {5, 6, 7, 8}  # EXIF orientations that swap width and height
_EXIF_ORIENTATION = 0x0112
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image and the size it has once oriented (before any draft downscaling)."""

    image: Image.Image
    width: int
    height: int
    format: str


def decode_image(
    data: bytes, *, max_pixels: int, draft_size: int | None = None, source: str = "image"
) -> DecodedImage:
    """Decode image bytes into an oriented RGB image.

    `draft_size` lets JPEG decoding skip detail that a resize to that square size would throw
    away (DCT scaling), which roughly halves the decode time of photos; the reported width and
    height stay those of the full image, so box coordinates remain in the annotation's frame.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        raw_width, raw_height = image.size
    except UnidentifiedImageError:
        kinds = ", ".join(FORMATS)
        raise ImageError(f"{source}: not a decodable image (not {kinds} data)") from None
    except Exception as exc:  # Pillow raises many types for unreadable data
        raise ImageError(f"{source}: not a decodable image ({_reason(exc)})") from None
    if raw_width * raw_height > max_pixels:
        raise ImageError(
            f"{source}: {raw_width}x{raw_height} pixels exceeds the limit of {max_pixels} "
            "(possible decompression bomb)"
        )
    orientation = _orientation(image)
    transposed = orientation in _TRANSPOSING_ORIENTATIONS
    width, height = (raw_height, raw_width) if transposed else (raw_width, raw_height)
    fmt = image.format or "unknown"
    try:
        if draft_size and fmt == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()  # decodes now: truncated or corrupt data fails here, not later
        if orientation not in (None, 1):
            image = ImageOps.exif_transpose(image)
        image = _to_rgb(image)
    except Exception as exc:
        raise ImageError(f"{source}: {fmt} data is truncated or corrupt ({_reason(exc)})") from None
    return DecodedImage(image=image, width=width, height=height, format=fmt)


def resize(image: Image.Image, size: int) -> Image.Image:
    """Stretch an RGB image to size x size with the one resampling filter every path uses.

    Stretching (rather than letterboxing) keeps the arithmetic of boxes trivial: a box's
    coordinates normalised by the original width and height are its coordinates in the model's
    input too, for training and serving alike.
    """
    if image.size != (size, size):
        image = image.resize((size, size), RESAMPLE)
    return image


def resize_rgb(image: Image.Image, size: int) -> np.ndarray:
    """`resize`, as a uint8 HxWx3 array."""
    import numpy as np  # noqa: PLC0415 - see the module docstring

    return np.asarray(resize(image, size), dtype=np.uint8)


def load_for_model(data: bytes, *, size: int, max_pixels: int, source: str = "image"):
    """Bytes to the model's input array plus the original (oriented) width and height."""
    decoded = decode_image(data, max_pixels=max_pixels, draft_size=size, source=source)
    return resize_rgb(decoded.image, size), decoded.width, decoded.height


def encode_jpeg(pixels: np.ndarray | Image.Image, quality: int) -> bytes:
    """Deterministic JPEG encoding (same pixels and quality give the same bytes)."""
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality, optimize=False)
    return out.getvalue()


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a broken EXIF block should not cost the image
        return None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white, as viewers show them, instead of their hidden colour.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB")


def _reason(exc: Exception) -> str:
    """The first line of an error, without object addresses: reports must be the same bytes on
    every run."""
    text = str(exc) or type(exc).__name__
    return _ADDRESS.sub(">", text.splitlines()[0])[:200]
