"""Small file helpers: atomic writes (temp name, then rename), checksums, JSON lines, and the crash-test hook."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Iterator, Mapping


KILL_AT_ENV = "MLSR_TEST_KILL_AT"  # crash tests only: "STEP" or "STEP:N" (see `kill_point`)
_kill_counts: dict[str, int] = {}


def kill_point(step: str) -> None:
    """Crash-test hook, off unless MLSR_TEST_KILL_AT is set: SIGKILL this process at a named step of a save.

    `MLSR_TEST_KILL_AT=STEP:N` kills it the Nth time (default 1st) it reaches STEP, so a test can cut a build
    at an exact point instead of after a sleep. Steps: `batch-saved` (a build kept a finished batch),
    `picture-saved` (a build kept a fetched thumbnail, `mlsr.ingest.pictures`),
    `folder-staged` (a new folder is complete beside the old one), `folder-swapped` (it replaced the old one).
    """
    wanted = os.environ.get(KILL_AT_ENV)
    if not wanted or wanted.partition(":")[0] != step:
        return
    _kill_counts[step] = _kill_counts.get(step, 0) + 1
    if _kill_counts[step] == int(wanted.partition(":")[2] or 1):
        os.kill(os.getpid(), signal.SIGKILL)


@contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success it is flushed to disk and renamed onto `final`.

    A reader sees either the old file or the complete new one, never a partial write; on error
    the temporary file is removed and `final` is untouched.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode())


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, object]]) -> None:
    """Write one JSON object per line to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON-lines file into a list of dicts (blank lines are skipped).

    Parsed as one JSON array (several times faster than a parse per line on a million lines);
    if that does not give exactly one value per line, every line is parsed on its own, so a
    malformed line fails as it would alone.
    """
    lines = [line for line in Path(path).read_bytes().split(b"\n") if line.strip()]
    try:
        rows = json.loads(b"[" + b",".join(lines) + b"]")
        if len(rows) == len(lines):
            return rows
    except ValueError:
        pass
    return [json.loads(line) for line in lines]


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def release_pages(*arrays) -> None:
    """Drop the pages of memory-mapped, read-only arrays from this process's resident memory (not from the page
    cache: the next read maps them again without touching the disk). A load's checks read every page of the
    postings once; afterwards only what searches read need stay resident. Other arrays are left as they are."""
    import mmap

    advice = getattr(mmap, "MADV_DONTNEED", None)
    for array in arrays:
        while array is not None and not hasattr(array, "_mmap"):
            array = getattr(array, "base", None)
        mapped = getattr(array, "_mmap", None)
        if advice is not None and isinstance(mapped, mmap.mmap):
            with contextlib.suppress(OSError, ValueError):  # nothing lost: the pages just stay resident
                mapped.madvise(advice)


def regular_file(path: Path) -> bool:
    """True for a regular file; a symbolic link counts only where the Hugging Face cache made it.

    The cache keeps each file of a repo once, in `<repo>/blobs/`, and links `<repo>/snapshots/<commit>/<name>`
    to it. Any other link could point anywhere on the machine, so it is refused.
    """
    if not path.is_symlink():
        return path.is_file()
    snapshot = path.parent
    if snapshot.parent.name != "snapshots":
        return False
    target = path.resolve()
    return target.parent == (snapshot.parent.parent / "blobs").resolve() and target.is_file()


def staging_folder(target: Path) -> Path:
    """A fresh, empty `.<name>.tmp-<pid>` folder beside `target`, for building its replacement.

    Staging and backup folders left beside `target` by processes that died mid-save (SIGKILL, power
    cut) are removed first, so interrupted saves leave nothing behind for long.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for leftover in target.parent.glob(f".{target.name}.*-*"):
        kind, _, pid = leftover.name[len(target.name) + 2 :].rpartition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    return staging


def replace_folder(staging: Path, target: Path) -> None:
    """Move a complete staging folder onto `target`; at every instant `target` is the old or the new folder.

    On Linux the two folders are swapped in one atomic step (renameat2 RENAME_EXCHANGE) and the old
    one, now at `staging`, is removed. Elsewhere the old folder is first renamed to a backup, leaving
    a short window in which a crash leaves only the backup (`.<name>.old-<pid>`).
    """
    kill_point("folder-staged")
    if not target.exists():
        os.rename(staging, target)
        kill_point("folder-swapped")
        return
    if _exchange(staging, target):
        kill_point("folder-swapped")
        shutil.rmtree(staging, ignore_errors=True)
        return
    backup = target.parent / f".{target.name}.old-{os.getpid()}"
    shutil.rmtree(backup, ignore_errors=True)
    os.rename(target, backup)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(backup, target)
        raise
    kill_point("folder-swapped")
    shutil.rmtree(backup, ignore_errors=True)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths atomically with Linux's renameat2(RENAME_EXCHANGE); False where that is unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(first), at_cwd, os.fsencode(second), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # old kernel or a filesystem without it
        return False
    raise OSError(error, os.strerror(error), str(second))


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True
