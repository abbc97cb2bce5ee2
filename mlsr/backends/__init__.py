"""Where search runs: the in-process index (default) or a Milvus collection holding the same vectors.

A backend answers `search(queries, k)`, `dense_search(vectors, k)`, `score(query, rows)` and `len()`
with the index's conventions (Results, score descending then row ascending, k clamped). Items,
explanations and everything else still come from the index folder's `SparseIndex`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.index.sparse import Results, SparseIndex

BACKENDS: tuple[str, ...] = ("scipy", "milvus")


@runtime_checkable
class SearchBackend(Protocol):
    """What retrieval, the CLI and the app need from a search engine over an index's rows."""

    name: str

    def __len__(self) -> int: ...

    def search(self, queries: sp.spmatrix, k: int = 10) -> Results:
        """Top-k rows for (q, vocab) sparse queries by dot product."""

    def dense_search(self, vectors: np.ndarray, k: int = 10) -> Results:
        """Top-k rows for (q, d) dense queries by inner product (needs dense vectors)."""

    def score(self, query: sp.spmatrix, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Scores of one (1, vocab) query against the given rows."""

    def close(self) -> None:
        """Release connections."""


def open_backend(index: SparseIndex, backend: str = "scipy", uri: str | None = None,
                 collection: str | None = None) -> SearchBackend:
    """The named backend over a loaded index folder; Milvus checks its collection came from this folder."""
    if backend == "scipy":
        from mlsr.backends.local import LocalBackend

        return LocalBackend(index)
    if backend == "milvus":
        from mlsr.backends.milvus import DEFAULT_COLLECTION, MilvusBackend

        if not uri:
            raise InputError("the milvus backend needs a uri (a .db file for Milvus Lite, or"
                             " http://host:19530).")
        return MilvusBackend.open(index, uri, collection or DEFAULT_COLLECTION)
    raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}.")
