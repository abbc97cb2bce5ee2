"""Sparse query and document vectors with a known structure, for the hybrid oracles (tests/index/test_hybrid.py
and the evaluation loop's tests/evaluation/test_loop.py)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mlsr.index.sparse import SparseIndex

VOCAB = 60


def random_queries(n: int, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(no_expand, expand) queries: the expanded one holds every term of the no_expand one (at least as heavy), and more."""
    rng = np.random.default_rng(seed)
    levels = np.array([0.5, 1.0, 2.0], dtype=np.float32)
    own = sp.random(n, VOCAB, density=0.05, format="csr", dtype=np.float32, random_state=rng)
    own.data = rng.choice(levels, own.nnz)
    extra = sp.random(n, VOCAB, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    extra.data = rng.choice(levels, extra.nnz)
    expand = own.maximum(extra).tocsr()
    return own, expand


def planted_rank_depth_plus_one(depth: int) -> tuple[SparseIndex, sp.csr_matrix, sp.csr_matrix, int]:
    """An index where the target document is exactly the (depth+1)-th by no_expand score and the best by expanded.

    Rows 0..depth-1 share the query's token with falling weights and have a little of the expansion term;
    the target (row depth) shares the token more weakly but is the strongest on the expansion term; a
    last row has only the expansion term (no shared token: never a candidate) and beats them all on it.
    """
    n = depth + 2
    dense = np.zeros((n, VOCAB), dtype=np.float32)
    dense[:depth, 0] = np.linspace(2.0, 1.5, depth)
    dense[:depth, 1] = 0.25
    target, outsider = depth, depth + 1
    dense[target, 0], dense[target, 1] = 1.0, 4.0
    dense[outsider, 1] = 8.0
    index = SparseIndex.build(sp.csr_matrix(dense))
    no_expand = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, VOCAB), dtype=np.float32)
    expand = sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 1])), shape=(1, VOCAB), dtype=np.float32)
    return index, no_expand, expand, target
