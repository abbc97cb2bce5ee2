"""The in-process backend: the index itself (exact search) and FAISS over its dense vectors."""

from __future__ import annotations

from functools import cached_property
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.index.sparse import Results, SparseIndex


class LocalBackend:
    """The index itself: exact scipy search, FAISS over the dense vectors; nothing leaves the process."""

    name = "scipy"

    def __init__(self, index: SparseIndex) -> None:
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def search(self, queries: sp.spmatrix, k: int = 10) -> Results:
        """`SparseIndex.search`, unchanged."""
        return self.index.search(queries, k)

    def score(self, query: sp.spmatrix, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """`SparseIndex.score`, unchanged."""
        return self.index.score(query, rows)

    @cached_property
    def _dense(self):
        from mlsr.index.dense import DenseIndex  # FAISS: imported when the dense comparison is first asked for

        if self.index.dense is None:
            raise InputError("this index has no dense vectors; rebuild it with dense vectors (dense=True).")
        return DenseIndex(self.index.dense)

    def dense_search(self, vectors: np.ndarray, k: int = 10) -> Results:
        """Exact FAISS inner-product search over the index's dense vectors."""
        return self._dense.search(vectors, k)

    def close(self) -> None:
        """Nothing to release."""
