"""Where search runs: the in-process scipy index (default) or a Milvus collection holding the same vectors.

A backend answers `search(queries, k)`, `dense_search(vectors, k)`, `score(query, rows)` and `len()`
with the scipy index's conventions (Results, score descending then row ascending, k clamped). Items,
explanations and everything else still come from the index folder's `SparseIndex`.
"""

from __future__ import annotations

import argparse
import os
from functools import cached_property
from typing import Protocol, Sequence, runtime_checkable

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
        from mlsr.index.dense import DenseIndex

        if self.index.dense is None:
            raise InputError("this index has no dense vectors; rebuild it with `build-index --dense`.")
        return DenseIndex(self.index.dense)

    def dense_search(self, vectors: np.ndarray, k: int = 10) -> Results:
        """Exact FAISS inner-product search over the index's dense vectors."""
        return self._dense.search(vectors, k)

    def close(self) -> None:
        """Nothing to release."""


def open_backend(index: SparseIndex, backend: str = "scipy", uri: str | None = None,
                 collection: str | None = None) -> SearchBackend:
    """The named backend over a loaded index folder; Milvus checks its collection came from this folder."""
    if backend == "scipy":
        return LocalBackend(index)
    if backend == "milvus":
        from mlsr.backends.milvus import DEFAULT_COLLECTION, MilvusBackend

        if not uri:
            raise InputError("the milvus backend needs --milvus-uri (a .db file for Milvus Lite, or"
                             " http://host:19530).")
        return MilvusBackend.open(index, uri, collection or DEFAULT_COLLECTION)
    raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}.")


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--backend/--milvus-uri/--collection; defaults come from MLSR_BACKEND, MLSR_MILVUS_URI, MLSR_MILVUS_COLLECTION."""
    group = parser.add_argument_group("search backend")
    group.add_argument("--backend", choices=BACKENDS, default=os.environ.get("MLSR_BACKEND", "scipy"),
                       help="scipy: in-process exact search; milvus: a collection made by `export`"
                            " (env MLSR_BACKEND; default %(default)s)")
    group.add_argument("--milvus-uri", default=os.environ.get("MLSR_MILVUS_URI"),
                       help="Milvus Lite file (path ending in .db) or cluster address http://host:19530"
                            " (env MLSR_MILVUS_URI)")
    group.add_argument("--collection", default=os.environ.get("MLSR_MILVUS_COLLECTION"),
                       help="Milvus collection (env MLSR_MILVUS_COLLECTION; default mlsr)")
