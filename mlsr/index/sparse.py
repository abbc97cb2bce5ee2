"""The sparse index: documents as sparse vectors over the vocabulary, exact top-k search, term-level
explanations, and a self-describing folder on disk. Documents are kept inverted (`mlsr.index.inverted`);
large indexes search with a compiled kernel (numba), small ones with numpy and scipy."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.errors import IndexFormatError, IndexMismatchError, InputError
from mlsr.index.inverted import HALF_MAX, InvertedIndex, search_threads
from mlsr._files import atomic_write_json, read_jsonl, replace_folder, sha256_file, staging_folder, write_jsonl
from mlsr.vocab import VOCAB_FILE, Vocabulary, nonzero_terms

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
PRECISIONS = {"float16": np.float16, "float32": np.float32}
ITEMS_FILE = "items.jsonl"
DENSE_FILE = "dense.npy"
# Manifest fields computed on save; everything else in a manifest is the index's `info`.
_DERIVED_FIELDS = {
    "format", "format_version", "count", "vocab_size", "vocab_sha256", "dense_size", "saved", "files",
    "precision", "postings",
}
_CHECK_CHUNK = 1 << 24  # postings checked at once on load


class Results(NamedTuple):
    """Top-k per query: `scores` float32 (q, k) and `indices` int64 (q, k), best first."""

    scores: np.ndarray
    indices: np.ndarray


class TermMatch(NamedTuple):
    """One shared term of a query and a document: contribution = query_weight * doc_weight."""

    term: str
    query_weight: float
    doc_weight: float
    contribution: float


@dataclass
class SparseIndex:
    """Documents (n, vocab) as an inverted index, with their items and optional dense vectors.

    `items[i]` describes row i (`id`, `image`, `captions`, ...); `dense` (n, d) holds the dense
    vectors of the same rows for a side-by-side FAISS comparison; `info` is the rest of the
    manifest (models, document representation, build time). Document weights are stored in
    float16 by default (`precision`): search, `score`, `explain` and `vectors` all read the
    stored weights, so explanations sum to the scores that search returns.
    """

    inverted: InvertedIndex
    items: list[dict]
    vocab: Vocabulary | None = None
    dense: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    path: Path | None = None  # the folder it was loaded from, for messages

    @classmethod
    def build(
        cls,
        vectors: sp.spmatrix,
        items: list[dict] | None = None,
        *,
        vocab: Vocabulary | None = None,
        dense: np.ndarray | None = None,
        info: dict | None = None,
        precision: str = "float16",
    ) -> "SparseIndex":
        """Index (n, vocab) document vectors; items default to `{"id": str(row)}`.

        `precision` "float16" (default: 6 bytes per posting; each weight within a relative 2^-11
        of its float32 value) or "float32" (exact). Weights too large for float16 (> 65,504) keep
        float32.
        """
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}.")
        vectors = _as_csr(vectors, "document vectors")
        n = vectors.shape[0]
        items = [{"id": str(i)} for i in range(n)] if items is None else [dict(item) for item in items]
        _check_items(items, n)
        if vocab is not None and len(vocab) != vectors.shape[1]:
            raise InputError(f"vocabulary has {len(vocab)} terms but vectors have {vectors.shape[1]} columns.")
        if dense is not None:
            dense = np.ascontiguousarray(dense, dtype=np.float32)
            if dense.ndim != 2 or dense.shape[0] != n or not np.isfinite(dense).all():
                raise InputError(f"dense vectors must be a finite (n={n}, d) array, got shape {dense.shape}.")
        dtype = PRECISIONS[precision]
        if dtype == np.float16 and vectors.nnz and np.abs(vectors.data).max() > HALF_MAX:
            logger.warning("document weights exceed float16's range (%g): storing float32", HALF_MAX)
            dtype = np.float32
        if dtype == np.float16:
            vectors.data = vectors.data.astype(np.float16).astype(np.float32)
            vectors.eliminate_zeros()  # weights below float16's range are dropped, as absent terms
        return cls(InvertedIndex.from_csr(vectors, dtype), items, vocab, dense, dict(info or {}))

    def __len__(self) -> int:
        return self.inverted.n_docs

    @property
    def vocab_size(self) -> int:
        return self.inverted.vocab_size

    @property
    def precision(self) -> str:
        """"float16" or "float32": how document weights are stored."""
        return "float16" if self.inverted.weights.dtype == np.float16 else "float32"

    @property
    def nnz(self) -> int:
        """Stored (document, term) weights."""
        return self.inverted.nnz

    @cached_property
    def vectors(self) -> sp.csr_matrix:
        """The documents as (n, vocab) CSR float32 rows of the stored weights (built on first use)."""
        return self.inverted.to_csr()

    @cached_property
    def postings(self) -> sp.csr_matrix:
        """The inverted layout as a (vocab, n) CSR float32 matrix: row t lists the documents holding term t."""
        return self.inverted.term_major()

    def document(self, row: int) -> sp.csr_matrix:
        """One document's vector, (1, vocab) CSR float32, read from the postings (no full matrix needed)."""
        row = self._check_row(row)
        terms, weights = self.inverted.document(row)
        return sp.csr_matrix((weights, terms, [0, len(terms)]), shape=(1, self.vocab_size))

    def document_frequency(self) -> np.ndarray:
        """(vocab,) int64: the number of documents holding each term."""
        return self.inverted.document_frequency()

    # -- search -----------------------------------------------------------------------------------

    def search(self, queries: sp.spmatrix, k: int = 10) -> Results:
        """Exact top-k by dot product over all documents, for a batch of (q, vocab) queries.

        Ties are broken by row (lower first), so rankings are deterministic; k is clamped to
        the number of documents. Only the query terms' postings are read; scores are the same
        floats as the sparse product `queries @ index.vectors.T`.
        """
        queries = self._check_queries(queries)
        return Results(*self.inverted.search(queries, k))

    def score(self, query: sp.spmatrix, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Scores of one (1, vocab) query against the given document rows, float32 (len(rows),)."""
        query = self._check_queries(query)
        if query.shape[0] != 1:
            raise InputError(f"score() takes one query row, got {query.shape[0]}.")
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise InputError(f"rows must lie in 0..{len(self) - 1}.")
        weights = self.inverted.weights_at(query.indices, rows)
        scores = np.zeros(len(rows), dtype=np.float32)
        for q_weight, doc_weights in zip(query.data, weights):  # ascending terms, as search sums
            scores += q_weight * doc_weights
        return scores

    def explain(self, query_row, index_row: int, top_n: int | None = None) -> list[TermMatch]:
        """The terms a query and document share, with both weights and their product, largest first.

        The contributions sum to the document's score for that query (up to float rounding).
        """
        row = self._check_row(index_row)
        q_ids, q_weights = nonzero_terms(query_row, self.vocab_size)
        doc_weights = self.inverted.weights_at(q_ids, [row])[:, 0]
        shared = np.flatnonzero(doc_weights)
        contributions = q_weights[shared] * doc_weights[shared]
        order = np.lexsort((q_ids[shared], -contributions))[: None if top_n is None else max(top_n, 0)]
        return [
            TermMatch(self.term(q_ids[shared[j]]), float(q_weights[shared[j]]), float(doc_weights[shared[j]]),
                      float(contributions[j]))
            for j in order
        ]

    def term(self, term_id: int) -> str:
        """The word piece of a term id (or `#id` when the index carries no vocabulary)."""
        return self.vocab.terms[term_id] if self.vocab is not None else f"#{term_id}"

    def _check_row(self, row: int) -> int:
        if not 0 <= int(row) < len(self):
            raise InputError(f"row {row} is outside the index (0..{len(self) - 1}).")
        return int(row)

    def _check_queries(self, queries: sp.spmatrix) -> sp.csr_matrix:
        queries = _as_csr(queries, "queries")
        if queries.shape[1] != self.vocab_size:
            raise InputError(
                f"queries have {queries.shape[1]} columns but the index has {self.vocab_size} terms;"
                " encode them with the vocabulary the index was built with."
            )
        return queries

    # -- persistence ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the index folder atomically: a complete new folder replaces the old one, or nothing changes.

        Files: manifest.json (format, models, sizes and sha256 of every file), the postings
        (`postings.*.npy`), items.jsonl, vocab.txt (when known) and dense.npy (when present).
        """
        path = Path(path)
        if path.exists() and not (path / MANIFEST_FILE).is_file() and any(path.iterdir()):
            raise IndexFormatError(f"{path} exists and is not an mlsr index; refusing to overwrite it.")
        staging = staging_folder(path)
        try:
            self._write_files(staging)
            replace_folder(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("saved %d documents to %s", len(self), path)

    def _write_files(self, folder: Path) -> None:
        for name, file in POSTING_FILES.items():
            np.save(folder / file, np.ascontiguousarray(getattr(self.inverted, name)), allow_pickle=False)
        write_jsonl(folder / ITEMS_FILE, self.items)
        if self.vocab is not None:
            self.vocab.save(folder / VOCAB_FILE)
        if self.dense is not None:
            np.save(folder / DENSE_FILE, self.dense, allow_pickle=False)
        files = sorted(p.name for p in folder.iterdir() if p.is_file())
        for name in files:
            with open(folder / name, "rb") as handle:
                os.fsync(handle.fileno())
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **self.info,
            "count": len(self),
            "vocab_size": self.vocab_size,
            "vocab_sha256": self.vocab.sha256 if self.vocab is not None else None,
            "dense_size": None if self.dense is None else int(self.dense.shape[1]),
            "precision": self.precision,
            "postings": {"stored": len(self.inverted.docs), "dense_terms": len(self.inverted.dense_terms)},
            "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": _file_records(folder, files),
        }
        atomic_write_json(folder / MANIFEST_FILE, manifest)

    @classmethod
    def load(cls, path: str | Path, models: dict | None = None, *, mmap: bool = True) -> "SparseIndex":
        """Read an index folder, verifying every file's size and checksum against the manifest.

        The postings are memory-mapped (read-only, paged in as searches touch them) unless
        `mmap` is False. With `models` (from `Encoder.models()`), refuse an index built with
        another head, backbone or vocabulary: its scores would be meaningless.
        """
        path = Path(path)
        items_file = path / ITEMS_FILE
        with ThreadPoolExecutor(max_workers=1) as side:
            # items are parsed on a spare thread while the checksums are verified (both take ~a second
            # at a million items); they are used only if every checksum matches
            parsed = side.submit(_read_items, items_file) if items_file.is_file() and not items_file.is_symlink() else None
            manifest = read_manifest(path)
            items = parsed.result() if parsed is not None else None
        if isinstance(items, InputError):
            raise IndexFormatError(f"index {path}: {items}") from None
        try:
            if isinstance(items, Exception):
                raise items
            vocab = Vocabulary.load(path / VOCAB_FILE) if VOCAB_FILE in manifest["files"] else None
            dense = np.load(path / DENSE_FILE, allow_pickle=False) if DENSE_FILE in manifest["files"] else None
            if manifest["format_version"] == 1:
                vectors = sp.load_npz(path / SPARSE_FILE)  # load_npz never unpickles (allow_pickle=False)
                shape = vectors.shape
            else:
                arrays = {
                    name: np.load(path / file, mmap_mode="r" if mmap else None, allow_pickle=False)
                    for name, file in POSTING_FILES.items()
                }
                shape = (manifest["count"], manifest["vocab_size"])
        except (OSError, ValueError, KeyError) as error:
            raise IndexFormatError(f"index {path}: a file cannot be read ({error}); rebuild the index.") from None
        if shape != (manifest["count"], manifest["vocab_size"]) or len(items) != manifest["count"]:
            raise IndexFormatError(
                f"index {path}: the manifest says {manifest['count']} x {manifest['vocab_size']}, the files hold"
                f" {shape} vectors and {len(items)} items; rebuild the index."
            )
        if vocab is not None and vocab.sha256 != manifest.get("vocab_sha256"):
            raise IndexFormatError(f"index {path}: vocab.txt does not match the manifest's hash; rebuild the index.")
        info = {key: value for key, value in manifest.items() if key not in _DERIVED_FIELDS}
        try:
            if manifest["format_version"] == 1:  # float32 weights, exactly as they were searched
                index = cls.build(vectors, items, vocab=vocab, dense=dense, info=info, precision="float32")
            else:
                if dense is not None and (dense.ndim != 2 or dense.shape[0] != manifest["count"]):
                    raise InputError(f"dense.npy has shape {dense.shape} for {manifest['count']} documents; rebuild the index.")
                inverted = _checked_inverted(arrays, manifest["count"], manifest["vocab_size"])
                index = cls(inverted, items, vocab, dense, info)
        except InputError as error:
            raise IndexFormatError(f"index {path}: {error}") from None
        index.path = path
        if models is not None:
            index.check_models(models)
        return index

    def check_models(self, models: dict) -> None:
        """Raise IndexMismatchError unless this index was built with the vocabulary and weights of `models`.

        `models` is `Encoder.models()`: scores against an index built by other weights are meaningless.
        """
        where = f"index {self.path}" if self.path else "the index"
        if models.get("vocab_size") != self.vocab_size:
            raise IndexMismatchError(
                f"{where} has {self.vocab_size:,} terms, the loaded head scores {models.get('vocab_size')}."
            )
        recorded = self.info.get("models") or {}
        if self.vocab is not None and self.vocab.sha256 != models.get("vocab_sha256"):
            raise IndexMismatchError(
                f"{where} was built with another vocabulary than the loaded tokenizer's; load the tokenizer"
                f" it was built with ({_recorded_id(recorded, 'tokenizer')}) or rebuild the index."
            )
        for role in ("head", "backbone"):
            was = (recorded.get(role) or {}).get("fingerprint")
            now = (models.get(role) or {}).get("fingerprint")
            if was and now and was != now:
                raise IndexMismatchError(
                    f"{where} was built with the {role} {_recorded_id(recorded, role)} (weights {was}), but the"
                    f" loaded {role} {models[role].get('id')!r} has other weights ({now}). Load the {role} it"
                    f" was built with (--{role} ...) or rebuild the index with this one."
                )


def read_manifest(path: Path) -> dict:
    """Read and check `manifest.json` and the size and sha256 of every file it lists."""
    if not path.is_dir():
        raise IndexFormatError(
            f"no index at {path}. Build one with `python -m mlsr build-index --images DIR --out {path}`."
        )
    try:
        manifest = json.loads((path / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexFormatError(f"{path} has no {MANIFEST_FILE}: it is not an mlsr index (or its build was interrupted).") from None
    except (ValueError, OSError) as error:
        raise IndexFormatError(f"index {path}: {MANIFEST_FILE} is not valid JSON ({error}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexFormatError(f"{path / MANIFEST_FILE} is not an mlsr index manifest.")
    version = manifest.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise IndexFormatError(
            f"index {path} has format version {version!r}; this mlsr reads up to {FORMAT_VERSION}. Upgrade mlsr."
        )
    files = manifest.get("files")
    required = [SPARSE_FILE, ITEMS_FILE] if version == 1 else [*POSTING_FILES.values(), ITEMS_FILE]
    if not isinstance(files, dict) or any(name not in files for name in required):
        raise IndexFormatError(f"index {path}: the manifest lists no {' / '.join(required)}.")
    for name, expected in files.items():
        if Path(name).name != name:
            raise IndexFormatError(f"index {path}: the manifest names a file outside the folder ({name!r}).")
        file = path / name
        if file.is_symlink() or not file.is_file():
            raise IndexFormatError(f"index {path}: {name} is missing (or not a regular file); rebuild the index.")
        size = file.stat().st_size
        if not isinstance(expected, dict) or size != expected.get("bytes"):
            raise IndexFormatError(
                f"index {path}: {name} has {size:,} bytes, the manifest says {expected.get('bytes')}"
                " (truncated or altered); rebuild the index."
            )
    # the checksums are the slow part of a load (~1.7 GB/s per core with SHA extensions): one file per core
    names = sorted(files, key=lambda name: -files[name]["bytes"])
    with ThreadPoolExecutor(max_workers=max(1, min(search_threads(), len(names)))) as pool:
        digests = dict(zip(names, pool.map(lambda name: sha256_file(path / name), names)))
    for name in names:
        if digests[name] != files[name].get("sha256"):
            raise IndexFormatError(f"index {path}: {name} does not match its checksum (altered); rebuild the index.")
    return manifest


def _as_csr(matrix: sp.spmatrix, what: str) -> sp.csr_matrix:
    if not sp.issparse(matrix):
        raise InputError(f"{what} must be a scipy sparse matrix (rows are items, columns are terms).")
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise InputError(f"{what} must be 2-D, got shape {matrix.shape}.")
    if not np.isfinite(matrix.data).all():
        raise InputError(f"{what} hold NaN or infinite weights.")
    matrix.sum_duplicates()
    matrix.sort_indices()
    return matrix


def _read_items(file: Path) -> list[dict] | Exception:
    """items.jsonl, checked to be JSON objects with unique ids; the error instead of raising (for a side thread)."""
    try:
        items = read_jsonl(file)
        if not all(isinstance(item, dict) for item in items):
            raise ValueError("every line must be a JSON object")
        _check_items(items, len(items))
        return items
    except (OSError, ValueError, InputError) as error:
        return error


def _check_items(items: list[dict], n: int) -> None:
    if len(items) != n:
        raise InputError(f"{len(items)} items for {n} vectors: give one item per row.")
    ids = [str(item.get("id", "")) if isinstance(item, dict) else "" for item in items]
    if len(set(ids)) != n or "" in ids:
        raise InputError("every item needs a unique, non-empty 'id'.")


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


def _recorded_id(recorded_models: dict, role: str) -> str:
    return repr((recorded_models.get(role) or {}).get("id", "unknown"))
