"""Image loading (kubedetect.io.images), the one implementation preprocessing, evaluation and
serving share: decoding by content, EXIF orientation, any mode to RGB, decompression bombs refused
before any pixel is allocated, and the stretch to the model's square."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image
from test_data_support import (
    REPO,
    jpeg_bytes,
    photo,
    png_bomb,
    png_bytes,
    read_shards,
    voc_xml,
    write,
)

from kubedetect.config import DataConfig, PreprocessConfig
from kubedetect.data.check import check
from kubedetect.data.shards import preprocess
from kubedetect.errors import ImageError
from kubedetect.io.images import (
    PAD_VALUE,
    Frame,
    decode_image,
    encode_jpeg,
    fit_rgb,
    load_for_model,
)

LIMIT = 80_000_000
RED, BLUE = (230, 20, 20), (20, 20, 230)


def encoded(image: Image.Image, fmt: str, **save_args) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **save_args)
    return out.getvalue()


def marked(width: int, height: int) -> np.ndarray:
    """A blue image with a red block in its top-left quarter: shows which way is up."""
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = BLUE
    pixels[: height // 3, : width // 3] = RED
    return pixels


def colour_at(image: Image.Image, x: float, y: float) -> np.ndarray:
    """The mean colour of a small patch around (x, y), given as fractions of the size."""
    pixels = np.asarray(image, dtype=float)
    h, w = pixels.shape[:2]
    cx, cy = int(x * w), int(y * h)
    return pixels[max(cy - 2, 0) : cy + 3, max(cx - 2, 0) : cx + 3].reshape(-1, 3).mean(axis=0)


def is_red(colour) -> bool:
    return colour[0] > 150 and colour[2] < 100


# Stored pixels for a displayed image, per EXIF orientation (TIFF 6.0 / EXIF 2.3 definitions):
# 3 = shown rotated 180 degrees, 6 = shown rotated 90 degrees clockwise, 8 = 90 anticlockwise.
STORED_FOR = {
    1: lambda shown: shown,
    3: lambda shown: np.rot90(shown, 2),
    6: lambda shown: np.rot90(shown, 1),  # rotating the stored pixels clockwise shows `shown`
    8: lambda shown: np.rot90(shown, -1),
}


def oriented_jpeg(shown: np.ndarray, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = Image.fromarray(np.ascontiguousarray(STORED_FOR[orientation](shown)))
    return jpeg_bytes(stored, exif=exif.tobytes())


# -- decoding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP"])
def test_images_are_decoded_by_content_whatever_their_name(fmt):
    data = encoded(Image.fromarray(marked(60, 40)), fmt)
    decoded = decode_image(data, max_pixels=LIMIT, source="photo.jpg")
    assert (decoded.width, decoded.height, decoded.format) == (60, 40, fmt)
    assert decoded.image.mode == "RGB"
    assert is_red(colour_at(decoded.image, 0.1, 0.1)) and not is_red(
        colour_at(decoded.image, 0.8, 0.8)
    )


def test_multi_picture_jpegs_from_phones_decode_to_their_first_picture():
    first, second = Image.fromarray(marked(60, 40)), Image.new("RGB", (60, 40), BLUE)
    data = encoded(first, "MPO", save_all=True, append_images=[second])
    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded.format == "MPO" and is_red(colour_at(decoded.image, 0.1, 0.1))


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX", "SGI", "EPS"])
def test_other_formats_are_not_decoded_even_when_pillow_could(fmt):
    """Untrusted bytes only reach the decoders of the usual photo formats (Pillow would hand
    PostScript to Ghostscript)."""
    if fmt == "EPS":
        data = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    else:
        data = encoded(Image.fromarray(marked(32, 32)), fmt)
    with pytest.raises(ImageError) as error:
        decode_image(data, max_pixels=LIMIT, source="x.jpg")
    assert (
        str(error.value)
        == "x.jpg: not a decodable image (not JPEG, PNG, BMP, GIF, TIFF, WEBP data)"
    )


@pytest.mark.parametrize("orientation", [1, 3, 6, 8])
def test_exif_orientation_is_applied(orientation):
    shown = marked(60, 40)  # landscape, red block top-left as the viewer sees it
    decoded = decode_image(oriented_jpeg(shown, orientation), max_pixels=LIMIT)
    assert (decoded.width, decoded.height) == (60, 40)
    assert decoded.image.size == (60, 40)
    assert is_red(colour_at(decoded.image, 0.1, 0.1))
    for x, y in [(0.9, 0.1), (0.1, 0.9), (0.9, 0.9)]:
        assert not is_red(colour_at(decoded.image, x, y)), (orientation, x, y)


def test_orientation_6_reaches_the_shards_with_boxes_on_the_right_pixels(tmp_path):
    """A phone photo stored sideways: the XML (made by a tool that shows the image upright)
    boxes the red block as displayed; in the shard the box lies on red pixels."""
    shown = marked(90, 60)
    write(tmp_path / "data" / "JPEGImages" / "phone.jpg", oriented_jpeg(shown, 6))
    box = ("block", 0, 0, 30, 20)  # the red block, in the displayed 90x60 frame
    write(tmp_path / "data" / "Annotations" / "phone.xml", voc_xml("phone.jpg", (90, 60), [box]))
    config = PreprocessConfig(image_size=64, num_shards=1, workers=1, progress=False)
    manifest = preprocess(str(tmp_path / "data"), str(tmp_path / "out"), config)
    assert manifest["report"]["problems"] == []  # <size> agrees with the oriented image
    record = read_shards(tmp_path / "out")["Annotations/phone.xml"]
    assert record["original_size"] == (60, 90)
    # Letterboxed: 90x60 scaled to 64x43, 10 rows of grey above it (21 rows of padding in all).
    xmin, ymin, xmax, ymax = record["boxes"][0]
    np.testing.assert_allclose(
        [xmin, ymin, xmax, ymax],
        [0, 10 / 64, 30 * 64 / 90 / 64, (20 * 43 / 60 + 10) / 64],
        atol=1e-6,
    )
    stored = Image.fromarray(record["image"])
    assert is_red(colour_at(stored, (xmin + xmax) / 2, (ymin + ymax) / 2))
    assert not is_red(colour_at(stored, 0.75, 0.75))


def test_load_for_model_gives_a_letterboxed_square_and_its_frame():
    pixels, frame = load_for_model(oriented_jpeg(marked(60, 40), 6), size=32, max_pixels=LIMIT)
    assert (frame.width, frame.height) == (60, 40)
    # 60x40 fits as 32x21 (the aspect ratio kept), 5 rows of grey above and 6 below.
    assert (frame.content_width, frame.content_height, frame.left, frame.top) == (32, 21, 0, 5)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert (pixels[1, 16] == PAD_VALUE).all() and (pixels[30, 16] == PAD_VALUE).all()
    assert is_red(pixels[7, 2]) and not is_red(pixels[22, 29])


# -- modes ----------------------------------------------------------------------------------------


def _palette() -> Image.Image:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([10, 200, 30] + [0, 0, 0] * 255)
    return image


def _palette_with_transparency() -> Image.Image:
    image = _palette()
    image.info["transparency"] = 0
    return image


def _sixteen_bit() -> Image.Image:
    return Image.fromarray(np.full((8, 8), 0x8000, dtype=np.uint16))


MODES = {
    # name: (image, format, expected RGB of every pixel, tolerance)
    "L": (lambda: Image.new("L", (8, 8), 100), "PNG", (100, 100, 100), 0),
    "LA": (lambda: Image.new("LA", (8, 8), (100, 255)), "PNG", (100, 100, 100), 0),
    "1": (lambda: Image.new("1", (8, 8), 1), "PNG", (255, 255, 255), 0),
    "P": (_palette, "PNG", (10, 200, 30), 0),
    "P+transparency": (_palette_with_transparency, "PNG", (255, 255, 255), 0),
    "RGBA opaque": (lambda: Image.new("RGBA", (8, 8), (0, 0, 255, 255)), "PNG", (0, 0, 255), 0),
    "RGBA transparent": (
        lambda: Image.new("RGBA", (8, 8), (255, 0, 0, 0)),
        "PNG",
        (255, 255, 255),
        0,
    ),
    "I;16": (_sixteen_bit, "PNG", (128, 128, 128), 1),
    "greyscale JPEG": (lambda: Image.new("L", (8, 8), 60), "JPEG", (60, 60, 60), 2),
    "CMYK JPEG": (lambda: Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG", (255, 255, 255), 3),
}


@pytest.mark.parametrize("name", list(MODES))
def test_every_mode_becomes_rgb(name):
    make, fmt, expected, tolerance = MODES[name]
    decoded = decode_image(encoded(make(), fmt), max_pixels=LIMIT)
    assert decoded.image.mode == "RGB"
    pixels = np.asarray(decoded.image, dtype=int)
    assert np.abs(pixels - np.array(expected)).max() <= tolerance, pixels[0, 0]


def test_odd_modes_reach_the_shards_as_three_channel_images(tmp_path):
    data = tmp_path / "data"
    for name, (make, fmt, _, _) in MODES.items():
        stem = name.replace(" ", "_").replace("+", "_").replace(";", "")
        suffix = ".jpg" if fmt == "JPEG" else ".png"
        write(data / f"{stem}{suffix}", encoded(make(), fmt))
        write(data / f"{stem}.xml", voc_xml(f"{stem}{suffix}", (8, 8), [("thing", 1, 1, 6, 6)]))
    config = PreprocessConfig(image_size=16, num_shards=1, workers=2, progress=False)
    manifest = preprocess(str(data), str(tmp_path / "out"), config)
    assert manifest["report"]["problems"] == []
    records = read_shards(tmp_path / "out")
    assert len(records) == len(MODES)
    assert all(r["image"].shape == (16, 16, 3) for r in records.values())


# -- refusing what cannot or should not be decoded ------------------------------------------------


def test_decompression_bomb_is_refused_from_its_header():
    with pytest.raises(ImageError, match="decompression bomb") as error:
        decode_image(png_bomb(100_000, 100_000), max_pixels=LIMIT, source="bomb.png")
    assert str(error.value).startswith("bomb.png: 100000x100000 pixels exceeds the limit")


def test_decompression_bomb_fails_fast_without_allocating_its_pixels():
    """In a process that may not map more than 1 GiB, the bomb (60000x60000 RGB, 10 GiB once
    decoded) is refused with the bomb error. With the limit lifted, the same bytes fail for want
    of memory instead: the refusal is what keeps the pixels from being allocated."""
    script = textwrap.dedent(
        """
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        sys.path.insert(0, "tests")
        from test_data_support import png_bomb
        from kubedetect.errors import ImageError
        from kubedetect.io.images import decode_image
        bomb = png_bomb(60_000, 60_000)
        for limit in (80_000_000, 10**12):
            try:
                decode_image(bomb, max_pixels=limit, source="bomb.png")
                print("decoded")
            except ImageError as error:
                print(error)
            with open("/proc/self/status") as status:  # the peak resident set of this process
                print([line for line in status if line.startswith("VmHWM:")][0].strip())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    refused, peak_after_refusal, unlimited, _ = result.stdout.strip().splitlines()
    assert (
        "60000x60000 pixels exceeds the limit of 80000000 (possible decompression bomb)" in refused
    )
    assert int(peak_after_refusal.split()[1]) < 300_000  # kB: Python, Pillow and the header
    assert "decompression bomb" not in unlimited and unlimited != "decoded"


def test_the_pixel_limit_is_a_setting(tmp_path):
    data = tmp_path / "data"
    write(data / "big.png", png_bytes(Image.new("RGB", (100, 100), RED)))
    write(data / "big.xml", voc_xml("big.png", (100, 100), [("thing", 1, 1, 50, 50)]))
    strict = check(str(data), DataConfig(max_image_pixels=5_000), progress=False)
    assert [(p.kind, p.file) for p in strict.problems] == [("bad_image", "big.png")]
    assert check(str(data), DataConfig(max_image_pixels=10_000), progress=False).problems == ()


def _half(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not a decodable image"),
        (b"GIF89a not really", "not a decodable image"),
        (jpeg_bytes(photo(64, 64))[:150], "not a decodable image"),  # cut inside the header
        (_half(jpeg_bytes(photo(64, 64))), "truncated or corrupt"),  # cut inside the pixels
        (_half(png_bytes(photo(64, 64))), "truncated or corrupt"),
    ],
    ids=["empty", "garbage", "jpeg-header-only", "truncated-jpeg", "truncated-png"],
)
def test_undecodable_bytes_raise_image_error_naming_the_source(data, message):
    with pytest.raises(ImageError, match=message) as error:
        decode_image(data, max_pixels=LIMIT, source="x/y.jpg")
    assert str(error.value).startswith("x/y.jpg: ")


# -- resizing and encoding ------------------------------------------------------------------------


def test_fit_letterboxes_keeping_the_aspect_ratio():
    decoded = decode_image(png_bytes(Image.fromarray(marked(90, 30))), max_pixels=LIMIT)
    frame = Frame.of(decoded.width, decoded.height, 60)
    pixels = fit_rgb(decoded.image, frame)
    assert pixels.shape == (60, 60, 3)
    # 90x30 becomes 60x20 in rows 20 to 39; grey above and below.
    assert (frame.content_width, frame.content_height, frame.left, frame.top) == (60, 20, 0, 20)
    assert (pixels[:20] == PAD_VALUE).all() and (pixels[40:] == PAD_VALUE).all()
    # The red block (left third, top third of the image) is 20x6 pixels at (0, 20).
    assert is_red(pixels[22, 8]) and not is_red(pixels[22, 30]) and not is_red(pixels[32, 8])
    # Stretched (models of earlier versions): the whole square, the block a third of each side.
    stretched = fit_rgb(decoded.image, Frame.of(90, 30, 60, "stretch"))
    assert is_red(stretched[8, 8]) and not is_red(stretched[8, 30]) and not is_red(stretched[30, 8])


def test_jpeg_encoding_is_deterministic():
    pixels = np.asarray(Image.fromarray(marked(40, 40)).resize((32, 32)))
    assert (
        encode_jpeg(pixels, 90)
        == encode_jpeg(pixels, 90)
        == encode_jpeg(Image.fromarray(pixels), 90)
    )


# -- memory: early reduction and what a decode costs ---------------------------------------------

PEAK_SCRIPT = """
import sys
from contextlib import nullcontext
from kubedetect.io.images import decode_image
data = open(sys.argv[1], "rb").read()
def memory(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(key))
estimates = []
def reserve(cost):
    estimates.append(cost)
    return nullcontext()
before = memory("VmRSS")
decoded = decode_image(data, max_pixels=10**9, draft_size=int(sys.argv[2]), reserve=reserve)
print(memory("VmHWM") - before, estimates[0], *decoded.image.size)
"""


def decode_peak(tmp_path, data: bytes, draft_size: int) -> tuple[int, int, tuple[int, int]]:
    """(bytes a decode added to the resident set at its peak, its `reserve` estimate, the size
    of the decoded image), measured in a fresh process."""
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    result = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(path), str(draft_size)],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=True,
    )  # fmt: skip
    peak, estimate, width, height = map(int, result.stdout.split())
    return peak, estimate, (width, height)


def _large(mode: str = "RGB") -> Image.Image:
    """A 4800 x 3200 (15 megapixel) image of coarse noise: quick to encode, real to decode."""
    rng = np.random.default_rng(0)
    small = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    image = small.resize((4800, 3200), Image.Resampling.NEAREST)
    if mode == "RGBA":
        image.putalpha(Image.new("L", image.size, 128))
        return image
    return image.convert(mode)


MIB = 2**20
LARGE = {
    "transparent PNG": lambda: encoded(_large("RGBA"), "PNG", compress_level=1),
    "palette PNG with transparency": lambda: encoded(
        _large("P"), "PNG", transparency=0, compress_level=1
    ),
    "16-bit PNG": lambda: encoded(
        Image.fromarray(np.asarray(_large("L"), dtype=np.uint16) * 256), "PNG", compress_level=1
    ),
    "GIF": lambda: encoded(_large("P"), "GIF"),
    "TIFF": lambda: encoded(_large(), "TIFF", compression="tiff_lzw"),
    "WEBP": lambda: encoded(_large(), "WEBP", quality=80),
    "progressive JPEG": lambda: encoded(_large(), "JPEG", progressive=True, subsampling=0),
    "CMYK JPEG": lambda: encoded(_large("CMYK"), "JPEG"),
}


@pytest.mark.parametrize("name", list(LARGE))
def test_a_decode_stays_within_the_memory_it_reserves(tmp_path, name):
    """What a server reserves for a decode, known from the header alone, bounds the memory the
    decode really takes (the resident set of a fresh process, read by the kernel), format by
    format; and it is no gross overestimate, which would refuse images needlessly."""
    peak, estimate, size = decode_peak(tmp_path, LARGE[name](), 256)
    assert peak <= 1.05 * estimate + 4 * MIB, (peak / MIB, estimate / MIB)
    assert estimate <= 1.8 * peak + 16 * MIB, (peak / MIB, estimate / MIB)
    assert size == (600, 400)  # shrunk by 8: both sides still at least 256


def test_a_large_transparent_png_is_reduced_without_full_size_copies(tmp_path):
    """A 15-megapixel transparent PNG decoded for a 256 px model: its RGBA pixels (4 bytes
    each, 61 MB) are all that is ever held at full size, not the four full-size copies a
    conversion to RGB would make first (white background, composite, RGB)."""
    peak, _, _ = decode_peak(tmp_path, LARGE["transparent PNG"](), 256)
    decoded_pixels = 4800 * 3200 * 4
    assert peak <= decoded_pixels + 16 * MIB, peak / MIB


def test_reduction_keeps_what_the_resize_needs_and_the_pixels_it_would_give():
    """Every format is shrunk by the rule of the JPEG decoder's DCT scaling (the largest of 8,
    4 and 2 that leaves both sides at least the target), and the model's input made from the
    reduced image is the one made from the full image, within rounding."""
    image = Image.fromarray(marked(900, 600))
    for fmt in ("PNG", "BMP", "WEBP"):
        data = encoded(image, fmt, lossless=True)
        decoded = decode_image(data, max_pixels=LIMIT, draft_size=128)
        assert (decoded.width, decoded.height, decoded.image.size) == (900, 600, (225, 150))
        frame = Frame.of(900, 600, 128)
        reduced = fit_rgb(decoded.image, frame).astype(int)
        full = fit_rgb(decode_image(data, max_pixels=LIMIT).image, frame).astype(int)
        assert np.abs(reduced - full).max() <= 12
        assert is_red(reduced[30, 10]) and not is_red(reduced[80, 80])
