"""Searches over sorted and unsorted scores that the index needs: the first position at least a value, top-k of a
dense row of scores and of one query's non-zero scores, and that query's scores as scipy's product computes them."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

try:  # scipy's own product routine, called on the arrays: the same floats as `query @ operand` without ~60 us of
    from scipy.sparse import _sparsetools  # constructors and checks around it (checked against it in the tests)
except ImportError:  # pragma: no cover - a scipy that moved it: the plain product
    _sparsetools = None


def first_at_least(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per element, the first position p in lo..hi with values[p] >= target (hi when none): vectorized binary search."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) >> 1
        below = np.zeros(lo.shape, dtype=bool)
        below[active] = values[mid[active]] < target[active]
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)


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


def product_row(operand: sp.csr_matrix, terms: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One query's non-zero entries of `query @ operand` (columns unsorted, float32), the query given as its
    ascending terms and float32 weights: scipy's csr_matmat on the arrays, so the floats of the product itself."""
    index = operand.indptr.dtype
    if _sparsetools is None or operand.indices.dtype != index:
        row = sp.csr_matrix((weights, terms, np.array([0, len(terms)])), shape=(1, operand.shape[0])) @ operand
        return row.indices, row.data
    indptr, terms = np.array([0, len(terms)], dtype=index), terms.astype(index, copy=False)
    size = _sparsetools.csr_matmat_maxnnz(1, operand.shape[1], indptr, terms, operand.indptr, operand.indices)
    out_indptr, columns = np.empty(2, dtype=index), np.empty(size, dtype=index)
    values = np.empty(size, dtype=np.float32)
    _sparsetools.csr_matmat(1, operand.shape[1], indptr, terms, weights, operand.indptr, operand.indices,
                            operand.data, out_indptr, columns, values)
    return columns[: out_indptr[1]], values[: out_indptr[1]]


def top_k_of_nonzeros(columns: np.ndarray, values: np.ndarray, n: int, k: int) -> np.ndarray:
    """`top_k` of n scores given as their non-zero (columns, values), the rest 0: read among the positive ones
    when there are k of them (every other score is <= 0), else over the dense row."""
    positive = np.flatnonzero(values > 0)
    if len(positive) < k:
        row = np.zeros(n, dtype=np.float32)
        row[columns] = values
        return top_k(row, k)
    columns, values = columns[positive], values[positive]
    if k < len(values):
        kth = values[np.argpartition(-values, k - 1)[k - 1]]
        keep = np.flatnonzero(values >= kth)
        columns, values = columns[keep], values[keep]
    return columns[np.lexsort((columns, -values))][:k].astype(np.int64)
