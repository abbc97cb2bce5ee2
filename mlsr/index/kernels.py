"""Compiled search kernel (numba) over the blocked inverted layout: term-at-a-time accumulation and top-k.

Documents come in blocks of at most 65,536 rows (see `mlsr.index.inverted`). For each block, a query
adds `query_weight * stored_weight` into one float32 accumulator per row of the block, term by term
in ascending term order, then offers the block's scores to a top-k heap that lives across blocks
(score descending, then row ascending). Ascending term order is the order in which scipy's
`queries @ postings` sums, so every score is the same float as the sparse product's over the stored
weights. A search splits the blocks between cores, each with its own accumulator and heaps.

Terms of a block come in two layouts: a posting list (ascending rows within the block, uint16, and
their weights) or, for terms in a large share of the block's rows, a dense column of weights
(0 = absent), added with vector instructions. A block's accumulator (256 KB) stays in the core's L2
cache while every query term is added to it. Weights are float32; float16 passed as their uint16
bits (numba has no float16 arrays) and widened by the CPU's conversion; or uint8 impacts whose
stored weight is `scale * impact` in float32 (a scale per 32 postings, per 64 rows of a column).

What the profile of a query showed, and what was done about it: numba's negative-index wraparound
doubled the cost of a scatter (indices are unsigned here); a scan of 64 scores against the top-k
threshold only vectorizes on a view indexed from 0; columns and lists are prefetched ahead (the
hardware stops at page boundaries) and every term's first lines are asked for before the block's
work starts; two consecutive dense columns share one pass over the accumulator. Tried and not
kept: tiles of 8,192 rows (an accumulator in L1: the list boundaries per tile cost more than the
L1 saved) and tables of the 256 products of a uint8 list (no faster than two multiplications).

Compiled on first use and cached on disk (`cache=True`); the kernel releases the GIL, so parts
run in plain threads.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

_PREFETCH = 2048  # elements ahead that a column scan asks the memory system for
_PREFETCH_LIST = 256  # ...and a posting scan (lists are shorter: a nearer target is timelier)


@intrinsic
def _half_to_float(typingctx, bits):
    """float32 value of IEEE half-precision `bits` (uint16): exact, as numpy's float16 -> float32."""
    signature = types.float32(types.uint16)

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return signature, codegen


@intrinsic
def _prefetch(typingctx, array, index):
    """Hint the CPU to fetch array[index] into its caches (never faults, even beyond the array's end)."""
    signature = types.void(array, types.intp)

    def codegen(context, builder, sig, args):
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        pointer = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [pointer.type, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(function, [pointer, i32(0), i32(3), i32(1)])  # read, keep in all levels, data
        return context.get_dummy_value()

    return signature, codegen


def _value(raw):
    """float32 of a raw array value: an impact (uint8), float16 bits (uint16) or a float32 weight."""


@overload(_value, inline="always")
def _value_typed(raw):
    if raw == types.uint16:
        return lambda raw: _half_to_float(raw)
    return lambda raw: np.float32(raw)


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
def _add_column(accumulator, column, dense_scales, slot, quantized, weight):
    """accumulator += weight * stored(column) with vector instructions, 64 rows at a time (a scale's group).

    Stored weight: the float weight, or `dense_scales[slot, row // 64] * impact` when `quantized`.
    Each step first asks for the column _PREFETCH rows ahead (hardware prefetchers stop at page
    boundaries).
    """
    size = accumulator.shape[0]
    for step in range(0, size - size % 64, 64):
        _prefetch(column, step + _PREFETCH)
        scores = accumulator[step : step + 64]
        values = column[step : step + 64]
        if quantized:
            scale = dense_scales[slot, step >> 6]
            for i in range(64):
                scores[i] += weight * (scale * _value(values[i]))
        else:
            for i in range(64):
                scores[i] += weight * _value(values[i])
    tail = size - size % 64
    for i in range(tail, size):
        if quantized:
            accumulator[i] += weight * (dense_scales[slot, i >> 6] * _value(column[i]))
        else:
            accumulator[i] += weight * _value(column[i])


@njit(cache=True, nogil=True)
def _add_two_columns(accumulator, first, second, dense_scales, slot_a, slot_b, quantized, weight_a, weight_b):
    """_add_column of two consecutive query terms in one pass: each score stays in a register between the two
    additions (the same two float32 additions, in the same order), so the accumulator is read and written once."""
    size = accumulator.shape[0]
    for step in range(0, size - size % 64, 64):
        _prefetch(first, step + _PREFETCH)
        _prefetch(second, step + _PREFETCH)
        scores = accumulator[step : step + 64]
        a = first[step : step + 64]
        b = second[step : step + 64]
        if quantized:
            scale_a = dense_scales[slot_a, step >> 6]
            scale_b = dense_scales[slot_b, step >> 6]
            for i in range(64):
                scores[i] = (scores[i] + weight_a * (scale_a * _value(a[i]))) + weight_b * (scale_b * _value(b[i]))
        else:
            for i in range(64):
                scores[i] = (scores[i] + weight_a * _value(a[i])) + weight_b * _value(b[i])
    for i in range(size - size % 64, size):
        if quantized:
            accumulator[i] = ((accumulator[i] + weight_a * (dense_scales[slot_a, i >> 6] * _value(first[i])))
                              + weight_b * (dense_scales[slot_b, i >> 6] * _value(second[i])))
        else:
            accumulator[i] = (accumulator[i] + weight_a * _value(first[i])) + weight_b * _value(second[i])


@njit(cache=True, nogil=True)
def _add_postings(accumulator, docs, weights, weight):
    """accumulator[docs[i]] += weight * weights[i] for every posting of the slices docs, weights (float weights).

    Unsigned indices: numba then skips its negative-index wraparound, which doubles the cost of a
    scatter (the load-time checks keep every row within the block). Every 32 postings, the lists
    _PREFETCH_LIST postings ahead are asked for.
    """
    count = docs.shape[0]
    whole = count - count % 32
    for step in range(0, whole, 32):
        _prefetch(docs, step + _PREFETCH_LIST)
        _prefetch(weights, step + _PREFETCH_LIST)
        rows = docs[step : step + 32]
        values = weights[step : step + 32]
        for i in range(32):
            accumulator[np.uint64(rows[i])] += weight * _value(values[i])
    for i in range(whole, count):
        accumulator[np.uint64(docs[i])] += weight * _value(weights[i])


@njit(cache=True, nogil=True)
def _add_impacts(accumulator, docs, impacts, scales, start, stop, first, group, weight):
    """_add_postings for uint8 impacts, postings start..stop-1 of a block whose postings begin at `first` and
    whose scale groups (32 postings each, counted from `first`) begin at scales[group]."""
    p = start
    while p < stop:
        offset = p - first
        end = min(stop, p + 32 - (offset & 31))  # the end of this posting's scale group
        scale = scales[group + (offset >> 5)]
        _prefetch(docs, p + _PREFETCH_LIST)
        _prefetch(impacts, p + _PREFETCH_LIST)
        rows = docs[p:end]
        values = impacts[p:end]
        for i in range(end - p):
            accumulator[np.uint64(rows[i])] += weight * (scale * np.float32(values[i]))
        p = end


_BLOCK = 64  # scores checked at once by the top-k scan


@njit(cache=True, nogil=True)
def _offer(accumulator, base, heap_scores, heap_rows, filled, keep):
    """Offer one block's scores (rows base, base + 1, ...) to a heap holding `filled` of `keep`; returns the new
    fill."""
    size = accumulator.shape[0]
    start = 0
    while filled < keep and start < size:  # the first `keep` rows of the part fill the heap
        heap_scores[filled] = accumulator[start]
        heap_rows[filled] = base + start
        filled += 1
        start += 1
        if filled == keep:
            for position in range(keep // 2 - 1, -1, -1):
                _sift_down(heap_scores, heap_rows, keep, position)
    if filled < keep:
        return filled
    threshold = heap_scores[0]
    # rows arrive in ascending order, so a score equal to the worst kept one loses the tie; blocks
    # of _BLOCK scores are first counted against the threshold (a fixed-length loop that compiles
    # to vector instructions) and read one by one only when one of them gets in
    while start < size:
        stop = min(start + _BLOCK, size)
        if stop - start == _BLOCK:
            chunk = accumulator[start:stop]  # a view indexed from 0: no wraparound checks, so it vectorizes
            hits = 0
            for i in range(_BLOCK):
                hits += chunk[i] > threshold
            if hits == 0:
                start = stop
                continue
        for i in range(start, stop):
            if accumulator[i] > threshold:
                heap_scores[0] = accumulator[i]
                heap_rows[0] = base + i
                _sift_down(heap_scores, heap_rows, keep, 0)
                threshold = heap_scores[0]
        start = stop
    return filled


@njit(cache=True, nogil=True)
def search_blocks(
    indptr, docs, weights, scales, scale_starts, dense_indptr, dense_terms, dense_weights, dense_scales, vocab_size,
    block_size, n_docs, q_indptr, q_terms, q_weights, block_lo, block_hi, keep, out_scores, out_rows, scratch,
):
    """Top-`keep` of every query among the rows of blocks block_lo..block_hi-1 into out_scores/out_rows (q, keep).

    Term t of block b: posting list `indptr[b * vocab_size + t] .. indptr[b * vocab_size + t + 1]`
    of `docs` (rows within the block) and `weights`, or the dense column `dense_weights[j]` when
    `dense_terms[j] == t` for j in dense_indptr[b]..dense_indptr[b+1]-1. uint8 scales: one per 32
    postings of a block (`scales`, from `scale_starts[b]`) and per 64 rows of a column
    (`dense_scales[j]`); both are empty for float weights. `keep` <= the rows of the part; results
    come unsorted. `scratch` is a float32 buffer of at least block_size values (reused between calls).
    """
    n_queries = q_indptr.shape[0] - 1
    filled = np.zeros(n_queries, dtype=np.int64)
    quantized = scales.shape[0] > 0 or dense_scales.shape[0] > 0
    longest = 0
    for q in range(n_queries):
        longest = max(longest, q_indptr[q + 1] - q_indptr[q])
    column = np.empty(longest, dtype=np.int64)  # per query term in this block: its dense column, or -1...
    start = np.empty(longest, dtype=np.int64)  # ...else its posting list start..stop
    stop = np.empty(longest, dtype=np.int64)
    for b in range(block_lo, block_hi):
        base = b * block_size
        size = min(block_size, n_docs - base)
        segments = b * vocab_size
        accumulator = scratch[:size]
        for q in range(n_queries):
            first = q_indptr[q]
            n_terms = q_indptr[q + 1] - first
            # where each term lies in this block; the first lines of each are asked for at once, so
            # that their cache misses overlap instead of stalling one term after another
            d = dense_indptr[b]
            d_stop = dense_indptr[b + 1]
            for j in range(n_terms):
                term = q_terms[first + j]
                while d < d_stop and dense_terms[d] < term:
                    d += 1
                column[j] = d if d < d_stop and dense_terms[d] == term else -1
                start[j] = indptr[segments + term]
                stop[j] = indptr[segments + term + 1]
                if column[j] >= 0:
                    _prefetch(dense_weights[d], 0)
                elif start[j] < stop[j]:
                    _prefetch(docs, start[j])
                    _prefetch(weights, start[j])
            accumulator[:] = 0.0
            j = 0
            while j < n_terms:
                weight = np.float32(q_weights[first + j])
                j += 1
                c = column[j - 1]
                if c >= 0 and j < n_terms and column[j] >= 0:  # two columns in a row: one pass
                    _add_two_columns(accumulator, dense_weights[c, :size], dense_weights[column[j], :size],
                                     dense_scales, c, column[j], quantized, weight, np.float32(q_weights[first + j]))
                    j += 1
                elif c >= 0:
                    _add_column(accumulator, dense_weights[c, :size], dense_scales, c, quantized, weight)
                elif start[j - 1] >= stop[j - 1]:
                    continue
                elif quantized:
                    _add_impacts(accumulator, docs, weights, scales, start[j - 1], stop[j - 1], indptr[segments],
                                 scale_starts[b], weight)
                else:
                    lo, hi = start[j - 1], stop[j - 1]
                    _add_postings(accumulator, docs[lo:hi], weights[lo:hi], weight)
            filled[q] = _offer(accumulator, base, out_scores[q], out_rows[q], filled[q], keep)
