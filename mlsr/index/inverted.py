"""The inverted layout of a sparse index: blocks of documents, and in each block, for every term, the rows holding it.

Documents are cut into blocks of 65,536 rows (`mlsr.index.blocks`). In a block, a term is a
posting list (ascending uint16 rows within the block, with their weights) or, when it is common in
the block, a dense column (one weight per row, 0 = absent). Weights are float16 (default), float32,
or uint8 impacts with a float32 scale per 32 postings (per 64 rows of a column): 3.125 bytes per
posting in uint8 (2 of row, 1 of impact, 1/8 of scale), 4 in float16, 6 in float32, before dense
columns and the per-block offsets.

Search is exact over the stored weights: a document's score is the sum over the query's terms, in
ascending term order and in float32, of `query weight * stored weight` (for uint8 the stored weight
is the float32 `scale * impact`) -- the same floats as scipy's `queries @ postings` over the stored
weights, so ties and order match a brute-force sort. For uint8 (and float16) that is the exact
top-k of the quantized collection, not of the weights before quantization: `bench/bench_scale.py`
measures how often they differ (recall@10 against float32). Large indexes search with the compiled
kernel (`mlsr.index.kernels`, numba), blocks split between cores; small ones (and machines without
numba) with scipy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.index import blocks as layout
from mlsr.index import forward as rows_view
from mlsr.index.kernel_search import compiled_kernel as _kernel, kernel_search
from mlsr.index.rows import QueryArrays, query_arrays
from mlsr.index.ranking import first_at_least, product_row, top_k, top_k_of_nonzeros
from mlsr.index.blocks import (COLUMN_GROUP, LIST_GROUP, Part, concatenate, empty_part, invert_block, list_groups,
                               row_blocks, widened)

logger = logging.getLogger(__name__)

_CONCATENATE_BLOCKS = 16  # the builder concatenates its blocks this many at a time (see blocks.concatenate)
KERNEL_MIN_DOCS = 20_000  # smaller indexes search with scipy: no compile, no threads, already < 1 ms
MAX_SCORE_BLOCK = 1 << 26  # scipy path: at most this many dense scores at once (256 MB)
HALF_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True, eq=False)
class InvertedIndex:
    """Postings of an (n_docs, vocab_size) document matrix, block by block.

    Block b holds rows b * block_size .. min(n_docs, (b + 1) * block_size) - 1. Its posting list of
    term t is `docs[s:e]` (rows within the block, ascending) and `weights[s:e]` with
    `s, e = indptr[b * vocab_size + t], indptr[b * vocab_size + t + 1]`; it is empty when the term
    is a dense column there: `dense_weights[j]` for the j in dense_indptr[b]..dense_indptr[b+1]-1
    with `dense_terms[j] == t` (terms ascending within a block; columns are block_size long, 0 =
    absent, zero beyond the last row). uint8 weights are impacts, stored weight = scale * impact in
    float32: posting p of block b has the scale `scales[scale_starts[b] + (p - indptr[b * vocab_size]) // 32]`
    (groups of 32 consecutive postings of the block), row r of column j `dense_scales[j, r // 64]`;
    both scale arrays are empty for float weights. Arrays may be memory-mapped, read-only.
    """

    n_docs: int
    vocab_size: int
    block_size: int
    indptr: np.ndarray  # int64 (n_blocks * vocab_size + 1,)
    docs: np.ndarray  # uint16 (postings,)
    weights: np.ndarray  # uint8, float16 or float32 (postings,)
    scales: np.ndarray  # float32: uint8 (sum of each block's ceil(postings / 32),), else (0,)
    dense_indptr: np.ndarray  # int64 (n_blocks + 1,)
    dense_terms: np.ndarray  # int32 (columns,)
    dense_weights: np.ndarray  # weights' dtype (columns, block_size)
    dense_scales: np.ndarray  # float32: uint8 (columns, ceil(block_size / 64)), else (0, ceil(block_size / 64))
    stored_forward: rows_view.Forward | None = field(default=None, repr=False)  # None: derived on first use

    @classmethod
    def from_rows(cls, chunks: Iterable[sp.csr_matrix], vocab_size: int, precision: str,
                  block_size: int | None = None, own_size: bool = True) -> InvertedIndex:
        """Invert canonical CSR float32 row chunks (in order, no explicit zeros), block by block (see
        `mlsr.index.blocks`).

        float16 turns to float32 (with a warning) at the first weight beyond its range; the blocks
        already inverted keep their float16-rounded weights, widened exactly. A collection smaller
        than one block gets a block of its own size (dense columns are a block long) when `own_size`.
        """
        size = block_size or layout.BLOCK_DOCS
        blocks: list[Part] = []  # blocks not yet concatenated
        done: list[Part] = []  # concatenated runs of them
        n = 0
        forwards: list[rows_view.Forward] = []  # each block's rows, for the forward view

        def add(rows: sp.csr_matrix) -> None:
            nonlocal precision, blocks, done, n
            if precision == "float16" and rows.nnz and np.abs(rows.data).max() > HALF_MAX:
                logger.warning("document weights exceed float16's range (%g): storing float32", HALF_MAX)
                precision = "float32"
                blocks, done = [widened(part) for part in blocks], [widened(part) for part in done]
            blocks.append(invert_block(rows, precision, size))
            forwards.append(rows_view.of_block(rows, blocks[-1], vocab_size, precision))
            n += rows.shape[0]
            if len(blocks) == _CONCATENATE_BLOCKS:
                done.append(concatenate(blocks))

        pending = None  # one block held back, to know whether it is the only one
        for rows in row_blocks(chunks, size):
            if pending is not None:
                add(pending)
            pending = rows
        if pending is not None:
            if not blocks and not done and own_size:
                size = pending.shape[0]
            add(pending)
        if blocks:
            done.append(concatenate(blocks))
        part = concatenate(done) if done else empty_part(precision, size)  # empties `done` as it copies
        forward = rows_view.joined(forwards, precision) if forwards else None
        return cls(n, vocab_size, size, **part.arrays(), stored_forward=forward)

    # -- sizes ------------------------------------------------------------------------------------

    @property
    def n_blocks(self) -> int:
        return -(-self.n_docs // self.block_size)

    @property
    def precision(self) -> str:
        """"uint8", "float16" or "float32": how document weights are stored."""
        return str(self.weights.dtype)

    def block_rows(self, block: int) -> int:
        """Rows in a block (block_size, fewer in the last)."""
        return min(self.block_size, self.n_docs - block * self.block_size)

    @property
    def quantized(self) -> bool:
        return self.weights.dtype == np.uint8

    @cached_property
    def block_starts(self) -> np.ndarray:
        """int64 (n_blocks + 1,): where each block's postings start in `docs` (and the end)."""
        return self.indptr[:: self.vocab_size].copy()

    @cached_property
    def scale_starts(self) -> np.ndarray:
        """int64 (n_blocks + 1,): where each block's scale groups start in `scales` (uint8), all 0 otherwise."""
        starts = np.zeros(self.n_blocks + 1, dtype=np.int64)
        if self.quantized:
            np.cumsum(list_groups(np.diff(self.block_starts)), out=starts[1:])
        return starts

    def list_scales(self, positions: np.ndarray, blocks: np.ndarray) -> np.ndarray:
        """float32 scales of uint8 postings at `positions` of `docs` (in the given blocks)."""
        groups = self.scale_starts[blocks] + (positions - self.block_starts[blocks]) // LIST_GROUP
        return self.scales[groups]

    @cached_property
    def term_postings(self) -> np.ndarray:
        """float64 (vocab_size,): postings a search reads per term, a dense column counting all its block's rows."""
        postings = np.diff(self.indptr).reshape(self.n_blocks, self.vocab_size).sum(axis=0).astype(np.float64)
        np.add.at(postings, self.dense_terms, [self.block_rows(b) for b in self.dense_blocks])
        return postings

    @cached_property
    def dense_blocks(self) -> np.ndarray:
        """int64 (columns,): the block of each dense column."""
        return np.repeat(np.arange(self.n_blocks), np.diff(self.dense_indptr))

    @cached_property
    def dense_counts(self) -> np.ndarray:
        """int64 (columns,): non-zero weights of each dense column."""
        if not len(self.dense_terms):
            return np.zeros(0, np.int64)
        return np.array([np.count_nonzero(self.dense_weights[j, : self.block_rows(b)])
                         for j, b in enumerate(self.dense_blocks)], dtype=np.int64)

    @property
    def nnz(self) -> int:
        """Stored (document, term) weights, counting only the non-zero ones of dense columns."""
        return len(self.docs) + int(self.dense_counts.sum())

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays that search reads."""
        return sum(array.nbytes for array in (self.indptr, self.docs, self.weights, self.scales, self.dense_indptr,
                                              self.dense_terms, self.dense_weights, self.dense_scales))

    def document_frequency(self) -> np.ndarray:
        """(vocab_size,) int64: how many documents hold each term."""
        frequency = np.diff(self.indptr).reshape(self.n_blocks, self.vocab_size).sum(axis=0)
        np.add.at(frequency, self.dense_terms, self.dense_counts)
        return frequency

    def bytes_read(self, queries: sp.csr_matrix) -> np.ndarray:
        """float64 (q,): bytes of postings that searching each query reads (lists, columns, their scales, offsets)."""
        scale = 4 if self.quantized else 0  # a float32 scale per group
        per_posting = self.docs.itemsize + self.weights.itemsize + scale / LIST_GROUP
        per_term = per_posting * np.diff(self.indptr).reshape(self.n_blocks, self.vocab_size).sum(axis=0)
        rows = np.array([self.block_rows(b) for b in self.dense_blocks], dtype=np.int64)
        np.add.at(per_term, self.dense_terms, rows * (self.weights.itemsize + scale / COLUMN_GROUP))
        per_term += self.n_blocks * 2 * self.indptr.itemsize
        per_query = np.add.reduceat(np.append(per_term[queries.indices], 0), queries.indptr[:-1])
        return per_query * (np.diff(queries.indptr) > 0)

    # -- reading weights --------------------------------------------------------------------------

    def weights_at(self, terms: np.ndarray, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """float32 (len(terms), len(rows)): the stored weight of each term in each row (0 when absent)."""
        terms = np.asarray(terms, dtype=np.int64).reshape(-1, 1)
        rows = np.asarray(rows, dtype=np.int64).reshape(1, -1)
        blocks, local = np.divmod(rows, self.block_size)
        terms, blocks, local = np.broadcast_arrays(terms, blocks, local)
        out = np.zeros(terms.shape, dtype=np.float32)
        # dense columns: find the term among its block's dense terms
        lo, hi = self.dense_indptr[blocks], self.dense_indptr[blocks + 1]
        slot = first_at_least(self.dense_terms, lo, hi, terms)
        dense = slot < hi
        dense[dense] = self.dense_terms[slot[dense]] == terms[dense]
        out[dense] = self.dense_weights[slot[dense], local[dense]]
        if self.quantized:  # stored weight = scale * impact, in float32 as search computes it
            out[dense] *= self.dense_scales[slot[dense], local[dense] // COLUMN_GROUP]
        # posting lists: find the row in the block's list of the term
        segment = blocks * self.vocab_size + terms
        lo, hi = self.indptr[segment], self.indptr[segment + 1]
        position = first_at_least(self.docs, lo, hi, local)
        found = position < hi
        found[found] = self.docs[position[found]] == local[found]
        out[found] = self.weights[position[found]]
        if self.quantized:
            out[found] *= self.list_scales(position[found], blocks[found])
        return out

    @cached_property
    def forward(self) -> rows_view.Forward:
        """Each row's terms and stored weights (`mlsr.index.forward`): as built or loaded, else derived once."""
        return self.stored_forward if self.stored_forward is not None else rows_view.derived(self)

    def document(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Term ids (int32, ascending) and float32 weights of one document, from the forward view: O(its terms)."""
        return self.forward.document(row)

    def document_from_lists(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """`document` read from the inverted lists (a search in every term's list): the forward view's check."""
        weights = self.weights_at(np.arange(self.vocab_size), [row])[:, 0]
        terms = np.flatnonzero(weights).astype(np.int32)
        return terms, weights[terms]

    def block_term_major(self, block: int) -> sp.csr_matrix:
        """One block as a (vocab, block rows) float32 CSR of its stored weights, dense columns included."""
        size = self.block_rows(block)
        first = block * self.vocab_size
        offsets = self.indptr[first : first + self.vocab_size + 1]
        lengths = np.diff(offsets)
        columns = range(self.dense_indptr[block], self.dense_indptr[block + 1])
        column_rows = [np.flatnonzero(self.dense_weights[j, :size]) for j in columns]
        lengths[self.dense_terms[columns.start : columns.stop]] = [len(rows) for rows in column_rows]
        indptr = np.zeros(self.vocab_size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        docs = np.empty(indptr[-1], dtype=np.int32)
        weights = np.empty(indptr[-1], dtype=np.float32)
        # copy the posting lists to their places, then drop in each dense column's non-zero rows
        terms = np.repeat(np.arange(self.vocab_size), np.diff(offsets))
        target = indptr[terms] + (np.arange(len(terms)) - (offsets[terms] - offsets[0]))
        docs[target] = self.docs[offsets[0] : offsets[-1]]
        values = self.weights[offsets[0] : offsets[-1]].astype(np.float32)
        if self.quantized:
            values *= self.list_scales(np.arange(offsets[0], offsets[-1]), np.full(len(values), block))
        weights[target] = values
        for j, rows in zip(columns, column_rows):
            term = self.dense_terms[j]
            docs[indptr[term] : indptr[term + 1]] = rows
            values = self.dense_weights[j, rows].astype(np.float32)
            if self.quantized:
                values *= self.dense_scales[j, rows // COLUMN_GROUP]
            weights[indptr[term] : indptr[term + 1]] = values
        matrix = sp.csr_matrix((weights, docs, indptr), shape=(self.vocab_size, size))
        matrix.has_sorted_indices = True
        return matrix

    def to_csr(self) -> sp.csr_matrix:
        """The (n_docs, vocab) float32 CSR document matrix of the stored weights (from the forward view)."""
        return self.forward.rows(None, self.vocab_size)

    def term_major(self) -> sp.csr_matrix:
        """The (vocab, n_docs) float32 CSR of all postings, dense columns included: scipy's search operand."""
        if self.n_blocks == 1:
            return self.block_term_major(0)
        matrix = self.to_csr().T.tocsr()
        matrix.sort_indices()
        return matrix

    # -- search -----------------------------------------------------------------------------------

    def search(self, queries: QueryArrays | sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of (q, vocab) queries, checked (`mlsr.index.rows.query_arrays`) or canonical float32 CSR:
        float32 scores and int64 rows (q, k)."""
        if not isinstance(queries, QueryArrays):
            queries = query_arrays(queries, "queries")
            if queries.n_cols != self.vocab_size:
                raise InputError(f"queries must have {self.vocab_size} columns (one per term), got {queries.n_cols}.")
        k = max(0, min(int(k), self.n_docs))
        n_queries = queries.n_rows
        if k == 0 or n_queries == 0:
            return np.zeros((n_queries, k), np.float32), np.zeros((n_queries, k), np.int64)
        kernel = _kernel() if self.n_docs >= KERNEL_MIN_DOCS and k <= max(1000, self.n_docs // 16) else None
        if kernel is None:
            return self._search_scipy(queries.csr(), k)
        return kernel_search(self, kernel, queries, k)

    @cached_property
    def _scipy_operand(self) -> sp.csr_matrix:
        return self.term_major()

    def _search_scipy(self, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        if queries.shape[0] == 1:  # one query: scipy's product on the arrays, top-k among the documents it touches
            columns, values = product_row(self._scipy_operand, queries.indices, queries.data)
            top = top_k_of_nonzeros(columns, values, self.n_docs, k)
            scores = np.zeros(self.n_docs, dtype=np.float32)
            scores[columns] = values
            return scores[top][None], top[None]
        scores = np.zeros((queries.shape[0], k), dtype=np.float32)
        indices = np.zeros((queries.shape[0], k), dtype=np.int64)
        chunk = max(1, min(256, MAX_SCORE_BLOCK // max(self.n_docs, 1)))
        for start in range(0, queries.shape[0], chunk):
            batch = queries if queries.shape[0] <= chunk else queries[start : start + chunk]  # slicing costs ~20 us
            block = (batch @ self._scipy_operand).toarray()
            for offset, row in enumerate(block):
                top = top_k(row, k)
                indices[start + offset] = top
                scores[start + offset] = row[top]
        return scores, indices

    @cached_property
    def _kernel_arrays(self) -> tuple:
        """The layout as the kernel takes it: float16 as uint16 bits, a 2-D dense array even without columns."""
        weights, dense = self.weights, self.dense_weights
        if weights.dtype == np.float16:
            weights, dense = weights.view(np.uint16), dense.view(np.uint16)
        return (self.indptr, self.docs, weights, self.scales, self.scale_starts, self.dense_indptr, self.dense_terms,
                dense, self.dense_scales)
