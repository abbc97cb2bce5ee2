"""An index on disk: a self-describing folder, written atomically and verified file by file when read.

Files: `manifest.json` (format, sizes, models, the size and sha256 of every other file, and its own sha256), the
postings (`postings.*.npy`, memory-mapped on load), `items.jsonl`, `vocab.txt` (when known) and
`dense.npy` (when present). Format 1 (mlsr before the inverted layout) kept a (documents, vocab)
CSR matrix in `sparse.npz`; it still loads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mlsr._files import atomic_write_json, read_jsonl, replace_folder, sha256_file, staging_folder, write_jsonl
from mlsr.checks import shown, unreadable
from mlsr.errors import IndexFormatError, InputError
from mlsr.index.inverted import InvertedIndex, search_threads
from mlsr.settings import DOCUMENTS
from mlsr.vocab import VOCAB_FILE, Vocabulary

logger = logging.getLogger(__name__)

FORMAT = "mlsr-index"
FORMAT_VERSION = 2
MANIFEST_FILE = "manifest.json"
SPARSE_FILE = "sparse.npz"  # format 1: documents x vocabulary CSR float32
# format 2: the inverted layout, one .npy per array (memory-mapped on load)
POSTING_FILES = {
    "indptr": "postings.indptr.npy",
    "docs": "postings.docs.npy",
    "weights": "postings.weights.npy",
    "dense_terms": "postings.dense_terms.npy",
    "dense_weights": "postings.dense_weights.npy",
}
ITEMS_FILE = "items.jsonl"
DENSE_FILE = "dense.npy"
# The manifest's own checksum (sha256 of every other field as sorted, compact JSON), computed the same way in
# every format version: a flipped bit anywhere in the manifest is blamed on the manifest, not on a file it lists.
SEAL_FIELD = "manifest_sha256"
# Manifest fields computed on save; everything else in a manifest is the index's `info`.
DERIVED_FIELDS = {
    "format", "format_version", "count", "vocab_size", "vocab_sha256", "dense_size", "saved", "files",
    "precision", "postings", SEAL_FIELD,
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHECK_CHUNK = 1 << 24  # postings checked at once on load


@dataclass
class FolderContents:
    """What an index folder holds, verified: the postings (format 2) or the CSR rows (format 1), and the rest."""

    inverted: InvertedIndex | None
    vectors: sp.csr_matrix | None  # format 1 only
    items: list[dict]
    vocab: Vocabulary | None
    dense: np.ndarray | None
    info: dict


def write_folder(path: str | Path, inverted: InvertedIndex, items: list[dict], vocab: Vocabulary | None,
                 dense: np.ndarray | None, info: dict) -> None:
    """Write an index folder atomically: a complete new folder replaces the old one, or nothing changes."""
    path = check_target(path)
    staging = staging_folder(path)
    try:
        _write_files(staging, inverted, items, vocab, dense, info)
        replace_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("saved %d documents to %s", inverted.n_docs, path)


def check_target(path: str | Path) -> Path:
    """`path` if an index may be written there (nothing, an empty folder or an index); builders call it first."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise IndexFormatError(f"{path} is a file, not an index folder; refusing to overwrite it.")
    if path.exists() and not (path / MANIFEST_FILE).is_file() and any(path.iterdir()):
        raise IndexFormatError(f"{path} exists and is not an mlsr index; refusing to overwrite it.")
    return path


def _write_files(folder: Path, inverted: InvertedIndex, items: list[dict], vocab: Vocabulary | None,
                 dense: np.ndarray | None, info: dict) -> None:
    for name, file in POSTING_FILES.items():
        np.save(folder / file, np.ascontiguousarray(getattr(inverted, name)), allow_pickle=False)
    write_jsonl(folder / ITEMS_FILE, items)
    if vocab is not None:
        vocab.save(folder / VOCAB_FILE)
    if dense is not None:
        np.save(folder / DENSE_FILE, dense, allow_pickle=False)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    for name in files:
        with open(folder / name, "rb") as handle:
            os.fsync(handle.fileno())
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **info,
        "count": inverted.n_docs,
        "vocab_size": inverted.vocab_size,
        "vocab_sha256": vocab.sha256 if vocab is not None else None,
        "dense_size": None if dense is None else int(dense.shape[1]),
        "precision": "float16" if inverted.weights.dtype == np.float16 else "float32",
        "postings": {"stored": len(inverted.docs), "dense_terms": len(inverted.dense_terms)},
        "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": _file_records(folder, files),
    }
    atomic_write_json(folder / MANIFEST_FILE, sealed(manifest))


def read_folder(path: str | Path, *, mmap: bool = True) -> FolderContents:
    """Read an index folder, verifying every file's size and checksum against the manifest first."""
    path = Path(path)
    items_file = path / ITEMS_FILE
    with ThreadPoolExecutor(max_workers=1) as side:
        # items are parsed on a spare thread while the checksums are verified (both take ~a second
        # at a million items); they are used only if every checksum matches
        readable = items_file.is_file() and not items_file.is_symlink()
        parsed = side.submit(_read_items, items_file) if readable else None
        manifest = read_manifest(path)
        items = parsed.result() if parsed is not None else None
    if isinstance(items, InputError):
        raise IndexFormatError(f"index {path}: {items}") from None
    count, vocab_size = manifest["count"], manifest["vocab_size"]
    vectors = arrays = None
    try:
        if isinstance(items, Exception):
            raise items
        vocab = Vocabulary.load(path / VOCAB_FILE) if VOCAB_FILE in manifest["files"] else None
        dense = np.load(path / DENSE_FILE, allow_pickle=False) if DENSE_FILE in manifest["files"] else None
        if manifest["format_version"] == 1:
            vectors = sp.load_npz(path / SPARSE_FILE)  # load_npz never unpickles (allow_pickle=False)
            shape = vectors.shape
        else:
            arrays = {name: np.load(path / file, mmap_mode="r" if mmap else None, allow_pickle=False)
                      for name, file in POSTING_FILES.items()}
            shape = (count, vocab_size)
    except (OSError, ValueError, KeyError) as error:
        raise IndexFormatError(f"index {path}: a file cannot be read ({error}); rebuild the index.") from None
    if shape != (count, vocab_size) or len(items) != count:
        raise IndexFormatError(
            f"index {path}: the manifest says {count} x {vocab_size}, the files hold"
            f" {shape} vectors and {len(items)} items; rebuild the index."
        )
    if vocab is not None and vocab.sha256 != manifest.get("vocab_sha256"):
        raise IndexFormatError(f"index {path}: vocab.txt does not match the manifest's hash; rebuild the index.")
    if dense is not None and (dense.ndim != 2 or dense.shape != (count, manifest["dense_size"])):
        raise IndexFormatError(f"index {path}: dense.npy has shape {dense.shape}, the manifest says"
                               f" ({count}, {manifest['dense_size']}); rebuild the index.")
    inverted = None
    if arrays is not None:
        try:
            inverted = _checked_inverted(arrays, count, vocab_size)
        except InputError as error:
            raise IndexFormatError(f"index {path}: {error}") from None
        _check_postings(manifest, inverted, f"index {path}")
    info = {key: value for key, value in manifest.items() if key not in DERIVED_FIELDS}
    return FolderContents(inverted, vectors, items, vocab, dense, info)


def read_manifest(path: Path) -> dict:
    """Read `manifest.json`, check it field by field (see `check_manifest`), then the size and sha256 of every file it lists."""
    if not path.is_dir():
        if path.exists():
            raise IndexFormatError(f"{path} is a file, not an index folder.")
        raise IndexFormatError(
            f"no index at {path}. Build one with `python -m mlsr build-index --images DIR --out {path}`."
        )
    try:
        raw = (path / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        raise IndexFormatError(f"{path} has no {MANIFEST_FILE}: it is not an mlsr index (or its build was interrupted).") from None
    except OSError as error:
        raise IndexFormatError(f"index {path}: {unreadable(MANIFEST_FILE, None, error)}") from None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except ValueError as error:  # UnicodeDecodeError too
        raise IndexFormatError(f"index {path}: {MANIFEST_FILE} is not valid JSON ({error}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path / MANIFEST_FILE} is not an mlsr index manifest.")
    check_manifest(manifest, f"index {path}")
    files = manifest["files"]
    for name, expected in files.items():
        file = path / name
        if file.is_symlink() or not file.is_file():
            raise IndexFormatError(f"index {path}: {name} is missing (or not a regular file); rebuild the index.")
        size = file.stat().st_size
        if size != expected["bytes"]:
            raise IndexFormatError(
                f"index {path}: {name} has {size:,} bytes, the manifest says {expected['bytes']:,}"
                " (truncated or altered); rebuild the index."
            )
    # the checksums are the slow part of a load (~1.7 GB/s per core with SHA extensions): one file per core
    names = sorted(files, key=lambda name: -files[name]["bytes"])
    with ThreadPoolExecutor(max_workers=max(1, min(search_threads(), len(names)))) as pool:
        digests = dict(zip(names, pool.map(lambda name: _digest(path / name), names)))
    for name in names:
        if isinstance(digests[name], OSError):
            raise IndexFormatError(f"index {path}: {unreadable(name, None, digests[name])}")
        if digests[name] != files[name]["sha256"]:
            raise IndexFormatError(f"index {path}: {name} does not match its checksum (altered); rebuild the index.")
    return manifest


def sealed(manifest: dict) -> dict:
    """The manifest with its own checksum (`manifest_sha256`) over every other field."""
    return {**{key: value for key, value in manifest.items() if key != SEAL_FIELD}, SEAL_FIELD: _seal(manifest)}


def _seal(manifest: dict) -> str:
    body = {key: value for key, value in manifest.items() if key != SEAL_FIELD}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_manifest(manifest: dict, where: str) -> None:
    """Raise IndexFormatError, naming the field, unless the manifest has every required field with a valid value.

    Checked: the manifest's own checksum first (indexes saved before it was added have none), so that
    a damaged manifest is blamed on itself; then the format version (a whole number this mlsr reads), sizes (whole numbers in range), hashes (64 hex
    digits), enums (`precision` from `mlsr.index.sparse.PRECISIONS`, `documents` from DOCUMENTS),
    the file table, the `models` record, and fields that must agree with each other.
    """
    def refuse(field: str, problem: str) -> None:
        raise IndexFormatError(f"{where}: {MANIFEST_FILE}: {field!r} {problem}; rebuild the index.")

    if SEAL_FIELD in manifest and manifest[SEAL_FIELD] != _seal(manifest):
        raise IndexFormatError(f"{where}: {MANIFEST_FILE} does not match its own checksum (altered); rebuild the index.")
    damaged_seal = [key for key in manifest if key != SEAL_FIELD and _one_letter_apart(key, SEAL_FIELD)]
    if damaged_seal:  # a flipped bit in the seal's own name would otherwise pass as an unsealed manifest
        refuse(damaged_seal[0], f"is not a field of the format (a damaged {SEAL_FIELD!r}?)")
    version = manifest.get("format_version")
    if not _whole(version, 1):
        refuse("format_version", f"must be a whole number >= 1, {_got(manifest, 'format_version')}")
    if version > FORMAT_VERSION:
        raise IndexFormatError(f"{where} has format version {version}; this mlsr reads up to {FORMAT_VERSION}."
                               " Upgrade mlsr.")
    for field, low in (("count", 0), ("vocab_size", 1)):
        if not _whole(manifest.get(field), low):
            refuse(field, f"must be a whole number >= {low}, {_got(manifest, field)}")
    files = manifest.get("files")
    required = [SPARSE_FILE, ITEMS_FILE] if version == 1 else [*POSTING_FILES.values(), ITEMS_FILE]
    if not isinstance(files, dict) or any(name not in files for name in required):
        refuse("files", f"must list {', '.join(required)}" + ("" if isinstance(files, dict) else f", {_got(manifest, 'files')}"))
    for name, record in files.items():
        if Path(name).name != name or name in ("", ".", "..", MANIFEST_FILE):
            raise IndexFormatError(f"{where}: the manifest names a file outside the folder ({shown(name)}).")
        if not isinstance(record, dict) or not _whole(record.get("bytes"), 0) or not _hash(record.get("sha256")):
            refuse(f"files.{name}", f"must be {{'bytes': a whole number, 'sha256': 64 hex digits}}, got {shown(record)}")
    _check_optional(manifest, refuse, files, version)


def _check_optional(manifest: dict, refuse, files: dict, version: int) -> None:
    """The fields that may be absent (or null), and the ones that must agree with the file table."""
    from mlsr.index.sparse import PRECISIONS  # here: mlsr.index.sparse imports this module

    sha = manifest.get("vocab_sha256")
    if not (sha is None or _hash(sha)) or (VOCAB_FILE in files) != (sha is not None):
        refuse("vocab_sha256", f"must be 64 hex digits when {VOCAB_FILE} is listed and null otherwise, got {shown(sha)}")
    dense_size = manifest.get("dense_size")
    if not (dense_size is None or _whole(dense_size, 1)) or (DENSE_FILE in files) != (dense_size is not None):
        refuse("dense_size", f"must be a whole number >= 1 when {DENSE_FILE} is listed and null otherwise,"
                             f" got {shown(dense_size)}")
    if (version >= 2 or "precision" in manifest) and manifest.get("precision") not in PRECISIONS:
        refuse("precision", f"must be one of {', '.join(sorted(PRECISIONS))}, {_got(manifest, 'precision')}")
    postings = manifest.get("postings")
    if version >= 2 and not (isinstance(postings, dict) and _whole(postings.get("stored"), 0)
                             and _whole(postings.get("dense_terms"), 0)):
        refuse("postings", f"must be {{'stored': n, 'dense_terms': m}} (whole numbers), {_got(manifest, 'postings')}")
    if "documents" in manifest and manifest["documents"] not in DOCUMENTS:
        refuse("documents", f"must be one of {', '.join(DOCUMENTS)}, got {shown(manifest['documents'])}")
    if "saved" in manifest and not isinstance(manifest["saved"], str):
        refuse("saved", f"must be a date (text), got {shown(manifest['saved'])}")
    if "models" in manifest:
        problem = _models_problem(manifest["models"], manifest["vocab_size"])
        if problem:
            refuse("models", problem)
    elif "documents" in manifest:  # mlsr's builders record both: one without the other was edited away
        refuse("models", "is missing (mlsr records the models of every index it builds; it was deleted?)")


def _models_problem(models: object, vocab_size: int) -> str:
    """What is wrong with a manifest's `models` record ('' when nothing is)."""
    if not isinstance(models, dict):
        return f"must be a record of the backbone, head and tokenizer, got {shown(models)}"
    for role in ("backbone", "head", "tokenizer"):
        ref = models.get(role, {})
        if not isinstance(ref, dict) or any(not (ref.get(key) is None or isinstance(ref.get(key), str))
                                            for key in ("id", "revision", "fingerprint")):
            return f"{role} must be {{'id', 'revision', 'fingerprint'}} (text or null), {_got(models, role)}"
    if "vocab_size" in models and (models["vocab_size"] != vocab_size or isinstance(models["vocab_size"], bool)):
        return f"vocab_size must equal the index's {vocab_size}, got {shown(models.get('vocab_size'))}"
    if not (models.get("vocab_sha256") is None or _hash(models.get("vocab_sha256"))):
        return f"vocab_sha256 must be 64 hex digits or null, got {shown(models.get('vocab_sha256'))}"
    if not (models.get("dense_size") is None or _whole(models.get("dense_size"), 1)):
        return f"dense_size must be a whole number >= 1 or null, got {shown(models.get('dense_size'))}"
    return ""


def _got(record: dict, key: str) -> str:
    return f"got {shown(record[key])}" if key in record else "but it is missing"


def _one_letter_apart(first: str, second: str) -> bool:
    return len(first) == len(second) and sum(a != b for a, b in zip(first, second)) == 1


def _whole(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _hash(value: object) -> bool:
    return isinstance(value, str) and bool(_SHA256.match(value))


def _digest(file: Path) -> str | OSError:
    """sha256 of a file, or the OSError that stopped the read (for a worker thread)."""
    try:
        return sha256_file(file)
    except OSError as error:
        return error


def check_items(items: list[dict], n: int) -> None:
    """Raise InputError unless there is one item per row, each a dict with a unique, non-empty `id`."""
    if len(items) != n:
        raise InputError(f"{len(items)} items for {n} vectors: give one item per row.")
    ids = [str(item.get("id", "")) if isinstance(item, dict) else "" for item in items]
    if len(set(ids)) != n or "" in ids:
        raise InputError("every item needs a unique, non-empty 'id'.")


def _read_items(file: Path) -> list[dict] | Exception:
    """items.jsonl, checked to be JSON objects with unique ids; the error instead of raising (for a side thread)."""
    try:
        items = read_jsonl(file)
        if not all(isinstance(item, dict) for item in items):
            raise ValueError("every line must be a JSON object")
        check_items(items, len(items))
        return items
    except (OSError, ValueError, InputError) as error:
        return error


def _check_postings(manifest: dict, inverted: InvertedIndex, where: str) -> None:
    """The manifest's `precision` and `postings` counts must describe the postings files as loaded."""
    from mlsr.index.sparse import PRECISIONS

    expected = manifest["precision"]
    if np.dtype(PRECISIONS[expected]) != inverted.weights.dtype:
        raise IndexFormatError(f"{where}: the manifest says precision {expected}, the postings hold"
                               f" {inverted.weights.dtype} weights; rebuild the index.")
    counts = {"stored": len(inverted.docs), "dense_terms": len(inverted.dense_terms)}
    for field, found in counts.items():
        if manifest["postings"][field] != found:
            raise IndexFormatError(f"{where}: the manifest says postings.{field} = {manifest['postings'][field]},"
                                   f" the postings hold {found}; rebuild the index.")


def _file_records(folder: Path, names: list[str]) -> dict:
    """{name: {"bytes", "sha256"}} of files in a folder, one file per core."""
    with ThreadPoolExecutor(max_workers=max(1, min(search_threads(), len(names)))) as pool:
        digests = list(pool.map(lambda name: sha256_file(folder / name), names))
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": digest} for name, digest in zip(names, digests)}


def _checked_inverted(arrays: dict, n: int, vocab_size: int) -> InvertedIndex:
    """The loaded postings, after checks that keep the compiled kernel inside its arrays.

    A checksum proves the files are the ones the manifest lists, not that the manifest was written
    by mlsr; so rows must lie in 0..n-1 and ascend within every posting list.
    """
    indptr, docs, weights = arrays["indptr"], arrays["docs"], arrays["weights"]
    dense_terms, dense_weights = arrays["dense_terms"], arrays["dense_weights"]
    dtypes = (indptr.dtype, docs.dtype, dense_terms.dtype, dense_weights.dtype)
    if dtypes != (np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.int32), weights.dtype) or weights.dtype not in (
        np.dtype(np.float16), np.dtype(np.float32)
    ):
        raise InputError("the postings have unexpected types; rebuild the index.")
    if (
        indptr.shape != (vocab_size + 1,) or docs.ndim != 1 or weights.shape != docs.shape
        or dense_terms.ndim != 1 or dense_weights.shape != (len(dense_terms), n)
    ):
        raise InputError("the postings have inconsistent shapes; rebuild the index.")
    if indptr[0] != 0 or indptr[-1] != len(docs) or (np.diff(indptr) < 0).any():
        raise InputError("the posting list offsets are inconsistent; rebuild the index.")
    if len(dense_terms) and (
        dense_terms[0] < 0 or dense_terms[-1] >= vocab_size or (np.diff(dense_terms) <= 0).any()
        or (np.diff(indptr)[dense_terms] != 0).any()
    ):
        raise InputError("the dense terms are inconsistent; rebuild the index.")
    # a list starts where the previous one ends: a step down is allowed only at a list's start
    list_starts = np.unique(indptr[1:-1])
    for start in range(0, len(docs), _CHECK_CHUNK):
        chunk = np.asarray(docs[start : start + _CHECK_CHUNK + 1])
        if chunk.size and (chunk.min() < 0 or chunk.max() >= n):
            raise InputError("a posting names a document outside the index; rebuild the index.")
        steps = np.flatnonzero(np.diff(chunk) <= 0) + start + 1
        if len(steps) and not np.isin(steps, list_starts).all():
            raise InputError("a posting list is not in ascending document order; rebuild the index.")
        if not np.isfinite(weights[start : start + _CHECK_CHUNK]).all():
            raise InputError("the postings hold NaN or infinite weights; rebuild the index.")
    if dense_weights.size and not np.isfinite(dense_weights).all():
        raise InputError("the dense terms hold NaN or infinite weights; rebuild the index.")
    plain = [np.asarray(array) for array in (indptr, docs, weights, dense_terms, dense_weights)]  # memmap -> ndarray view
    return InvertedIndex(n, vocab_size, *plain)
