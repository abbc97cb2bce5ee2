"""Text queries against an index: encode once (one backbone pass), rank in any of the three query modes."""

from __future__ import annotations

from typing import TYPE_CHECKING
from collections.abc import Sequence

import scipy.sparse as sp

from mlsr.checks import check_depth
from mlsr.checks import check_mode
from mlsr.errors import InputError
from mlsr.index.modes import rank
from mlsr.index.sparse import Results, SparseIndex
from mlsr.settings import HYBRID_DEPTH, QueryMode

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.backends import SearchBackend
    from mlsr.models.encoder import Encoder


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
        from mlsr.app.licence_filter import rank_allowed

        if searched is None:
            raise InputError("a licence filter needs the index's items: search a loaded index.")
        return rank_allowed(index, queries, mode, k, searched.items, licences, depth=depth), queries.scoring(mode)
    return rank(index, queries, mode, k, depth), queries.scoring(mode)
