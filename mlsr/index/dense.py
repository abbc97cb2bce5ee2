"""Exact dense search with FAISS (inner product over unit vectors = cosine), for side-by-side comparison."""

from __future__ import annotations

import numpy as np

from mlsr.checks import check_k
from mlsr.errors import InputError
from mlsr.index.sparse import Results
from mlsr.threads import request_threads


class DenseIndex:
    """A FAISS `IndexFlatIP` over (n, d) float32 vectors: exact, brute force, the dense baseline.

    The vectors are copied into FAISS (as float32); the caller's array is never changed.
    """

    def __init__(self, vectors: np.ndarray) -> None:
        try:
            import faiss
        except ImportError:
            raise ImportError("dense search needs FAISS: pip install faiss-cpu") from None
        vectors = _float32_rows(vectors, "dense vectors")
        self.dim = vectors.shape[1]
        self._faiss = faiss.IndexFlatIP(self.dim)
        self._omp = faiss
        self._faiss.add(vectors)

    def __len__(self) -> int:
        return self._faiss.ntotal

    def search(self, queries: np.ndarray, k: int = 10) -> Results:
        """Top-k rows by inner product for (q, d) queries; k is clamped to the index size. Inputs are never changed."""
        queries = _float32_rows(np.atleast_2d(queries), "dense queries")
        if queries.shape[1] != self.dim:
            raise InputError(f"queries have {queries.shape[1]} dims, the dense index {self.dim}.")
        k = min(check_k(k), len(self))
        if k == 0:
            return Results(np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
        self._omp.omp_set_num_threads(request_threads())  # this thread's OpenMP team: new threads start with all cores
        scores, indices = self._faiss.search(queries, k)
        return Results(scores.astype(np.float32), indices.astype(np.int64))


def _float32_rows(vectors, what: str) -> np.ndarray:
    """A C-contiguous float32 (n, d) array of finite real values (a copy when a conversion is needed)."""
    array = np.asarray(vectors)
    real = np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    if array.dtype == np.bool_ or not real:
        raise InputError(f"{what} must hold real numbers, not {array.dtype}.")
    if array.ndim != 2:
        raise InputError(f"{what} must be 2-D (n, d), got shape {array.shape}.")
    with np.errstate(over="ignore"):
        array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{what} hold NaN or infinite values.")
    return array
