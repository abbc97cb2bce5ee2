"""Document and query rows as the index takes them: canonical float32 CSR copies, never views of the caller's arrays."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.errors import InputError


def as_csr(matrix, what: str) -> sp.csr_matrix:
    """A canonical float32 CSR copy of a sparse matrix or a 2-D array (sorted, duplicates summed, no zeros), checked.

    Always a copy, never a view: scipy's `csr_matrix(m)` shares `m`'s index arrays, and normalising
    them in place would move the caller's weights into other columns. Duplicates are summed in the
    input's own dtype before the cast, so the values are those of `matrix.toarray()` in float32.
    """
    if sp.issparse(matrix):
        if matrix.ndim != 2:
            raise InputError(f"{what} must be 2-D, got shape {matrix.shape}.")
        _check_real(matrix.dtype, what)
        copy = sp.csr_matrix(matrix, copy=True)
        copy.sum_duplicates()  # on the copy, in the input's dtype: sorts its indices and sums repeated entries
        with np.errstate(over="ignore"):
            data = copy.data.astype(np.float32)
        indices, indptr = copy.indices, copy.indptr
    elif isinstance(matrix, np.ndarray) or hasattr(matrix, "__array__"):
        array = np.asarray(matrix)
        if array.ndim != 2:
            raise InputError(f"{what} must be 2-D (rows are items, columns are terms), got shape {array.shape}.")
        _check_real(array.dtype, what)
        with np.errstate(over="ignore"):
            copy = sp.csr_matrix(array.astype(np.float32))  # new arrays (float16 has no sparse type)
        data, indices, indptr = copy.data, copy.indices, copy.indptr
    else:
        raise InputError(f"{what} must be a scipy sparse matrix or a 2-D array (rows are items, columns are terms).")
    if not np.isfinite(data).all():
        raise InputError(f"{what} hold NaN, infinite or out-of-range weights (float32 holds |w| up to 3.4e38).")
    canonical = sp.csr_matrix((data, indices, indptr), shape=copy.shape)
    canonical.eliminate_zeros()  # explicit zeros, and weights below float32's range, are absent terms
    canonical.has_canonical_format = True  # sorted, no duplicates (summed above)
    return canonical


def _check_real(dtype: np.dtype, what: str) -> None:
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise InputError(f"{what} must hold real numbers, not {dtype}.")


def place_rows(rows, at: Sequence[int], n: int) -> sp.csr_matrix:
    """An (n, vocab) CSR matrix whose row `at[i]` is `rows[i]`, every other row empty (documents without a caption)."""
    rows = as_csr(rows, "rows")
    at = np.asarray(at, dtype=np.int64).reshape(-1)
    if len(at) != rows.shape[0]:
        raise InputError(f"{len(at)} positions for {rows.shape[0]} rows: give one position per row.")
    if len(at) and (at.min() < 0 or at.max() >= n or len(np.unique(at)) != len(at)):
        raise InputError(f"positions must be distinct rows in 0..{n - 1}.")
    placement = sp.csr_matrix((np.ones(len(at), np.float32), (at, np.arange(len(at)))), shape=(n, len(at)))
    return (placement @ rows).tocsr()


def checked_rows(chunks: Iterable[sp.csr_matrix], vocab_size: int, precision: str,
                 what: str = "row chunks") -> Iterator[sp.csr_matrix]:
    """Canonical row chunks (`as_csr` copies) checked for width, and for sign when they become uint8 impacts.

    Lazy: a chunk is checked as it is taken, so a build from many chunks fails at the first bad one.
    """
    for chunk in chunks:
        if chunk.shape[1] != vocab_size:
            raise InputError(f"{what} must all have {vocab_size} columns; one has {chunk.shape[1]}.")
        if precision == "uint8" and chunk.nnz and chunk.data.min() < 0:
            raise InputError("uint8 impacts need document weights >= 0; use precision 'float16' or 'float32'.")
        yield chunk
