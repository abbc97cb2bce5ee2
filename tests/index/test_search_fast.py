"""The fast search paths (compiled kernel split over document ranges, dense columns for common terms,
scipy for small indexes) against brute force: a full stable sort of `queries @ docs.T`."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from tests.helpers.data import write_format1_index, write_manifest
from mlsr.index import inverted
from mlsr.index.folder import MANIFEST_FILE, POSTING_FILES
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


@pytest.fixture(params=["scipy", "kernel-1-part", "kernel-3-parts"])
def path(request, monkeypatch):
    """Which search path runs: scipy, or the compiled kernel on one or three document ranges (with dense columns)."""
    if request.param != "scipy":
        # numba is a requirement: without it these cases would search with scipy, so fail rather than skip them
        assert inverted._kernel() is not None, "the compiled kernel cannot be imported: install numba (requirements.txt)"
        monkeypatch.setattr(inverted, "KERNEL_MIN_DOCS", 0)
        monkeypatch.setattr(inverted, "DENSE_MIN_DOCS", 0)
        monkeypatch.setattr(inverted, "PART_MIN_DOCS", 1)
        monkeypatch.setenv("MLSR_SEARCH_THREADS", "1" if request.param == "kernel-1-part" else "3")
    else:
        monkeypatch.setattr(inverted, "KERNEL_MIN_DOCS", 10**12)
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
def test_random_skewed_collection(path, k):
    index = SparseIndex.build(skewed(300, seed=1))
    check(index, skewed(12, seed=2, per_row=8, common=()), k)


def test_common_terms_become_dense_columns_on_the_kernel_path(path):
    index = SparseIndex.build(skewed(200, seed=3))
    dense = set(index.inverted.dense_terms.tolist())
    assert ({0, 1, 2} <= dense) == (path != "scipy")
    check(index, skewed(6, seed=4, per_row=5), 10)


def test_many_ties_are_broken_by_row(path):
    index = SparseIndex.build(skewed(250, seed=5, levels=[0.5, 1.0]))  # exact binary fractions: real ties
    queries = skewed(10, seed=6, per_row=6, common=(0,), levels=[1.0, 2.0])
    got = check(index, queries, 40)
    assert any(len(set(row)) < len(row) for row in got.scores.tolist())  # the case is really there


def test_empty_query_and_a_term_in_every_document(path):
    index = SparseIndex.build(skewed(100, seed=7))
    empty = sp.csr_matrix((2, VOCAB), dtype=np.float32)
    got = check(index, empty, 5)
    assert got.indices.tolist() == [[0, 1, 2, 3, 4]] * 2 and not got.scores.any()
    everywhere = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, VOCAB), dtype=np.float32)
    check(index, everywhere, 100)


def test_negative_query_weights_rank_untouched_documents_by_row(path):
    docs = skewed(120, seed=8, negative=True)
    index = SparseIndex.build(docs)
    check(index, skewed(8, seed=9, per_row=6, common=(0, 1), negative=True), 30)
    # every document holds term 0, so a negative weight on it alone puts the lowest weights first
    check(index, sp.csr_matrix(([-1.0], ([0], [0])), shape=(1, VOCAB), dtype=np.float32), 120)


def test_one_item_and_no_item(path):
    one = SparseIndex.build(skewed(1, seed=10))
    check(one, skewed(3, seed=11), 5)
    none = SparseIndex.build(sp.csr_matrix((0, VOCAB), dtype=np.float32), [])
    got = none.search(skewed(2, seed=12), 5)
    assert got.scores.shape == got.indices.shape == (2, 0)


def test_batch_equals_one_by_one(path):
    index = SparseIndex.build(skewed(200, seed=13))
    queries = skewed(9, seed=14, per_row=10)
    batch = index.search(queries, 7)
    for q in range(9):
        single = index.search(queries[q], 7)
        np.testing.assert_array_equal(single.indices[0], batch.indices[q])
        np.testing.assert_array_equal(single.scores[0], batch.scores[q])


def test_score_explain_and_document_read_the_weights_search_uses(path):
    index = SparseIndex.build(skewed(150, seed=15), vocab=Vocabulary(tuple(f"t{i}" for i in range(VOCAB))))
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


def test_float16_weights_stay_within_the_stated_tolerance():
    """Each stored weight is its float32 value rounded to float16: relative error <= 2^-11 (normal range),
    so a score moves by at most 2^-11 * sum(|query weight * doc weight|) (+ float32 summation rounding)."""
    docs = skewed(300, seed=17)
    queries = skewed(20, seed=18, per_row=10, negative=True)
    half = SparseIndex.build(docs)
    full = SparseIndex.build(docs, precision="float32")
    assert half.precision == "float16" and full.precision == "float32"
    assert half.inverted.nbytes < full.inverted.nbytes
    np.testing.assert_array_equal(full.vectors.toarray(), docs.toarray())  # float32 keeps weights exactly
    relative = np.abs(half.vectors.toarray() - docs.toarray()) / np.maximum(np.abs(docs.toarray()), 1e-30)
    assert relative.max() <= 2.0**-11
    exact = (queries @ docs.T).toarray()
    bound = 2.0**-11 * (abs(queries) @ abs(docs).T).toarray() + 1e-5 * np.abs(exact) + 1e-6
    assert (np.abs((queries @ half.vectors.T).toarray() - exact) <= bound).all()
    top = half.search(queries, 10)
    assert (np.abs(top.scores - np.take_along_axis(exact, top.indices, 1)) <= np.take_along_axis(bound, top.indices, 1)).all()


def test_weights_beyond_float16_keep_float32():
    docs = sp.csr_matrix(np.array([[1e5, 0, 1.0], [0, 2.0, 0]], dtype=np.float32))
    index = SparseIndex.build(docs)
    assert index.precision == "float32"
    np.testing.assert_array_equal(index.vectors.toarray(), docs.toarray())


def test_save_then_memory_mapped_load_equals_in_memory(path, tmp_path):
    docs = skewed(300, seed=19)
    index = SparseIndex.build(docs, dense=np.random.default_rng(0).random((300, 8), dtype=np.float32))
    index.save(tmp_path / "idx")
    loaded = SparseIndex.load(tmp_path / "idx")
    assert isinstance(np.lib.format.open_memmap(tmp_path / "idx" / POSTING_FILES["docs"], mode="r"), np.memmap)
    assert not loaded.inverted.docs.flags.writeable  # read-only map, not a copy
    queries = skewed(7, seed=20, per_row=12)
    for got, want in zip(loaded.search(queries, 25), index.search(queries, 25)):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded.vectors.toarray(), index.vectors.toarray())
    in_memory = SparseIndex.load(tmp_path / "idx", mmap=False)
    np.testing.assert_array_equal(in_memory.search(queries, 25).indices, index.search(queries, 25).indices)


def test_format_1_folder_still_loads_with_its_float32_weights(path, tmp_path):
    docs = skewed(80, seed=21)
    vocab = Vocabulary(tuple(f"t{i}" for i in range(VOCAB)))
    items = [{"id": f"img{i}", "image": f"{i}.jpg", "captions": []} for i in range(80)]
    write_format1_index(tmp_path / "old", docs, items, vocab=vocab,
                        info={"documents": "image", "models": {"head": {"id": "h"}}})  # as mlsr wrote: both or neither
    loaded = SparseIndex.load(tmp_path / "old")
    assert loaded.precision == "float32" and loaded.items == items and loaded.info["documents"] == "image"
    np.testing.assert_array_equal(loaded.vectors.toarray(), docs.toarray())
    check(loaded, skewed(5, seed=22), 10)
    loaded.save(tmp_path / "new")  # re-saved in the current format, same results
    assert json.loads((tmp_path / "new" / MANIFEST_FILE).read_text())["format_version"] == 2
    again = SparseIndex.load(tmp_path / "new")
    np.testing.assert_array_equal(again.search(skewed(5, seed=22), 10).indices, loaded.search(skewed(5, seed=22), 10).indices)


@pytest.mark.parametrize("damage", ["row-out-of-range", "unsorted-list", "nan-weight", "offsets"])
def test_postings_that_would_mislead_the_kernel_are_refused(tmp_path, damage):
    """A consistent manifest over hostile arrays: the kernel must never index outside its arrays."""
    from mlsr.errors import IndexFormatError
    from mlsr._files import sha256_file

    SparseIndex.build(skewed(50, seed=23)).save(tmp_path / "idx")
    folder = tmp_path / "idx"
    name = POSTING_FILES["weights" if damage == "nan-weight" else "indptr" if damage == "offsets" else "docs"]
    array = np.load(folder / name)
    if damage == "row-out-of-range":
        array[5] = 10_000
    elif damage == "unsorted-list":
        start = np.load(folder / POSTING_FILES["indptr"])[0]
        array[start], array[start + 1] = array[start + 1], array[start]
    elif damage == "nan-weight":
        array[3] = np.nan
    else:
        array[10] = array[-1] + 5
    np.save(folder / name, array)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"][name] = {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
    write_manifest(folder, manifest)
    with pytest.raises(IndexFormatError, match="rebuild the index"):
        SparseIndex.load(folder)


@pytest.mark.parametrize("damage", ["duplicate-id", "broken-line", "merged-lines", "not-an-object"])
def test_bad_items_in_a_loaded_index_are_refused(tmp_path, damage):
    from mlsr.errors import IndexFormatError
    from mlsr._files import sha256_file

    SparseIndex.build(skewed(3, seed=24)).save(tmp_path / "idx")
    folder = tmp_path / "idx"
    lines = {
        "duplicate-id": ['{"id": "a"}', '{"id": "a"}', '{"id": "b"}'],
        "broken-line": ['{"id": "a"}', '{"id": ', '{"id": "b"}'],
        "merged-lines": ['{"id": "a"', '"x": 1}', '{"id": "b"}'],  # valid only if lines were glued together
        "not-an-object": ['{"id": "a"}', '["b"]', '{"id": "c"}'],
    }[damage]
    (folder / "items.jsonl").write_text("\n".join(lines) + "\n")
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"]["items.jsonl"] = {"bytes": (folder / "items.jsonl").stat().st_size,
                                        "sha256": sha256_file(folder / "items.jsonl")}
    write_manifest(folder, manifest)
    with pytest.raises(IndexFormatError, match="unique|cannot be read"):
        SparseIndex.load(folder)


def test_dense_columns_keep_the_index_within_6_bytes_per_posting():
    n = 10_000
    counts = np.array([9000, 5000, 3400, 2500, 2000, 1600, 1000, 10] + [100] * 200)
    chosen = inverted._dense_terms(counts, n, weight_bytes=2)
    assert {0, 1, 2} <= set(chosen.tolist())  # a third or more: always a column (never larger than the list)
    assert 6 not in chosen and 7 not in chosen  # below FAST_DENSE_SHARE: always a list
    sparse = np.setdiff1d(np.arange(len(counts)), chosen)
    assert (6 * counts[sparse].sum() + 2 * n * len(chosen)) / counts.sum() <= 6.0
    few = np.array([3400, 2000, 1600] + [1] * 10)  # few postings elsewhere: 15-33% terms would cost > 6 bytes each
    assert inverted._dense_terms(few, n, weight_bytes=2).tolist() == [0]


def test_concurrent_searches_from_several_threads_agree(path):
    """The app runs requests in parallel: searches share the kernel's thread pool, each with its own buffers."""
    from concurrent.futures import ThreadPoolExecutor

    index = SparseIndex.build(skewed(300, seed=25))
    queries = skewed(16, seed=26, per_row=10)
    want = [index.search(queries[q], 10) for q in range(16)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda q: index.search(queries[q], 10), list(range(16)) * 4))
    for q, result in enumerate(got):
        np.testing.assert_array_equal(result.indices, want[q % 16].indices)
        np.testing.assert_array_equal(result.scores, want[q % 16].scores)


def test_without_numba_large_indexes_fall_back_to_scipy(monkeypatch, caplog):
    monkeypatch.setattr(inverted, "KERNEL_MIN_DOCS", 0)
    monkeypatch.setattr(inverted, "_KERNEL", [])
    monkeypatch.setitem(__import__("sys").modules, "mlsr.index.kernels", None)  # import fails as if numba were missing
    index = SparseIndex.build(skewed(120, seed=27))
    with caplog.at_level("WARNING", logger="mlsr.index.inverted"):
        check(index, skewed(5, seed=28), 10)
    assert "numba is not available" in caplog.text  # monkeypatch restores the real kernel afterwards
