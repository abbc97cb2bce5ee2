"""Image folders and their caption files: which images a folder holds, and the captions of each.

A captions file is CSV (a header with a file column: file/filename/image/path, and a caption column:
caption/text; optionally `split`) or JSON lines with the same keys. A file may appear on several rows.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mlsr.checks import existing_file, existing_folder, readable_bytes, reason
from mlsr.errors import InputError
from mlsr.images import IMAGE_SUFFIXES
from mlsr.settings import SPLITS

_FILE_COLUMNS = ("file", "filename", "image", "path")
_CAPTION_COLUMNS = ("caption", "text")


@dataclass
class ImageScan:
    """The images a folder holds, and what was found but not taken: (name relative to the folder, reason)."""

    paths: list[Path]
    skipped: list[tuple[str, str]] = field(default_factory=list)


def scan_images(folder: str | Path, *, strict: bool = False) -> ImageScan:
    """Image files under `folder` (recursively, by suffix), sorted by relative path, and what was skipped.

    Symbolic links: a link to a file inside the folder is followed (indexed under the link's own name);
    a link that leaves the folder, is broken or loops, and every link to a folder (a way to loop or to
    index a file twice) is not followed but listed in `skipped`, as is every subfolder that cannot be
    read and every image-named entry that is not a regular file (a pipe would block the build).
    `strict`: raise InputError at the first such entry instead.
    """
    root = existing_folder(folder, "images folder")
    real_root = root.resolve()
    found: list[Path] = []
    skipped: list[tuple[str, str]] = []
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            with os.scandir(directory) as listing:
                entries = list(listing)
        except OSError as error:
            skipped.append((f"{directory.relative_to(root).as_posix()}/", f"the folder cannot be read"
                                                                          f" ({reason(error)})"))
            continue
        for entry in entries:
            path = Path(entry.path)
            image_named = path.suffix.lower() in IMAGE_SUFFIXES
            name = path.relative_to(root).as_posix()
            try:
                if entry.is_symlink():
                    refusal = _link_refusal(path, real_root)
                    if refusal == "":
                        if image_named:
                            found.append(path)
                    elif image_named or refusal.startswith("a link to a folder"):
                        skipped.append((name, refusal))
                elif entry.is_dir(follow_symlinks=False):
                    pending.append(path)
                elif image_named:
                    if entry.is_file(follow_symlinks=False):
                        found.append(path)
                    else:
                        skipped.append((name, "not a regular file"))
            except OSError as error:
                skipped.append((name, f"cannot be read ({reason(error)})"))
    skipped.sort()
    if strict and skipped:
        raise InputError(f"{skipped[0][0]}: {skipped[0][1]} (strict=True stops at the first image it cannot take).")
    return ImageScan(sorted(found, key=lambda path: path.relative_to(root).as_posix()), skipped)


def find_images(folder: str | Path) -> list[Path]:
    """The image files `scan_images` takes (see there for links and unreadable subfolders)."""
    return scan_images(folder).paths


def _link_refusal(link: Path, real_root: Path) -> str:
    """'' when a symbolic link leads to a file inside the images folder; otherwise why it is not followed."""
    try:
        target = link.resolve(strict=True)
    except FileNotFoundError:
        return "a broken link (its target does not exist)"
    except (OSError, RuntimeError):  # ELOOP (RuntimeError before Python 3.13)
        return "a link that loops"
    if target.is_dir():
        return "a link to a folder (not followed: links to folders can loop or repeat images)"
    if not target.is_relative_to(real_root):
        return "a link to a file outside the images folder (not followed)"
    if not target.is_file():
        return "a link to something that is not a regular file"
    return ""


def read_captions(path: str | Path) -> dict[str, list[str]]:
    """Read captions from CSV (header with `file` and `caption` columns) or JSONL (`{"file":..., "caption":...}`).

    A file may appear on several rows: all its captions are kept, in order.
    """
    captions: dict[str, list[str]] = {}
    for name, text, _ in _caption_rows(path):
        captions.setdefault(name, []).append(text)
    return captions


def read_splits(path: str | Path) -> dict[str, str] | None:
    """The optional `split` column of a captions file: file -> split, or None when the file has no such column.

    Every row must then name a split, and the rows of one file must agree (a split belongs to an image).
    """
    rows = _caption_rows(path)
    if all(split is None for _, _, split in rows):
        return None
    splits: dict[str, str] = {}
    for number, (name, _, split) in enumerate(rows, 1):
        if split is None:
            raise InputError(f"{path}: row {number} ({name}) has no split, but other rows do; give every row one.")
        if splits.setdefault(name, split) != split:
            raise InputError(f"{path}: {name} is in split {splits[name]!r} and in {split!r}; one split per image.")
    return splits


def _caption_rows(path: str | Path) -> list[tuple[str, str, str | None]]:
    """(file, caption, split or None) per row of a CSV or JSONL captions file, validated."""
    path = existing_file(path, "captions file")
    try:
        text = readable_bytes(path, "captions file").decode("utf-8")  # bytes: CSV keeps its own line ends
    except UnicodeDecodeError as error:
        raise InputError(f"captions file {path} is not UTF-8 text (byte {error.start}).") from None
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise InputError(f"{path}:{number}: not valid JSON ({error.msg}).") from None
    else:
        try:
            rows = list(csv.DictReader(io.StringIO(text, newline="")))
        except csv.Error as error:
            raise InputError(f"{path}: not valid CSV ({error}).") from None
    parsed = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise InputError(f"{path}: row {number} is not an object with a file and a caption.")
        name = next((row[c] for c in _FILE_COLUMNS if row.get(c)), None)
        caption = next((row[c] for c in _CAPTION_COLUMNS if row.get(c)), None)
        if not isinstance(name, str) or not isinstance(caption, str):
            raise InputError(
                f"{path}: row {number} needs a file name column ({'/'.join(_FILE_COLUMNS)}) and a caption"
                f" column ({'/'.join(_CAPTION_COLUMNS)})."
            )
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise InputError(f"{path}: row {number} has split {split!r}; use one of {', '.join(SPLITS)}.")
        parsed.append((Path(name).as_posix(), caption, split))
    return parsed


def captions_of(name: str, captions: dict[str, list[str]]) -> list[str] | None:
    """Captions keyed by relative path, or by bare file name when the captions file gives only names."""
    return captions.get(name) or captions.get(Path(name).name)
