"""The thin query path (mlsr.index.rows.query_arrays): a canonical CSR query is read as it is (never copied, never
changed), anything else is made canonical by as_csr; both give the same results, and bad queries the same errors."""

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.index.rows import as_csr, query_arrays
from mlsr.index.sparse import SparseIndex
from tests.index.test_search_fast import VOCAB, check, path, skewed  # noqa: F401  (path: the search-path fixture)


def frozen(matrix):
    """A snapshot of every array and flag of a sparse matrix, to prove it unchanged."""
    return (matrix.format, matrix.dtype, matrix.shape, *(np.array(a, copy=True) for a in (
        matrix.data, matrix.indices, *([matrix.indptr] if hasattr(matrix, "indptr") else []))))


def same(before, after):
    return all(np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b for a, b in zip(before, after))


def test_a_canonical_float32_query_is_read_as_it_is():
    query = skewed(3, seed=50)
    arrays = query_arrays(query)
    assert arrays.weights is query.data and arrays.matrix is query  # no copy
    assert np.shares_memory(arrays.terms, query.indices) and arrays.n_rows == 3 and arrays.n_cols == VOCAB


def variants(query: sp.csr_matrix) -> dict:
    """The same queries in forms that are not canonical float32 CSR (and one that is float64)."""
    unsorted = query.copy()
    row = slice(unsorted.indptr[0], unsorted.indptr[1])
    unsorted.indices[row], unsorted.data[row] = unsorted.indices[row][::-1].copy(), unsorted.data[row][::-1].copy()
    unsorted.has_sorted_indices = False
    coo = query.tocoo()
    duplicated = sp.csr_matrix((np.concatenate([coo.data / 2, coo.data / 2]),
                                (np.concatenate([coo.row, coo.row]), np.concatenate([coo.col, coo.col]))),
                               shape=query.shape)
    duplicated.has_canonical_format = False
    zeros = sp.csr_matrix(query.toarray())
    zeros.data[0] = 0  # an explicit zero: an absent term
    return {"float64": query.astype(np.float64), "unsorted": unsorted, "csc": query.tocsc(), "dense": query.toarray(),
            "zeros": zeros, "int64-indices": sp.csr_matrix((query.data, query.indices.astype(np.int64),
                                                            query.indptr.astype(np.int64)), shape=query.shape)}


@pytest.mark.parametrize("form", ["float64", "unsorted", "csc", "dense", "zeros", "int64-indices"])
def test_every_form_of_a_query_gives_the_canonical_results_and_stays_unchanged(path, form):
    index = SparseIndex.build(skewed(150, seed=51))
    query = skewed(4, seed=52, per_row=12)
    given = variants(query)[form]
    before = frozen(given) if sp.issparse(given) else given.copy()
    expected = index.search(as_csr(given, "queries"), 7)
    got = index.search(given, 7)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.scores, expected.scores)
    check(index, as_csr(given, "queries"), 7)  # brute force sums the canonical query (terms ascending)
    assert same(before, frozen(given)) if sp.issparse(given) else np.array_equal(before, given)


@pytest.mark.parametrize("damage,message", [("nan", "NaN"), ("wide", "columns but the index has"),
                                            ("term-beyond-the-width", "outside their"), ("complex", "real numbers")])
def test_bad_queries_are_refused_as_before(path, damage, message):
    index = SparseIndex.build(skewed(150, seed=53))
    query = skewed(1, seed=54)
    if damage == "nan":
        query.data[0] = np.nan
    elif damage == "wide":
        query = sp.hstack([query, sp.csr_matrix((1, 3), dtype=np.float32)], format="csr")
    elif damage == "complex":
        query = query.astype(np.complex64)
    else:  # a hand-made CSR whose term lies past its own width: scipy refuses it when it is copied
        query = sp.csr_matrix((query.data, query.indices, query.indptr), shape=query.shape)
        query.indices[-1] = VOCAB + 5
    with pytest.raises(InputError, match=message):
        index.search(query, 3)


@pytest.mark.parametrize("k", [1, 5, 40, 150])
@pytest.mark.parametrize("kind", ["plain", "ties", "negative", "few-matches"])
def test_one_query_at_a_time_equals_brute_force(path, kind, k):
    """One query per search (the app's case: scipy's product on the arrays and top-k among the positive scores,
    or the kernel with one part), with ties, negative weights and fewer matching documents than k."""
    docs = skewed(150, seed=55, levels=(0.5, 1.0) if kind == "ties" else None, negative=kind == "negative")
    index = SparseIndex.build(docs, precision="float32")
    queries = skewed(6, seed=56, per_row=3 if kind == "few-matches" else 12, common=(),
                     negative=kind == "negative")
    for row in range(queries.shape[0]):
        check(index, queries[row], k)


def test_the_inverted_index_takes_a_csr_query_itself(path):
    """InvertedIndex.search checks a CSR query on its own (it called query_arrays with a parameter it has not), and
    refuses one of another width rather than read outside its lists."""
    index = SparseIndex.build(skewed(150, seed=57))
    query = skewed(3, seed=58)
    scores, rows = index.inverted.search(query, 5)
    expected = index.search(query, 5)
    np.testing.assert_array_equal(rows, expected.indices)
    np.testing.assert_array_equal(scores, expected.scores)
    wide = sp.hstack([query, sp.csr_matrix((3, 2), dtype=np.float32)], format="csr")
    with pytest.raises(InputError, match=f"must have {VOCAB} columns"):
        index.inverted.search(wide, 5)
