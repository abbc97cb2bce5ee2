"""The sparse index: documents as sparse vectors over the vocabulary, exact top-k search and term-level
explanations. Documents are kept inverted (`mlsr.index.inverted`); large indexes search with a compiled
kernel (numba), small ones with numpy and scipy. On disk it is a folder (`mlsr.index.folder`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from itertools import chain
from typing import NamedTuple
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.checks import check_k, check_precision, check_top_k
from mlsr.errors import IndexFormatError, InputError
from mlsr.index.folder import check_items, read_folder, write_folder
from mlsr.index.hub import cached_copy_hint, locate_index
from mlsr.index.inverted import HALF_MAX, InvertedIndex
from mlsr.index.rows import as_csr, checked_rows, query_arrays
from mlsr.index.thumbnails import Thumbnails
from mlsr.items import Item
from mlsr.models.record import ModelRecord, check_compatible
from mlsr.vocab import Vocabulary, nonzero_terms

logger = logging.getLogger(__name__)

# How document weights can be stored (`SparseIndex.build(precision=...)`; see mlsr.index.blocks). Bytes
# per posting, with its 2-byte row: uint8 ~3.1 (impact + a scale per 32), float16 4, float32 6.


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
    float16 by default, or float32, or as uint8 impacts (`precision`): search, `score`, `explain`
    and `vectors` all read the stored weights, so explanations sum to the scores that search returns.
    """

    inverted: InvertedIndex
    items: list[Item]
    vocab: Vocabulary | None = None
    dense: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    path: Path | None = None  # the folder it was loaded from, for messages
    source: str | None = None  # the name it was loaded by: the folder as given, or the Hub id `owner/name@commit`
    hub_id: str | None = None  # `owner/name@commit` when it was read from the Hub
    thumbnails: Thumbnails | None = None  # each row's picture (mlsr.index.thumbnails); None: an older index

    @classmethod
    def build(
        cls,
        vectors: sp.spmatrix | Iterable[sp.spmatrix],
        items: Sequence[Item] | None = None,
        *,
        vocab: Vocabulary | None = None,
        dense: np.ndarray | None = None,
        info: dict | None = None,
        precision: str = "float16",
        thumbnails: Thumbnails | None = None,
    ) -> SparseIndex:
        """Index (n, vocab) document vectors; items default to `{"id": str(row)}`; `thumbnails`: one picture a row.

        `vectors` is one scipy sparse matrix, or an iterable of them (consecutive row chunks of the
        same width) for a collection too large to hold as one matrix: blocks of 65,536 rows are
        inverted as they arrive. The caller's matrices are never changed.

        `precision` says how document weights are stored, and so what search is exact over:
        "float32" keeps them exactly; "float16" (default: 4 bytes per posting) rounds each to within
        a relative 2^-11 (weights too large for float16, > 65,504, keep float32); "uint8" (~3.1 bytes
        per posting) stores impacts 0..255, each group of 32 postings (64 rows of a dense column)
        with a float32 scale = its max weight / 255, so each weight moves by at most half its scale,
        and needs weights >= 0. Weights that round to 0 are dropped, as absent terms. Search then
        returns the exact top-k over the stored weights -- the same float32 scores as a brute-force
        product over them -- which may differ from the top-k over the original weights where scores
        are closer than the rounding (`bench/bench_scale.py` measures recall@10 against float32).
        `vectors` (each chunk) and `dense` are copied, never changed; a 2-D array is taken as one matrix.
        """
        check_precision(precision)
        if dense is not None:
            dense = np.array(dense, dtype=np.float32, order="C", copy=True)  # the index's own: never the caller's
        single = sp.issparse(vectors) or isinstance(vectors, np.ndarray) or hasattr(vectors, "__array__")
        if single:
            vectors = as_csr(vectors, "document vectors")
            _check_rows(vectors.shape[0], items, vocab, vectors.shape[1], dense)  # fail before the work
            if precision == "float16" and vectors.nnz and np.abs(vectors.data).max() > HALF_MAX:
                logger.warning("document weights exceed float16's range (%g): storing float32", HALF_MAX)
                precision = "float32"
            chunks: Iterator[sp.csr_matrix] = iter([vectors])
        elif isinstance(vectors, Iterable) and not isinstance(vectors, (str, bytes, dict)):
            chunks = (as_csr(chunk, "document vectors") for chunk in vectors)
        else:
            raise InputError("document vectors must be a scipy sparse matrix or a 2-D array, or an iterable of them"
                             " (row chunks).")
        first = next(chunks, None)
        if first is None:
            raise InputError("no document vectors: give a matrix, or at least one row chunk.")
        vocab_size = first.shape[1]
        inverted = InvertedIndex.from_rows(checked_rows(chain([first], chunks), vocab_size, precision), vocab_size,
                                           precision)
        n = inverted.n_docs
        if not single:
            _check_rows(n, items, vocab, vocab_size, dense)
        if thumbnails is not None:
            thumbnails.check(n)
        items = [Item(id=str(i)) for i in range(n)] if items is None else [item.copy() for item in items]
        return cls(inverted, items, vocab, dense, dict(info or {}), thumbnails=thumbnails)

    def __len__(self) -> int:
        return self.inverted.n_docs

    @property
    def vocab_size(self) -> int:
        return self.inverted.vocab_size

    @property
    def precision(self) -> str:
        """"uint8", "float16" or "float32": how document weights are stored (see `build`)."""
        return self.inverted.precision

    @property
    def nnz(self) -> int:
        """Stored (document, term) weights."""
        return self.inverted.nnz

    @cached_property
    def vectors(self) -> sp.csr_matrix:
        """The documents as (n, vocab) CSR float32 rows of the stored weights (built on first use)."""
        return self.inverted.to_csr()

    def document(self, row: int) -> sp.csr_matrix:
        """One document's vector, (1, vocab) CSR float32, read from the forward view in O(its terms)."""
        row = self._check_row(row)
        terms, weights = self.inverted.document(row)
        matrix = sp.csr_matrix((weights, terms, np.array([0, len(terms)])), shape=(1, self.vocab_size))
        matrix.has_sorted_indices = True
        return matrix

    def rows(self, rows: Sequence[int] | np.ndarray) -> sp.csr_matrix:
        """These documents' vectors, (len(rows), vocab) CSR float32, from the forward view (no full matrix built)."""
        rows = np.asarray(rows).reshape(-1)
        if rows.size and (rows.dtype == np.bool_ or not np.issubdtype(rows.dtype, np.integer)):
            raise InputError(f"rows must be whole numbers, got {rows.dtype}.")
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise InputError(f"rows must lie in 0..{len(self) - 1}.")
        return self.inverted.forward.rows(rows.astype(np.int64), self.vocab_size)

    def picture(self, row: int) -> bytes | None:
        """Row `row`'s thumbnail (WebP bytes), or None when the index keeps none for it."""
        row = self._check_row(row)
        return self.thumbnails.picture(row) if self.thumbnails is not None else None

    def document_frequency(self) -> np.ndarray:
        """(vocab,) int64: the number of documents holding each term."""
        return self.inverted.document_frequency()

    def has_negative_weights(self) -> bool:
        """True when some document weight is below zero (read from the postings; no document matrix is built)."""
        inverted = self.inverted
        return any(array.size and float(array.min()) < 0 for array in (inverted.weights, inverted.dense_weights))

    # -- search -----------------------------------------------------------------------------------

    def search(self, queries: sp.spmatrix, k: int = 10) -> Results:
        """Exact top-k by dot product over all documents, for a batch of (q, vocab) queries.

        Ties are broken by row (lower first), so rankings are deterministic; k is clamped to
        the number of documents. Only the query terms' postings are read; scores are the same
        floats as the sparse product `queries @ index.vectors.T` over the stored weights (for
        float16 and uint8 these are the rounded weights: exact search of the stored collection).
        `queries` (sparse, or a 2-D array) are copied, never changed.
        """
        k = check_k(k)
        queries = query_arrays(queries, "queries")  # checked and canonical once; a canonical CSR is not copied
        if queries.n_cols != self.vocab_size:
            raise InputError(self._width_problem(queries.n_cols))
        return Results(*self.inverted.search(queries, k))

    def score(self, query: sp.spmatrix, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Scores of one (1, vocab) query against the given document rows, float32 (len(rows),)."""
        query = self._check_queries(query)
        if query.shape[0] != 1:
            raise InputError(f"score() takes one query row, got {query.shape[0]}.")
        rows = np.asarray(rows).reshape(-1)
        if rows.dtype == np.bool_ or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
            raise InputError(f"rows must be whole numbers, got {rows.dtype}.")
        rows = rows.astype(np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise InputError(f"rows must lie in 0..{len(self) - 1}.")
        weights = self.inverted.weights_at(query.indices, rows)
        scores = np.zeros(len(rows), dtype=np.float32)
        for q_weight, doc_weights in zip(query.data, weights):  # ascending terms, as search sums
            scores += q_weight * doc_weights
        return scores

    def explain(self, query_row, index_row: int, top_k: int | None = None) -> list[TermMatch]:
        """The terms a query and document share, with both weights and their product, largest first.

        The contributions sum to the document's score for that query (up to float rounding); `top_k`
        (None: all) keeps the largest ones.
        """
        top_k = check_top_k(top_k)
        row = self._check_row(index_row)
        q_ids, q_weights = nonzero_terms(query_row, self.vocab_size)
        d_ids, d_weights = self.inverted.document(row)  # the forward view: O(the document's terms)
        terms, in_query, in_doc = np.intersect1d(q_ids, d_ids, assume_unique=True, return_indices=True)
        q_shared, d_shared = q_weights[in_query], d_weights[in_doc]
        contributions = q_shared * d_shared
        order = np.lexsort((terms, -contributions))[:top_k]
        return [TermMatch(self.term(terms[j]), float(q_shared[j]), float(d_shared[j]), float(contributions[j]))
                for j in order]

    def term(self, term_id: int) -> str:
        """The word piece of a term id (or `#id` when the index carries no vocabulary)."""
        return self.vocab.terms[term_id] if self.vocab is not None else f"#{term_id}"

    def _check_row(self, row: int) -> int:
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
            raise InputError(f"row must be a whole number, got {row!r}.")
        if not 0 <= int(row) < len(self):
            raise InputError(f"row {row} is outside the index (0..{len(self) - 1}).")
        return int(row)

    def _check_queries(self, queries: sp.spmatrix) -> sp.csr_matrix:
        queries = as_csr(queries, "queries")
        if queries.shape[1] != self.vocab_size:
            raise InputError(self._width_problem(queries.shape[1]))
        return queries

    def _width_problem(self, columns: int) -> str:
        return (f"queries have {columns} columns but the index has {self.vocab_size} terms;"
                " encode them with the vocabulary the index was built with.")


    # -- models ---------------------------------------------------------------------------------------

    @property
    def models(self) -> ModelRecord | None:
        """The models that made the document vectors, as recorded in the manifest (None when not recorded)."""
        return ModelRecord.from_json(self.info.get("models"))

    @property
    def public_name(self) -> str:
        """How the app names this index to a visitor: its Hub id, or its folder's name (never a server path)."""
        return self.hub_id or (self.path.resolve().name if self.path is not None else "in memory")

    def check_models(self, loaded: ModelRecord) -> None:
        """Raise IndexMismatchError unless this index was built with the vocabulary and weights of `loaded`.

        `loaded` is `Encoder.models()`: scores against an index built by other weights are meaningless.
        """
        where = f"index {self.path}" if self.path else "the index"
        if self.models is None:
            logger.warning("%s records no models: only its vocabulary can be checked against the loaded ones", where)
        check_compatible(self.models, loaded, vocab_size=self.vocab_size,
                         vocab_sha256=self.vocab.sha256 if self.vocab is not None else None, where=where)

    # -- changes ----------------------------------------------------------------------------------

    def add(self, vectors, items: Sequence[Item] | None = None, dense: np.ndarray | None = None,
            thumbnails: Thumbnails | None = None) -> SparseIndex:
        """A new index with these documents appended (this one is unchanged); `save` it to keep it.

        `vectors` (m, vocab) sparse or a 2-D array, `items` one dict each with an `id` not yet in the
        index (default: their row numbers), `dense` (m, d) exactly when the index keeps dense vectors,
        `thumbnails` their m pictures (rows without one show a placeholder).
        Equal to a fresh build of the union in the same precision (see `mlsr.index.edit`): the full
        blocks are kept and only the last, partial one is inverted again (all of an index smaller than
        a block, or of a float16 index that new weights turn to float32). The caller's arrays are
        copied, never changed.
        """
        from mlsr.index import edit

        rows = as_csr(vectors, "new document vectors")
        m = rows.shape[0]
        added = edit.new_items(self.items, items, m, {str(item["id"]) for item in self.items})
        if (dense is None) != (self.dense is None):
            raise InputError("this index keeps dense vectors: give `dense` for the new rows too." if dense is None
                             else "this index keeps no dense vectors: build it with dense ones to add them.")
        if dense is not None and self.dense is not None:  # both or neither, checked above
            dense = np.array(dense, dtype=np.float32, order="C", copy=True)
            if dense.shape != (m, self.dense.shape[1]) or not np.isfinite(dense).all():
                raise InputError(f"dense vectors must be a finite ({m}, {self.dense.shape[1]}) array,"
                                 f" got shape {dense.shape}.")
            dense = np.concatenate([np.asarray(self.dense), dense])
        if thumbnails is not None:
            thumbnails.check(m)
        if thumbnails is not None or self.thumbnails is not None:
            thumbnails = (self.thumbnails or Thumbnails.none(len(self))).then(thumbnails or Thumbnails.none(m))
        inverted = edit.appended(self.inverted, rows)
        return SparseIndex(inverted, [*self.items, *added], self.vocab, dense, edit.recorded(self.info, added=m),
                           thumbnails=thumbnails)

    def remove(self, ids: Sequence[str]) -> SparseIndex:
        """A new index without the items of these ids (this one is unchanged); later rows move up. `save` it to keep it.

        An id the index does not hold is refused (nothing is removed). Equal to a fresh build of the
        rest in the same precision; blocks before the first removed row are kept as they are.
        """
        from mlsr.index import edit

        drop = edit.rows_of_ids(self.items, ids)
        keep = np.ones(len(self), dtype=bool)
        keep[drop] = False
        dense = None if self.dense is None else np.asarray(self.dense)[keep]
        items = [item.copy() for item, kept in zip(self.items, keep) if kept]
        thumbnails = None if self.thumbnails is None else self.thumbnails.take(np.flatnonzero(keep))
        return SparseIndex(edit.without(self.inverted, drop), items, self.vocab, dense,
                           edit.recorded(self.info, removed=len(drop)), thumbnails=thumbnails)

    # -- persistence ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write the index folder atomically (see `mlsr.index.folder`): the new folder replaces the old in one step."""
        self.info["lineage"] = write_folder(path, self.inverted, self.items, self.vocab, self.dense, self.info,
                                            self.thumbnails)

    @classmethod
    def load(cls, path: str | Path, models: ModelRecord | None = None, *, mmap: bool = True) -> SparseIndex:
        """Read an index folder, verifying every file's size and checksum against the manifest.

        `path` may also be a Hub dataset id, `owner/name` or `owner/name@revision` (a `str`; a `Path` is
        always a folder): it is downloaded once into the Hugging Face cache and verified the same way
        (see `mlsr.index.hub` for how a name is told from a folder). The postings are memory-mapped
        (read-only, paged in as searches touch them) unless `mmap` is False. With `models` (from
        `Encoder.models()`), refuse an index built with another head, backbone or vocabulary: its
        scores would be meaningless.
        """
        location = locate_index(path)
        path = location.folder
        try:
            contents = read_folder(path, mmap=mmap)
        except IndexFormatError as error:
            if location.repo_id is None:
                raise
            raise IndexFormatError(f"{error}{cached_copy_hint(location)}") from None
        if contents.vectors is not None:  # formats 1 and 2: inverted again, the stored weights kept exactly
            try:
                index = cls.build(contents.vectors, contents.items, vocab=contents.vocab, dense=contents.dense,
                                  info=contents.info, precision=contents.precision, thumbnails=contents.thumbnails)
            except InputError as error:
                raise IndexFormatError(f"index {path}: {error}") from None
        else:
            if contents.inverted is None:  # read_folder gives either the rows or the postings
                raise IndexFormatError(f"index {path}: it holds neither rows nor postings; rebuild the index.")
            index = cls(contents.inverted, contents.items, contents.vocab, contents.dense, contents.info,
                        thumbnails=contents.thumbnails)
        index.path, index.source = path, location.label
        index.hub_id = location.label if location.repo_id is not None else None
        if models is not None:
            index.check_models(models)
        return index


def _check_rows(n: int, items: Sequence[Item] | None, vocab: Vocabulary | None, vocab_size: int,
                dense: np.ndarray | None) -> None:
    """Raise InputError unless items, vocabulary and dense vectors fit n document rows of vocab_size terms."""
    if items is not None:
        check_items(list(items), n)
    if vocab is not None and len(vocab) != vocab_size:
        raise InputError(f"vocabulary has {len(vocab)} terms but vectors have {vocab_size} columns.")
    if dense is not None and (dense.ndim != 2 or dense.shape[0] != n or not np.isfinite(dense).all()):
        raise InputError(f"dense vectors must be a finite (n={n}, d) array, got shape {dense.shape}.")
