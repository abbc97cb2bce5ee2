"""Load-time checks of postings read from an index folder: nothing in a folder may lead the kernel outside its arrays.

A checksum proves that the files are the ones the manifest lists, not that the manifest was written
by mlsr: so before the compiled kernel (which does not check bounds) touches them, every offset must
lie inside its array, every row inside its block, every weight be finite. Format 3 is the blocked
layout (`mlsr.index.inverted`); format 2 (a single posting list per term with int32 rows, and dense
columns over all documents) is checked the same way and converted back to document rows.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.typing import DTypeLike
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.index.blocks import ID_DTYPE, WEIGHT_DTYPES, column_groups, list_groups
from mlsr.index.inverted import InvertedIndex
from mlsr.index.kernel_search import search_threads

_CHECK_CHUNK = 1 << 24  # format 2: postings checked at once


def checked_blocks(arrays: dict[str, np.ndarray], n: int, vocab_size: int, block_size: object) -> InvertedIndex:
    """The loaded format-3 arrays as an InvertedIndex, after the checks that keep the kernel inside them."""
    if not isinstance(block_size, int) or isinstance(block_size, bool) or not 1 <= block_size <= 1 << 16:
        raise InputError(f"the manifest's block size {block_size!r} is not 1..65,536; rebuild the index.")
    n_blocks = -(-n // block_size)
    indptr, docs, weights, scales = arrays["indptr"], arrays["docs"], arrays["weights"], arrays["scales"]
    dense_indptr, dense_terms, dense_weights = arrays["dense_indptr"], arrays["dense_terms"], arrays["dense_weights"]
    dense_scales = arrays["dense_scales"]
    expected: tuple[DTypeLike, ...] = (np.int64, ID_DTYPE, np.float32, np.int64, np.int32, weights.dtype, np.float32)
    found = (indptr.dtype, docs.dtype, scales.dtype, dense_indptr.dtype, dense_terms.dtype, dense_weights.dtype,
             dense_scales.dtype)
    if weights.dtype not in WEIGHT_DTYPES.values() or any(np.dtype(a) != b for a, b in zip(expected, found)):
        raise InputError("the postings have unexpected types; rebuild the index.")
    quantized = weights.dtype == np.uint8
    if (
        indptr.shape != (n_blocks * vocab_size + 1,) or docs.ndim != 1 or weights.shape != docs.shape
        or scales.ndim != 1 or dense_indptr.shape != (n_blocks + 1,) or dense_terms.ndim != 1
        or dense_weights.shape != (len(dense_terms), block_size)
        or dense_scales.shape != (len(dense_terms) if quantized else 0, column_groups(block_size))
    ):
        raise InputError("the postings have inconsistent shapes; rebuild the index.")
    if indptr[0] != 0 or indptr[-1] != len(docs) or (np.diff(indptr) < 0).any():
        raise InputError("the posting list offsets are inconsistent; rebuild the index.")
    groups = int(list_groups(np.diff(indptr[::vocab_size])).sum()) if quantized else 0
    if len(scales) != groups:  # one scale per 32 postings of each block
        raise InputError("the postings have inconsistent shapes; rebuild the index.")
    if dense_indptr[0] != 0 or dense_indptr[-1] != len(dense_terms) or (np.diff(dense_indptr) < 0).any():
        raise InputError("the dense column offsets are inconsistent; rebuild the index.")
    if len(dense_terms):
        blocks = np.repeat(np.arange(n_blocks), np.diff(dense_indptr))
        steps = np.diff(dense_terms.astype(np.int64)) > 0
        if (
            dense_terms.min() < 0 or dense_terms.max() >= vocab_size
            or not (steps | (np.diff(blocks) > 0)).all()  # ascending within each block
            or (np.diff(indptr)[blocks * vocab_size + dense_terms] != 0).any()  # a term is a list or a column
        ):
            raise InputError("the dense terms are inconsistent; rebuild the index.")
    if not all(np.isfinite(array).all() and (array >= 0).all() for array in (scales, dense_scales)):
        raise InputError("the impact scales are not finite non-negative numbers; rebuild the index.")
    if not quantized and dense_weights.size and not np.isfinite(dense_weights).all():
        raise InputError("the dense terms hold NaN or infinite weights; rebuild the index.")

    def check_block(b: int) -> str | None:
        first = b * vocab_size
        start, stop = int(indptr[first]), int(indptr[first + vocab_size])
        rows = np.asarray(docs[start:stop])
        if not len(rows):
            return None
        if rows.max() >= min(block_size, n - b * block_size):
            return "a posting names a document outside the index"
        # a list starts where the previous one ends: a step down is allowed only at a list's start
        steps = np.flatnonzero(np.diff(rows.astype(np.int32)) <= 0) + start + 1
        if len(steps) and not np.isin(steps, indptr[first + 1 : first + vocab_size]).all():
            return "a posting list is not in ascending document order"
        if not quantized and not np.isfinite(weights[start:stop]).all():
            return "the postings hold NaN or infinite weights"
        return None

    with ThreadPoolExecutor(max_workers=max(1, min(search_threads(), n_blocks))) as pool:
        problems = [problem for problem in pool.map(check_block, range(n_blocks)) if problem]
    if problems:
        raise InputError(f"{problems[0]}; rebuild the index.")
    plain = {name: np.asarray(array) for name, array in arrays.items()}  # memmap -> ndarray view
    return InvertedIndex(n, vocab_size, block_size, **plain, stored_forward=None)  # the arrays are postings only



def format2_rows(arrays: dict[str, np.ndarray], n: int, vocab_size: int) -> sp.csr_matrix:
    """Checked format-2 postings as the (n, vocab) float32 CSR document rows of their stored weights."""
    indptr, docs, weights = arrays["indptr"], arrays["docs"], arrays["weights"]
    dense_terms, dense_weights = arrays["dense_terms"], arrays["dense_weights"]
    dtypes = (indptr.dtype, docs.dtype, dense_terms.dtype, dense_weights.dtype)
    if dtypes != (np.dtype(np.int64), np.dtype(np.int32), np.dtype(np.int32), weights.dtype) or weights.dtype not in (
        np.dtype(np.float16), np.dtype(np.float32)
    ):
        raise InputError("the postings have unexpected types; rebuild the index.")
    if (
        indptr.shape != (vocab_size + 1,) or docs.ndim != 1 or weights.shape != docs.shape
        or dense_terms.ndim != 1 or dense_weights.shape != (len(dense_terms), n)
    ):
        raise InputError("the postings have inconsistent shapes; rebuild the index.")
    if indptr[0] != 0 or indptr[-1] != len(docs) or (np.diff(indptr) < 0).any():
        raise InputError("the posting list offsets are inconsistent; rebuild the index.")
    if len(dense_terms) and (
        dense_terms[0] < 0 or dense_terms[-1] >= vocab_size or (np.diff(dense_terms) <= 0).any()
        or (np.diff(indptr)[dense_terms] != 0).any()
    ):
        raise InputError("the dense terms are inconsistent; rebuild the index.")
    list_starts = np.unique(indptr[1:-1])
    for start in range(0, len(docs), _CHECK_CHUNK):
        chunk = np.asarray(docs[start : start + _CHECK_CHUNK + 1])
        if chunk.size and (chunk.min() < 0 or chunk.max() >= n):
            raise InputError("a posting names a document outside the index; rebuild the index.")
        steps = np.flatnonzero(np.diff(chunk) <= 0) + start + 1
        if len(steps) and not np.isin(steps, list_starts).all():
            raise InputError("a posting list is not in ascending document order; rebuild the index.")
        if not np.isfinite(weights[start : start + _CHECK_CHUNK]).all():
            raise InputError("the postings hold NaN or infinite weights; rebuild the index.")
    if dense_weights.size and not np.isfinite(dense_weights).all():
        raise InputError("the dense terms hold NaN or infinite weights; rebuild the index.")
    # the term-major matrix of every posting, dense columns included, transposed to document rows
    lengths = np.diff(indptr)
    dense_rows = [np.flatnonzero(dense_weights[j]) for j in range(len(dense_terms))]
    lengths[dense_terms] = [len(rows) for rows in dense_rows]
    full = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(lengths, out=full[1:])
    rows = np.empty(full[-1], dtype=np.int32)
    values = np.empty(full[-1], dtype=np.float32)
    terms = np.repeat(np.arange(vocab_size), np.diff(indptr))
    target = full[terms] + (np.arange(len(docs)) - indptr[terms])
    rows[target], values[target] = docs, weights
    for j, term in enumerate(dense_terms):
        rows[full[term] : full[term + 1]] = dense_rows[j]
        values[full[term] : full[term + 1]] = dense_weights[j, dense_rows[j]]
    return sp.csr_matrix((values, rows, full), shape=(vocab_size, n)).T.tocsr()
