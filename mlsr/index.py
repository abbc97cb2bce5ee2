"""The sparse index: documents as rows of a scipy CSR matrix over the vocabulary, exact top-k search,
term-level explanations, and a self-describing folder on disk. Needs only numpy and scipy."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.errors import IndexFormatError, IndexMismatchError, InputError
from mlsr.io import atomic_write_json, read_jsonl, replace_folder, sha256_file, write_jsonl
from mlsr.vocab import VOCAB_FILE, Vocabulary, nonzero_terms

logger = logging.getLogger(__name__)

FORMAT = "mlsr-index"
FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPARSE_FILE = "sparse.npz"
ITEMS_FILE = "items.jsonl"
DENSE_FILE = "dense.npy"
# Manifest fields computed on save; everything else in a manifest is the index's `info`.
_DERIVED_FIELDS = {"format", "format_version", "count", "vocab_size", "vocab_sha256", "dense_size", "saved", "files"}
_QUERY_CHUNK = 256  # queries scored at once: bounds the dense (chunk x n) score block


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
    """Documents (n, vocab) as CSR float32 rows, with their items and optional dense vectors.

    `items[i]` describes row i (`id`, `image`, `captions`, ...); `dense` (n, d) holds the dense
    vectors of the same rows for a side-by-side FAISS comparison; `info` is the rest of the
    manifest (models, document representation, build time).
    """

    vectors: sp.csr_matrix
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
    ) -> "SparseIndex":
        """Index (n, vocab) document vectors; items default to `{"id": str(row)}`."""
        vectors = _as_csr(vectors, "document vectors")
        n = vectors.shape[0]
        items = [{"id": str(i)} for i in range(n)] if items is None else [dict(item) for item in items]
        if len(items) != n:
            raise InputError(f"{len(items)} items for {n} vectors: give one item per row.")
        ids = [str(item.get("id", "")) for item in items]
        if len(set(ids)) != n or "" in ids:
            raise InputError("every item needs a unique, non-empty 'id'.")
        if vocab is not None and len(vocab) != vectors.shape[1]:
            raise InputError(f"vocabulary has {len(vocab)} terms but vectors have {vectors.shape[1]} columns.")
        if dense is not None:
            dense = np.ascontiguousarray(dense, dtype=np.float32)
            if dense.ndim != 2 or dense.shape[0] != n or not np.isfinite(dense).all():
                raise InputError(f"dense vectors must be a finite (n={n}, d) array, got shape {dense.shape}.")
        return cls(vectors, items, vocab, dense, dict(info or {}))

    def __len__(self) -> int:
        return self.vectors.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.vectors.shape[1]

    @cached_property
    def postings(self) -> sp.csr_matrix:
        """The inverted layout (vocab, n): row t lists the documents holding term t."""
        return self.vectors.T.tocsr()

    # -- search -----------------------------------------------------------------------------------

    def search(self, queries: sp.spmatrix, k: int = 10) -> Results:
        """Exact top-k by dot product over all documents, for a batch of (q, vocab) queries.

        Ties are broken by row (lower first), so rankings are deterministic; k is clamped to
        the number of documents. Only the query terms' posting lists are touched.
        """
        queries = self._check_queries(queries)
        k = max(0, min(int(k), len(self)))
        scores = np.zeros((queries.shape[0], k), dtype=np.float32)
        indices = np.zeros((queries.shape[0], k), dtype=np.int64)
        for start in range(0, queries.shape[0], _QUERY_CHUNK):
            block = (queries[start : start + _QUERY_CHUNK] @ self.postings).toarray()
            for offset, row in enumerate(block):
                top = top_k(row, k)
                indices[start + offset] = top
                scores[start + offset] = row[top]
        return Results(scores, indices)

    def score(self, query: sp.spmatrix, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Scores of one (1, vocab) query against the given document rows, float32 (len(rows),)."""
        query = self._check_queries(query)
        if query.shape[0] != 1:
            raise InputError(f"score() takes one query row, got {query.shape[0]}.")
        rows = np.asarray(rows, dtype=np.int64)
        return np.asarray((self.vectors[rows] @ query.T).toarray(), dtype=np.float32).reshape(-1)

    def explain(self, query_row, index_row: int, top_n: int | None = None) -> list[TermMatch]:
        """The terms a query and document share, with both weights and their product, largest first.

        The contributions sum to the document's score for that query (up to float rounding).
        """
        if not 0 <= int(index_row) < len(self):
            raise InputError(f"row {index_row} is outside the index (0..{len(self) - 1}).")
        q_ids, q_weights = nonzero_terms(query_row, self.vocab_size)
        doc = self.vectors[int(index_row)]
        shared, q_pos, d_pos = np.intersect1d(q_ids, doc.indices, assume_unique=True, return_indices=True)
        contributions = q_weights[q_pos] * doc.data[d_pos]
        order = np.lexsort((shared, -contributions))[: None if top_n is None else max(top_n, 0)]
        return [
            TermMatch(self.term(shared[j]), float(q_weights[q_pos[j]]), float(doc.data[d_pos[j]]), float(contributions[j]))
            for j in order
        ]

    def term(self, term_id: int) -> str:
        """The word piece of a term id (or `#id` when the index carries no vocabulary)."""
        return self.vocab.terms[term_id] if self.vocab is not None else f"#{term_id}"

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

        Files: manifest.json (format, models, sizes and sha256 of every file), sparse.npz,
        items.jsonl, vocab.txt (when known) and dense.npy (when present).
        """
        path = Path(path)
        if path.exists() and not (path / MANIFEST_FILE).is_file() and any(path.iterdir()):
            raise IndexFormatError(f"{path} exists and is not an mlsr index; refusing to overwrite it.")
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            self._write_files(staging)
            replace_folder(staging, path)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("saved %d documents to %s", len(self), path)

    def _write_files(self, folder: Path) -> None:
        sp.save_npz(folder / SPARSE_FILE, self.vectors, compressed=False)
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
            "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": {name: {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)} for name in files},
        }
        atomic_write_json(folder / MANIFEST_FILE, manifest)

    @classmethod
    def load(cls, path: str | Path, models: dict | None = None) -> "SparseIndex":
        """Read an index folder, verifying every file's size and checksum against the manifest.

        With `models` (from `Encoder.models()`), refuse an index built with another head,
        backbone or vocabulary: its scores would be meaningless.
        """
        path = Path(path)
        manifest = read_manifest(path)
        try:
            vectors = sp.load_npz(path / SPARSE_FILE)  # load_npz never unpickles (allow_pickle=False)
            items = read_jsonl(path / ITEMS_FILE)
            vocab = Vocabulary.load(path / VOCAB_FILE) if VOCAB_FILE in manifest["files"] else None
            dense = np.load(path / DENSE_FILE, allow_pickle=False) if DENSE_FILE in manifest["files"] else None
        except (OSError, ValueError, KeyError) as error:
            raise IndexFormatError(f"index {path}: a file cannot be read ({error}); rebuild the index.") from None
        if vectors.shape != (manifest["count"], manifest["vocab_size"]) or len(items) != manifest["count"]:
            raise IndexFormatError(
                f"index {path}: the manifest says {manifest['count']} x {manifest['vocab_size']}, the files hold"
                f" {vectors.shape} vectors and {len(items)} items; rebuild the index."
            )
        if vocab is not None and vocab.sha256 != manifest.get("vocab_sha256"):
            raise IndexFormatError(f"index {path}: vocab.txt does not match the manifest's hash; rebuild the index.")
        info = {key: value for key, value in manifest.items() if key not in _DERIVED_FIELDS}
        try:
            index = cls.build(vectors, items, vocab=vocab, dense=dense, info=info)
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
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise IndexFormatError(
            f"index {path} has format version {version!r}; this mlsr reads up to {FORMAT_VERSION}. Upgrade mlsr."
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or SPARSE_FILE not in files or ITEMS_FILE not in files:
        raise IndexFormatError(f"index {path}: the manifest lists no {SPARSE_FILE} / {ITEMS_FILE}.")
    for name, expected in files.items():
        if Path(name).name != name:
            raise IndexFormatError(f"index {path}: the manifest names a file outside the folder ({name!r}).")
        file = path / name
        if file.is_symlink() or not file.is_file():
            raise IndexFormatError(f"index {path}: {name} is missing (or not a regular file); rebuild the index.")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise IndexFormatError(
                f"index {path}: {name} has {size:,} bytes, the manifest says {expected.get('bytes'):,}"
                " (truncated or altered); rebuild the index."
            )
        if sha256_file(file) != expected.get("sha256"):
            raise IndexFormatError(f"index {path}: {name} does not match its checksum (altered); rebuild the index.")
    return manifest


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the k best scores of one query: score descending, then row ascending."""
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        # argpartition finds the k-th best score; every row tied with it stays a candidate so
        # that the tie is broken by row number, not by argpartition's internal order.
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(n)
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k].astype(np.int64)


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


def _recorded_id(recorded_models: dict, role: str) -> str:
    return repr((recorded_models.get(role) or {}).get("id", "unknown"))
