"""Never change what the caller passed: every public function that takes arrays leaves them bit-for-bit as they
were (any scipy format, dense arrays in any layout, explicit zeros, duplicates, unsorted indices, float16 to
int64, weights from 1e-12 to 1e4), and its results equal a brute-force computation from the values given.

float32 index: scores are the input's products, added in ascending term order in float32, ties by row;
float16 index: the same over the stored weights (each weight rounded to float16, those below its range dropped).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlsr.evaluation.metrics import active_terms, flops, mean_metrics, score_rankings, term_frequency
from mlsr.index.dense import DenseIndex
from mlsr.index.modes import hybrid_search
from mlsr.index.sparse import SparseIndex
from mlsr.index.rows import as_csr, place_rows
from tests.helpers.matrices import exact_ranking, exact_scores, matrices, snapshot, stored

VOCAB = 24
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PRECISION = st.sampled_from(["float16", "float32"])


@PROPERTY
@given(docs=matrices(), queries=matrices(rows=(1, 4), signed=True), one=matrices(rows=(1, 1), signed=True),
       precision=PRECISION, k=st.integers(1, 8))
def test_the_index_never_changes_its_inputs_and_equals_brute_force(docs, queries, one, precision, k):
    before = [snapshot(given.matrix) for given in (docs, queries, one)]
    index = SparseIndex.build(docs.matrix, precision=precision)
    found = index.search(queries.matrix, k)
    rows = list(range(len(index)))[::-1]
    scored = index.score(one.matrix, rows)
    explained = index.explain(one.matrix, 0)
    documents = [index.document(row) for row in range(len(index))]
    assert [snapshot(given.matrix) for given in (docs, queries, one)] == before

    weights = stored(docs.value, precision)  # what the index keeps
    np.testing.assert_array_equal(index.vectors.toarray(), weights)
    np.testing.assert_array_equal(sp.vstack(documents).toarray(), weights)
    want_scores, want_rows = exact_ranking(exact_scores(queries.value, weights), min(k, len(index)))
    np.testing.assert_array_equal(found.indices, want_rows)
    np.testing.assert_array_equal(found.scores, want_scores)
    np.testing.assert_array_equal(scored, exact_scores(one.value, weights)[0][rows])
    shared = np.flatnonzero(one.value[0] * weights[0])
    assert sorted((m.term, m.query_weight, m.doc_weight) for m in explained) == sorted(
        (f"#{t}", float(one.value[0, t]), float(weights[0, t])) for t in shared)


@PROPERTY
@given(docs=matrices(forms=("csr",), dtypes=("float32",)), no_expand=matrices(rows=(2, 2)),
       expand=matrices(rows=(2, 2), signed=True), k=st.integers(1, 8), depth=st.integers(1, 8))
def test_hybrid_search_never_changes_its_queries(docs, no_expand, expand, k, depth):
    index = SparseIndex.build(docs.matrix, precision="float32")
    before = snapshot(no_expand.matrix), snapshot(expand.matrix)
    found = hybrid_search(index, no_expand.matrix, expand.matrix, k, depth)
    assert (snapshot(no_expand.matrix), snapshot(expand.matrix)) == before
    clean = hybrid_search(index, sp.csr_matrix(no_expand.value), sp.csr_matrix(expand.value), k, depth)
    np.testing.assert_array_equal(found.indices, clean.indices)  # whatever form the caller's queries took
    np.testing.assert_array_equal(found.scores, clean.scores)
    expanded = exact_scores(expand.value, docs.value)  # every hit's score is the expanded query's exact score
    hits = found.indices >= 0
    np.testing.assert_array_equal(found.scores[hits], np.take_along_axis(expanded, np.maximum(found.indices, 0), 1)[hits])
    assert (found.scores[~hits] == 0).all()


DENSE = st.sampled_from(["float16", "float32", "float64", "int64"])


@st.composite
def dense_arrays(draw, rows: tuple[int, int], dim: int = 8) -> np.ndarray:
    n = draw(st.integers(*rows))
    dtype = np.dtype(draw(DENSE))
    values = draw(st.lists(st.floats(-4, 4, width=16), min_size=n * dim, max_size=n * dim))
    array = np.asarray(values, dtype=np.float64).reshape(n, dim)
    array = np.rint(array).astype(dtype) if np.issubdtype(dtype, np.integer) else array.astype(dtype)
    layout = draw(st.sampled_from(["C", "F", "strided", "readonly"]))
    if layout == "F":
        return np.asfortranarray(array)
    if layout == "strided":
        wide = np.zeros((n, 2 * dim), dtype=dtype)
        wide[:, 1::2] = array
        return wide[:, 1::2]
    if layout == "readonly":
        array.flags.writeable = False
    return array


@PROPERTY
@given(docs=dense_arrays((1, 12)), queries=dense_arrays((1, 3)), k=st.integers(1, 15))
def test_dense_index_never_changes_its_inputs_and_finds_the_top_k(docs, queries, k):
    before = snapshot(docs), snapshot(queries)
    found = DenseIndex(docs).search(queries, k)
    assert (snapshot(docs), snapshot(queries)) == before
    full = queries.astype(np.float64) @ docs.astype(np.float64).T
    kept = min(k, len(docs))
    assert found.indices.shape == (len(queries), kept)
    for q in range(len(queries)):
        got = full[q, found.indices[q]]
        np.testing.assert_allclose(found.scores[q], got, rtol=1e-5, atol=1e-4)
        assert len(set(found.indices[q].tolist())) == kept  # distinct rows
        assert got.min() >= np.sort(full[q])[::-1][kept - 1] - 1e-4  # none better was left out


@PROPERTY
@given(rows=matrices(rows=(1, 4)), data=st.data())
def test_place_rows_never_changes_its_inputs(rows, data):
    n = rows.value.shape[0] + data.draw(st.integers(0, 3))
    at = data.draw(st.permutations(range(n)))[: rows.value.shape[0]]
    at = data.draw(st.sampled_from([list, tuple, lambda a: np.asarray(a, dtype=np.int32)]))(at)
    before = snapshot(rows.matrix), snapshot(at)
    placed = place_rows(rows.matrix, at, n)
    assert (snapshot(rows.matrix), snapshot(at)) == before
    want = np.zeros((n, VOCAB), dtype=np.float32)
    want[np.asarray(at, dtype=np.int64)] = rows.value
    np.testing.assert_array_equal(placed.toarray(), want)


@PROPERTY
@given(queries=matrices(rows=(1, 4), signed=True), docs=matrices())
def test_cost_metrics_never_change_their_inputs(queries, docs):
    before = snapshot(queries.matrix), snapshot(docs.matrix)
    frequency = term_frequency(docs.matrix)
    active, cost = active_terms(docs.matrix), flops(queries.matrix, docs.matrix)
    assert (snapshot(queries.matrix), snapshot(docs.matrix)) == before
    np.testing.assert_array_equal(frequency, (docs.value != 0).sum(axis=0))
    assert active == pytest.approx((docs.value != 0).sum() / len(docs.value))
    per_term = (queries.value != 0).sum(axis=0).astype(float) * (docs.value != 0).sum(axis=0)
    assert cost == pytest.approx(per_term.sum() / (len(queries.value) * len(docs.value)))


@PROPERTY
@given(data=st.data(), n_docs=st.integers(1, 8), n_queries=st.integers(1, 4))
def test_score_rankings_never_changes_its_inputs_and_equals_the_per_query_metrics(data, n_docs, n_queries):
    depth = data.draw(st.integers(1, n_docs))
    ranked = np.array([data.draw(st.permutations(range(n_docs)))[:depth] for _ in range(n_queries)])
    ranked = ranked.astype(data.draw(st.sampled_from([np.int32, np.int64])))
    if data.draw(st.booleans()):
        ranked.flags.writeable = False
    query_ids = [f"q{i}" for i in range(n_queries)]
    doc_ids = [f"d{i}" for i in range(n_docs)]
    qrels = {q: {doc: data.draw(st.integers(0, 2)) for doc in data.draw(st.lists(st.sampled_from(doc_ids), unique=True))}
             for q in query_ids}
    measures = ["R@2", "MRR@3", "NDCG@3", "MAP@5"]
    before = snapshot(ranked), snapshot(query_ids), snapshot(doc_ids), repr(qrels)
    scored = score_rankings(ranked, query_ids, doc_ids, qrels, measures)
    assert (snapshot(ranked), snapshot(query_ids), snapshot(doc_ids), repr(qrels)) == before
    rankings = {q: [doc_ids[row] for row in ranked[i]] for i, q in enumerate(query_ids)}
    expected = mean_metrics(rankings, qrels, measures)
    assert scored == pytest.approx(expected, abs=1e-12)


@SLOW
@given(data=st.data())
def test_sparsify_never_changes_its_dense_vectors(encoder, data):
    import torch

    from mlsr.models.encoder import to_csr

    n = data.draw(st.integers(1, 3))
    dtype = data.draw(st.sampled_from([np.float16, np.float32, np.float64]))
    values = np.random.default_rng(data.draw(st.integers(0, 2**16))).normal(size=(n, encoder.dense_size)).astype(dtype)
    layout = data.draw(st.sampled_from(["C", "F", "readonly"]))
    dense = np.asfortranarray(values) if layout == "F" else values
    if layout == "readonly":
        dense.flags.writeable = False
    before = snapshot(dense)
    sparse = encoder.sparsify(dense)
    assert snapshot(dense) == before
    with torch.inference_mode():
        want = to_csr(encoder.head(torch.from_numpy(np.array(values, dtype=np.float32))))
    np.testing.assert_allclose(sparse.toarray(), want.toarray(), rtol=1e-5, atol=1e-6)


TERMS = ("dog", "cat", "beach", "market", "buffalo", "sofa", "red", "##s")  # each one word piece


@SLOW
@given(data=st.data())
def test_vector_from_terms_never_changes_its_rows(encoder, data):
    from mlsr.serving.terms import vector_from_terms

    terms = data.draw(st.lists(st.sampled_from(TERMS), unique=True, min_size=1, max_size=5))
    weights = [data.draw(st.floats(-5, 5).filter(lambda w: abs(w) > 1e-3)) for _ in terms]
    shape = data.draw(st.sampled_from([list, tuple]))
    rows = [shape([term, data.draw(st.sampled_from([float, str]))(weight)]) for term, weight in zip(terms, weights)]
    before = snapshot(rows)
    vector = vector_from_terms(rows, encoder.vocab, encoder.tokenizer)
    assert snapshot(rows) == before
    want = np.zeros(encoder.vocab_size, dtype=np.float32)
    for term, weight in zip(terms, weights):
        want[encoder.vocab.ids[term]] = np.float32(float(str(weight)))
    np.testing.assert_array_equal(vector.toarray()[0], want)


def test_as_csr_copies_even_a_canonical_float32_matrix():
    """The cheapest input, already in the index's own form, is copied too: normalising in place is never safe."""
    given = sp.csr_matrix(np.eye(3, VOCAB, dtype=np.float32))
    copy = as_csr(given, "vectors")
    for name in ("data", "indices", "indptr"):
        assert not np.shares_memory(getattr(copy, name), getattr(given, name)), name


def test_the_reported_corruption_is_gone():
    """Issue 13's reproduction: an explicit zero made build() shift the caller's weights into other columns."""
    m = sp.csr_matrix((np.array([1, 0, 3, 4], np.float32), np.array([1, 2, 3, 4], np.int32),
                       np.array([0, 2, 4], np.int32)), shape=(2, 30522))
    before = m.toarray().copy()
    SparseIndex.build(m)
    assert (before != m.toarray()).sum() == 0
    query = sp.csr_matrix((np.array([2.0, 1.0]), np.array([4, 1]), np.array([0, 2])), shape=(1, 30522))
    SparseIndex.build(m, precision="float32").search(query, 1)
    assert query.indices.tolist() == [4, 1] and query.data.tolist() == [2.0, 1.0]


@PROPERTY
@given(docs=matrices(), new=matrices(rows=(1, 4)), precision=PRECISION, drop=st.sets(st.integers(0, 5), max_size=3),
       k=st.integers(1, 8))
def test_add_and_remove_never_change_their_inputs_or_the_old_index(docs, new, precision, drop, k):
    index = SparseIndex.build(docs.matrix, precision=precision)
    old = index.vectors.toarray().copy(), [dict(item) for item in index.items]
    items = [{"id": f"new{i}", "tags": ["x"]} for i in range(new.value.shape[0])]
    before = snapshot(new.matrix), [dict(item, tags=list(item["tags"])) for item in items]
    added = index.add(new.matrix, items)
    ids = sorted(str(row) for row in drop if row < len(index))
    removed = added.remove(ids)
    assert (snapshot(new.matrix), items) == before
    np.testing.assert_array_equal(index.vectors.toarray(), old[0])
    assert index.items == old[1]
    weights = np.vstack([stored(docs.value, precision), stored(new.value, precision)])
    np.testing.assert_array_equal(added.vectors.toarray(), weights)  # the union, as given
    keep = [row for row in range(len(weights)) if str(row) not in ids or row >= len(index)]
    want_scores, want_rows = exact_ranking(exact_scores(new.value, weights[keep]), min(k, len(keep)))
    found = removed.search(new.matrix, k)
    np.testing.assert_array_equal(found.indices, want_rows)
    np.testing.assert_array_equal(found.scores, want_scores)
