"""QueryVectors: a batch of queries in the three views an encoder gives (expand, no_expand, dense), rows aligned.

Made by `mlsr.models.encoder` and read by the ranking in `mlsr.index.modes` and by evaluation: it lives here,
below both, so that neither imports the other for it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from mlsr.checks import check_mode
from mlsr.errors import InputError
from mlsr.settings import QueryMode


class QueryVectors(NamedTuple):
    """The vectors of a batch of queries (rows align): (q, vocab) CSR `expand` and `no_expand`, (q, d) `dense`.

    A view may be None when it was not computed (published caption vectors have no no_expand view
    unless their texts are given).
    """

    expand: sp.csr_matrix | None
    no_expand: sp.csr_matrix | None = None
    dense: np.ndarray | None = None

    def scoring(self, mode: QueryMode) -> sp.csr_matrix:
        """The vectors whose dot products rank (and explain) the results of `mode`."""
        check_mode(mode)
        return _need(self.no_expand if mode == "no_expand" else self.expand, mode)

    def hybrid(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """(no_expand, expand): the hybrid mode's candidate vectors and the vectors that re-score them."""
        return _need(self.no_expand, "hybrid"), _need(self.expand, "hybrid")


def _need(value, mode: str):
    if value is None:
        raise InputError(f"the queries have no vectors for the {mode} mode.")
    return value
