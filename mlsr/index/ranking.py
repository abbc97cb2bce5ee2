"""Two searches over sorted and unsorted scores that the index needs: the first position at least a value, and top-k."""

from __future__ import annotations

import numpy as np


def first_at_least(values: np.ndarray, lo: np.ndarray, hi: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Per element, the first position p in lo..hi with values[p] >= target (hi when none): vectorized binary search."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        active = lo < hi
        if not active.any():
            return lo
        mid = (lo + hi) >> 1
        below = np.zeros(lo.shape, dtype=bool)
        below[active] = values[mid[active]] < target[active]
        lo = np.where(active & below, mid + 1, lo)
        hi = np.where(active & ~below, mid, hi)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Row ids of the k best scores of one query: score descending, then row ascending."""
    n = scores.shape[0]
    k = min(k, n)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    if k < n:
        # argpartition finds the k-th best score; every row tied with it stays a candidate so
        # that the tie is broken by row number, not by argpartition's internal order.
        kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
        candidates = np.flatnonzero(scores >= kth)
    else:
        candidates = np.arange(n)
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k].astype(np.int64)
