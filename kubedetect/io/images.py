"""Image loading and resizing: the one implementation used by preprocessing, evaluation and serving.

A model sees exactly what it was trained on only if every path decodes and resizes images the
same way, so this is the single place that does it: decode by content (never by file extension),
apply the EXIF orientation the camera recorded, convert any mode to RGB, refuse decompression
bombs before decoding them, and fit the image into the model's square input with Pillow's
antialiased bilinear filter: letterboxed (scaled to fit, aspect ratio kept, padded with grey), so
that a card photographed upright and one photographed sideways look like the same card. Where
the image sat in the square (`Frame`) is what maps boxes between the two: the shards' boxes into
the input, and the model's boxes back to the original pixels (`kubedetect.inference.decode`).

Memory is part of the contract: an image is reduced as early as its format allows (a JPEG while
it is decoded, any other right after, converted to RGB in bands), so that a 40-megapixel upload
never exists in more than one full-size copy, and `decode_cost` says from the header alone what
a decode will hold at its peak, for a server to budget. Pillow and numpy only: the serving
image carries no TensorFlow. numpy is imported only where an array is made: preprocessing
workers go from bytes to JPEG with Pillow alone, and start faster without it.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

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
# How an image becomes the square input: 'letterbox' (kubedetect's, since dataset.json and
# model.json record it) or 'stretch' (shards and models of earlier versions, which record
# nothing: still served and evaluated as they were trained).
RESIZE_MODES = ("letterbox", "stretch")
PAD_VALUE = 114  # the grey around a letterboxed image (and beyond a zoomed-out augmentation)
_EXIF_ORIENTATION = 0x0112
# What shows an image stored with each EXIF orientation upright (as ImageOps.exif_transpose);
# 5 to 8 swap width and height.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Bytes a pixel takes in Pillow's memory: RGB is stored as 4 bytes, like RGBA and CMYK.
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Bytes a pixel that a decoder holds beyond Pillow's image: libwebp decodes through buffers of
# its own (measured: 16 bytes a pixel in all, with Pillow's 4).
_DECODER_BYTES = {"WEBP": 12}
# Modes that Image.reduce takes (and that _to_rgb may convert after the reduction).
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F"}
# Pixels converted at once when an image's mode is not RGB: the band's copies stay a few MB
# however large the image (half a megapixel: at most 10 MB).
_BAND_PIXELS = 1 << 19
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image, oriented, and the size it has once oriented (before any reduction)."""

    image: Image.Image
    width: int
    height: int
    format: str


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    draft_size: int | None = None,
    source: str = "image",
    reserve: Callable[[int], AbstractContextManager] | None = None,
) -> DecodedImage:
    """Decode image bytes into an oriented RGB image.

    `draft_size` is the square size the caller will resize to: decoding then keeps only the
    detail that such a resize needs. The image is shrunk by the largest of 8, 4 and 2 that
    leaves both of its sides at least `draft_size` (or not at all): a JPEG by its decoder's DCT
    scaling, so that its full-size pixels never exist, any other format right after decoding
    (`_reduced_rgb`), before a full-size copy is made. The width and height reported stay the
    full image's, so that boxes remain in the annotation's (or the client's) frame.

    `reserve`, when given, is called with the bytes this decode holds at its peak (estimated
    from the header, before any pixel is decoded: `decode_cost`) and entered around the
    decoding: how a server keeps the images it decodes at once within its memory.
    """
    image = open_image(data, max_pixels=max_pixels, source=source)
    fmt = image.format or "unknown"
    width, height = image.size  # before any reduction
    factor = reduction(image.size, draft_size)
    if fmt == "JPEG" and factor > 1:
        image.draft("RGB", (draft_size, draft_size))  # the decoder shrinks by `factor` itself
        factor = 1
    with reserve(decode_cost(image, factor)) if reserve else nullcontext():
        try:
            image.load()  # decodes now: truncated or corrupt data fails here, not later
            # Read once the pixels are: a PNG may keep its EXIF after them, and Pillow decodes
            # the whole image to find it (outside any reservation, if asked before).
            orientation = _orientation(image)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            image = _reduced_rgb(image, factor)
            if orientation in _TRANSPOSE:
                image = image.transpose(_TRANSPOSE[orientation])
        except Exception as exc:
            raise ImageError(
                f"{source}: {fmt} data is truncated or corrupt ({_reason(exc)})"
            ) from None
    return DecodedImage(image=image, width=width, height=height, format=fmt)


def open_image(data: bytes, *, max_pixels: int, source: str = "image") -> Image.Image:
    """The image's header, read and checked: decoded by content among FORMATS, and refused as a
    decompression bomb beyond `max_pixels`, before a single pixel is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
    except UnidentifiedImageError:
        kinds = ", ".join(FORMATS)
        raise ImageError(f"{source}: not a decodable image (not {kinds} data)") from None
    except Exception as exc:  # Pillow raises many types for unreadable data
        raise ImageError(f"{source}: not a decodable image ({_reason(exc)})") from None
    if width * height > max_pixels:
        raise ImageError(
            f"{source}: {width}x{height} pixels exceeds the limit of {max_pixels} "
            "(possible decompression bomb)"
        )
    return image


def reduction(size: tuple[int, int], draft_size: int | None) -> int:
    """The factor an image of `size` is shrunk by when it will be resized to `draft_size`:
    the largest of 8, 4, 2 and 1 that leaves both sides at least `draft_size` (the rule of the
    JPEG decoder's DCT scaling, kept for every format)."""
    if not draft_size:
        return 1
    fits = min(size[0] // draft_size, size[1] // draft_size)
    return next(f for f in (8, 4, 2, 1) if f <= max(fits, 1))


def decode_cost(image: Image.Image, factor: int = 1) -> int:
    """Bytes that decoding `image` (opened, not loaded; a JPEG already drafted) holds at its
    peak: its pixels at the decoded size in Pillow's layout, the decoder's own buffers, and the
    RGB result with one copy of it (a conversion or an orientation). Measured against the
    resident memory of real decodes in tests/test_images.py."""
    width, height = image.size
    pixels = width * height
    cost = pixels * _BYTES_PER_PIXEL.get(image.mode, 4)
    fmt = image.format
    if fmt == "JPEG" and image.info.get("progressive"):
        # libjpeg keeps every DCT coefficient of a progressive image (2 bytes a sample, at the
        # full size whatever the DCT scaling), sampled as its components are.
        layers = getattr(image, "layer", None) or [(0, 1, 1, 0)] * 3
        most = max(h * v for _, h, v, _ in layers)
        samples = sum(h * v for _, h, v, _ in layers) / most
        full = image.decoderconfig[0] ** 2 if image.decoderconfig else 1
        cost += int(2 * samples * pixels * full)
    else:
        cost += pixels * _DECODER_BYTES.get(fmt, 0)
    reduced = -(-width // factor) * -(-height // factor)
    if image.mode != "RGB":  # a band converted (_reduced_rgb): up to five copies of 4 bytes
        cost += min(pixels, _BAND_PIXELS) * 4 * 5
    return cost + reduced * 4 * 2


@dataclass(frozen=True)
class Frame:
    """Where an image of `width` x `height` pixels (oriented) sits in the model's square input of
    `size` pixels: scaled to `content_width` x `content_height` with its top-left corner at
    (`left`, `top`). Letterboxed, the scale keeps the aspect ratio and the rest is grey padding;
    stretched (models of earlier versions), the content is the whole square.

    The one definition of the transform between an image's pixels and the model's normalised
    coordinates, used by preprocessing (boxes into the stored image), evaluation and serving
    (boxes back into the original image). Plain arithmetic: the coordinates may be floats or
    numpy arrays."""

    width: int
    height: int
    size: int
    content_width: int
    content_height: int
    left: int
    top: int

    @classmethod
    def of(cls, width: int, height: int, size: int, resize: str = "letterbox") -> Frame:
        if resize == "stretch":
            return cls(width, height, size, size, size, 0, 0)
        if resize != "letterbox":
            raise ValueError(f"unknown resize {resize!r} (one of {', '.join(RESIZE_MODES)})")
        scale = size / max(width, height)
        content_width = min(size, max(1, round(width * scale)))
        content_height = min(size, max(1, round(height * scale)))
        return cls(
            width,
            height,
            size,
            content_width,
            content_height,
            (size - content_width) // 2,
            (size - content_height) // 2,
        )

    def to_input(self, x, y):
        """Original pixel coordinates to coordinates in the model's input, normalised to [0, 1]."""
        return (
            (x * (self.content_width / self.width) + self.left) / self.size,
            (y * (self.content_height / self.height) + self.top) / self.size,
        )

    def to_original(self, u, v):
        """Normalised coordinates in the model's input to the original image's pixels."""
        return (
            (u * self.size - self.left) * (self.width / self.content_width),
            (v * self.size - self.top) * (self.height / self.content_height),
        )


def fit(image: Image.Image, frame: Frame) -> Image.Image:
    """An RGB image (possibly a reduction of the one `frame` describes) as the model's square
    input: resized to the frame's content with the one resampling filter every path uses, and
    padded with grey around it."""
    content = (frame.content_width, frame.content_height)
    if image.size != content:
        image = image.resize(content, RESAMPLE)
    if content == (frame.size, frame.size):
        return image
    square = Image.new("RGB", (frame.size, frame.size), (PAD_VALUE,) * 3)
    square.paste(image, (frame.left, frame.top))
    return square


def fit_rgb(image: Image.Image, frame: Frame) -> np.ndarray:
    """`fit`, as a uint8 HxWx3 array."""
    import numpy as np  # noqa: PLC0415 - see the module docstring

    return np.asarray(fit(image, frame), dtype=np.uint8)


def load_for_model(
    data: bytes, *, size: int, max_pixels: int, resize: str = "letterbox", source: str = "image"
) -> tuple[np.ndarray, Frame]:
    """Bytes to the model's input array, and the frame that maps its boxes back to the original
    (oriented) image."""
    decoded = decode_image(data, max_pixels=max_pixels, draft_size=size, source=source)
    frame = Frame.of(decoded.width, decoded.height, size, resize)
    return fit_rgb(decoded.image, frame), frame


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


def _reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """A decoded image as RGB, shrunk by `factor` (box averages), without a full-size copy.

    Converting a transparent PNG at full size takes about four copies of it (RGBA, a white
    background, the composite, RGB): 640 MB for 40 megapixels. Here an image that is not RGB is
    converted a band of rows at a time, each band shrunk before it is pasted into the result,
    so what is allocated beyond the decoded pixels is a band and the small result.
    """
    if image.mode == "RGB":
        return image.reduce(factor) if factor > 1 else image
    width, height = image.size
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    rows = max(1, _BAND_PIXELS // width // factor) * factor
    for top in range(0, height, rows):
        band = image.crop((0, top, width, min(height, top + rows)))
        if factor == 1:
            band = _to_rgb(band)
        elif band.mode in _REDUCIBLE:  # the smaller copy is the one converted
            band = _to_rgb(band.reduce(factor))
        else:
            band = _to_rgb(band).reduce(factor)
        out.paste(band, (0, top // factor))
    return out


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
