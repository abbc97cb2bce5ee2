"""Ranking in the three query modes of the reference code: `expand`, `no_expand`, and `hybrid`.

`expand` scores with every term the head lights up; `no_expand` with only the text's own tokens;
`hybrid` takes the documents that share a token with the text (the no_expand ranking, top `depth`)
and re-ranks them by the expanded query.

Only hits are ranked: a document that shares no term with a query has no score for it, so no mode returns
it. A query with fewer than k hits gets a shorter list: its row of `Results` ends with `NO_HIT` (row -1,
score 0) entries, as the reference returns only matching images.

The reference code's hybrid (thongnt99/lsr-multimodal, retrieve.py) re-scores the top 10 (`--topk`);
as written it assigns the new score to a copy of each row inside `iterrows()`, so its output equals
no_expand. mlsr re-scores `depth` candidates (default `HYBRID_DEPTH`, 1,000) and returns only those:
its intended hybrid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from mlsr.checks import check_depth, check_k, check_mode
from mlsr.errors import InputError
from mlsr.index.sparse import Results, SparseIndex
from mlsr.index.rows import as_csr
from mlsr.query_vectors import QueryVectors
from mlsr.settings import HYBRID_DEPTH, QueryMode

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.backends import SearchBackend


NO_HIT = -1  # the row of an entry past a query's last hit (its score is 0)


def rank(index: SparseIndex | SearchBackend, queries: QueryVectors, mode: QueryMode = "expand", k: int = 10,
         depth: int = HYBRID_DEPTH) -> Results:
    """Top-k hits per query in one of the three modes (`depth`: the candidates hybrid re-scores); a query with
    fewer than k hits ends its row with `NO_HIT` entries (see `hits_only`)."""
    if check_mode(mode) == "hybrid":
        return hybrid_search(index, *queries.hybrid(), k, depth)
    return hits_only(index.search(queries.scoring(mode), k))


def hits_only(results: Results) -> Results:
    """`results` with every entry that is no hit (score not above 0: the query shares no term with the document)
    made `NO_HIT`, row -1 and score 0; hits come first in each row, so the rest of the row is all `NO_HIT`."""
    miss = ~(results.scores > 0)
    return Results(np.where(miss, np.float32(0), results.scores).astype(np.float32, copy=False),
                   np.where(miss, NO_HIT, results.indices).astype(np.int64, copy=False))


def hybrid_search(
    index: SparseIndex | SearchBackend, no_expand: sp.csr_matrix, expand: sp.csr_matrix, k: int = 10,
    depth: int = HYBRID_DEPTH,
) -> Results:
    """Candidates from the `no_expand` queries, re-scored by the `expand` ones, and nothing else.

    Candidates are the top-`depth` documents by no_expand score that have a positive score (that share a
    token with the text), ranked by expanded score (ties by row). When there are fewer than k of them
    (fewer documents share a token with the query, or `depth` < k) the row ends with `NO_HIT` entries:
    no other document is added. `depth` 10 is the reference code's; the default re-scores `HYBRID_DEPTH`
    candidates. The queries (sparse, or 2-D arrays) are copied, never changed.
    """
    depth = check_depth(depth)
    k = min(check_k(k), len(index))
    no_expand, expand = as_csr(no_expand, "no_expand queries"), as_csr(expand, "expand queries")
    if no_expand.shape != expand.shape:
        raise InputError(f"the no_expand queries have shape {no_expand.shape}, the expand ones {expand.shape}.")
    candidates = index.search(no_expand, min(depth, len(index)))
    scores = np.zeros((no_expand.shape[0], k), dtype=np.float32)
    indices = np.full((no_expand.shape[0], k), NO_HIT, dtype=np.int64)
    for i in range(no_expand.shape[0]):
        rows = candidates.indices[i][candidates.scores[i] > 0]
        rescored = index.score(expand[i], rows)
        order = np.lexsort((rows, -rescored))[:k]
        indices[i, : len(order)], scores[i, : len(order)] = rows[order], rescored[order]
    return hits_only(Results(scores, indices))
