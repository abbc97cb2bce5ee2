"""Search only the images under chosen licences (a wiki gallery's items record theirs, `mlsr.ingest.licences`):
the ranking is searched deeper until k allowed images are found or the index is exhausted, so the filter never
returns fewer than it could. Plain Python and numpy: no torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from mlsr.index.modes import NO_HIT, rank
from mlsr.index.sparse import Results, SparseIndex
from mlsr.ingest.licences import FREE_FAMILIES, item_licence
from mlsr.query_vectors import QueryVectors
from mlsr.settings import QueryMode

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.backends import SearchBackend

DEEPER = 4  # how much deeper each further search goes


def allowed_rows(items: Sequence[dict], families: frozenset[str]) -> np.ndarray:
    """True for each item whose licence family is in `families` (items without a recorded licence are not)."""
    return np.array([item_licence(item) in families for item in items], dtype=bool)


def rank_allowed(backend: SparseIndex | SearchBackend, queries: QueryVectors, mode: QueryMode, k: int,
                 items: Sequence[dict], families: frozenset[str] | None, **options: int) -> Results:
    """`rank`'s top k per query, among the items whose licence is in `families` (None: every item)."""
    if families is None:
        return rank(backend, queries, mode, k, **options)
    allowed = allowed_rows(items, frozenset(families))
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
        depth *= DEEPER
    scores = np.zeros((len(keep), k), dtype=np.float32)
    indices = np.full((len(keep), k), NO_HIT, dtype=np.int64)
    for q, row in enumerate(keep):
        chosen = np.flatnonzero(row)[:k]
        scores[q, :len(chosen)] = results.scores[q, chosen]
        indices[q, :len(chosen)] = results.indices[q, chosen]
    return Results(scores, indices)


def licence_choices(items: Sequence[dict]) -> list[str]:
    """The licence families a user may filter by: those the gallery's items record, in FREE_FAMILIES' order; none
    for a gallery that records no licence (COCO photos), whose screen then shows no filter."""
    found = {item_licence(item) for item in items}
    return [family for family in FREE_FAMILIES if family in found]
