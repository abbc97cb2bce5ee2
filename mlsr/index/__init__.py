"""The retrieval core: sparse and dense indexes, exact top-k, explanations, index folders.

Needs only numpy, scipy and numba (FAISS for the dense index): it never imports torch.
"""

from mlsr.index.dense import DenseIndex
from mlsr.index.sparse import Results, SparseIndex, TermMatch

__all__ = ["DenseIndex", "Results", "SparseIndex", "TermMatch"]
