"""Each item's picture, kept inside the index: one small WebP per row, packed into two files.

An index that carries its pictures shows them wherever it is served (a Space behind HTTPS, an API client,
a laptop offline) without a browser asking a third-party host and without the server exposing its
folders. Row i's picture is `data[offsets[i]:offsets[i + 1]]`; an empty slice means the row has none
(the app shows a placeholder, or fills it on first display). 512 px on the long side serves both a
gallery cell and a preview on a retina screen; WebP at quality 75 is ~33 KB for a COCO photo, 22%
smaller than a JPEG of the same size (numbers: docs/index-format.md).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image

from mlsr.errors import InputError
from mlsr.images import ImageInput, load_image

THUMBNAIL_SIDE = 512
_WEBP_QUALITY = 75
_MEDIA_TYPES = ((b"RIFF", "image/webp"), (b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG", "image/png"))


@dataclass(frozen=True)
class Thumbnails:
    """One encoded picture (or none) per index row, packed: `offsets` int64 (n + 1,), `data` uint8 bytes."""

    offsets: np.ndarray
    data: np.ndarray

    @classmethod
    def from_pictures(cls, pictures: Sequence[bytes | None]) -> Thumbnails:
        """Pack one picture per row (None or b"": the row has none)."""
        sizes = np.fromiter((len(p or b"") for p in pictures), dtype=np.int64, count=len(pictures))
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        data = np.frombuffer(b"".join(p or b"" for p in pictures), dtype=np.uint8).copy()
        return cls(offsets, data)

    @classmethod
    def none(cls, n: int) -> Thumbnails:
        """n rows without a picture."""
        return cls(np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.uint8))

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def has(self, row: int) -> bool:
        """True when row `row` has a picture (read from the offsets: nothing is copied)."""
        return bool(self.offsets[row + 1] > self.offsets[row])

    def picture(self, row: int) -> bytes | None:
        """Row `row`'s encoded picture, or None when it has none."""
        start, stop = int(self.offsets[row]), int(self.offsets[row + 1])
        return bytes(self.data[start:stop]) if stop > start else None

    def missing(self) -> np.ndarray:
        """The rows without a picture, ascending."""
        return np.flatnonzero(np.diff(self.offsets) == 0)

    @property
    def count(self) -> int:
        """Rows that have a picture."""
        return int(np.count_nonzero(np.diff(self.offsets)))

    def take(self, rows: Sequence[int] | np.ndarray) -> Thumbnails:
        """The pictures of these rows, in this order (a new object; this one is unchanged). Copied a run of
        consecutive rows at a time, so keeping all but a few rows of a large index costs a few slices."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        sizes = self.offsets[rows + 1] - self.offsets[rows]
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        runs = zip(np.concatenate([[0], breaks]), np.concatenate([breaks, [len(rows)]]))
        data = np.asarray(self.data)
        pieces = [data[self.offsets[rows[first]]:self.offsets[rows[last - 1] + 1]]
                  for first, last in runs if last > first]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return Thumbnails(offsets, np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint8))

    def then(self, other: Thumbnails) -> Thumbnails:
        """These rows followed by `other`'s."""
        offsets = np.concatenate([self.offsets[:-1], other.offsets + self.offsets[-1]]).astype(np.int64)
        return Thumbnails(offsets, np.concatenate([np.asarray(self.data), np.asarray(other.data)]))

    def filled(self, pictures: Mapping[int, bytes | None]) -> Thumbnails:
        """A copy with these rows' pictures set (the others, and rows given None, kept)."""
        return Thumbnails.from_pictures([pictures.get(row) or self.picture(row) for row in range(len(self))])

    def check(self, n: int) -> None:
        """Raise InputError unless this holds n rows whose slices tile `data` exactly."""
        offsets = self.offsets
        if offsets.dtype != np.int64 or offsets.ndim != 1 or len(offsets) != n + 1:
            raise InputError(f"thumbnails: {len(offsets) - 1} rows of offsets ({offsets.dtype}) for {n} items.")
        if self.data.dtype != np.uint8 or self.data.ndim != 1:
            raise InputError(f"thumbnails: the pictures must be bytes (uint8), got {self.data.dtype}.")
        if offsets[0] != 0 or offsets[-1] != len(self.data) or (np.diff(offsets) < 0).any():
            raise InputError("thumbnails: the offsets do not cut the pictures' bytes into rows.")


def make_thumbnail(image: Image.Image) -> bytes:
    """An opened RGB image as a WebP at most THUMBNAIL_SIDE px on its long side (the image itself is unchanged)."""
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    small.save(buffer, "WEBP", quality=_WEBP_QUALITY, method=2)
    return buffer.getvalue()


def thumbnail_of(source: ImageInput) -> bytes:
    """The thumbnail of an image file or its bytes, checked like an upload (a bomb, a damaged file: InputError)."""
    return make_thumbnail(load_image(source, max_side=THUMBNAIL_SIDE))


def media_type(picture: bytes) -> str:
    """The MIME type of an encoded picture, from its first bytes."""
    for magic, kind in _MEDIA_TYPES:
        if picture.startswith(magic):
            return kind
    return "application/octet-stream"
