"""Text queries against a sparse index in the three query modes of the reference code."""

from __future__ import annotations

from typing import Literal, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.backends.local import SearchBackend
from mlsr.models.encoder import Encoder
from mlsr.errors import InputError
from mlsr.index.sparse import Results, SparseIndex

QueryMode = Literal["expand", "no_expand", "hybrid"]
QUERY_MODES: tuple[str, ...] = ("expand", "no_expand", "hybrid")
HYBRID_DEPTH = 1000  # no_expand candidates re-scored in hybrid mode


class Queries(NamedTuple):
    """Encoded queries: `scoring` ranks (and explains) the results; `exact` (no_expand) picks hybrid candidates."""

    scoring: sp.csr_matrix
    exact: sp.csr_matrix | None = None


def encode_queries(encoder: Encoder, texts: Sequence[str] | str, mode: QueryMode = "expand") -> Queries:
    """Encode texts for a query mode: `hybrid` needs both the expanded and the no_expand vectors."""
    if mode not in QUERY_MODES:
        raise InputError(f"mode must be one of {QUERY_MODES}, got {mode!r}.")
    if mode == "hybrid":
        return Queries(encoder.encode_text(texts, mode="expand"), encoder.encode_text(texts, mode="no_expand"))
    return Queries(encoder.encode_text(texts, mode=mode))


def rank(index: SparseIndex | SearchBackend, queries: Queries, k: int = 10, depth: int = HYBRID_DEPTH) -> Results:
    """Top-k per query; hybrid when `queries.exact` is given."""
    if queries.exact is not None:
        return hybrid_search(index, queries.exact, queries.scoring, k, depth)
    return index.search(queries.scoring, k)


def search_texts(
    encoder: Encoder,
    index: SparseIndex,
    texts: Sequence[str] | str,
    k: int = 10,
    mode: QueryMode = "expand",
    depth: int = HYBRID_DEPTH,
) -> tuple[Results, sp.csr_matrix]:
    """Rank the index for each text; returns the results and the (q, vocab) query vectors that scored them.

    `expand`: the full head output; `no_expand`: only the text's own tokens; `hybrid`: documents
    sharing a token with the text (no_expand, top `depth`) re-ranked by the expanded query.
    """
    queries = encode_queries(encoder, texts, mode)
    return rank(index, queries, k, depth), queries.scoring


def hybrid_search(
    index: SparseIndex | SearchBackend, exact: sp.csr_matrix, expanded: sp.csr_matrix, k: int = 10,
    depth: int = HYBRID_DEPTH,
) -> Results:
    """Candidates from the `exact` (no_expand) queries, re-scored by the `expanded` ones.

    Candidates are the top-`depth` documents with a positive exact score, ranked by expanded
    score (ties by row). If fewer than k share a term with the query, the list is filled with
    the best remaining documents by expanded score, after the candidates.
    """
    k = max(0, min(int(k), len(index)))
    candidates = index.search(exact, max(depth, k))
    scores = np.zeros((exact.shape[0], k), dtype=np.float32)
    indices = np.zeros((exact.shape[0], k), dtype=np.int64)
    for i in range(exact.shape[0]):
        rows = candidates.indices[i][candidates.scores[i] > 0]
        rescored = index.score(expanded[i], rows)
        order = np.lexsort((rows, -rescored))[:k]
        ranked, ranked_scores = rows[order], rescored[order]
        if len(ranked) < k:
            fill = index.search(expanded[i], k + len(ranked))
            keep = ~np.isin(fill.indices[0], ranked)
            ranked = np.concatenate([ranked, fill.indices[0][keep]])[:k]
            ranked_scores = np.concatenate([ranked_scores, fill.scores[0][keep]])[:k]
        indices[i], scores[i] = ranked, ranked_scores
    return Results(scores, indices)
