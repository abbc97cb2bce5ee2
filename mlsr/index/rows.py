"""Document and query rows as the index takes them: canonical float32 CSR copies, never views of the caller's arrays."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

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
        unsound = f"{what} are not a sound sparse matrix"  # arrays set by hand: scipy checks them only when made
        try:
            copy = sp.csr_matrix(matrix, copy=True)
        except ValueError as error:
            raise InputError(f"{unsound}: {error}.") from None
        if len(copy.indices) and (copy.indices.min() < 0 or copy.indices.max() >= copy.shape[1]):
            raise InputError(f"{what} name a column outside their {copy.shape[1]} columns.")
        try:
            copy.check_format(full_check=True)
            copy.sum_duplicates()  # on the copy, in the input's dtype: sorts its indices and sums repeated entries
        except ValueError as error:
            raise InputError(f"{unsound}: {error}.") from None
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


class QueryArrays(NamedTuple):
    """Checked, canonical queries as search reads them: row offsets, terms ascending in each row, non-zero finite
    float32 weights. They may be the caller's own arrays (a canonical float32 CSR is not copied): search only reads."""

    indptr: np.ndarray  # int64 (rows + 1,)
    terms: np.ndarray  # int32
    weights: np.ndarray  # float32
    n_cols: int
    matrix: sp.csr_matrix | None = None  # the same queries as a canonical CSR, when one is at hand

    @property
    def n_rows(self) -> int:
        return len(self.indptr) - 1

    def csr(self) -> sp.csr_matrix:
        """The queries as a canonical float32 CSR matrix (for scipy's product)."""
        if self.matrix is not None:
            return self.matrix
        matrix = sp.csr_matrix((self.weights, self.terms, self.indptr), shape=(self.n_rows, self.n_cols))
        matrix.has_canonical_format = True
        return matrix


def query_arrays(queries, what: str = "queries") -> QueryArrays:
    """Queries (sparse or a 2-D array) checked and made canonical once, for search.

    A CSR matrix that is canonical already (terms ascending in each row, no zeros, finite weights) is read as
    it is: only its weights are cast to float32 when they are not, so a query costs a few vector checks, not
    a copy through scipy's constructors. Anything else goes through `as_csr` (a canonical float32 copy).
    """
    fast = _canonical_arrays(queries) if sp.issparse(queries) and queries.format == "csr" else None
    if fast is not None:
        return fast
    matrix = as_csr(queries, what)
    return QueryArrays(matrix.indptr.astype(np.int64, copy=False), matrix.indices.astype(np.int32, copy=False),
                       matrix.data, matrix.shape[1], matrix)


def _canonical_arrays(matrix: sp.csr_matrix) -> QueryArrays | None:
    """A canonical real CSR's arrays as QueryArrays, or None when it is not canonical (or not sound)."""
    if matrix.ndim != 2 or not np.issubdtype(matrix.dtype, np.floating):
        return None
    indptr, terms, data = matrix.indptr, matrix.indices, matrix.data
    n_rows, n_cols = matrix.shape
    if len(indptr) != n_rows + 1 or indptr[0] != 0 or indptr[-1] != len(terms) or len(terms) != len(data):
        return None
    with np.errstate(over="ignore"):
        weights = data.astype(np.float32, copy=False)
    if len(terms):
        steps = np.diff(terms)
        if n_rows == 1:
            ascending = bool((steps > 0).all())
        else:
            rising = steps > 0
            rising[indptr[1:-1][(indptr[1:-1] > 0) & (indptr[1:-1] < len(terms))] - 1] = True  # a row starts there
            ascending = bool(rising.all()) and bool((np.diff(indptr) >= 0).all())
        if not ascending or terms.min() < 0 or terms.max() >= n_cols:
            return None
        if not np.isfinite(weights).all() or not weights.all():
            return None
    elif (np.diff(indptr) != 0).any():
        return None
    return QueryArrays(indptr.astype(np.int64, copy=False), terms.astype(np.int32, copy=False), weights, n_cols,
                       matrix if weights is data else None)


def _check_real(dtype: np.dtype, what: str) -> None:
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer) or dtype == np.bool_):
        raise InputError(f"{what} must hold real numbers, not {dtype}.")


def place_rows(rows, at: Sequence[int], n: int) -> sp.csr_matrix:
    """An (n, vocab) CSR matrix whose row `at[i]` is `rows[i]`, every other row empty (documents without a caption)."""
    rows = as_csr(rows, "rows")
    where = np.asarray(at, dtype=np.int64).reshape(-1)
    if len(where) != rows.shape[0]:
        raise InputError(f"{len(where)} positions for {rows.shape[0]} rows: give one position per row.")
    if len(where) and (where.min() < 0 or where.max() >= n or len(np.unique(where)) != len(where)):
        raise InputError(f"positions must be distinct rows in 0..{n - 1}.")
    placement = sp.csr_matrix((np.ones(len(where), np.float32), (where, np.arange(len(where)))), shape=(n, len(where)))
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
