"""An index on disk: a self-describing folder, written atomically and verified file by file when read.

Files: `manifest.json` (format, sizes, models, the size and sha256 of every other file, and its own sha256), the
postings (`postings.*.npy`, memory-mapped on load), the forward view of the same postings by row
(`forward.*.npy`, memory-mapped; see `mlsr.index.forward`; a folder saved before it was kept derives it),
`items.jsonl`, `vocab.txt` (when known) and
`dense.npy` (when present). Format 3 is the blocked inverted layout of `mlsr.index.inverted`
(uint16 rows within blocks of 65,536 documents; float16, float32 or uint8 weights). Older folders
still load: format 2 (one posting list per term with int32 rows, float16 or float32 weights) and
format 1 (a (documents, vocab) CSR matrix in `sparse.npz`) are read into memory and re-inverted
in the current layout, keeping their stored weights exactly; saving them again writes format 3.
The manifest's names, seal and schema: `mlsr.index.manifest`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from mlsr._files import (atomic_write_json, read_jsonl, regular_file, release_pages, replace_folder, sha256_file,
                         staging_folder, write_jsonl)
from mlsr.checks import unreadable
from mlsr.errors import IndexFormatError, InputError
from mlsr.index import forward as rows_view
from mlsr.index.checks import checked_blocks, format2_rows
from mlsr.index.inverted import InvertedIndex
from mlsr.index.kernel_search import search_threads
from mlsr.index.manifest import (
    DENSE_FILE, DERIVED_FIELDS, FORMAT, FORWARD_FILES,
    FORMAT2_FILES, FORMAT_VERSION, ITEMS_FILE, MANIFEST_FILE, POSTING_FILES,
    SPARSE_FILE, THUMBNAIL_FILES, check_manifest, postings_field, sealed,
)
from mlsr.index.thumbnails import Thumbnails
from mlsr.items import Item
from mlsr.vocab import VOCAB_FILE, Vocabulary

logger = logging.getLogger(__name__)



@dataclass
class FolderContents:
    """What an index folder holds, verified: the postings (format 3) or the CSR rows to index again (formats 1, 2)."""

    inverted: InvertedIndex | None
    vectors: sp.csr_matrix | None  # formats 1 and 2: the stored weights as document rows...
    precision: str  # ...and the precision they were stored in
    items: list[Item]
    vocab: Vocabulary | None
    dense: np.ndarray | None
    info: dict
    thumbnails: Thumbnails | None = None  # each row's picture (None: an index saved before they were kept)


def write_folder(path: str | Path, inverted: InvertedIndex, items: list[Item], vocab: Vocabulary | None,
                 dense: np.ndarray | None, info: dict, thumbnails: Thumbnails | None = None) -> str:
    """Write an index folder atomically: a complete new folder replaces the old one, or nothing changes.

    Returns the index's `lineage` (see `_write_files`).
    """
    path = _check_target(path)
    staging = staging_folder(path)
    try:
        lineage = _write_files(staging, inverted, items, vocab, dense, info, thumbnails)
        replace_folder(staging, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("saved %d documents to %s", inverted.n_docs, path)
    return lineage


def _check_target(path: str | Path) -> Path:
    """`path` if an index may be written there (nothing, an empty folder or an index); builders call it first."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise IndexFormatError(f"{path} is a file, not an index folder; refusing to overwrite it.")
    if path.exists() and not (path / MANIFEST_FILE).is_file() and any(path.iterdir()):
        raise IndexFormatError(f"{path} exists and is not an mlsr index; refusing to overwrite it.")
    return path


def check_new_target(path: str | Path, overwrite: bool = False, how: str = "overwrite=True") -> Path:
    """`_check_target`, and unless `overwrite`, refuse a folder that already holds an index, saying what it holds:
    a build never replaces an index by accident (`how` is how the caller says it on purpose)."""
    path = _check_target(path)
    if not overwrite and (path / MANIFEST_FILE).is_file():
        raise InputError(f"{path} holds an index already ({_describe_index(path)}); nothing was changed. To replace"
                         f" it, say so ({how}), or choose another folder.")
    return path


def manifest_as_is(path: Path) -> dict | None:
    """An index folder's manifest read as it is (no seal, schema or checksums), for messages about the folder; None
    when it cannot be read as a JSON object."""
    try:
        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _describe_index(path: Path) -> str:
    """What an index folder holds, from its manifest read as it is (no checksums): items, kind, dense, models."""
    manifest = manifest_as_is(path)
    if manifest is None:
        return "its manifest cannot be read"
    try:
        models = manifest.get("models") or {}
        names = [f"{role} {models[role]['id']}" for role in ("head", "backbone")
                 if isinstance(models.get(role), dict) and models[role].get("id")]
        parts = [f"{int(manifest['count']):,} items", f"{manifest.get('documents', 'image')} documents",
                 "dense vectors" if manifest.get("dense_size") else "no dense vectors", *names]
        return ", ".join(parts)
    except (ValueError, KeyError, TypeError, AttributeError):
        return "its manifest cannot be read"


def _write_files(folder: Path, inverted: InvertedIndex, items: list[Item], vocab: Vocabulary | None,
                 dense: np.ndarray | None, info: dict, thumbnails: Thumbnails | None = None) -> str:
    """Write the files and then the manifest; returns the lineage it records.

    `lineage` names an index and the indexes made from it by `add` / `remove` (they copy it from `info`):
    the first save of an index derives it from its files' checksums, so that a Milvus collection exported
    from one version can be brought up to date from a later one, and never from an unrelated index.
    """
    for name, file in POSTING_FILES.items():
        np.save(folder / file, np.ascontiguousarray(getattr(inverted, name)), allow_pickle=False)
    forward = inverted.forward  # as built, or derived here for an index loaded without one
    for name, file in FORWARD_FILES.items():
        np.save(folder / file, np.ascontiguousarray(getattr(forward, name)), allow_pickle=False)
    write_jsonl(folder / ITEMS_FILE, items)
    if vocab is not None:
        vocab.save(folder / VOCAB_FILE)
    if dense is not None:
        np.save(folder / DENSE_FILE, dense, allow_pickle=False)
    if thumbnails is not None:
        for name, file in THUMBNAIL_FILES.items():
            np.save(folder / file, np.ascontiguousarray(getattr(thumbnails, name)), allow_pickle=False)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    for name in files:
        with open(folder / name, "rb") as handle:
            os.fsync(handle.fileno())
    records = _file_records(folder, files)
    lineage = info.get("lineage") or hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:32]
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **info,
        "lineage": lineage,
        "count": inverted.n_docs,
        "vocab_size": inverted.vocab_size,
        "vocab_sha256": vocab.sha256 if vocab is not None else None,
        "dense_size": None if dense is None else int(dense.shape[1]),
        "precision": inverted.precision,
        "block_size": inverted.block_size,
        "postings": {"stored": len(inverted.docs), postings_field(FORMAT_VERSION): len(inverted.dense_terms)},
        "forward": len(forward.terms),
        **({"thumbnails": thumbnails.count} if thumbnails is not None else {}),
        "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": records,
    }
    manifest = sealed(manifest)
    check_manifest(manifest, "the index to save", InputError, "give the index the info mlsr's builders record")
    atomic_write_json(folder / MANIFEST_FILE, manifest)
    return lineage


def read_folder(path: str | Path, *, mmap: bool = True) -> FolderContents:
    """Read an index folder, verifying every file's size and checksum against the manifest first."""
    path = Path(path)
    items_file = path / ITEMS_FILE
    with ThreadPoolExecutor(max_workers=1) as side:
        # items are parsed on a spare thread while the checksums are verified (both take ~a second
        # at a million items); they are used only if every checksum matches
        readable = regular_file(items_file)
        parsed = side.submit(_read_items, items_file) if readable else None
        manifest = read_manifest(path)
        items = parsed.result() if parsed is not None else None
    if isinstance(items, InputError):
        raise IndexFormatError(f"index {path}: {items}") from None
    if items is None:  # read_manifest has refused this already: it checks every listed file is a regular one
        raise IndexFormatError(f"index {path}: {ITEMS_FILE} is missing (or not a regular file); rebuild the index.")
    count, vocab_size = manifest["count"], manifest["vocab_size"]
    vectors = forward_arrays = None
    arrays: dict[str, np.ndarray] = {}  # the postings files (formats 2 and 3)
    try:
        if isinstance(items, Exception):
            raise items
        vocab = Vocabulary.load(path / VOCAB_FILE) if VOCAB_FILE in manifest["files"] else None
        dense = np.load(path / DENSE_FILE, allow_pickle=False) if DENSE_FILE in manifest["files"] else None
        thumbnails = None
        if THUMBNAIL_FILES["data"] in manifest["files"]:
            thumbnails = Thumbnails(*(np.load(path / THUMBNAIL_FILES[name], mmap_mode="r" if mmap else None,
                                              allow_pickle=False) for name in ("offsets", "data")))
        if manifest["format_version"] == 1:
            vectors = sp.load_npz(path / SPARSE_FILE)  # load_npz never unpickles (allow_pickle=False)
            shape = vectors.shape
        else:
            files = POSTING_FILES if manifest["format_version"] == 3 else FORMAT2_FILES
            arrays = {name: np.load(path / file, mmap_mode="r" if mmap else None, allow_pickle=False)
                      for name, file in files.items()}
            if manifest["format_version"] == 3 and FORWARD_FILES["terms"] in manifest["files"]:
                forward_arrays = {name: np.load(path / file, mmap_mode="r" if mmap else None, allow_pickle=False)
                                  for name, file in FORWARD_FILES.items()}
            shape = (count, vocab_size)
    except (OSError, ValueError, KeyError) as error:
        raise IndexFormatError(f"index {path}: a file cannot be read ({error}); rebuild the index.") from None
    if len(items) != count:
        raise IndexFormatError(f"index {path}: the manifest says {count:,} items, {ITEMS_FILE} holds {len(items):,};"
                               " rebuild the index.")
    if shape != (count, vocab_size):  # format 1: the stored matrix's own shape
        raise IndexFormatError(f"index {path}: the manifest says {count:,} x {vocab_size:,}, {SPARSE_FILE} holds"
                               f" {shape[0]:,} x {shape[1]:,} vectors; rebuild the index.")
    if vocab is not None and vocab.sha256 != manifest.get("vocab_sha256"):
        raise IndexFormatError(f"index {path}: vocab.txt does not match the manifest's hash; rebuild the index.")
    if dense is not None and (dense.ndim != 2 or dense.shape != (count, manifest["dense_size"])):
        raise IndexFormatError(f"index {path}: dense.npy has shape {dense.shape}, the manifest says"
                               f" ({count}, {manifest['dense_size']}); rebuild the index.")
    inverted, precision = None, "float32"  # format 1 kept float32 weights
    try:
        if thumbnails is not None:
            thumbnails.check(count)
            if thumbnails.count != manifest["thumbnails"]:
                raise InputError(f"the manifest says {manifest['thumbnails']} thumbnails, the files hold"
                                 f" {thumbnails.count}")
        if manifest["format_version"] == 3:
            inverted = checked_blocks(arrays, count, vocab_size, manifest.get("block_size"))
            precision = inverted.precision
            if forward_arrays is not None:
                if manifest["forward"] != len(forward_arrays["terms"]):
                    raise InputError(f"the manifest says {manifest['forward']:,} forward postings, the files hold"
                                     f" {len(forward_arrays['terms']):,}; rebuild the index.")
                inverted = replace(inverted, stored_forward=rows_view.checked(forward_arrays, inverted))
            _check_postings(manifest, precision, len(inverted.docs), len(inverted.dense_terms), f"index {path}")
        elif manifest["format_version"] == 2:
            precision = str(arrays["weights"].dtype)
            _check_postings(manifest, precision, len(arrays["docs"]), len(arrays["dense_terms"]), f"index {path}")
            vectors = format2_rows(arrays, count, vocab_size)
    except InputError as error:
        raise IndexFormatError(f"index {path}: {error}") from None
    if inverted is not None:  # the checks read every page once: only what searches read need stay resident
        release_pages(*arrays.values(), *(forward_arrays or {}).values())
    info = {key: value for key, value in manifest.items() if key not in DERIVED_FIELDS}
    return FolderContents(inverted, vectors, precision, items, vocab, dense, info, thumbnails)


def read_manifest(path: Path) -> dict:
    """Read `manifest.json`, check it field by field (see `check_manifest`), then the size and sha256 of every file it
    lists."""
    if not path.is_dir():
        if path.exists():
            raise IndexFormatError(f"{path} is a file, not an index folder.")
        raise IndexFormatError(
            f"no index at {path}. Build one with `python -m mlsr build-index --images DIR --out {path}`."
        )
    try:
        raw = (path / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        raise IndexFormatError(f"{path} has no {MANIFEST_FILE}: it is not an mlsr index (or its build was"
                               f" interrupted).") from None
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
        if not regular_file(file):  # a link only where the Hugging Face cache made it
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


def _digest(file: Path) -> str | OSError:
    """sha256 of a file, or the OSError that stopped the read (for a worker thread)."""
    try:
        return sha256_file(file)
    except OSError as error:
        return error


def check_items(items: Sequence[object], n: int) -> None:
    """Raise InputError unless there is one item per row, each a dict with a unique, non-empty `id`."""
    if len(items) != n:
        raise InputError(f"{len(items)} items for {n} vectors: give one item per row.")
    ids = [str(item.get("id", "")) if isinstance(item, dict) else "" for item in items]
    if len(set(ids)) != n or "" in ids:
        raise InputError("every item needs a unique, non-empty 'id'.")


def _read_items(file: Path) -> list[Item] | Exception:
    """items.jsonl, checked to be JSON objects with unique ids; the error instead of raising (for a side thread)."""
    try:
        items = read_jsonl(file)
        if not all(isinstance(item, dict) for item in items):
            raise ValueError("every line must be a JSON object")
        check_items(items, len(items))
        return cast(list[Item], items)
    except (OSError, ValueError, InputError) as error:
        return error


def _check_postings(manifest: dict, precision: str, stored: int, dense: int, where: str) -> None:
    """The manifest's `precision` and `postings` counts must describe the postings files as loaded."""
    if manifest["precision"] != precision:
        raise IndexFormatError(f"{where}: the manifest says precision {manifest['precision']}, the postings hold"
                               f" {precision} weights; rebuild the index.")
    counts = {"stored": stored, postings_field(manifest["format_version"]): dense}
    for field, found in counts.items():
        if manifest["postings"][field] != found:
            raise IndexFormatError(f"{where}: the manifest says postings.{field} = {manifest['postings'][field]},"
                                   f" the postings hold {found}; rebuild the index.")


def _file_records(folder: Path, names: list[str]) -> dict:
    """{name: {"bytes", "sha256"}} of files in a folder, one file per core."""
    with ThreadPoolExecutor(max_workers=max(1, min(search_threads(), len(names)))) as pool:
        digests = list(pool.map(lambda name: sha256_file(folder / name), names))
    return {name: {"bytes": (folder / name).stat().st_size, "sha256": digest} for name, digest in zip(names, digests)}
