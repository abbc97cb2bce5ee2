"""Text queries against an index: encode once (one backbone pass), rank in any of the three query modes, and, when
asked, only among the images under chosen licences (a wiki gallery's items record theirs, `mlsr.ingest.licences`):
that ranking is searched deeper until k allowed images are found or the index is exhausted, so the filter never
returns fewer than it could."""

from __future__ import annotations

from typing import TYPE_CHECKING
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.checks import check_depth, check_mode
from mlsr.errors import InputError
from mlsr.index.modes import NO_HIT, rank
from mlsr.index.sparse import Results, SparseIndex
from mlsr.ingest.licences import item_licence
from mlsr.items import Item
from mlsr.query_vectors import QueryVectors
from mlsr.settings import HYBRID_DEPTH, QueryMode

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.backends import SearchBackend
    from mlsr.models.encoder import Encoder

_DEEPER = 4  # how much deeper each further search of a licence filter goes


def search_texts(
    encoder: Encoder,
    index: SparseIndex | SearchBackend,
    texts: Sequence[str] | str,
    k: int = 10,
    mode: QueryMode = "expand",
    depth: int = HYBRID_DEPTH,
    *,
    check_models: bool = True,
    licences: frozenset[str] | None = None,
) -> tuple[Results, sp.csr_matrix]:
    """Rank the index for each text; returns the results and the (q, vocab) query vectors that scored them.

    `expand`: the full head output; `no_expand`: only the text's own tokens; `hybrid`: documents
    sharing a token with the text (no_expand, top `depth`) re-ranked by the expanded query (the
    reference code re-scores 10; mlsr's default `HYBRID_DEPTH` is 1,000). Only hits are returned: a
    query that shares a term with fewer than k documents ends its row with `NO_HIT` (row -1, score 0).

    The index's recorded models are compared with the encoder's first: another head, backbone or vocabulary
    raises IndexMismatchError naming both (scores across models are meaningless); `check_models=False` skips
    that, for experts who know why. `licences`: only items whose recorded licence is in these families
    (`mlsr.ingest.licences`; items without one are left out), searched deeper until k are found.
    """
    check_mode(mode)
    check_depth(depth)
    searched = index if isinstance(index, SparseIndex) else getattr(index, "index", None)
    if check_models and searched is not None:
        searched.check_models(encoder.models())
    queries = encoder.encode_text_views(texts)
    if licences is not None:
        if searched is None:
            raise InputError("a licence filter needs the index's items: search a loaded index.")
        return rank_allowed(index, queries, mode, k, searched.items, licences, depth=depth), queries.scoring(mode)
    return rank(index, queries, mode, k, depth), queries.scoring(mode)


def _allowed_rows(items: Sequence[Item], families: frozenset[str]) -> np.ndarray:
    """True for each item whose licence family is in `families` (items without a recorded licence are not)."""
    return np.array([item_licence(item) in families for item in items], dtype=bool)


def rank_allowed(backend: SparseIndex | SearchBackend, queries: QueryVectors, mode: QueryMode, k: int,
                 items: Sequence[Item], families: frozenset[str] | None, **options: int) -> Results:
    """`rank`'s top k per query, among the items whose licence is in `families` (None: every item)."""
    if families is None:
        return rank(backend, queries, mode, k, **options)
    allowed = _allowed_rows(items, frozenset(families))
    n = len(items)
    depth = k
    while True:
        results = rank(backend, queries, mode, min(depth, n), **options)
        valid = results.indices != NO_HIT
        keep = valid & allowed[np.where(valid, results.indices, 0)]
        enough = (keep.sum(axis=1) >= min(k, int(allowed.sum()))).all()
        ended = (~valid).any(axis=1).all()  # every query ran out of matches: deeper finds nothing more
        if enough or ended or depth >= n:
            break
        depth *= _DEEPER
    scores = np.zeros((len(keep), k), dtype=np.float32)
    indices = np.full((len(keep), k), NO_HIT, dtype=np.int64)
    for q, row in enumerate(keep):
        chosen = np.flatnonzero(row)[:k]
        scores[q, :len(chosen)] = results.scores[q, chosen]
        indices[q, :len(chosen)] = results.indices[q, chosen]
    return Results(scores, indices)
