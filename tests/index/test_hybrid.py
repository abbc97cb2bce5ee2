"""Hybrid search against an oracle: a brute-force hybrid over the full score matrices, and a document planted at
exactly rank depth+1 of the no_expand ranking (out at `depth`, in at `depth + 1`)."""

import numpy as np
import pytest
import scipy.sparse as sp

from tests.helpers.vectors import VOCAB, planted_rank_depth_plus_one, random_queries
from mlsr.index.modes import hybrid_search, rank
from mlsr.query_vectors import QueryVectors
from mlsr.index.sparse import SparseIndex


def brute_force_hybrid(docs: sp.csr_matrix, no_expand: sp.csr_matrix, expand: sp.csr_matrix, k: int,
                       depth: int) -> list[list[int]]:
    """Hybrid from its definition, over full score matrices: re-score the top `depth` no_expand candidates and
    return only those.

    Candidates: the top `depth` rows by no_expand score (ties by row) whose no_expand score is positive;
    ranked by expanded score (ties by row), cut at k; a shorter list is padded with -1 (no hit), never filled.
    """
    exact, full = (no_expand @ docs.T).toarray(), (expand @ docs.T).toarray()
    rows = np.arange(docs.shape[0])
    out = []
    for q in range(exact.shape[0]):
        by_exact = np.lexsort((rows, -exact[q]))[:depth]
        candidates = [int(r) for r in by_exact if exact[q, r] > 0]
        ranked = sorted(candidates, key=lambda r: (-full[q, r], r))[:k]
        out.append(ranked + [-1] * (min(k, docs.shape[0]) - len(ranked)))
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("k, depth", [(1, 1), (3, 3), (3, 8), (10, 10), (10, 25), (10, 1000)])
def test_hybrid_equals_a_brute_force_hybrid(seed, k, depth):
    rng = np.random.default_rng(100 + seed)
    docs = sp.random(80, VOCAB, density=0.08, format="csr", dtype=np.float32, random_state=rng)
    docs.data = rng.choice(np.array([0.5, 1.0, 2.0], dtype=np.float32), docs.nnz)  # exact sums: real ties
    index = SparseIndex.build(docs)
    no_expand, expand = random_queries(12, seed)
    got = hybrid_search(index, no_expand, expand, k=k, depth=depth)
    want = brute_force_hybrid(index.vectors, no_expand, expand, k, depth)
    assert got.indices.tolist() == want
    full = np.hstack([(expand @ index.vectors.T).toarray(), np.zeros((12, 1))])  # column -1: no hit, score 0
    np.testing.assert_array_equal(got.scores, np.take_along_axis(full, np.array(want), 1))
    # the cases cover short candidate lists (padded, never filled) and long ones (cut)
    positive = ((no_expand @ index.vectors.T).toarray() > 0).sum(axis=1)
    assert rank(index, QueryVectors(expand, no_expand), "hybrid", k, depth).indices.tolist() == want
    if depth == 1000:
        assert (positive < k).any() and (positive > k).any()


@pytest.mark.parametrize("depth", [1, 4, 9])
def test_a_document_at_rank_depth_plus_one_is_out_at_depth_and_in_at_depth_plus_one(depth):
    index, no_expand, expand, target = planted_rank_depth_plus_one(depth)
    assert index.search(no_expand, depth + 2).indices[0].tolist().index(target) == depth  # rank depth+1
    assert index.search(expand, 1).indices[0].tolist() == [depth + 1]  # the outsider wins on expansion alone
    out = hybrid_search(index, no_expand, expand, k=1, depth=depth)
    assert out.indices[0, 0] != target and out.indices[0, 0] < depth
    inside = hybrid_search(index, no_expand, expand, k=1, depth=depth + 1)
    assert inside.indices.tolist() == [[target]] and inside.scores[0, 0] == pytest.approx(5.0)
    deep = hybrid_search(index, no_expand, expand, k=depth + 1, depth=1000)
    assert deep.indices[0, 0] == target and depth + 1 not in deep.indices[0]  # the outsider shares no token
