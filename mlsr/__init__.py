"""mlsr: multimodal learned sparse retrieval. Text and images become weighted bags of vocabulary terms.

Public API: `SparseHead`, `Encoder`, `SparseIndex`, `DenseIndex`, `Results`, `TermMatch`, `search_texts`.
Names are imported on first use, so `from mlsr import SparseIndex` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0"

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

if TYPE_CHECKING:  # pragma: no cover  (names for type checkers; imported lazily below)
    from mlsr.ingest.images import build_index  # noqa: F401
    from mlsr.index.dense import DenseIndex  # noqa: F401
    from mlsr.models.encoder import Encoder  # noqa: F401
    from mlsr.models.head import SparseHead  # noqa: F401
    from mlsr.index.sparse import Results, SparseIndex, TermMatch  # noqa: F401
    from mlsr.retrieval import search_texts  # noqa: F401
    from mlsr.vocab import Vocabulary  # noqa: F401


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mlsr' has no attribute {name!r}")
