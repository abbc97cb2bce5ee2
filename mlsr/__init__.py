"""mlsr: multimodal learned sparse retrieval. Text and images become weighted bags of vocabulary terms.

Public API: `SparseHead`, `Encoder`, `SparseIndex`, `DenseIndex`, `Results`, `TermMatch`, `search_texts`.
Names are imported on first use, so `from mlsr import SparseIndex` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_EXPORTS = {
    "SparseHead": "mlsr.models.head",
    "Encoder": "mlsr.models.encoder",
    "SparseIndex": "mlsr.index.sparse",
    "Results": "mlsr.index.sparse",
    "TermMatch": "mlsr.index.sparse",
    "DenseIndex": "mlsr.index.dense",
    "Vocabulary": "mlsr.vocab",
    "search_texts": "mlsr.retrieval",
    "build_index": "mlsr.ingest.images",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.ingest.images import build_index
    from mlsr.index.dense import DenseIndex
    from mlsr.models.encoder import Encoder
    from mlsr.models.head import SparseHead
    from mlsr.index.sparse import Results, SparseIndex, TermMatch
    from mlsr.retrieval import search_texts
    from mlsr.vocab import Vocabulary


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlsr' has no attribute {name!r}")
