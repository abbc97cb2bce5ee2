"""The search path's pieces at their edges, against brute force and hand-written values: the sorted-search and
top-k helpers (ties, k at and around the number of rows and of positive scores), the three modes (defaults,
misses, what hybrid refuses), and the threaded kernel's parts (mutation testing found these unchecked)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.index import ranking
from mlsr.index.modes import NO_HIT, hits_only, hybrid_search, rank
from mlsr.index.ranking import first_at_least, product_row, top_k, top_k_of_nonzeros
from mlsr.index.sparse import Results, SparseIndex
from mlsr.query_vectors import QueryVectors


def brute_top_k(scores: np.ndarray, k: int) -> list[int]:
    """The k best rows by a full sort: score descending, then row ascending."""
    return sorted(range(len(scores)), key=lambda row: (-scores[row], row))[:k]


# -- ranking helpers ----------------------------------------------------------------------------------------------

def test_first_at_least_at_every_position_of_a_sorted_run_with_repeats():
    values = np.array([1, 3, 3, 3, 7, 9, 20, 2, 4, 4], dtype=np.int64)  # two sorted runs: 0..6 and 7..9
    targets = np.arange(0, 22)
    for lo, hi in ((0, 7), (7, 10), (2, 5), (4, 4), (0, 1)):
        got = first_at_least(values, np.full(len(targets), lo), np.full(len(targets), hi), targets)
        want = [next((p for p in range(lo, hi) if values[p] >= t), hi) for t in targets]
        assert got.tolist() == want, (lo, hi)
    lo, hi = np.array([0, 7, 3]), np.array([7, 10, 3])
    before = lo.copy(), hi.copy()
    assert first_at_least(values, lo, hi, np.array([4, 4, 0])).tolist() == [4, 8, 3]
    assert lo.tolist() == before[0].tolist() and hi.tolist() == before[1].tolist()  # the caller's bounds kept


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_top_k_breaks_ties_by_row_for_every_k_around_n(n):
    rng = np.random.default_rng(n)
    scores = rng.choice(np.array([0.0, 1.0, 2.0, -1.0], dtype=np.float32), n)  # many ties
    for k in range(0, n + 3):
        got = top_k(scores, k)
        assert got.dtype == np.int64 and got.tolist() == brute_top_k(scores, k), k
    assert top_k(scores, -1).tolist() == [] and top_k(scores, -1).dtype == np.int64


def test_top_k_keeps_every_row_tied_with_the_kth_before_breaking_the_tie():
    scores = np.array([1, 5, 3, 5, 3, 3, 0], dtype=np.float32)
    assert top_k(scores, 3).tolist() == [1, 3, 2]  # the third place is a three-way tie at 3: row 2 wins
    assert top_k(scores, 4).tolist() == [1, 3, 2, 4]
    assert top_k(np.array([2, 2, 2], dtype=np.float32), 2).tolist() == [0, 1]


@pytest.mark.parametrize("positive", [0, 1, 3, 6])
def test_top_k_of_nonzeros_equals_top_k_of_the_dense_row(positive):
    n = 8
    columns = np.array([6, 1, 4, 0, 7, 3], dtype=np.int32)  # unsorted, as scipy's product gives them
    values = np.array([2.0, 2.0, 1.0, 2.0, 0.5, 1.0], dtype=np.float32)
    values[positive:] *= -1  # the first `positive` entries above 0, the rest below (an absent row is 0)
    dense = np.zeros(n, dtype=np.float32)
    dense[columns] = values
    for k in range(1, n + 2):
        got = top_k_of_nonzeros(columns, values, n, k)
        assert got.dtype == np.int64 and got.tolist() == brute_top_k(dense, k), k


def test_an_explicit_zero_score_ties_with_the_absent_rows_before_it():
    columns, values = np.array([4, 2], dtype=np.int32), np.array([0.0, 3.0], dtype=np.float32)  # 1 - 1 = 0 exactly
    assert top_k_of_nonzeros(columns, values, 6, 1).tolist() == [2]
    assert top_k_of_nonzeros(columns, values, 6, 2).tolist() == [2, 0]  # row 0 scores 0 too, and comes first
    assert top_k_of_nonzeros(columns[:1], values[:1], 6, 1).tolist() == [0]


def test_product_row_is_the_sparse_product_by_hand():
    operand = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 0, 0], [3, 4, 0, 0.5]], dtype=np.float32))
    columns, values = product_row(operand, np.array([0, 2], dtype=np.int32), np.array([2, 1], dtype=np.float32))
    assert values.dtype == np.float32
    assert dict(zip(columns.tolist(), values.tolist())) == {0: 5.0, 1: 4.0, 2: 4.0, 3: 0.5}
    columns, values = product_row(operand, np.array([1], dtype=np.int32), np.array([3], dtype=np.float32))
    assert len(columns) == len(values) == 0  # a term no document holds
    columns, values = product_row(operand, np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32))
    assert len(columns) == len(values) == 0  # an empty query


def test_product_row_over_int64_offsets_or_mixed_index_arrays_gives_the_same_floats():
    operand = sp.csr_matrix(np.array([[1, 0, 2], [0.5, 3, 0]], dtype=np.float32))
    wide = sp.csr_matrix((operand.data, operand.indices.astype(np.int64), operand.indptr.astype(np.int64)),
                         shape=operand.shape)
    mixed = sp.csr_matrix(operand.shape, dtype=np.float32)
    mixed.data, mixed.indices, mixed.indptr = operand.data, operand.indices.astype(np.int32), operand.indptr.astype(
        np.int64)
    for matrix in (operand, wide, mixed):
        columns, values = product_row(matrix, np.array([0, 1], dtype=np.int32), np.array([1, 2], dtype=np.float32))
        assert dict(zip(columns.tolist(), values.tolist())) == {0: 2.0, 1: 6.0, 2: 2.0}, matrix.indptr.dtype


def test_product_row_without_scipy_s_routine_gives_the_same_floats(monkeypatch):
    monkeypatch.setattr(ranking, "_sparsetools", None)  # a scipy that moved it: the plain product
    operand = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 0, 0], [3, 4, 0, 0.5]], dtype=np.float32))
    columns, values = product_row(operand, np.array([0, 1], dtype=np.int32), np.array([2, 1], dtype=np.float32))
    assert values.dtype == np.float32 and dict(zip(columns.tolist(), values.tolist())) == {0: 2.0, 2: 4.0}


# -- the three modes ----------------------------------------------------------------------------------------------

def docs_of_12() -> sp.csr_matrix:
    """12 documents over 6 terms: document i holds term i % 6 with weight 1 + i // 6 (so 2 documents a term)."""
    rows = np.arange(12)
    return sp.csr_matrix((1.0 + rows // 6, (rows, rows % 6)), shape=(12, 6), dtype=np.float32)


def test_rank_defaults_to_the_expanded_queries_and_ten_hits():
    index = SparseIndex.build(docs_of_12(), precision="float32")
    expand = sp.csr_matrix(np.ones((1, 6), dtype=np.float32))  # shares a term with every document
    no_expand = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0]], dtype=np.float32))
    got = rank(index, QueryVectors(expand, no_expand))
    assert got.indices.tolist() == [[6, 7, 8, 9, 10, 11, 0, 1, 2, 3]] and got.scores.dtype == np.float32
    assert got.indices.dtype == np.int64 and got.scores[0].tolist() == [2.0] * 6 + [1.0] * 4
    by_text = rank(index, QueryVectors(expand, no_expand), "no_expand", k=3)
    assert by_text.indices.tolist() == [[6, 0, NO_HIT]] and by_text.scores.tolist() == [[2.0, 1.0, 0.0]]


def test_hybrid_defaults_to_ten_hits_among_the_text_candidates():
    index = SparseIndex.build(docs_of_12(), precision="float32")
    no_expand = sp.csr_matrix(np.array([[1, 1, 1, 1, 1, 1]], dtype=np.float32))  # every document a candidate
    expand = sp.csr_matrix(np.array([[6, 5, 4, 3, 2, 1]], dtype=np.float32))
    got = hybrid_search(index, no_expand, expand)
    # expanded scores by hand: rows 0-5 score 6 5 4 3 2 1, rows 6-11 twice that; ties (6, 4, 2) go to the lower row
    assert got.indices.tolist() == [[6, 7, 8, 0, 9, 1, 2, 10, 3, 4]]
    assert got.scores.tolist() == [[12, 10, 8, 6, 6, 5, 4, 4, 3, 2]]


def test_hits_only_makes_zero_and_negative_scores_misses_in_the_documented_dtypes():
    results = Results(np.array([[3.0, 0.0, -1.0], [0.5, 0.25, 0.0]], dtype=np.float32),
                      np.array([[4, 0, 2], [1, 3, 5]], dtype=np.int64))
    got = hits_only(results)
    assert got.scores.dtype == np.float32 and got.indices.dtype == np.int64
    assert got.indices.tolist() == [[4, NO_HIT, NO_HIT], [1, 3, NO_HIT]] and NO_HIT == -1
    assert got.scores.tolist() == [[3.0, 0.0, 0.0], [0.5, 0.25, 0.0]]
    assert results.indices.tolist() == [[4, 0, 2], [1, 3, 5]]  # the given results unchanged
    index = SparseIndex.build(docs_of_12(), precision="float32")
    miss = rank(index, QueryVectors(sp.csr_matrix(np.array([[0, 0, 0, 0, 0, 1]], dtype=np.float32))), k=4)
    assert miss.indices.tolist() == [[11, 5, NO_HIT, NO_HIT]] and miss.scores.tolist() == [[2.0, 1.0, 0.0, 0.0]]


@pytest.mark.parametrize("which", ["no_expand", "expand"])
def test_hybrid_names_the_queries_it_refuses(which):
    index = SparseIndex.build(docs_of_12(), precision="float32")
    good = sp.csr_matrix(np.ones((1, 6), dtype=np.float32))
    bad = np.array([[1.0, np.nan, 0, 0, 0, 0]])
    queries = {"no_expand": good, "expand": good, which: bad}
    with pytest.raises(InputError, match=f"^{which} queries hold NaN"):
        hybrid_search(index, queries["no_expand"], queries["expand"])
    with pytest.raises(InputError, match=r"^the no_expand queries have shape \(1, 6\), the expand ones \(2, 6\)\.$"):
        hybrid_search(index, good, sp.vstack([good, good]))


# -- queries read as they are only when canonical -----------------------------------------------------------------

def hand_csr(data, indices, indptr, columns):
    """A CSR matrix from raw arrays, as a caller may build one (unsorted or repeated terms are allowed)."""
    return sp.csr_matrix((np.array(data, dtype=np.float32), np.array(indices, dtype=np.int32),
                          np.array(indptr, dtype=np.int32)), shape=(len(indptr) - 1, columns))


@pytest.mark.parametrize("rows_before", [0, 1, 2])
def test_unsorted_query_terms_are_summed_in_ascending_term_order(rows_before):
    index = SparseIndex.build(np.ones((1, 3), dtype=np.float32), precision="float32")
    # terms 2, 1, 0 with products -1e8, 1e8, 1: in ascending order (1 + 1e8) - 1e8 = 0 in float32; as given, 1
    query = hand_csr([-1e8, 1e8, 1], [2, 1, 0], [0] * (rows_before + 1) + [3], 3)  # empty rows before it
    assert index.search(query, 1).scores[rows_before].tolist() == [0.0]


def test_repeated_query_terms_are_summed_before_they_are_weighted():
    index = SparseIndex.build(np.array([[3.0, 0]], dtype=np.float32), precision="float32")
    # (1 + 2^-24) rounds to 1 in float32, so the score is 3; weighting each copy first would give 3 + 2^-22
    for indptr, row in (([0, 2], 0), ([0, 2, 2], 0), ([0, 0, 2], 1)):  # the terms in row `row`, any other empty
        query = hand_csr([1.0, 2.0**-24], [0, 0], indptr, 2)
        assert index.search(query, 1).scores[row].tolist() == [3.0], indptr


def test_queries_with_empty_last_rows_and_huge_weights_read_right():
    index = SparseIndex.build(np.eye(2, dtype=np.float32), precision="float32")
    got = index.search(hand_csr([1.0, 2.0], [0, 1], [0, 2, 2, 2], 2), 2)  # two empty rows at the end
    assert got.scores.tolist() == [[2.0, 1.0], [0.0, 0.0], [0.0, 0.0]] and got.indices.tolist()[0] == [1, 0]
    huge = sp.csr_matrix(np.array([[1e300, 0]]))  # float64: beyond float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="^queries hold NaN, infinite or out-of-range weights"):
            index.search(huge, 1)


def test_hand_set_arrays_naming_a_column_past_the_last_or_a_falling_index_pointer_are_refused():
    index = SparseIndex.build(np.eye(2, dtype=np.float32), precision="float32")
    past = hand_csr([1.0], [1], [0, 1], 2)
    past.indices = np.array([2], dtype=np.int32)  # column 2 of 2
    falling = sp.csr_matrix((2, 2), dtype=np.float32)
    falling.indptr = np.array([0, 1, 0], dtype=np.int32)  # no terms, yet a row of one
    with pytest.raises(InputError, match="^queries name a column outside their 2 columns.$"):
        index.search(past, 1)
    with pytest.raises(InputError, match="^queries are not a sound sparse matrix: "):
        index.search(falling, 1)


def test_a_one_dimensional_sparse_array_is_refused_by_name():
    with pytest.raises(InputError, match=r"^queries must be 2-D, got shape \(3,\)\.$"):
        SparseIndex.build(np.eye(3, dtype=np.float32)).search(sp.coo_array(np.ones(3, dtype=np.float32)), 1)
