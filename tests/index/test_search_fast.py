"""The fast search paths (compiled kernel over blocks of documents split between threads, dense columns for
common terms, scipy for small indexes), in every precision, against brute force over the stored weights:
a full stable sort of `queries @ docs.T`."""


import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.index import blocks, inverted, kernel_search
from mlsr.index.sparse import SparseIndex
from mlsr.vocab import Vocabulary

VOCAB = 500


def brute_force(queries, docs, k):
    """Every score (scipy's sparse product, float32) and a full stable sort: score descending, then row ascending."""
    scores = (sp.csr_matrix(queries, dtype=np.float32) @ sp.csr_matrix(docs, dtype=np.float32).T).toarray()
    order = np.array([np.lexsort((np.arange(len(row)), -row)) for row in scores], dtype=np.int64).reshape(len(scores), -1)
    order = order[:, :k]
    return np.take_along_axis(scores, order, 1), order


def skewed(n, seed, per_row=30, common=(0, 1, 2), levels=None, negative=False):
    """Rows with Zipf-like term popularity; `common` terms are in every row; `levels` makes scores tie."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, VOCAB + 1)
    rows, cols = [], []
    for i in range(n):
        terms = np.unique(np.concatenate([rng.choice(VOCAB, per_row, p=popularity / popularity.sum()), common]))
        rows += [i] * len(terms)
        cols += terms.tolist()
    if levels is not None:
        data = rng.choice(np.array(levels, dtype=np.float32), len(rows))
    else:
        data = np.log1p(rng.lognormal(0, 0.7, len(rows))).astype(np.float32)
    if negative:
        data[rng.random(len(data)) < 0.3] *= -1
    return sp.csr_matrix((data, (rows, cols)), shape=(n, VOCAB), dtype=np.float32)


@pytest.fixture(params=["scipy", "scipy-blocks", "kernel-1-block", "kernel-blocks", "kernel-blocks-1-thread"])
def path(request, monkeypatch):
    """Which search path runs: scipy or the compiled kernel (with dense columns), over one block of documents or
    blocks of 64 (the kernel then splits them between 3 threads, or one thread reads them all)."""
    if request.param.startswith("kernel"):
        # numba is a requirement: without it these cases would search with scipy, so fail rather than skip them
        assert inverted._kernel() is not None, "the compiled kernel cannot be imported: install numba (requirements.txt)"
        monkeypatch.setattr(inverted, "KERNEL_MIN_DOCS", 0)
        monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 0)
        monkeypatch.setenv("MLSR_SEARCH_THREADS", "3" if request.param == "kernel-blocks" else "1")
        monkeypatch.setattr(kernel_search, "PART_WORK_NS", 1)  # split even these small searches between threads
    else:
        monkeypatch.setattr(inverted, "KERNEL_MIN_DOCS", 10**12)
    if "blocks" in request.param:
        monkeypatch.setattr(blocks, "BLOCK_DOCS", 64)
    return request.param



def check(index, queries, k):
    """Search equals brute force over the stored weights: same rows, same float32 scores."""
    got = index.search(queries, k)
    want_scores, want_rows = brute_force(queries, index.vectors, min(k, len(index)))
    assert got.scores.dtype == np.float32 and got.indices.dtype == np.int64
    assert got.scores.shape == got.indices.shape == (queries.shape[0], min(k, len(index)))
    np.testing.assert_array_equal(got.indices, want_rows)
    np.testing.assert_array_equal(got.scores, want_scores)
    return got


@pytest.mark.parametrize("k", [1, 10, 57, 300, 10_000])  # k=0 is refused (mlsr.checks)
def test_random_skewed_collection(path, precision, k):
    index = SparseIndex.build(skewed(300, seed=1), precision=precision)
    assert index.precision == precision
    check(index, skewed(12, seed=2, per_row=8, common=()), k)


def test_common_terms_become_dense_columns_on_the_kernel_path(path, precision):
    index = SparseIndex.build(skewed(200, seed=3), precision=precision)
    dense = set(index.inverted.dense_terms.tolist())
    assert ({0, 1, 2} <= dense) == path.startswith("kernel")
    check(index, skewed(6, seed=4, per_row=5), 10)


def test_many_ties_are_broken_by_row(path, precision):
    index = SparseIndex.build(skewed(250, seed=5, levels=[0.5, 1.0]), precision=precision)  # few levels: real ties
    queries = skewed(10, seed=6, per_row=6, common=(0,), levels=[1.0, 2.0])
    got = check(index, queries, 40)
    assert any(len(set(row)) < len(row) for row in got.scores.tolist())  # the case is really there


def test_empty_query_and_a_term_in_every_document(path, precision):
    index = SparseIndex.build(skewed(100, seed=7), precision=precision)
    empty = sp.csr_matrix((2, VOCAB), dtype=np.float32)
    got = check(index, empty, 5)
    assert got.indices.tolist() == [[0, 1, 2, 3, 4]] * 2 and not got.scores.any()
    everywhere = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, VOCAB), dtype=np.float32)
    check(index, everywhere, 100)


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_negative_weights_rank_untouched_documents_by_row(path, precision):
    docs = skewed(120, seed=8, negative=True)
    index = SparseIndex.build(docs, precision=precision)
    check(index, skewed(8, seed=9, per_row=6, common=(0, 1), negative=True), 30)
    # every document holds term 0, so a negative weight on it alone puts the lowest weights first
    check(index, sp.csr_matrix(([-1.0], ([0], [0])), shape=(1, VOCAB), dtype=np.float32), 120)


def test_negative_query_weights_on_impacts(path):
    index = SparseIndex.build(skewed(120, seed=8), precision="uint8")
    check(index, skewed(8, seed=9, per_row=6, common=(0, 1), negative=True), 30)
    check(index, sp.csr_matrix(([-1.0], ([0], [0])), shape=(1, VOCAB), dtype=np.float32), 120)


def test_one_item_and_no_item(path, precision):
    one = SparseIndex.build(skewed(1, seed=10), precision=precision)
    check(one, skewed(3, seed=11), 5)
    none = SparseIndex.build(sp.csr_matrix((0, VOCAB), dtype=np.float32), [], precision=precision)
    got = none.search(skewed(2, seed=12), 5)
    assert got.scores.shape == got.indices.shape == (2, 0)


def test_batch_equals_one_by_one(path, precision):
    index = SparseIndex.build(skewed(200, seed=13), precision=precision)
    queries = skewed(9, seed=14, per_row=10)
    batch = index.search(queries, 7)
    for q in range(9):
        single = index.search(queries[q], 7)
        np.testing.assert_array_equal(single.indices[0], batch.indices[q])
        np.testing.assert_array_equal(single.scores[0], batch.scores[q])


def test_score_explain_and_document_read_the_weights_search_uses(path, precision):
    index = SparseIndex.build(skewed(150, seed=15), vocab=Vocabulary(tuple(f"t{i}" for i in range(VOCAB))),
                              precision=precision)
    queries = skewed(4, seed=16, per_row=10)
    results = index.search(queries, 20)
    for q in range(4):
        np.testing.assert_array_equal(index.score(queries[q], results.indices[q]), results.scores[q])
        for row, score in zip(results.indices[q][:5], results.scores[q][:5]):
            total = sum(match.contribution for match in index.explain(queries[q], row))
            assert total == pytest.approx(float(score), rel=1e-5, abs=1e-6)
    for row in (0, 77, 149):
        np.testing.assert_array_equal(index.document(row).toarray(), index.vectors[row].toarray())
    np.testing.assert_array_equal(index.document_frequency(), np.bincount(index.vectors.indices, minlength=VOCAB))
    assert index.nnz == index.vectors.nnz


def test_concurrent_searches_from_several_threads_agree(path, precision):
    """The app runs requests in parallel: searches share the kernel's thread pool, each with its own buffers."""
    from concurrent.futures import ThreadPoolExecutor

    index = SparseIndex.build(skewed(300, seed=25), precision=precision)
    queries = skewed(16, seed=26, per_row=10)
    want = [index.search(queries[q], 10) for q in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda q: index.search(queries[q], 10), list(range(16)) * 4))
    for q, result in enumerate(got):
        np.testing.assert_array_equal(result.indices, want[q % 16].indices)
        np.testing.assert_array_equal(result.scores, want[q % 16].scores)


def test_without_numba_large_indexes_fall_back_to_scipy(monkeypatch, caplog):
    monkeypatch.setattr(inverted, "KERNEL_MIN_DOCS", 0)
    monkeypatch.setattr(kernel_search, "_KERNEL", [])
    monkeypatch.setitem(__import__("sys").modules, "mlsr.index.kernels", None)  # import fails as if numba were missing
    index = SparseIndex.build(skewed(120, seed=27))
    with caplog.at_level("WARNING", logger="mlsr.index.kernel_search"):
        check(index, skewed(5, seed=28), 10)
    assert "numba is not available" in caplog.text  # monkeypatch restores the real kernel afterwards
