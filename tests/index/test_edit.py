"""SparseIndex.add / remove: the result equals a fresh build of the changed collection, array for array, in every
precision and search path; refusals change nothing; the old index and the caller's arrays are never touched."""

import copy

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.index.sparse import SparseIndex
from mlsr.vocab import Vocabulary
from tests.index.test_search_fast import VOCAB, path, skewed  # noqa: F401  (path: the search-path fixture)
from tests.index.conftest import use_small_blocks

ARRAYS = ("indptr", "docs", "weights", "scales", "dense_indptr", "dense_terms", "dense_weights", "dense_scales")
QUERIES = skewed(9, seed=90, per_row=12, negative=True)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 64 documents with dense columns: 150 documents are 2 full blocks and a partial one."""
    use_small_blocks(monkeypatch, 64)



def items(prefix, n):
    return [{"id": f"{prefix}{i}", "image": f"{prefix}{i}.jpg"} for i in range(n)]


def dense_of(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 8)).astype(np.float32)


def assert_same_index(got: SparseIndex, want: SparseIndex):
    """Same stored arrays, items, dense vectors; and so the same search results, scores and explanations."""
    assert (got.inverted.n_docs, got.inverted.block_size, got.precision) == (
        want.inverted.n_docs, want.inverted.block_size, want.precision)
    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(got.inverted, name), getattr(want.inverted, name), err_msg=name)
    # the forward view carried through the edit (not derived again from every block), in the precision's types
    assert got.inverted.stored_forward is not None
    for name in ("indptr", "terms", "weights"):
        found, expected = getattr(got.inverted.forward, name), getattr(want.inverted.forward, name)
        assert found.dtype == expected.dtype, name
        np.testing.assert_array_equal(found, expected, err_msg=name)
    assert got.items == want.items
    if want.dense is None:
        assert got.dense is None
    else:
        np.testing.assert_array_equal(got.dense, want.dense)
    k = min(10, len(want))
    for found, expected in zip(got.search(QUERIES, k), want.search(QUERIES, k)):
        np.testing.assert_array_equal(found, expected)
    for row in (0, len(want) // 2, len(want) - 1):
        assert got.explain(QUERIES[0], row) == want.explain(QUERIES[0], row)


@pytest.mark.parametrize("n,m", [(150, 40), (128, 10), (30, 20), (30, 100), (150, 1)])
def test_add_equals_a_fresh_build_of_the_union(path, precision, n, m):
    vocab = Vocabulary(tuple(f"t{i}" for i in range(VOCAB)))
    old = SparseIndex.build(skewed(n, seed=n), items("a", n), vocab=vocab, dense=dense_of(n, 1), precision=precision,
                            info={"documents": "image"})
    new_rows, new_items, new_dense = skewed(m, seed=m + 7), items("b", m), dense_of(m, 2)
    added = old.add(new_rows, new_items, dense=new_dense)
    # the union of what the old index stores and the new rows, built in one go
    fresh = SparseIndex.build(sp.vstack([old.vectors, new_rows]), [*old.items, *new_items], vocab=vocab,
                              dense=np.concatenate([old.dense, new_dense]), precision=precision)
    assert_same_index(added, fresh)
    assert added.info == {**old.info, "edits": {"added": m, "removed": 0}} and added.vocab is old.vocab


def test_add_keeps_the_blocks_before_the_last_as_they_are(precision):
    old = SparseIndex.build(skewed(150, seed=3), precision=precision)
    added = old.add(skewed(5, seed=4))
    kept = int(old.inverted.indptr[2 * VOCAB])  # the postings of the two full blocks
    np.testing.assert_array_equal(added.inverted.docs[:kept], old.inverted.docs[:kept])
    np.testing.assert_array_equal(added.inverted.weights[:kept], old.inverted.weights[:kept])


@pytest.mark.parametrize("removed", [["a3"], ["a0", "a149"], ["a70", "a71", "a140"], [f"a{i}" for i in range(150)]])
def test_remove_equals_a_fresh_build_of_the_rest_and_never_returns_a_removed_id(path, precision, removed):
    old = SparseIndex.build(skewed(150, seed=5), items("a", 150), dense=dense_of(150, 3), precision=precision)
    rest = old.remove(removed)
    keep = [row for row, item in enumerate(old.items) if item["id"] not in removed]
    fresh = SparseIndex.build(old.vectors[keep], [old.items[row] for row in keep], dense=old.dense[keep],
                              precision=precision)
    assert len(rest) == 150 - len(removed)
    if len(rest):
        assert_same_index(rest, fresh)
        found = rest.search(QUERIES, len(rest)).indices
        assert not {rest.items[row]["id"] for row in found.ravel()} & set(removed)


def test_add_then_remove_round_trips_through_a_saved_folder(tmp_path, precision):
    old = SparseIndex.build(skewed(150, seed=6), items("a", 150), precision=precision)
    changed = old.add(skewed(20, seed=7), items("b", 20)).remove(["a10", "b3"])
    assert changed.info["edits"] == {"added": 20, "removed": 2}
    again = changed.remove(["a11"]).remove(["a12", "b4"]).add(skewed(1, seed=8), items("c", 1))
    assert again.info["edits"] == {"added": 21, "removed": 5}  # counted up across edits, never reset
    changed.save(tmp_path / "idx")
    assert_same_index(SparseIndex.load(tmp_path / "idx"), changed)


def test_a_float16_index_given_weights_beyond_its_range_turns_to_float32_as_a_build_does():
    old = SparseIndex.build(skewed(150, seed=8))
    big = skewed(3, seed=9) * 1e5
    added = old.add(big)
    assert added.precision == "float32"
    assert_same_index(added, SparseIndex.build(sp.vstack([old.vectors, big])))  # float16 asked, float32 stored


def snapshot(index: SparseIndex):
    return ([np.array(getattr(index.inverted, name)) for name in ARRAYS], copy.deepcopy(index.items),
            None if index.dense is None else index.dense.copy(), len(index))


def assert_unchanged(index: SparseIndex, before):
    arrays, listed, dense, n = before
    for name, array in zip(ARRAYS, arrays):
        np.testing.assert_array_equal(getattr(index.inverted, name), array)
    assert index.items == listed and len(index) == n
    if dense is not None:
        np.testing.assert_array_equal(index.dense, dense)


def test_the_old_index_and_the_callers_arguments_are_left_alone():
    old = SparseIndex.build(skewed(150, seed=10), items("a", 150), dense=dense_of(150, 4), precision="uint8")
    before = snapshot(old)
    rows, listed, dense = skewed(20, seed=11), items("b", 20), dense_of(20, 5)
    rows_before, listed_before, dense_before = rows.copy(), copy.deepcopy(listed), dense.copy()
    ids = ["a1", "a2"]
    added = old.add(rows, listed, dense=dense)
    added.items[-1]["id"] = "edited"  # the new index's items are its own copies
    old.remove(ids)
    assert_unchanged(old, before)
    assert (rows != rows_before).nnz == 0 and listed == listed_before and (dense == dense_before).all()
    assert ids == ["a1", "a2"]


@pytest.mark.parametrize("change,message", [
    (lambda old: old.add(skewed(2, seed=1), [{"id": "a5"}, {"id": "new"}], dense=dense_of(2, 1)), "already in the index"),
    (lambda old: old.add(skewed(2, seed=1), [{"id": "x"}, {"id": "x"}], dense=dense_of(2, 1)), "unique"),
    (lambda old: old.add(skewed(2, seed=1), [{"id": "x"}], dense=dense_of(2, 1)), "1 items for 2 vectors"),
    (lambda old: old.add(sp.csr_matrix((2, VOCAB + 1), dtype=np.float32), [{"id": "x"}, {"id": "y"}],
                         dense=dense_of(2, 1)), "columns"),
    (lambda old: old.add(skewed(2, seed=1), [{"id": "x"}, {"id": "y"}]), "keeps dense vectors"),
    (lambda old: old.add(skewed(2, seed=1), [{"id": "x"}, {"id": "y"}], dense=np.ones((2, 9), np.float32)),
     r"finite \(2, 8\)"),
    (lambda old: old.add(-skewed(2, seed=1), [{"id": "x"}, {"id": "y"}], dense=dense_of(2, 1)), "uint8 impacts"),
    (lambda old: old.add("not vectors", [{"id": "x"}], dense=dense_of(1, 1)), "sparse matrix or a 2-D array"),
    (lambda old: old.remove(["a1", "nope"]), "not in the index"),
    (lambda old: old.remove(["a1", "a1"]), "distinct"),
    (lambda old: old.remove("a1"), "not one string"),
])
def test_bad_changes_are_refused_and_change_nothing(change, message):
    old = SparseIndex.build(skewed(150, seed=12), items("a", 150), dense=dense_of(150, 6), precision="uint8")
    before = snapshot(old)
    with pytest.raises(InputError, match=message):
        change(old)
    assert_unchanged(old, before)


def test_adding_to_an_index_without_dense_vectors_refuses_them():
    old = SparseIndex.build(skewed(10, seed=13))
    with pytest.raises(InputError, match="keeps no dense vectors"):
        old.add(skewed(1, seed=14), dense=dense_of(1, 1))
    assert [item["id"] for item in old.add(skewed(2, seed=14)).items[-2:]] == ["10", "11"]  # default ids: the rows


@pytest.mark.parametrize("missing, named", [
    (["n1"], "1 ids are not in the index ('n1'); nothing was removed."),
    (["n1", "n2", "n3"], "3 ids are not in the index ('n1', 'n2', 'n3'); nothing was removed."),
    (["n1", "n2", "n3", "n4"], "4 ids are not in the index ('n1', 'n2', 'n3' and 1 more); nothing was removed."),
    (["n1", "n2", "n3", "n4", "n5", "n6"],
     "6 ids are not in the index ('n1', 'n2', 'n3' and 3 more); nothing was removed."),
    (["x" * 200], "1 ids are not in the index ('" + "x" * 38 + "…); nothing was removed."),  # 40 characters at most
])
def test_an_error_names_the_first_three_ids_and_counts_the_rest(missing, named):
    from mlsr.index.edit import rows_of_ids

    with pytest.raises(InputError) as raised:
        rows_of_ids([{"id": "a"}, {"id": "b"}], ["a", *missing])
    assert str(raised.value) == named


@pytest.mark.parametrize("weight, precision, warned", [
    (65504.0, "float16", False),  # float16's largest finite value: still float16
    (65505.0, "float32", True),
    (-65505.0, "float32", True),  # the magnitude counts
])
def test_new_weights_past_float16s_range_turn_the_index_to_float32(caplog, weight, precision, warned):
    old = SparseIndex.build(skewed(10, seed=3), precision="float16")
    new = sp.csr_matrix(([weight], ([0], [2])), shape=(1, VOCAB), dtype=np.float32)
    with caplog.at_level("WARNING", logger="mlsr.index.edit"):
        got = old.add(new)
    assert got.precision == precision
    assert got.score(np.eye(1, VOCAB, 2, dtype=np.float32), [10])[0] == weight  # stored exactly
    messages = [record.getMessage() for record in caplog.records]
    assert messages == (["new document weights exceed float16's range (65504): storing the index in float32"]
                        if warned else [])


def test_new_vectors_of_another_width_are_named_in_the_error():
    from mlsr.index.edit import appended

    old = SparseIndex.build(skewed(4, seed=5))
    with pytest.raises(InputError, match=rf"^new vectors must all have {VOCAB} columns; one has {VOCAB + 1}\.$"):
        appended(old.inverted, sp.csr_matrix((1, VOCAB + 1), dtype=np.float32))


def test_ids_taken_already_are_named():
    old = SparseIndex.build(skewed(3, seed=6), [{"id": "a"}, {"id": "b"}, {"id": "c"}])
    with pytest.raises(InputError) as raised:
        old.add(skewed(2, seed=7), [{"id": "new"}, {"id": "b"}])
    assert str(raised.value) == "1 ids are already in the index ('b'); remove them first to replace them."


def test_ids_to_remove_are_a_list_of_distinct_ids_and_give_int64_rows():
    from mlsr.index.edit import rows_of_ids

    items = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    assert rows_of_ids(items, ["c", "a"]).tolist() == [0, 2] and rows_of_ids(items, ["c"]).dtype == np.int64
    assert rows_of_ids(items, []).dtype == np.int64 and rows_of_ids(items, []).shape == (0,)
    with pytest.raises(InputError, match=r"^ids must be a list of ids, not one string\.$"):
        rows_of_ids(items, "abc")
    with pytest.raises(InputError, match=r"^ids to remove must be distinct\.$"):
        rows_of_ids(items, ["a", "a"])
