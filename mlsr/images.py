"""Open user images safely: refuse non-images, truncated files and decompression bombs; normalise to RGB."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mlsr.checks import existing_file, readable_bytes
from mlsr.errors import InputError

MAX_PIXELS = 40_000_000  # 40 MP: any real photo fits; a 30000 x 30000 "bomb" is refused before decoding
_MAX_FILE_BYTES = 50_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")

ImageInput = str | Path | bytes | Image.Image


def load_image(source: ImageInput, max_pixels: int = MAX_PIXELS, max_side: int | None = None) -> Image.Image:
    """Return an RGB PIL image from a path, raw bytes or a PIL image, or raise InputError saying why.

    A path must be a file the process may read: a folder, a missing file or one the operating system
    refuses ("permission denied") is an InputError naming it, like a damaged image.

    The size is checked from the header before any pixel is decoded, so a decompression bomb
    costs nothing. EXIF orientation is applied; transparency is flattened onto white; 16-bit and
    palette images are converted; an animated image gives its first frame. With `max_side`, the
    result is a thumbnail (JPEGs are decoded at reduced scale, which is much faster).
    """
    name = str(source) if isinstance(source, (str, Path)) else "the file"
    image = source if isinstance(source, Image.Image) else _open(source, name)
    width, height = image.size
    if width < 1 or height < 1:
        raise InputError(f"{name} is empty ({width}x{height} pixels).")
    if width * height > max_pixels:
        raise InputError(
            f"{name} declares {width}x{height} pixels, more than the {max_pixels:,} allowed (a decompression"
            " bomb, or a huge scan); downscale it first."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.seek(0)
            if max_side is not None:
                image.draft("RGB", (max_side, max_side))
            image.load()
            image = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as error:
        raise InputError(f"{name}: the image data is damaged or truncated ({error}).") from None
    image = _to_rgb(image)
    if max_side is not None:
        image.thumbnail((max_side, max_side))
    return image


def _open(source: str | Path | bytes, name: str) -> Image.Image:
    if isinstance(source, bytes):
        if not source:
            raise InputError(f"{name} is empty (0 bytes).")
        if len(source) > _MAX_FILE_BYTES:
            raise InputError(f"{name} has {len(source):,} bytes, more than the {_MAX_FILE_BYTES:,} allowed.")
        stream = io.BytesIO(source)
    else:
        path = existing_file(source, "image")
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"{name} is empty (0 bytes).")
        if size > _MAX_FILE_BYTES:
            raise InputError(f"{name} has {size:,} bytes, more than the {_MAX_FILE_BYTES:,} allowed.")
        stream = io.BytesIO(readable_bytes(path, "image"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(stream)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        if isinstance(error, UnidentifiedImageError):
            raise InputError(f"{name} is not an image that can be read: use JPEG, PNG, WebP, GIF, BMP or"
                             " TIFF.") from None
        raise InputError(f"{name} is a decompression bomb (far too many pixels for its size).") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{name}: the image data is damaged or truncated ({error}).") from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float32)
        # 16-bit images span 0..65535; 32-bit int and float images have no fixed range, so use their max.
        top = 65535.0 if image.mode.startswith("I;16") else (float(values.max()) or 1.0)
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB")
