"""The index's smaller contracts at their edges, against hand-written values: the dense baseline (empty, k = 1,
dtypes, what it refuses), an index with no rows, negative weights, row reads across blocks, placing rows,
pictures, the models check and the bytes a search reads (mutation testing found these unchecked)."""

from __future__ import annotations

import logging
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.errors import IndexMismatchError, InputError
from mlsr.index import blocks
from mlsr.index.dense import DenseIndex
from mlsr.index.inverted import InvertedIndex
from mlsr.index.rows import place_rows
from mlsr.index.sparse import SparseIndex
from mlsr.index.thumbnails import Thumbnails
from mlsr.models.record import ModelRecord
from mlsr.vocab import Vocabulary
from tests.index.conftest import use_small_blocks


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 4 rows, and dense columns in blocks of any size (the real knobs, made small)."""
    use_small_blocks(monkeypatch, 4)


# -- the dense baseline -------------------------------------------------------------------------------------------

def test_dense_k_one_is_the_single_best_row_as_float32_and_int64():
    docs = np.array([[1, 0], [0, 1], [0.6, 0.8]], dtype=np.float32)
    got = DenseIndex(docs).search(np.array([[0.0, 1.0]]), 1)  # float64 queries are taken as float32
    assert got.scores.dtype == np.float32 and got.indices.dtype == np.int64
    assert got.indices.tolist() == [[1]] and got.scores.tolist() == [[1.0]]
    two = DenseIndex(docs).search(np.array([[0.0, 1.0]]), 2)
    assert two.indices.tolist() == [[1, 2]] and two.scores.dtype == np.float32 and two.indices.dtype == np.int64
    np.testing.assert_allclose(two.scores, [[1.0, 0.8]], rtol=1e-6)


def test_dense_search_gives_ten_hits_by_default():
    docs = np.eye(12, dtype=np.float32)[::-1] * (1 + np.arange(12, dtype=np.float32))[:, None]  # row r: 12 - r at r
    got = DenseIndex(docs).search(np.ones(12))
    assert got.indices.tolist() == [list(range(11, 1, -1))] and got.scores[0].tolist() == list(range(12, 2, -1))


def test_a_dense_index_of_integer_vectors_ranks_like_their_float_copy():
    ints = np.array([[3, 0, 1], [0, 2, 2], [1, 2, 0]], dtype=np.int64)
    got = DenseIndex(ints).search(np.array([[0, 1, 1]], dtype=np.int32), 3)  # scores 1, 4, 2 by hand
    assert got.indices.tolist() == [[1, 2, 0]] and got.scores.tolist() == [[4.0, 2.0, 1.0]]


def test_an_empty_dense_index_answers_every_query_with_no_hits():
    index = DenseIndex(np.zeros((0, 4), dtype=np.float32))
    assert len(index) == 0
    got = index.search(np.ones((3, 4)), 5)
    assert got.scores.shape == got.indices.shape == (3, 0)
    assert got.scores.dtype == np.float32 and got.indices.dtype == np.int64


@pytest.mark.parametrize("bad, message", [
    (np.ones((2, 3), dtype=np.complex64), "dense vectors must hold real numbers, not complex64"),
    (np.array([["a", "b"]]), "dense vectors must hold real numbers"),
    (np.ones((2, 3), dtype=bool), "dense vectors must hold real numbers, not bool"),
    (np.ones(3, dtype=np.float32), r"dense vectors must be 2-D \(n, d\), got shape \(3,\)"),
    (np.array([[1.0, np.nan]]), "dense vectors hold NaN or infinite values"),
    (np.array([[1e300, 0.0]]), "dense vectors hold NaN or infinite values"),  # finite in float64, not in float32
])
def test_bad_dense_vectors_are_refused_by_name_without_a_warning(bad, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=message):
            DenseIndex(bad)


@pytest.mark.parametrize("bad, message", [
    (np.ones((1, 2), dtype=np.complex128), "dense queries must hold real numbers"),
    (np.array([[np.inf, 0.0]]), "dense queries hold NaN or infinite values"),
    (np.ones((1, 1, 2)), "dense queries must be 2-D"),
])
def test_bad_dense_queries_are_refused_by_name(bad, message):
    with pytest.raises(InputError, match=message):
        DenseIndex(np.eye(2, dtype=np.float32)).search(bad, 1)


def test_without_faiss_the_dense_index_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    with pytest.raises(ImportError, match="^dense search needs FAISS: pip install faiss-cpu$"):
        DenseIndex(np.eye(2, dtype=np.float32))


# -- an index of no rows ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision, weight", [("float32", np.float32), ("float16", np.float16), ("uint8", np.uint8)])
def test_inverting_no_rows_gives_the_documented_empty_layout(precision, weight):
    empty = InvertedIndex.from_rows(iter([]), 5, precision, block_size=128)
    assert (empty.n_docs, empty.n_blocks, empty.vocab_size, empty.block_size, empty.nnz) == (0, 0, 5, 128, 0)
    layout = {"indptr": (np.int64, (1,)), "docs": (np.uint16, (0,)), "weights": (weight, (0,)),
              "scales": (np.float32, (0,)), "dense_indptr": (np.int64, (1,)), "dense_terms": (np.int32, (0,)),
              "dense_weights": (weight, (0, 128)), "dense_scales": (np.float32, (0, 2))}  # 128 rows: 2 groups of 64
    for name, (dtype, shape) in layout.items():
        array = getattr(empty, name)
        assert (array.dtype, array.shape) == (np.dtype(dtype), shape), name
    assert empty.indptr.tolist() == [0] and empty.dense_indptr.tolist() == [0] and empty.precision == precision


def test_removing_every_row_leaves_an_index_that_saves_loads_and_finds_nothing(tmp_path):
    index = SparseIndex.build(sp.csr_matrix(np.array([[1.0, 0, 2], [0, 3, 0]], dtype=np.float32)))
    empty = index.remove(["0", "1"])
    assert len(empty) == 0 and empty.items == [] and empty.nnz == 0 and empty.vectors.shape == (0, 3)
    empty.save(tmp_path / "empty")
    loaded = SparseIndex.load(tmp_path / "empty")
    assert len(loaded) == 0 and loaded.inverted.indptr.dtype == np.int64 and loaded.inverted.docs.dtype == np.uint16
    assert not loaded.has_negative_weights()


# -- negative weights ---------------------------------------------------------------------------------------------

def test_a_float16_build_turned_float32_keeps_its_dense_columns_float32(small_blocks, caplog):
    chunks = [sp.csr_matrix(np.ones((4, 3), dtype=np.float32)), sp.csr_matrix(np.full((2, 3), 70_000, np.float32))]
    index = SparseIndex.build(iter(chunks))  # the first block (all dense columns) was float16 when the second came
    assert index.precision == "float32" and len(index.inverted.dense_terms) == 6
    assert index.inverted.dense_weights.dtype == np.float32 and index.inverted.weights.dtype == np.float32
    np.testing.assert_array_equal(index.vectors.toarray(), np.vstack([np.ones((4, 3)), np.full((2, 3), 70_000)]))


def test_negative_weights_are_found_in_lists_and_in_dense_columns_and_nowhere_else(small_blocks):
    small = np.array([[0.25, 0.5, 0, 0], [0.5, 0, 0.125, 0], [0.75, 0, 0, 0.5], [0.5, 0, 0, 0]], dtype=np.float32)
    positive = SparseIndex.build(small, precision="float32")  # weights below 1; term 0 a dense column (zeros in it)
    assert len(positive.inverted.dense_terms) and not positive.has_negative_weights()
    listed = small.copy()
    listed[1, 2] = -0.125
    in_list = SparseIndex.build(listed, precision="float32")
    assert -0.125 in in_list.inverted.weights and in_list.has_negative_weights()
    column = small.copy()
    column[3, 0] = -0.5
    in_column = SparseIndex.build(column, precision="float32")
    assert -0.5 in in_column.inverted.dense_weights and in_column.has_negative_weights()


# -- reading rows, placing rows, pictures -------------------------------------------------------------------------

def test_rows_read_across_blocks_equal_the_matrix_rows(small_blocks):
    matrix = np.arange(1, 61, dtype=np.float32).reshape(10, 6) * (np.arange(60).reshape(10, 6) % 3 == 0)
    index = SparseIndex.build(matrix, precision="float32")
    assert index.inverted.block_size == 4 and index.inverted.n_blocks == 3  # 4 + 4 + 2 rows
    for rows in ([0], [9], [3, 4], [7, 8, 9, 0], list(range(10)), [5, 5]):
        got = index.rows(rows)
        assert got.shape == (len(rows), 6) and got.dtype == np.float32
        np.testing.assert_array_equal(got.toarray(), matrix[rows])
    assert index.rows([]).shape == (0, 6) and index.rows(np.array([], dtype=np.float64)).shape == (0, 6)
    for bad, message in (([10], r"rows must lie in 0\.\.9\."), ([-1], r"rows must lie in 0\.\.9\."),
                         ([True], "rows must be whole numbers, got bool"), ([1.0], "rows must be whole numbers")):
        with pytest.raises(InputError, match=message):
            index.rows(bad)


def test_rows_are_placed_at_their_positions_and_every_other_row_is_empty():
    rows = sp.csr_matrix(np.array([[1.0, 0, 2], [0, 3, 0]], dtype=np.float32))
    for at in ([4, 0], np.array([[4], [0]]), (np.uint8(4), np.uint8(0))):  # any shape or integer type of positions
        placed = place_rows(rows, at, 5)
        assert placed.shape == (5, 3) and placed.format == "csr" and placed.dtype == np.float32
        np.testing.assert_array_equal(placed.toarray(), [[0, 3, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0], [1, 0, 2]])
    with pytest.raises(InputError, match="^rows hold NaN"):
        place_rows(np.array([[np.nan, 0, 0]]), [0], 5)
    assert place_rows(sp.csr_matrix((0, 3), dtype=np.float32), [], 2).toarray().tolist() == [[0, 0, 0], [0, 0, 0]]
    for at, message in (([0], "1 positions for 2 rows: give one position per row."),
                        ([5, 0], r"positions must be distinct rows in 0\.\.4\."),
                        ([-1, 0], r"positions must be distinct rows in 0\.\.4\."),
                        ([1, 1], r"positions must be distinct rows in 0\.\.4\.")):
        with pytest.raises(InputError, match=f"^{message}$"):
            place_rows(rows, at, 5)


def test_pictures_are_read_by_row_and_an_index_without_thumbnails_has_none():
    vectors = sp.csr_matrix(np.eye(3, dtype=np.float32))
    index = SparseIndex.build(vectors, thumbnails=Thumbnails.from_pictures([b"RIFFfirst", None, b"RIFFlast"]))
    assert [index.picture(row) for row in range(3)] == [b"RIFFfirst", None, b"RIFFlast"]
    assert SparseIndex.build(vectors).picture(2) is None
    rest = index.remove(["1", "0"])
    assert len(rest) == 1 and rest.picture(0) == b"RIFFlast" and index.picture(0) == b"RIFFfirst"
    assert rest.remove(["2"]).thumbnails is not None and len(rest.remove(["2"]).thumbnails) == 0
    with pytest.raises(InputError, match=r"row 3 is outside the index \(0\.\.2\)"):
        index.picture(3)


# -- the models check ---------------------------------------------------------------------------------------------

def record(vocab_sha: str | None, size: int = 3) -> ModelRecord:
    models = {"head": {"id": "h", "fingerprint": "aaa"}, "backbone": {"id": "b", "fingerprint": "b"}}
    return ModelRecord.from_json({"vocab_sha256": vocab_sha, "vocab_size": size, **models})


def test_the_models_check_names_the_index_and_warns_only_when_it_records_none(tmp_path, caplog):
    vocab = Vocabulary(["a", "b", "c"])
    bare = SparseIndex.build(np.eye(3, dtype=np.float32), vocab=vocab)
    with caplog.at_level(logging.WARNING, logger="mlsr.index.sparse"):
        bare.check_models(record(vocab.sha256))
    assert [r.getMessage() for r in caplog.records] == [
        "the index records no models: only its vocabulary can be checked against the loaded ones"]
    with pytest.raises(IndexMismatchError, match="^the index was built with another vocabulary"):
        bare.check_models(record("0" * 64))
    recorded = SparseIndex.build(np.eye(3, dtype=np.float32), vocab=vocab,
                                 info={"models": record(vocab.sha256).to_json()})
    recorded.save(tmp_path / "idx")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mlsr.index.sparse"):
        SparseIndex.load(tmp_path / "idx").check_models(record(vocab.sha256))
    assert caplog.records == []
    with pytest.raises(IndexMismatchError, match=f"^index {tmp_path / 'idx'} was built with another vocabulary"):
        SparseIndex.load(tmp_path / "idx").check_models(record("0" * 64))
    no_vocab = SparseIndex.build(np.eye(3, dtype=np.float32), info={"models": record(None).to_json()})
    no_vocab.check_models(record("f" * 64))  # no vocabulary kept: only the size can be compared, and it fits
    with pytest.raises(IndexMismatchError, match="^the index has 3 terms, the loaded head scores 4"):
        no_vocab.check_models(record("f" * 64, size=4))


def test_queries_of_another_width_are_told_to_use_the_index_vocabulary():
    index = SparseIndex.build(np.eye(3, dtype=np.float32))
    message = ("^queries have 4 columns but the index has 3 terms; encode them with the vocabulary the index was"
               " built with.$")
    for call in (lambda q: index.search(q, 1), lambda q: index.score(q, [0])):
        with pytest.raises(InputError, match=message):
            call(np.ones((1, 4), dtype=np.float32))


# -- bytes a search reads -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("precision, weight_bytes, scale", [("float32", 4, 0), ("float16", 2, 0), ("uint8", 1, 4)])
def test_bytes_read_per_query_by_hand(small_blocks, monkeypatch, precision, weight_bytes, scale):
    # 6 rows in blocks of 4 (rows 0-3, 4-5): term 0 in rows 0-4, term 2 in row 5, term 1 nowhere
    matrix = np.zeros((6, 3), dtype=np.float32)
    matrix[:5, 0] = 1.0
    matrix[5, 2] = 2.0
    queries = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]], dtype=np.float32))
    offsets = 2 * 2 * 8  # per query term, in each of the two blocks: its list's int64 start and end
    # every term common in its block is a dense column there: term 0 in both (4 of 4 rows, 1 of 2), term 2 in block 1
    columns = SparseIndex.build(matrix, precision=precision).inverted
    assert list(zip(columns.dense_blocks.tolist(), columns.dense_terms.tolist())) == [(0, 0), (1, 0), (1, 2)]
    per_row = weight_bytes + scale / 64  # a weight per row of the block, a float32 scale per 64 rows (uint8)
    want = [6 * per_row + offsets, offsets, 2 * per_row + offsets, 8 * per_row + 2 * offsets, 0.0]
    got = columns.bytes_read(queries)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want)
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 10**9)  # every term a posting list
    lists = SparseIndex.build(matrix, precision=precision).inverted
    assert len(lists.dense_terms) == 0 and len(lists.docs) == 6
    per_posting = 2 + weight_bytes + scale / 32  # a uint16 row, a weight, a float32 scale per 32 postings (uint8)
    want = [5 * per_posting + offsets, offsets, per_posting + offsets, 6 * per_posting + 2 * offsets, 0.0]
    np.testing.assert_allclose(lists.bytes_read(queries), want)


def test_a_sparse_matrix_with_unsound_arrays_is_refused_as_bad_input():
    """Arrays set by hand after construction (scipy checks them only then): once a scipy ValueError (a traceback
    for the user), now an InputError naming the queries or the documents."""
    index = SparseIndex.build(np.eye(3, dtype=np.float32), precision="float32")
    late_start = sp.csr_matrix(np.array([[1, 1, 0]], dtype=np.float32))
    late_start.indptr = np.array([1, 2], dtype=late_start.indptr.dtype)  # the row starts after its first entry
    short_data = sp.csr_matrix(np.array([[1, 1, 0]], dtype=np.float32))
    short_data.data = np.array([1.0], dtype=np.float32)  # one weight for two terms
    for bad in (late_start, short_data):
        with pytest.raises(InputError, match="^queries are not a sound sparse matrix: "):
            index.search(bad, 2)
        with pytest.raises(InputError, match="^document vectors are not a sound sparse matrix: "):
            SparseIndex.build(bad)
