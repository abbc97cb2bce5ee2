"""The inverted layout of a sparse index: for every term, the documents holding it and their weights.

A term held by at least a third of the documents is a dense column (2 bytes per document in
float16, so at most 6 bytes per posting, and added with vector instructions); every other term
is a posting list: ascending int32 document rows with their weights (float16 by default: 6 bytes
per posting). Search is exact: scores are summed term by term in ascending term order in float32,
the order of scipy's `queries @ postings`, so they are the same floats as the brute-force product
over the stored weights. Large indexes use the compiled kernel (`mlsr.index.kernels`, numba) on every
core, each core taking a range of documents; small ones (and machines without numba) use scipy.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)

# A term in at least DENSE_SHARE of the documents is stored as a dense column (2 bytes per document):
# adding a column with vector instructions costs ~0.1 ns per document, a scatter over a posting list
# ~1 ns per posting. From a third of the documents on, a column is also smaller than the list; from
# FAST_DENSE_SHARE on, columns are added as long as the whole index stays within 6 bytes per posting.
DENSE_SHARE = 1 / 3
FAST_DENSE_SHARE = 0.15
MAX_BYTES_PER_POSTING = 6.0
DENSE_MIN_DOCS = 4096  # ...but only in indexes this large (below it the difference is noise)
KERNEL_MIN_DOCS = 20_000  # smaller indexes search with scipy: no compile, no threads, already < 1 ms
PART_MIN_DOCS = 65_536  # a core gets at least this many documents (below, thread hand-off costs more)
MAX_SCORE_BLOCK = 1 << 26  # scipy path: at most this many dense scores at once (256 MB)
HALF_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True, eq=False)
class InvertedIndex:
    """Postings of an (n_docs, vocab_size) document matrix.

    Posting list of term t: `docs[indptr[t]:indptr[t + 1]]` (ascending rows) and `weights[...]`;
    it is empty for a dense term. Dense term `dense_terms[j]` has weights `dense_weights[j]`
    (n_docs,), 0 where a document lacks it. Arrays may be memory-mapped, read-only.
    """

    n_docs: int
    vocab_size: int
    indptr: np.ndarray  # int64 (vocab_size + 1,)
    docs: np.ndarray  # int32 (postings,)
    weights: np.ndarray  # float16 or float32 (postings,)
    dense_terms: np.ndarray  # int32 (m,), ascending
    dense_weights: np.ndarray  # same dtype as weights, (m, n_docs)

    @classmethod
    def from_csr(cls, vectors: sp.csr_matrix, dtype=np.float16) -> "InvertedIndex":
        """Invert canonical (n_docs, vocab) CSR float32 rows whose weights are exactly representable in `dtype`."""
        n, vocab_size = vectors.shape
        counts = np.bincount(vectors.indices, minlength=vocab_size)
        dense_terms = _dense_terms(counts, n, np.dtype(dtype).itemsize) if n >= DENSE_MIN_DOCS else np.zeros(0, np.int64)
        columns = vectors.tocsc()  # (vocab) columns with ascending rows: the posting lists
        dense_weights = np.zeros((len(dense_terms), n), dtype=dtype)
        for slot, term in enumerate(dense_terms):
            start, stop = columns.indptr[term], columns.indptr[term + 1]
            dense_weights[slot, columns.indices[start:stop]] = columns.data[start:stop]
        sparse_counts = counts.copy()
        sparse_counts[dense_terms] = 0
        keep = np.repeat(sparse_counts > 0, np.diff(columns.indptr))
        indptr = np.zeros(vocab_size + 1, dtype=np.int64)
        np.cumsum(sparse_counts, out=indptr[1:])
        return cls(
            n, vocab_size, indptr, columns.indices[keep].astype(np.int32), columns.data[keep].astype(dtype),
            dense_terms.astype(np.int32), dense_weights,
        )

    # -- sizes ------------------------------------------------------------------------------------

    @property
    def nnz(self) -> int:
        """Stored (document, term) weights, counting only the non-zero ones of dense columns."""
        return len(self.docs) + int(self.dense_counts.sum())

    @cached_property
    def dense_counts(self) -> np.ndarray:
        return np.count_nonzero(self.dense_weights, axis=1) if len(self.dense_terms) else np.zeros(0, np.int64)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays that search reads."""
        return self.indptr.nbytes + self.docs.nbytes + self.weights.nbytes + self.dense_terms.nbytes + self.dense_weights.nbytes

    def document_frequency(self) -> np.ndarray:
        """(vocab_size,) int64: how many documents hold each term."""
        frequency = np.diff(self.indptr)
        frequency[self.dense_terms] = self.dense_counts
        return frequency

    @cached_property
    def dense_slot(self) -> np.ndarray:
        """(vocab_size,) int32: each term's row in `dense_weights`, or -1."""
        slot = np.full(self.vocab_size, -1, dtype=np.int32)
        slot[self.dense_terms] = np.arange(len(self.dense_terms), dtype=np.int32)
        return slot

    # -- reading weights --------------------------------------------------------------------------

    def weights_at(self, terms: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """float32 (len(terms), len(rows)): the stored weight of each term in each row (0 when absent)."""
        terms = np.asarray(terms, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((len(terms), len(rows)), dtype=np.float32)
        slot = self.dense_slot
        for i, term in enumerate(terms):
            if slot[term] >= 0:
                out[i] = self.dense_weights[slot[term], rows]
                continue
            start, stop = self.indptr[term], self.indptr[term + 1]
            if start == stop:
                continue
            listed = self.docs[start:stop]
            position = np.minimum(np.searchsorted(listed, rows), stop - start - 1)
            found = listed[position] == rows
            out[i, found] = self.weights[start + position[found]]
        return out

    def document(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Term ids (ascending) and float32 weights of one document, read from the postings."""
        lo, hi = self.indptr[:-1].copy(), self.indptr[1:].copy()
        while True:  # one binary search per term, all terms at once
            active = lo < hi
            if not active.any():
                break
            mid = (lo + hi) >> 1
            below = np.zeros(len(lo), dtype=bool)
            below[active] = self.docs[mid[active]] < row
            lo = np.where(active & below, mid + 1, lo)
            hi = np.where(active & ~below, mid, hi)
        found = np.flatnonzero(lo < self.indptr[1:])
        found = found[self.docs[lo[found]] == row]
        terms = np.concatenate([found, self.dense_terms.astype(np.int64)])
        weights = np.concatenate([self.weights[lo[found]], self.dense_weights[:, row]]).astype(np.float32)
        keep = weights != 0
        order = np.argsort(terms[keep])
        return terms[keep][order], weights[keep][order]

    def to_csr(self) -> sp.csr_matrix:
        """The (n_docs, vocab) float32 CSR document matrix of the stored weights."""
        return self.term_major().T.tocsr()

    def term_major(self) -> sp.csr_matrix:
        """The (vocab, n_docs) float32 CSR of all postings, dense columns included: scipy's search operand."""
        lengths = self.document_frequency()
        indptr = np.zeros(self.vocab_size + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        docs = np.empty(indptr[-1], dtype=np.int32)
        weights = np.empty(indptr[-1], dtype=np.float32)
        sparse_terms = np.flatnonzero(self.dense_slot < 0)
        # copy the posting lists in place, then drop in each dense column's non-zero rows
        source = np.repeat(sparse_terms, np.diff(self.indptr)[sparse_terms])
        target = indptr[source] + (np.arange(len(self.docs)) - self.indptr[source])
        docs[target] = self.docs
        weights[target] = self.weights
        for slot, term in enumerate(self.dense_terms):
            rows = np.flatnonzero(self.dense_weights[slot])
            docs[indptr[term] : indptr[term + 1]] = rows
            weights[indptr[term] : indptr[term + 1]] = self.dense_weights[slot, rows]
        matrix = sp.csr_matrix((weights, docs, indptr), shape=(self.vocab_size, self.n_docs))
        matrix.has_sorted_indices = True
        return matrix

    # -- search -----------------------------------------------------------------------------------

    def search(self, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of canonical (q, vocab) float32 CSR queries: float32 scores and int64 rows (q, k)."""
        k = max(0, min(int(k), self.n_docs))
        n_queries = queries.shape[0]
        if k == 0 or n_queries == 0:
            return np.zeros((n_queries, k), np.float32), np.zeros((n_queries, k), np.int64)
        kernel = _kernel() if self.n_docs >= KERNEL_MIN_DOCS and k <= max(1000, self.n_docs // 16) else None
        if kernel is None:
            return self._search_scipy(queries, k)
        return self._search_kernel(kernel, queries, k)

    @cached_property
    def _scipy_operand(self) -> sp.csr_matrix:
        return self.term_major()

    def _search_scipy(self, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
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

    def _search_kernel(self, kernel, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        n_queries = queries.shape[0]
        parts = max(1, min(search_threads(), self.n_docs // PART_MIN_DOCS))
        bounds = np.linspace(0, self.n_docs, parts + 1).astype(np.int64)
        part_scores = np.empty((parts, n_queries, k), dtype=np.float32)
        part_rows = np.empty((parts, n_queries, k), dtype=np.int64)
        half = self.weights.dtype == np.float16
        weights = self.weights.view(np.uint16) if half else self.weights
        dense_weights = self.dense_weights.view(np.uint16) if half else self.dense_weights
        if dense_weights.shape[0] == 0:
            dense_weights = dense_weights.reshape(0, 1)  # the kernel never reads it; keep a 2-D array
        q_indptr = queries.indptr.astype(np.int64)
        q_terms = queries.indices.astype(np.int32)
        q_weights = queries.data.astype(np.float32)

        def run(part: int) -> None:
            kernel(
                self.indptr, self.docs, weights, self.dense_slot, dense_weights, half,
                q_indptr, q_terms, q_weights, bounds[part], bounds[part + 1], k, part_scores[part], part_rows[part],
                _scratch(int(bounds[part + 1] - bounds[part])),
            )

        if parts == 1:
            run(0)
        else:
            list(_pool().map(run, range(parts)))
        # merge the parts' candidates: score descending, then row ascending (empty slots have row -1, -inf)
        scores = part_scores.transpose(1, 0, 2).reshape(n_queries, parts * k)
        rows = part_rows.transpose(1, 0, 2).reshape(n_queries, parts * k)
        order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores), axis=-1)[:, :k]
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def _dense_terms(counts: np.ndarray, n: int, weight_bytes: int) -> np.ndarray:
    """Terms to store as dense columns (ascending): see DENSE_SHARE and FAST_DENSE_SHARE."""
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] >= FAST_DENSE_SHARE * n]
    sparse_bytes = (4 + weight_bytes) * (counts.sum() - np.cumsum(counts[order]))  # if the first j+1 become dense
    total = sparse_bytes + weight_bytes * n * np.arange(1, len(order) + 1)
    fits = (counts[order] >= DENSE_SHARE * n) | (total <= MAX_BYTES_PER_POSTING * max(counts.sum(), 1))
    chosen = len(order) if fits.all() else int(np.argmin(fits))  # the longest prefix that fits
    return np.sort(order[:chosen])


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


def search_threads() -> int:
    """Cores a search may use: `MLSR_SEARCH_THREADS`, else every core this process may run on."""
    configured = os.environ.get("MLSR_SEARCH_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


_LOCK = threading.Lock()
_LOCAL = threading.local()


def _scratch(size: int) -> np.ndarray:
    """This thread's float32 accumulator of at least `size` values, kept between searches."""
    buffer = getattr(_LOCAL, "scratch", None)
    if buffer is None or len(buffer) < size:
        buffer = _LOCAL.scratch = np.empty(size, dtype=np.float32)
    return buffer


_KERNEL: list = []  # [search_range] once imported, [None] when numba is missing
_POOL: list[ThreadPoolExecutor] = []


def _kernel():
    """The compiled kernel, or None (with one warning) when numba cannot be imported."""
    with _LOCK:
        if not _KERNEL:
            try:
                from mlsr.index.kernels import search_range
            except ImportError as error:
                logger.warning("numba is not available (%s): large indexes search with scipy, slower."
                               " Install it: pip install -r requirements.txt", error)
                search_range = None
            _KERNEL.append(search_range)
    return _KERNEL[0]


def _pool() -> ThreadPoolExecutor:
    with _LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=search_threads(), thread_name_prefix="mlsr-search"))
    return _POOL[0]
