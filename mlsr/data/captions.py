"""Image folders and their caption files: which images a folder holds, and the captions of each.

A captions file is CSV (a header with a file column: file/filename/image/path, and a caption column:
caption/text; optionally `split`) or JSON lines with the same keys. A file may appear on several rows.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mlsr.errors import InputError
from mlsr.images import IMAGE_SUFFIXES
from mlsr.settings import SPLITS

_FILE_COLUMNS = ("file", "filename", "image", "path")
_CAPTION_COLUMNS = ("caption", "text")


def find_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (recursively, by suffix), sorted by relative path; symlinks are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"images folder {folder} does not exist.")
    found = [
        path for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.is_symlink()
    ]
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


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
    path = Path(path)
    if not path.is_file():
        raise InputError(f"captions file {path} does not exist.")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise InputError(f"{path}:{number}: not valid JSON ({error.msg}).") from None
    else:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    parsed = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise InputError(f"{path}: row {number} is not an object with a file and a caption.")
        name = next((row[c] for c in _FILE_COLUMNS if row.get(c)), None)
        text = next((row[c] for c in _CAPTION_COLUMNS if row.get(c)), None)
        if not isinstance(name, str) or not isinstance(text, str):
            raise InputError(
                f"{path}: row {number} needs a file name column ({'/'.join(_FILE_COLUMNS)}) and a caption"
                f" column ({'/'.join(_CAPTION_COLUMNS)})."
            )
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise InputError(f"{path}: row {number} has split {split!r}; use one of {', '.join(SPLITS)}.")
        parsed.append((Path(name).as_posix(), text, split))
    return parsed


def captions_of(name: str, captions: dict[str, list[str]]) -> list[str] | None:
    """Captions keyed by relative path, or by bare file name when the captions file gives only names."""
    return captions.get(name) or captions.get(Path(name).name)
