"""Compiled search kernel (numba) over the inverted layout: term-at-a-time accumulation and top-k.

A query adds `query_weight * doc_weight` into one float32 accumulator per document, term by term
in ascending term order, then keeps the k best (score descending, then row ascending). That is
the order in which scipy's `queries @ postings` sums, so every score is the same float as the
sparse product's. The work is split by document range: each part reads only its own rows of
every posting list and owns its accumulator, so parts run on separate cores without sharing.

Terms come in two layouts (see `mlsr.index.inverted`): a posting list (ascending document rows and
their weights) or, for terms in at least a third of the documents, a dense column of weights
(0 = absent), which is added with vector instructions. Weights are float32, or float16 passed
as their uint16 bits (numba has no float16 arrays) and widened by the CPU's conversion.

Compiled on first use and cached on disk (`cache=True`); the kernel releases the GIL, so parts
run in plain threads.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _half_to_float(typingctx, bits):
    """float32 value of IEEE half-precision `bits` (uint16): exact, as numpy's float16 -> float32."""
    signature = types.float32(types.uint16)

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return signature, codegen


@njit(cache=True, nogil=True, inline="always")
def _weight(weights, position, half):
    if half:
        return _half_to_float(weights[position])
    return np.float32(weights[position])


@njit(cache=True, nogil=True, inline="always")
def _first_at_least(docs, start, stop, row):
    """Position of the first posting in docs[start:stop] whose document is >= row (binary search)."""
    lo, hi = start, stop
    while lo < hi:
        mid = (lo + hi) >> 1
        if docs[mid] < row:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True, inline="always")
def _worse(score_a, row_a, score_b, row_b):
    """True when (score_a, row_a) ranks below (score_b, row_b): lower score, or same score and later row."""
    return score_a < score_b or (score_a == score_b and row_a > row_b)


@njit(cache=True, nogil=True)
def _sift_down(heap_scores, heap_rows, size, position):
    """Restore the heap (worst result at the root) below `position`."""
    while True:
        child = 2 * position + 1
        if child >= size:
            return
        right = child + 1
        if right < size and _worse(heap_scores[right], heap_rows[right], heap_scores[child], heap_rows[child]):
            child = right
        if not _worse(heap_scores[child], heap_rows[child], heap_scores[position], heap_rows[position]):
            return
        heap_scores[child], heap_scores[position] = heap_scores[position], heap_scores[child]
        heap_rows[child], heap_rows[position] = heap_rows[position], heap_rows[child]
        position = child


@njit(cache=True, nogil=True)
def _add_column(accumulator, column, weight, half):
    """accumulator += weight * column, one loop per weight type so that it compiles to vector instructions."""
    if half:
        for i in range(accumulator.shape[0]):
            accumulator[i] += weight * _half_to_float(column[i])
    else:
        for i in range(accumulator.shape[0]):
            accumulator[i] += weight * np.float32(column[i])


_BLOCK = 64  # scores checked at once by the top-k scan


@njit(cache=True, nogil=True)
def search_range(
    indptr, docs, weights, dense_slot, dense_weights, half,
    q_indptr, q_terms, q_weights, lo, hi, k, out_scores, out_rows, scratch,
):
    """Top-k of every query among documents lo..hi-1 into out_scores/out_rows (q, k), unsorted.

    `dense_slot[t]` is term t's row in `dense_weights` (terms x documents), or -1 when the term
    has a posting list. Slots beyond the range's size keep -inf and row -1. `scratch` is a
    float32 buffer of at least hi - lo values (reused between calls: fresh memory costs page faults).
    """
    size = hi - lo
    accumulator = scratch[:size]
    keep = min(k, size)
    for q in range(q_indptr.shape[0] - 1):
        accumulator[:] = 0.0
        for j in range(q_indptr[q], q_indptr[q + 1]):
            term = q_terms[j]
            weight = np.float32(q_weights[j])
            slot = dense_slot[term]
            if slot >= 0:
                _add_column(accumulator, dense_weights[slot, lo:hi], weight, half)
            else:
                stop = indptr[term + 1]
                start = _first_at_least(docs, indptr[term], stop, lo)
                stop = _first_at_least(docs, start, stop, hi)
                for p in range(start, stop):
                    accumulator[docs[p] - lo] += weight * _weight(weights, p, half)
        heap_scores = out_scores[q]
        heap_rows = out_rows[q]
        heap_scores[:] = -np.inf
        heap_rows[:] = -1
        if keep == 0:
            continue
        for i in range(keep):
            heap_scores[i] = accumulator[i]
            heap_rows[i] = lo + i
        for position in range(keep // 2 - 1, -1, -1):
            _sift_down(heap_scores, heap_rows, keep, position)
        threshold = heap_scores[0]
        # rows arrive in ascending order, so a score equal to the worst kept one loses the tie; blocks
        # of _BLOCK scores are first counted against the threshold (a fixed-length loop that compiles
        # to vector instructions) and read one by one only when one of them gets in
        start = keep
        while start < size:
            stop = min(start + _BLOCK, size)
            if stop - start == _BLOCK:
                block = accumulator[start:stop]
                hits = 0
                for i in range(_BLOCK):
                    if block[i] > threshold:
                        hits += 1
                if hits == 0:
                    start = stop
                    continue
            for i in range(start, stop):
                if accumulator[i] > threshold:
                    heap_scores[0] = accumulator[i]
                    heap_rows[0] = lo + i
                    _sift_down(heap_scores, heap_rows, keep, 0)
                    threshold = heap_scores[0]
            start = stop
