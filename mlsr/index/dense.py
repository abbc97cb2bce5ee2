"""Exact dense search with FAISS (inner product over unit vectors = cosine), for side-by-side comparison."""

from __future__ import annotations

import numpy as np

from mlsr.errors import InputError
from mlsr.index.sparse import Results


class DenseIndex:
    """A FAISS `IndexFlatIP` over (n, d) float32 vectors: exact, brute force, the dense baseline."""

    def __init__(self, vectors: np.ndarray) -> None:
        try:
            import faiss
        except ImportError:
            raise ImportError("dense search needs FAISS: pip install faiss-cpu") from None
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise InputError(f"dense vectors must be 2-D (n, d), got shape {vectors.shape}.")
        self.dim = vectors.shape[1]
        self._faiss = faiss.IndexFlatIP(self.dim)
        self._faiss.add(vectors)

    def __len__(self) -> int:
        return self._faiss.ntotal

    def search(self, queries: np.ndarray, k: int = 10) -> Results:
        """Top-k rows by inner product for (q, d) queries; k is clamped to the index size."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        if queries.shape[1] != self.dim:
            raise InputError(f"queries have {queries.shape[1]} dims, the dense index {self.dim}.")
        k = max(0, min(int(k), len(self)))
        if k == 0:
            return Results(np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
        scores, indices = self._faiss.search(queries, k)
        return Results(scores.astype(np.float32), indices.astype(np.int64))
