"""How document weights are stored: float32 exactly, float16 rounded, uint8 impacts with a scale per term and block;
building from row chunks; what the layout costs in bytes."""

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.index import blocks
from mlsr.index.sparse import SparseIndex
from tests.index.test_search_fast import VOCAB, brute_force, skewed


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


def impact_scales(docs: sp.csr_matrix, block_size: int) -> np.ndarray:
    """The scale the docstring promises: float32 max weight of each term in each block / 255."""
    dense = docs.toarray()
    n_blocks = -(-dense.shape[0] // block_size)
    maxima = np.stack([dense[b * block_size : (b + 1) * block_size].max(axis=0) for b in range(n_blocks)])
    return maxima.astype(np.float32) / np.float32(255)


def test_impacts_are_within_half_a_scale_step_of_each_weight(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_DOCS", 64)
    docs = skewed(300, seed=30)
    index = SparseIndex.build(docs, precision="uint8")
    scales = impact_scales(docs, 64)
    np.testing.assert_array_equal(index.inverted.scales, scales)
    step = np.repeat(scales, 64, axis=0)[:300]  # each row's block scale, per term
    stored, original = index.vectors.toarray(), docs.toarray()
    assert (np.abs(stored - original) <= step / 2 * (1 + 2.0**-20) + 1e-30).all()
    assert ((stored == 0) == ((original == 0) | (original < step / 2 * (1 + 2.0**-20)))).all()  # only those under half a step drop
    impacts = stored[stored > 0] / step[stored > 0]
    np.testing.assert_allclose(impacts, np.rint(impacts), atol=1e-4)  # stored = scale * a whole impact 1..255
    assert impacts.max() == pytest.approx(255)
    assert index.inverted.weights.dtype == np.uint8 and index.inverted.docs.dtype == np.uint16


def test_impact_scores_stay_within_the_quantization_bound_and_keep_recall(monkeypatch):
    """Score error <= sum over terms of |query weight| * scale / 2; the top 10 are nearly those of float32."""
    monkeypatch.setattr(blocks, "BLOCK_DOCS", 512)
    docs = skewed(2000, seed=31, per_row=40)
    queries = skewed(40, seed=32, per_row=12, common=())
    quantized = SparseIndex.build(docs, precision="uint8")
    exact = (queries @ docs.T).toarray()
    step = np.repeat(impact_scales(docs, 512), 512, axis=0)[:2000]
    bound = (abs(queries) @ (step / 2).T) * (1 + 2.0**-18) + 1e-5 * np.abs(exact) + 1e-6
    assert (np.abs((queries @ quantized.vectors.T).toarray() - exact) <= bound).all()
    _, truth = brute_force(queries, docs, 10)
    found = quantized.search(queries, 10).indices
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found.tolist(), truth.tolist())])
    assert recall >= 0.97


def test_impacts_need_non_negative_document_weights_and_leave_the_caller_matrix_alone():
    docs = skewed(50, seed=33, negative=True)
    before = docs.copy()
    with pytest.raises(InputError, match="uint8 impacts need document weights >= 0"):
        SparseIndex.build(docs, precision="uint8")
    assert (docs != before).nnz == 0
    with pytest.raises(InputError, match="precision must be one of"):
        SparseIndex.build(docs, precision="int4")


def test_weights_beyond_float16_keep_float32():
    docs = sp.csr_matrix(np.array([[1e5, 0, 1.0], [0, 2.0, 0]], dtype=np.float32))
    index = SparseIndex.build(docs)
    assert index.precision == "float32"
    np.testing.assert_array_equal(index.vectors.toarray(), docs.toarray())


def test_a_chunk_beyond_float16_turns_the_rest_to_float32(monkeypatch, caplog):
    monkeypatch.setattr(blocks, "BLOCK_DOCS", 4)
    first = sp.csr_matrix(np.full((4, 3), 0.1, dtype=np.float32))  # 0.1 is not a float16: it rounds
    second = sp.csr_matrix(np.array([[1e5, 0, 0.1]], dtype=np.float32))
    with caplog.at_level("WARNING"):
        index = SparseIndex.build([first, second])
    assert index.precision == "float32" and "float16's range" in caplog.text
    stored = index.vectors.toarray()
    np.testing.assert_array_equal(stored[:4], np.float32(np.float16(0.1)))  # already rounded, widened exactly
    np.testing.assert_array_equal(stored[4], [1e5, 0, np.float32(0.1)])


@pytest.mark.parametrize("precision", ["uint8", "float16", "float32"])
def test_row_chunks_build_the_same_index_as_one_matrix(monkeypatch, precision):
    monkeypatch.setattr(blocks, "BLOCK_DOCS", 64)
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 0)
    docs = skewed(300, seed=34)
    cuts = [0, 1, 64, 128, 228, 300]  # chunks that straddle blocks, one of a single row
    chunks = [docs[a:b] for a, b in zip(cuts, cuts[1:])]
    chunks[2] = chunks[2].tocoo()  # any scipy sparse format
    copies = [chunk.copy() for chunk in chunks]
    whole = SparseIndex.build(docs, precision=precision)
    chunked = SparseIndex.build(iter(chunks), precision=precision)
    for name in ("indptr", "docs", "weights", "scales", "dense_indptr", "dense_terms", "dense_weights"):
        np.testing.assert_array_equal(getattr(chunked.inverted, name), getattr(whole.inverted, name))
    assert len(chunked) == 300 and [item["id"] for item in chunked.items] == [str(i) for i in range(300)]
    assert all((chunk != copy).nnz == 0 for chunk, copy in zip(chunks, copies))  # the caller's chunks unchanged


def test_bad_row_chunks_are_refused():
    with pytest.raises(InputError, match="no document vectors"):
        SparseIndex.build(iter([]))
    with pytest.raises(InputError, match="must all have 500 columns"):
        SparseIndex.build([skewed(3, seed=35), sp.csr_matrix((2, 400), dtype=np.float32)])
    with pytest.raises(InputError, match="scipy sparse matrix, or an iterable"):
        SparseIndex.build(np.ones((2, 3), dtype=np.float32))
    with pytest.raises(InputError, match="items for 5 vectors"):
        SparseIndex.build([skewed(3, seed=36), skewed(2, seed=37)], items=[{"id": "a"}])


def test_dense_columns_keep_a_block_within_its_byte_budget():
    n = 10_000
    counts = np.array([9000, 5000, 3400, 2500, 2000, 1600, 1000, 10] + [100] * 200)
    chosen = blocks.dense_columns(counts, n, weight_bytes=1)
    assert {0, 1, 2} <= set(chosen.tolist())  # a third or more: always a column (never larger than the list)
    assert 6 not in chosen and 7 not in chosen  # below FAST_DENSE_SHARE: always a list
    sparse = np.setdiff1d(np.arange(len(counts)), chosen)
    assert (3 * counts[sparse].sum() + n * len(chosen)) / counts.sum() <= 3 * blocks.DENSE_BYTES_FACTOR
    few = np.array([3400, 1600, 1500] + [1] * 10)  # few postings elsewhere: 15-33% terms would cost too much
    assert blocks.dense_columns(few, n, weight_bytes=1).tolist() == [0]


def test_bytes_read_counts_each_query_term_postings(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_DOCS", 64)
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 0)
    index = SparseIndex.build(skewed(300, seed=38), precision="uint8")
    inverted = index.inverted
    segments = np.diff(inverted.indptr).reshape(inverted.n_blocks, VOCAB)

    def cost(term):  # 3 bytes per listed posting, a byte per row of a column, two offsets and a scale per block
        columns = sum(inverted.block_rows(b) for b in inverted.dense_blocks[inverted.dense_terms == term])
        return 3 * int(segments[:, term].sum()) + columns + inverted.n_blocks * (8 + 8 + 4)

    rare = int(np.argmin(np.where(segments.sum(axis=0) > 0, segments.sum(axis=0), 10**9)))
    dense = int(inverted.dense_terms[0])
    queries = sp.csr_matrix(([1.0, 1.0, 2.0], ([0, 2, 2], [rare, rare, dense])), shape=(3, VOCAB), dtype=np.float32)
    assert inverted.bytes_read(queries).tolist() == [cost(rare), 0, cost(rare) + cost(dense)]
    assert cost(dense) > cost(rare) > 0
