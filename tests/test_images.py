"""Image loading: every kind of bad or unusual file gives RGB or a specific error."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mlsr.errors import InputError
from mlsr.images import MAX_PIXELS, load_image


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height but carries almost no data: a decompression bomb's header."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b"")


def test_not_an_image(tmp_path):
    (tmp_path / "a.jpg").write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        load_image(tmp_path / "a.jpg")


def test_zero_byte_and_missing_files(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(InputError, match="missing.png does not exist"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is a folder, not a file"):
        load_image(tmp_path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(fmt):
    data = encoded(Image.effect_noise((64, 64), 50).convert("RGB"), fmt)
    with pytest.raises(InputError, match="damaged or truncated"):
        load_image(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    with pytest.raises(InputError, match="30000x30000|decompression bomb"):
        load_image(png_header_only(30000, 30000))
    side = int(MAX_PIXELS ** 0.5) + 10
    with pytest.raises(InputError, match="allowed"):
        load_image(png_header_only(side, side))


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "I;16", "I", "F", "1"])
def test_every_mode_becomes_rgb(mode):
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16))
    elif mode in ("I", "F"):
        image = Image.fromarray(rng.integers(0, 1000, (20, 30)).astype(np.int32 if mode == "I" else np.float32))
    else:
        image = Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).convert(mode)
    fmt = "TIFF" if mode in ("I", "F", "CMYK") else "PNG"
    rgb = load_image(encoded(image, fmt))
    assert rgb.mode == "RGB" and rgb.size == (30, 20)


def test_transparency_is_flattened_onto_white():
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert load_image(encoded(clear, "PNG")).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    loaded = load_image(encoded(image, "JPEG", exif=exif))
    assert loaded.size == (20, 40)


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    first = load_image(data)
    assert first.mode == "RGB" and first.getpixel((0, 0))[0] > 200


def test_one_pixel_and_pil_inputs():
    assert load_image(encoded(Image.new("RGB", (1, 1)), "PNG")).size == (1, 1)
    assert load_image(Image.new("L", (3, 2))).mode == "RGB"


def test_thumbnails_keep_the_aspect_ratio():
    big = encoded(Image.new("RGB", (800, 600), "blue"), "JPEG")
    assert load_image(big, max_side=384).size == (384, 288)
    assert load_image(encoded(Image.new("RGB", (100, 50)), "PNG"), max_side=384).size == (100, 50)
