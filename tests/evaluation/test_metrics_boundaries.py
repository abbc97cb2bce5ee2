"""Metrics at their boundaries, against hand-computed values and the per-query functions (written as trec_eval
defines them): relevant documents at row 0 and at the last row, judged documents outside the collection, one and no
judged queries, empty inputs, and active terms over dense, sparse (duplicates, explicit zeros) and torch input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mlsr.errors import InputError
from mlsr.evaluation.metrics import (active_terms, flops, flops_from_frequencies, mean_metrics, score_rankings,
                                     term_frequency)

MEASURES = ["R@1", "R@3", "MRR@3", "NDCG@3", "MAP@3"]
DOCS = ["d0", "d1", "d2", "d3"]


def _both(indices, query_ids, qrels):
    """score_rankings, and mean_metrics on the same rankings written out as document ids."""
    rankings = {q: [DOCS[row] for row in rows if row >= 0] for q, rows in zip(query_ids, indices)}
    return score_rankings(np.asarray(indices), query_ids, DOCS, qrels, MEASURES), mean_metrics(rankings, qrels,
                                                                                              MEASURES)


def test_relevant_documents_at_the_first_and_the_last_row_of_the_collection():
    # q1 finds d0 (row 0) first; q2 finds d3, the last row and the largest key, second. By hand:
    qrels = {"q1": {"d0": 1}, "q2": {"d3": 2}}
    vectorised, per_query = _both([[0, 1, -1], [2, 3, -1]], ["q1", "q2"], qrels)
    expected = {"R@1": 0.5, "R@3": 1.0, "MRR@3": 0.75, "NDCG@3": (1 + 1 / math.log2(3)) / 2, "MAP@3": 0.75}
    assert vectorised == pytest.approx(expected) and per_query == pytest.approx(expected)


def test_judged_documents_outside_the_collection_count_as_relevant_but_never_found():
    qrels = {"q1": {"elsewhere": 1, "d1": 1, "d2": 0}}
    vectorised, per_query = _both([[1, 2, 0]], ["q1"], qrels)
    ideal = 1 + 1 / math.log2(3)
    expected = {"R@1": 0.5, "R@3": 0.5, "MRR@3": 1.0, "NDCG@3": 1 / ideal, "MAP@3": 0.5}
    assert vectorised == pytest.approx(expected) and per_query == pytest.approx(expected)


def test_negative_relevance_is_not_a_gain():
    qrels = {"q1": {"d0": -1, "d1": 1}}
    vectorised, per_query = _both([[0, 1, 2]], ["q1"], qrels)
    expected = {"R@1": 0.0, "R@3": 1.0, "MRR@3": 0.5, "NDCG@3": 1 / math.log2(3), "MAP@3": 0.5}
    assert vectorised == pytest.approx(expected) and per_query == pytest.approx(expected)


@pytest.mark.parametrize("qrels, expected", [
    ({}, 0.0),  # nothing judged: every measure is 0, not nan
    ({"q1": {"d0": 0}}, 0.0),  # one judged query, nothing relevant
    ({"q1": {"d0": 0}, "q2": {"d1": 0}}, 0.0),
    ({"q1": {"d0": 1}}, 1.0),  # exactly one judged query, found first
])
def test_no_one_or_many_judged_queries(qrels, expected):
    vectorised, per_query = _both([[0, 1, 2], [1, 0, 2]], ["q1", "q2"], qrels)
    assert vectorised == per_query == {name: expected for name in MEASURES}


def test_rankings_without_any_hit():
    vectorised, per_query = _both([[-1, -1, -1]], ["q1"], {"q1": {"d0": 1}})
    assert vectorised == per_query == {name: 0.0 for name in MEASURES}


DENSE = np.array([[0.0, 1.5, 0.0, 2.0], [0.0, 0.3, 0.0, 0.0], [0.0, 0.0, 0.0, 7.0]])  # 3 rows, 4 terms
FREQUENCY = [0, 2, 0, 2]


@pytest.mark.parametrize("make", [np.array, sp.csr_matrix, sp.csc_matrix, torch.tensor],
                         ids=["numpy", "csr", "csc", "torch"])
def test_term_frequency_counts_rows_per_term_by_hand(make):
    frequency = term_frequency(make(DENSE))
    assert frequency.dtype == np.int64 and frequency.tolist() == FREQUENCY
    assert active_terms(make(DENSE)) == pytest.approx(4 / 3)


def test_term_frequency_of_a_tensor_that_requires_grad():
    vectors = torch.tensor(DENSE, requires_grad=True)
    assert term_frequency(vectors).tolist() == FREQUENCY


def test_term_frequency_skips_explicit_zeros_and_sums_duplicates_on_a_copy():
    # row 0: term 1 twice (1 + -1: no term), term 3 an explicit zero; row 1: term 2 twice (0.5 + 0.5); 6 terms
    matrix = sp.csr_matrix((np.array([1.0, -1.0, 0.0, 0.5, 0.5]), np.array([1, 1, 3, 2, 2]), np.array([0, 3, 5])),
                           shape=(2, 6))
    before = (matrix.data.copy(), matrix.indices.copy(), matrix.indptr.copy())
    assert term_frequency(matrix).tolist() == [0, 0, 1, 0, 0, 0]
    assert active_terms(matrix) == 0.5
    for kept, now in zip(before, (matrix.data, matrix.indices, matrix.indptr)):
        np.testing.assert_array_equal(kept, now)


@pytest.mark.parametrize("make", [np.zeros, lambda shape: sp.csr_matrix(shape)], ids=["numpy", "csr"])
def test_no_rows_have_no_active_terms(make):
    assert active_terms(make((0, 5))) == 0.0


@pytest.mark.parametrize("queries, documents, expected", [
    ([[1, 0, 2]], [[3, 0, 0]], 1.0),  # one query, one document: term 0 in both
    ([[1, 0, 2], [0, 0, 1]], [[3, 0, 1], [1, 1, 0]], (1 * 2 + 0 * 1 + 2 * 1) / (2 * 2)),
    ([[1, 1, 1]], [[0, 0, 0], [0, 0, 0]], 0.0),
])
def test_flops_by_hand(queries, documents, expected):
    assert flops(np.array(queries, dtype=float), np.array(documents, dtype=float)) == pytest.approx(expected)


@pytest.mark.parametrize("n_queries, n_docs", [(0, 3), (3, 0), (0, 0)])
def test_flops_of_nothing_is_zero(n_queries, n_docs):
    assert flops_from_frequencies(np.array([1, 2]), n_queries, np.array([3, 4]), n_docs) == 0.0


def test_flops_from_frequencies_by_hand_with_one_query_and_one_document():
    assert flops_from_frequencies(np.array([1, 0, 1]), 1, np.array([1, 1, 0]), 1) == 1.0


def test_flops_refuse_vocabularies_of_different_sizes_saying_both():
    with pytest.raises(InputError) as caught:
        flops(np.zeros((2, 3)), np.zeros((4, 5)))
    assert str(caught.value) == "queries have 3 terms, documents 5."
    with pytest.raises(InputError) as caught:
        flops_from_frequencies(np.zeros(3), 1, np.zeros(5), 1)
    assert str(caught.value) == "queries have 3 terms, documents 5."
