"""The blocked inverted layout at block edges, against the matrix it was built from: collections of 1 row to a few
blocks of 4 (a block's first and last row, a last block of one row), dense columns and lists, explicit zeros,
every stored weight read back, the counts, which search path runs, and the threaded kernel's settings
(mutation testing found these unchecked)."""

from __future__ import annotations

import logging
import re
import sys
import threading
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.index import blocks, inverted, kernel_search
from mlsr.index.inverted import InvertedIndex
from mlsr.index.rows import query_arrays
from mlsr.index.sparse import SparseIndex
from tests.index.conftest import use_small_blocks

VOCAB = 6
BLOCK = 4


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 4 rows with dense columns allowed in them (the real knobs, made small)."""
    use_small_blocks(monkeypatch, BLOCK)


def matrix_of(n: int, seed: int = 0) -> np.ndarray:
    """n rows: term 0 in every row (a dense column in each block), term 1 in every third row, terms 2-5 sparse, weights
    exact in float16 (multiples of 1/8), the last row holding term 5 alone."""
    rng = np.random.default_rng(seed)
    matrix = np.zeros((n, VOCAB), dtype=np.float32)
    matrix[:, 0] = 1 + np.arange(n) / 8
    matrix[::3, 1] = 0.5
    sparse = rng.random((n, 4)) < 0.2
    matrix[:, 2:] = np.where(sparse, rng.integers(1, 16, (n, 4)) / 8, 0)
    matrix[n - 1] = 0
    matrix[n - 1, 5] = 2.0
    if n > BLOCK:
        matrix[BLOCK - 1] = 0  # the first block's last row holds nothing
    return matrix


@pytest.mark.parametrize("n", [1, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("precision", ["float32", "float16"])
@pytest.mark.parametrize("columns", [True, False], ids=["columns", "lists-only"])
def test_every_stored_weight_reads_back_at_block_edges(small_blocks, monkeypatch, n, precision, columns):
    if not columns:
        monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 10**9)  # every term a posting list, in every block
    matrix = matrix_of(n)
    index = SparseIndex.build(matrix, precision=precision).inverted
    assert index.block_size == (BLOCK if n > BLOCK else n) and index.n_blocks == -(-n // index.block_size)
    rows = np.arange(n)
    np.testing.assert_array_equal(index.weights_at(np.arange(VOCAB), rows), matrix.T)  # exact in float16 too
    np.testing.assert_array_equal(index.weights_at([5], [n - 1, n - 1]), [[2.0, 2.0]])  # a row asked twice
    for row in {0, n - 1, min(BLOCK, n - 1), min(BLOCK - 1, n - 1)}:
        terms, weights = index.document_from_lists(row)
        assert terms.dtype == np.int32 and terms.tolist() == np.flatnonzero(matrix[row]).tolist()
        assert weights.tolist() == matrix[row][matrix[row] != 0].tolist()
    for block in range(index.n_blocks):
        part = matrix[block * index.block_size : (block + 1) * index.block_size]
        term_major = index.block_term_major(block)
        assert term_major.shape == (VOCAB, len(part)) and term_major.has_sorted_indices
        np.testing.assert_array_equal(term_major.toarray(), part.T)
    np.testing.assert_array_equal(index.term_major().toarray(), matrix.T)
    np.testing.assert_array_equal(index.document_frequency(), (matrix != 0).sum(axis=0))
    assert index.nnz == np.count_nonzero(matrix)


def uint8_stored(matrix: np.ndarray, index: InvertedIndex) -> np.ndarray:
    """The weights uint8 stores, by the documented rule, for blocks of at most 32 listed postings and 64 rows: one
    scale per block's lists and one per dense column, scale = max / 255, stored = float32 scale * round(w / scale)."""
    stored = np.zeros_like(matrix)
    for block in range(index.n_blocks):
        part = matrix[block * BLOCK : (block + 1) * BLOCK]
        columns = index.dense_terms[index.dense_indptr[block] : index.dense_indptr[block + 1]]
        listed = np.ones(VOCAB, dtype=bool)
        listed[columns] = False
        groups = [part[:, listed]] + [part[:, [term]] for term in columns]
        where = [np.flatnonzero(listed)] + [[term] for term in columns]
        for values, terms in zip(groups, where):
            scale = np.float32(values.max() / np.float32(255)) if values.size else np.float32(0)
            impacts = np.rint(values / scale) if scale else np.zeros_like(values)
            stored[block * BLOCK : block * BLOCK + len(part), terms] = scale * impacts.astype(np.float32)
    return stored


@pytest.mark.parametrize("n", [1, 4, 5, 9])
@pytest.mark.parametrize("columns", [True, False], ids=["columns", "lists-only"])
def test_uint8_weights_read_back_as_scale_times_impact(small_blocks, monkeypatch, n, columns):
    if not columns:
        monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 10**9)  # every term a posting list: one scale group a block
    matrix = matrix_of(n)
    index = SparseIndex.build(matrix, precision="uint8").inverted
    want = uint8_stored(matrix, index)
    np.testing.assert_array_equal(index.weights_at(np.arange(VOCAB), np.arange(n)), want.T)
    for block in range(index.n_blocks):
        part = want[block * index.block_size : (block + 1) * index.block_size]
        np.testing.assert_array_equal(index.block_term_major(block).toarray(), part.T)
    np.testing.assert_array_equal(index.term_major().toarray(), want.T)


@pytest.mark.parametrize("n", [4, 5, 9])
def test_counts_of_lists_and_dense_columns_by_hand(small_blocks, n):
    matrix = matrix_of(n)
    index = SparseIndex.build(matrix, precision="float32").inverted
    sizes = [min(BLOCK, n - b * BLOCK) for b in range(index.n_blocks)]
    assert [index.block_rows(b) for b in range(index.n_blocks)] == sizes
    column_blocks = index.dense_blocks.tolist()
    assert [column_blocks.count(b) >= 1 for b in range(index.n_blocks)] == [True] * index.n_blocks  # term 0 each
    for j, (block, term) in enumerate(zip(column_blocks, index.dense_terms.tolist())):
        part = matrix[block * BLOCK : block * BLOCK + sizes[block], term]
        assert index.dense_counts[j] == np.count_nonzero(part)
    # a search reads a list's postings, and every row of its block for a dense column
    want = np.zeros(VOCAB)
    for block, size in enumerate(sizes):
        part = matrix[block * BLOCK : block * BLOCK + size]
        columns = index.dense_terms[index.dense_indptr[block] : index.dense_indptr[block + 1]]
        for term in range(VOCAB):
            want[term] += size if term in columns else np.count_nonzero(part[:, term])
    np.testing.assert_array_equal(index.term_postings, want)
    assert index.term_postings.dtype == np.float64
    assert index.nbytes == sum(getattr(index, name).nbytes for name in (
        "indptr", "docs", "weights", "scales", "dense_indptr", "dense_terms", "dense_weights", "dense_scales"))


def test_search_of_k_zero_or_no_queries_gives_empty_results(small_blocks):
    index = SparseIndex.build(matrix_of(5), precision="float32").inverted
    scores, rows = index.search(sp.csr_matrix(np.ones((2, VOCAB), dtype=np.float32)), 0)
    assert scores.shape == rows.shape == (2, 0) and scores.dtype == np.float32 and rows.dtype == np.int64
    scores, rows = index.search(sp.csr_matrix((0, VOCAB), dtype=np.float32), 3)
    assert scores.shape == rows.shape == (0, 3) and scores.dtype == np.float32 and rows.dtype == np.int64
    scores, rows = index.search(sp.csr_matrix(np.ones((1, VOCAB), dtype=np.float32)), 99)  # clamped to 5 rows
    assert rows.shape == (1, 5)
    with pytest.raises(InputError, match="^queries hold NaN"):
        index.search(sp.csr_matrix(np.array([[np.nan, 1, 0, 0, 0, 0]], dtype=np.float32)), 1)


@pytest.mark.parametrize("n_queries, at_once", [(1, 2), (2, 2), (3, 2), (5, 2), (6, 6), (7, 6), (13, 6)])
def test_the_scipy_path_in_score_blocks_of_any_size_equals_brute_force(monkeypatch, n_queries, at_once):
    matrix = matrix_of(9)
    index = SparseIndex.build(matrix, precision="float32")
    monkeypatch.setattr(inverted, "KERNEL_MIN_DOCS", 10**9)
    monkeypatch.setattr(inverted, "MAX_SCORE_BLOCK", at_once * 9)  # `at_once` queries' scores at a time
    queries = np.random.default_rng(n_queries).random((n_queries, VOCAB)).astype(np.float32).round(1)
    got = index.search(queries, 4)
    full = queries @ matrix.T
    for q in range(n_queries):
        want = sorted(range(9), key=lambda row: (-full[q, row], row))[:4]
        assert got.indices[q].tolist() == want
        np.testing.assert_allclose(got.scores[q], full[q, want], rtol=1e-6)


@pytest.mark.parametrize("n, k, path", [(7, 3, "scipy"), (8, 3, "kernel"), (8, 8, "kernel"), (2000, 1000, "kernel"),
                                        (2000, 1001, "scipy"), (16_016, 1001, "kernel"), (16_016, 1002, "scipy")])
def test_the_kernel_takes_large_indexes_and_k_up_to_a_sixteenth_of_them(monkeypatch, n, k, path):
    monkeypatch.setattr(inverted, "KERNEL_MIN_DOCS", 8)
    index = InvertedIndex.from_rows([sp.csr_matrix(np.eye(n, VOCAB, dtype=np.float32))], VOCAB, "float32")
    used = []
    monkeypatch.setattr(inverted, "kernel_search", lambda *args: used.append("kernel") or (None, None))
    monkeypatch.setattr(InvertedIndex, "_search_scipy", lambda self, q, k: used.append("scipy") or (None, None))
    index.search(sp.csr_matrix(np.ones((1, VOCAB), dtype=np.float32)), k)
    assert used == [path]


@pytest.mark.parametrize("setting, threads", [("3", 3), (" 2 ", 2), ("1", 1), ("0", None), ("-2", None), ("x", None),
                                              ("", None)])
def test_search_threads_come_from_the_setting_when_it_is_a_positive_number(monkeypatch, setting, threads):
    monkeypatch.setattr(kernel_search, "request_threads", lambda: 7)
    monkeypatch.setenv("MLSR_SEARCH_THREADS", setting)
    assert kernel_search.search_threads() == (threads or 7)


def test_a_search_is_split_only_when_each_part_gets_enough_work(small_blocks, monkeypatch):
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 10**9)  # every term a list: a term's postings are its rows
    matrix = matrix_of(9)
    index = SparseIndex.build(matrix, precision="float32").inverted
    two = query_arrays(sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0]], dtype=np.float32)))
    postings = np.count_nonzero(matrix[:, [0, 5, 1]])  # the rows holding the three query terms
    work = 2 * 9 * 0.5 + postings * 1.0  # ROW_NS per row and query, POSTING_NS per posting
    for part_work, parts in ((work + 1, 1), (work, 1), (work / 2, 2), (work / 3 + 0.5, 2), (work / 3, 3), (1, work)):
        monkeypatch.setattr(kernel_search, "PART_WORK_NS", part_work)
        assert kernel_search._worth_parts(index, two) == parts, part_work
    none = query_arrays(sp.csr_matrix((1, VOCAB), dtype=np.float32))  # no terms: only the rows' 9 * 0.5 ns
    for part_work, parts in ((10**9, 1), (4.5, 1), (2.75, 1), (2.25, 2)):
        monkeypatch.setattr(kernel_search, "PART_WORK_NS", part_work)
        assert kernel_search._worth_parts(index, none) == parts, part_work


def test_each_thread_keeps_one_scratch_buffer_that_only_grows():
    first = kernel_search._scratch(10)
    assert first.dtype == np.float32 and len(first) >= 10
    assert kernel_search._scratch(5) is first
    grown = kernel_search._scratch(len(first) + 1)
    assert len(grown) == len(first) + 1 and kernel_search._scratch(len(first)) is grown
    assert kernel_search._scratch(len(grown)) is grown  # exactly its size: kept


def test_without_numba_large_indexes_search_with_scipy_after_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(kernel_search, "_KERNEL", [])
    monkeypatch.setitem(sys.modules, "mlsr.index.kernels", None)  # `from mlsr.index.kernels import ...` fails
    monkeypatch.setattr(inverted, "KERNEL_MIN_DOCS", 0)
    matrix = matrix_of(9)
    index = SparseIndex.build(matrix, precision="float32")
    with caplog.at_level(logging.WARNING, logger="mlsr.index.kernel_search"):
        for _ in range(2):
            got = index.search(matrix[:1], 3)
    assert kernel_search.compiled_kernel() is None
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "numba is not available (import of mlsr.index.kernels halted; None in sys.modules)"]
    assert re.match(r"^numba is not available \(.*\): large indexes search with scipy, slower\. Install it: pip install"
                    r" -r requirements\.txt$", caplog.records[0].getMessage())
    full = matrix[0] @ matrix.T
    assert got.indices[0].tolist() == sorted(range(9), key=lambda row: (-full[row], row))[:3]


# -- uint8 quantization -------------------------------------------------------------------------------------------

def test_an_impact_of_one_is_kept_and_one_that_rounds_to_zero_is_dropped():
    impacts, scales, kept = blocks.quantize_lists(np.array([255.0, 1.0, 0.4, 0.6], dtype=np.float32))
    assert scales.dtype == np.float32 and scales.tolist() == [1.0]  # one group: max 255 / 255
    assert impacts.dtype == np.uint8 and impacts.tolist() == [255, 1, 1] and kept.tolist() == [0, 1, 3]


def test_lists_whose_groups_never_settle_stay_aligned_after_the_last_round():
    values = np.random.default_rng(0).lognormal(0, 2, 6000).astype(np.float32)  # heavy tails: > 8 rounds needed
    impacts, scales, kept = blocks.quantize_lists(values)
    assert not impacts.all()  # zeros were left: the last round was reached
    assert len(impacts) == len(kept) and len(scales) == -(-len(kept) // 32)
    group = np.arange(len(kept)) // 32
    assert (scales[group] * impacts - values[kept] <= scales[group] / 2 * (1 + 1e-6)).all()
    assert (values[kept] - scales[group] * impacts <= scales[group] / 2 * (1 + 1e-6)).all()
    assert scales.tolist() == [values[kept][32 * g : 32 * g + 32].max() / np.float32(255) for g in range(len(scales))]


@pytest.mark.parametrize("n", [1, 2, 6])
def test_uint8_scale_arrays_are_float32_even_without_lists(small_blocks, n):
    index = SparseIndex.build(np.ones((n, 3), dtype=np.float32), precision="uint8").inverted  # every term a column
    assert len(index.docs) == len(index.scales) == 0 and len(index.dense_terms) == 3 * index.n_blocks
    assert index.scales.dtype == index.dense_scales.dtype == np.float32 and index.weights.dtype == np.uint8
    assert index.dense_scales.shape == (3 * index.n_blocks, 1)  # blocks of at most 64 rows: one group per column


def test_impacts_are_rounded_clipped_to_0_255_and_0_where_the_scale_is_0():
    values = np.array([-3.0, 0.4, 0.5, 1.5, 254.6, 300.0, 0.0, 7.0], dtype=np.float32)
    scales = np.array([1, 1, 1, 1, 1, 1, 0, 0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0 / 0 is ever computed
        impacts = blocks.impacts_of(values, scales)
    assert impacts.dtype == np.uint8 and impacts.tolist() == [0, 0, 0, 2, 255, 255, 0, 0]  # halves to even


def test_a_vocabulary_of_one_term_searches_every_query(monkeypatch):
    monkeypatch.setattr(inverted, "KERNEL_MIN_DOCS", 10**9)
    index = SparseIndex.build(np.array([[1.0], [3.0], [0.0], [2.0]], dtype=np.float32), precision="float32")
    got = index.search(np.array([[1.0], [0.5], [2.0]], dtype=np.float32), 2)
    assert got.indices.tolist() == [[1, 3]] * 3 and got.scores.tolist() == [[3, 2], [1.5, 1], [6, 4]]


@pytest.mark.parametrize("blocks_of, threads, work, calls", [(None, 3, 1, 1), (4, 1, 1, 1), (4, 3, 1, 3), (8, 3, 1, 2),
                                                       (4, 9, 1, 3), (4, 3, 10**9, 1)])
def test_a_search_runs_in_at_most_as_many_parts_as_threads_blocks_and_work(monkeypatch, blocks_of, threads, work,
                                                                           calls):
    if blocks_of:
        monkeypatch.setattr(blocks, "BLOCK_DOCS", blocks_of)  # 10 rows: 3 blocks of 4, or 2 of 8
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 0)
    monkeypatch.setattr(kernel_search, "PART_WORK_NS", work)  # 1: every search worth splitting; 10**9: none
    monkeypatch.setenv("MLSR_SEARCH_THREADS", str(threads))
    matrix = matrix_of(10)
    index = SparseIndex.build(matrix, precision="float32").inverted
    kernel, parts = inverted._kernel(), []

    def counting(*args):
        parts.append((int(args[-6]), int(args[-5])))  # the blocks lo..hi it was given
        return kernel(*args)

    queries = query_arrays(sp.csr_matrix(matrix[[0, 9]]))
    scores, rows = kernel_search.kernel_search(index, counting, queries, 3)
    assert len(parts) == calls and sorted(parts) == [(b * index.n_blocks // calls, (b + 1) * index.n_blocks // calls)
                                                     for b in range(calls)]
    full = matrix[[0, 9]] @ matrix.T
    assert rows.tolist() == [sorted(range(10), key=lambda r: (-full[q, r], r))[:3] for q in range(2)]


# -- which terms become dense columns (hand-computed byte budgets) ------------------------------------------------

@pytest.mark.parametrize("counts, n, weight_bytes, columns", [
    ([2, 1, 0], 6, 4, [0]),  # term 0 in exactly a third of the rows: a column; term 1 (a sixth) does not pay
    ([10, 10], 45, 1, [0]),  # uint8: one column costs 3*10 + 45 = 75 bytes = 1.25 * 3 * 20, the budget exactly
    ([1, 0], 6, 1, []),  # one posting: a 6-byte column over a 3.75-byte budget
    ([0, 0, 0], 6, 4, []),  # nothing held
    ([20, 0] * 20, 100, 1, [0, 2, 4, 6, 8, 10, 12]),  # 20 tied terms, 7 fit (3S + 7 * 40 <= 3.75S): the lowest ids
])
def test_dense_columns_are_the_longest_affordable_prefix_by_count(counts, n, weight_bytes, columns):
    got = blocks.dense_columns(np.array(counts, dtype=np.int64), n, weight_bytes)
    assert got.tolist() == columns


def test_search_threads_are_named_for_whoever_reads_a_stack_dump(monkeypatch):
    monkeypatch.setattr(blocks, "BLOCK_DOCS", BLOCK)
    monkeypatch.setattr(kernel_search, "PART_WORK_NS", 1)
    monkeypatch.setenv("MLSR_SEARCH_THREADS", "3")
    index = SparseIndex.build(matrix_of(12), precision="float32").inverted
    kernel_search.kernel_search(index, inverted._kernel(), query_arrays(sp.csr_matrix(matrix_of(12)[:2])), 3)
    names = [thread.name for thread in threading.enumerate() if thread is not threading.main_thread()]
    assert any(name.startswith("mlsr-search_") for name in names), names


@pytest.mark.parametrize("n, columns", [(3, 0), (4, 2)])
def test_dense_columns_start_at_blocks_of_dense_min_docs_rows(monkeypatch, n, columns):
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 4)
    index = SparseIndex.build(np.ones((n, 2), dtype=np.float32), precision="float32").inverted
    assert len(index.dense_terms) == columns and len(index.docs) == 2 * n - n * columns


def test_float16_weights_that_round_to_zero_are_absent_terms():
    index = SparseIndex.build(np.array([[1e-10, 1.0, 0], [0, 1e-9, 2.0]], dtype=np.float32), precision="float16")
    assert index.nnz == 2 and index.inverted.document(0)[0].tolist() == [1]
    assert index.inverted.document_frequency().tolist() == [0, 1, 1] and len(index.inverted.docs) == 2
