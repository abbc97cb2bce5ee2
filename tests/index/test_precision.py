"""How document weights are stored: float32 exactly, float16 rounded, uint8 impacts with a scale per group of 32 postings;
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


def posting_scales(inverted) -> np.ndarray:
    """(n, vocab) float32: the scale of every stored uint8 weight, read from the layout (0 where none is stored)."""
    steps = np.zeros((inverted.n_docs, inverted.vocab_size), dtype=np.float32)
    for b in range(inverted.n_blocks):
        lo, hi = inverted.block_starts[b], inverted.block_starts[b + 1]
        terms = np.repeat(np.arange(VOCAB), np.diff(inverted.indptr[b * VOCAB : (b + 1) * VOCAB + 1]))
        rows = inverted.docs[lo:hi].astype(np.int64) + b * inverted.block_size
        steps[rows, terms] = inverted.scales[inverted.scale_starts[b] + np.arange(hi - lo) // 32]
        for j in range(inverted.dense_indptr[b], inverted.dense_indptr[b + 1]):
            size = inverted.block_rows(b)
            rows = b * inverted.block_size + np.arange(size)
            steps[rows, inverted.dense_terms[j]] = np.repeat(inverted.dense_scales[j], 64)[:size]
    return steps


def test_impacts_are_within_half_a_scale_step_of_each_weight(monkeypatch):
    """Scale = max / 255 of each group of 32 consecutive postings of a block (64 rows of a column): recomputed here."""
    monkeypatch.setattr(blocks, "BLOCK_DOCS", 64)
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 0)
    docs = skewed(300, seed=30)
    inverted = SparseIndex.build(docs, precision="uint8").inverted
    original = docs.toarray()
    assert len(inverted.dense_terms) and inverted.weights.dtype == np.uint8 and inverted.docs.dtype == np.uint16
    for b in range(inverted.n_blocks):
        lo, hi = inverted.block_starts[b], inverted.block_starts[b + 1]
        terms = np.repeat(np.arange(VOCAB), np.diff(inverted.indptr[b * VOCAB : (b + 1) * VOCAB + 1]))
        listed = original[inverted.docs[lo:hi].astype(np.int64) + 64 * b, terms]
        want = np.maximum.reduceat(listed, np.arange(0, hi - lo, 32)) / np.float32(255)
        np.testing.assert_array_equal(inverted.scales[inverted.scale_starts[b] : inverted.scale_starts[b + 1]], want)
        for j in range(inverted.dense_indptr[b], inverted.dense_indptr[b + 1]):
            column = np.zeros(64, dtype=np.float32)
            column[: inverted.block_rows(b)] = original[64 * b : 64 * (b + 1), inverted.dense_terms[j]]
            np.testing.assert_array_equal(inverted.dense_scales[j], column.max(keepdims=True) / np.float32(255))
    steps = posting_scales(inverted)
    stored = inverted.to_csr().toarray()
    assert inverted.nnz == docs.nnz  # no weight here is under half its group's step: all are kept
    assert (np.abs(stored - original) <= steps / 2 * (1 + 2.0**-20)).all()
    impacts = stored[stored > 0] / steps[stored > 0]
    np.testing.assert_allclose(impacts, np.rint(impacts), atol=1e-4)  # stored = scale * a whole impact 1..255
    assert impacts.max() == pytest.approx(255)


def test_an_impact_that_rounds_to_zero_is_dropped_and_its_group_formed_again():
    weights = np.full(40, 1.0, dtype=np.float32)
    weights[5] = 1e-4  # under half of 1 / 255: impact 0
    docs = sp.csr_matrix((weights, (np.arange(40), np.zeros(40, dtype=int))), shape=(40, 3))
    inverted = SparseIndex.build(docs, precision="uint8").inverted
    assert len(inverted.docs) == 39 and 5 not in inverted.docs.tolist()
    assert inverted.weights.min() == 255 and len(inverted.scales) == 2  # 39 postings: groups of 32 and 7
    np.testing.assert_array_equal(inverted.to_csr().toarray()[:, 0], np.where(np.arange(40) == 5, 0, np.float32(1 / 255) * 255))


def test_impact_scores_stay_within_the_quantization_bound_and_keep_recall(monkeypatch):
    """Score error <= sum over terms of |query weight| * scale / 2; the top 10 are nearly those of float32."""
    monkeypatch.setattr(blocks, "BLOCK_DOCS", 512)
    docs = skewed(2000, seed=31, per_row=40)
    queries = skewed(40, seed=32, per_row=12, common=())
    quantized = SparseIndex.build(docs, precision="uint8")
    assert quantized.nnz == docs.nnz
    exact = (queries @ docs.T).toarray()
    bound = (abs(queries) @ (posting_scales(quantized.inverted) / 2).T) * (1 + 2.0**-18) + 1e-5 * np.abs(exact) + 1e-6
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
    for name in ("indptr", "docs", "weights", "scales", "dense_indptr", "dense_terms", "dense_weights", "dense_scales"):
        np.testing.assert_array_equal(getattr(chunked.inverted, name), getattr(whole.inverted, name))
    assert len(chunked) == 300 and [item["id"] for item in chunked.items] == [str(i) for i in range(300)]
    assert all((chunk != copy).nnz == 0 for chunk, copy in zip(chunks, copies))  # the caller's chunks unchanged


def test_bad_row_chunks_are_refused():
    with pytest.raises(InputError, match="no document vectors"):
        SparseIndex.build(iter([]))
    with pytest.raises(InputError, match="must all have 500 columns"):
        SparseIndex.build([skewed(3, seed=35), sp.csr_matrix((2, 400), dtype=np.float32)])
    with pytest.raises(InputError, match="scipy sparse matrix or a 2-D array, or an iterable"):
        SparseIndex.build("not vectors")
    array = np.ones((2, 3), dtype=np.float32)  # a 2-D array is one matrix, not two row chunks
    assert len(SparseIndex.build(array)) == 2 and (array == 1).all()
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
    for count, chosen in ((1500, [0]), (1499, [])):  # exactly FAST_DENSE_SHARE (0.15) of the rows, and one less
        assert blocks.dense_columns(np.array([count] + [100] * 200), n, weight_bytes=1).tolist() == chosen


def test_bytes_read_counts_each_query_term_postings(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_DOCS", 64)
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 0)
    index = SparseIndex.build(skewed(300, seed=38), precision="uint8")
    inverted = index.inverted
    segments = np.diff(inverted.indptr).reshape(inverted.n_blocks, VOCAB)

    def cost(term):  # a listed posting: 3 bytes + 4 of scale per 32; a column row: 1 + 4 per 64; two offsets a block
        columns = sum(inverted.block_rows(b) for b in inverted.dense_blocks[inverted.dense_terms == term])
        return (3 + 4 / 32) * int(segments[:, term].sum()) + (1 + 4 / 64) * columns + inverted.n_blocks * (8 + 8)

    rare = int(np.argmin(np.where(segments.sum(axis=0) > 0, segments.sum(axis=0), 10**9)))
    dense = int(inverted.dense_terms[0])
    queries = sp.csr_matrix(([1.0, 1.0, 2.0], ([0, 2, 2], [rare, rare, dense])), shape=(3, VOCAB), dtype=np.float32)
    assert inverted.bytes_read(queries).tolist() == [cost(rare), 0, cost(rare) + cost(dense)]
    assert cost(dense) > cost(rare) > 0


def test_a_collection_smaller_than_a_block_gets_a_block_of_its_size(monkeypatch):
    """Dense columns are a block long: the app's 5k-image gallery must not carry columns of 65,536 rows."""
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 0)
    docs = skewed(300, seed=39)
    for vectors in (docs, [docs[:100], docs[100:]]):
        inverted = SparseIndex.build(vectors, precision="uint8").inverted
        assert inverted.block_size == 300 and inverted.n_blocks == 1
        assert len(inverted.dense_terms) and inverted.dense_weights.shape[1] == 300
        assert inverted.dense_scales.shape[1] == 5  # ceil(300 / 64)
        assert inverted.nbytes / inverted.nnz < 4
    monkeypatch.setattr(blocks, "BLOCK_DOCS", 256)
    assert SparseIndex.build(docs).inverted.block_size == 256  # two blocks: the block size stays


def test_document_chunks_are_named_in_their_errors_and_float16_overflow_is_logged(caplog):
    nan = sp.csr_matrix(np.array([[np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(InputError) as raised:
        SparseIndex.build([sp.csr_matrix(np.ones((1, 2), np.float32)), nan])  # row chunks
    assert str(raised.value) == ("document vectors hold NaN, infinite or out-of-range weights (float32 holds |w| up to"
                                 " 3.4e38).")
    with caplog.at_level("WARNING", logger="mlsr.index.sparse"):
        index = SparseIndex.build(np.array([[70_000.0, 1.0]], dtype=np.float32))  # float16's largest is 65,504
    assert index.precision == "float32"
    assert [record.getMessage() for record in caplog.records] == [
        "document weights exceed float16's range (65504): storing float32"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="mlsr.index.inverted"):  # row chunks: found while inverting them
        chunked = SparseIndex.build([sp.csr_matrix(np.ones((1, 2), np.float32)),
                                     sp.csr_matrix(np.array([[70_000.0, 1.0]], dtype=np.float32))])
    assert chunked.precision == "float32"
    assert [record.getMessage() for record in caplog.records] == [
        "document weights exceed float16's range (65504): storing float32"]


@pytest.mark.parametrize("array, dtype", [(np.array([[1 + 2j, 0]]), "complex128"), (np.array([["a", "b"]]), "<U1")])
def test_vectors_of_numbers_that_are_not_real_are_refused_by_type(array, dtype):
    with pytest.raises(InputError) as raised:
        SparseIndex.build(array)
    assert str(raised.value) == f"document vectors must hold real numbers, not {dtype}."

