"""One rule per parameter, shared by the library, the command line and the app (plain Python, no torch).

- `k` (result rows) and `top_k` (terms shown): a whole number >= 1; a float only when it is whole
  (10.0), never a bool or a string. The app adds an upper bound (`MAX_K`, `MAX_TOP_K`); the library
  clamps k to the number of documents.
- Paths: a file must be a file, a folder a folder, and each message says which one it found.
- A file the operating system refuses to read is an `InputError` (or the caller's own error class)
  that names the file and the reason ("permission denied"), never a traceback.
"""

from __future__ import annotations

import numbers
import re
from pathlib import Path
from collections.abc import Callable

from mlsr.errors import InputError
from mlsr.settings import PRECISIONS, QUERY_MODES

_SHOWN_CHARS = 40  # at most this much of a user's value is echoed back in a message


def shown(value: object, limit: int = _SHOWN_CHARS) -> str:
    """`repr(value)`, cut to `limit` characters: a megabyte of input is never echoed back whole."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _check_count(value: object, name: str, *, high: int | None = None) -> int:
    """`value` as an int >= 1 (and <= `high` when given), or an InputError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name} must be a whole number, got {shown(value)}.")
    if not isinstance(value, numbers.Integral) and not float(value).is_integer():  # 10.0 is whole, 1.5 is not
        raise InputError(f"{name} must be a whole number, got {shown(value)}.")
    # A whole Real that is not Integral (10.0) goes through float: `numbers.Real` promises no __int__.
    number = int(value) if isinstance(value, numbers.Integral) else int(float(value))
    if number < 1 or (high is not None and number > high):
        bound = f"between 1 and {high}" if high is not None else "at least 1"
        raise InputError(f"{name} must be {bound}, got {number}.")
    return number


def check_k(k: object, high: int | None = None) -> int:
    """The number of result rows: a whole number >= 1 (<= `high` when given)."""
    return _check_count(k, "k", high=high)


def check_top_k(top_k: object, high: int | None = None) -> int | None:
    """The number of terms to show: None (all of them) or a whole number >= 1 (<= `high` when given)."""
    return None if top_k is None else _check_count(top_k, "top_k", high=high)


def check_depth(depth: object) -> int:
    """The candidates hybrid re-scores: a whole number >= 1."""
    return _check_count(depth, "the hybrid depth")


_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def not_a_url(path: str | Path, what: str, error: Callable[[str], Exception] = InputError) -> None:
    """Refuse a URL where a file or folder is expected, before `Path` folds its `//` into a mangled path."""
    if isinstance(path, str) and _URL.match(path):
        raise error(f"{what} {path!r} is a URL: mlsr does not fetch URLs here; download it and give its local path.")


def existing_file(path: str | Path, what: str, error: Callable[[str], Exception] = InputError) -> Path:
    """`path` if it is a file; otherwise an error saying it is a URL, is missing or is a folder."""
    not_a_url(path, what, error)
    path = Path(path)
    if path.is_dir():
        raise error(f"{what} {path} is a folder, not a file.")
    if not path.is_file():
        raise error(f"{what} {path} does not exist.")
    return path


def existing_folder(path: str | Path, what: str, error: Callable[[str], Exception] = InputError) -> Path:
    """`path` if it is a folder; otherwise an error saying it is a URL, is missing or is a file."""
    not_a_url(path, what, error)
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists():
        raise error(f"{what} {path} is a file, not a folder.")
    raise error(f"{what} {path} does not exist.")


def reason(error: OSError) -> str:
    """The operating system's reason, in words: 'permission denied', 'is a directory', ..."""
    text = error.strerror or type(error).__name__
    return text[:1].lower() + text[1:]


def unreadable(what: str, path: str | Path | None, error: OSError) -> str:
    """'<what> <path> cannot be read (permission denied).' for an OSError raised while reading it."""
    where = f" {path}" if path is not None else ""
    return f"{what}{where} cannot be read ({reason(error)})."


def readable_bytes(path: str | Path, what: str, error: Callable[[str], Exception] = InputError) -> bytes:
    """The bytes of a file, or `error` naming it and the reason the OS refused (no traceback)."""
    try:
        return Path(path).read_bytes()
    except OSError as problem:
        raise error(unreadable(what, path, problem)) from None



def read_text_lines(path: str | Path, what: str) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped (a list of ids, say), or one InputError naming the file."""
    path = existing_file(path, what)
    try:
        text = readable_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError as problem:
        raise InputError(f"{what} {path} is not UTF-8 text (byte {problem.start}).") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{what} {path} lists nothing (one entry per line).")
    return lines


def check_precision(precision: str) -> str:
    """One of the stored weight types (`PRECISIONS`), or an InputError naming them."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    return precision


def check_mode(mode: str) -> str:
    """One of the query modes (`QUERY_MODES`), or an InputError naming them."""
    if mode not in QUERY_MODES:
        raise InputError(f"mode must be one of {', '.join(QUERY_MODES)}, got {mode!r}.")
    return mode


REPO_NAME_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"  # one half of a Hub repo id (owner, or name)
_REPO_ID = re.compile(rf"{REPO_NAME_PART}/{REPO_NAME_PART}")


def check_repo_id(repo_id: str, prefix: str = "") -> str:
    """`owner/name` (a leading `prefix`, such as hf://datasets/, dropped), checked before any request is made."""
    text = str(repo_id).removeprefix(prefix) if prefix else str(repo_id)
    if not _REPO_ID.fullmatch(text) or "--" in text or ".." in text or text.endswith(".git") or len(text) > 96:
        raise InputError(f"{repo_id!r} is not a Hub repo id: write OWNER/NAME (letters, digits, '-', '_', '.';"
                         " no '--' or '..'; at most 96 characters), e.g. your-name/coco-gallery.")
    return text
