"""The forward view (row -> its terms and weights): equal to the inverted lists for every row after a build, an add
and a remove, in every precision; saved, memory-mapped and checked on load (a damaged one is refused); derived for
an index saved without it; and what `document`, `explain`, `rows` and the Milvus export read."""

import json

import numpy as np
import scipy.sparse as sp
import pytest

from mlsr._files import sha256_file
from mlsr.errors import IndexFormatError, InputError
from mlsr.index import blocks
from mlsr.index.manifest import FORWARD_FILES, MANIFEST_FILE
from mlsr.index.forward import stored_nonzero
from mlsr.index.sparse import SparseIndex
from tests.helpers.data import write_manifest
from tests.index.test_folder_format import rewrite
from tests.index.test_search_fast import VOCAB, skewed
from tests.index.conftest import use_small_blocks


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 64 documents with dense columns: 300 documents are 4 full blocks and a partial one."""
    use_small_blocks(monkeypatch, 64)



def assert_forward_matches_lists(index: SparseIndex):
    """Every row's forward terms and weights are the ones its inverted lists hold (a search in every list)."""
    inverted = index.inverted
    forward = inverted.forward
    assert forward.indptr[-1] == stored_nonzero(inverted) == len(forward.terms)
    for row in range(len(index)):
        terms, weights = forward.document(row)
        want_terms, want_weights = inverted.document_from_lists(row)
        np.testing.assert_array_equal(terms, want_terms, err_msg=f"row {row}")
        np.testing.assert_array_equal(weights, want_weights, err_msg=f"row {row}")
    if len(index):  # the same vectors as the term-major lists transposed
        stored = inverted.block_term_major(0).T.toarray()
        np.testing.assert_array_equal(index.rows(np.arange(len(stored))).toarray(), stored)


def test_the_forward_view_equals_the_lists_after_a_build(precision):
    docs = skewed(300, seed=31)
    index = SparseIndex.build(docs, precision=precision)
    assert index.inverted.stored_forward is not None and len(index.inverted.dense_terms)  # built, columns too
    assert_forward_matches_lists(index)


def test_the_forward_view_equals_the_lists_after_add_and_remove(precision):
    index = SparseIndex.build(skewed(150, seed=32), precision=precision)
    grown = index.add(skewed(100, seed=33))
    assert_forward_matches_lists(grown)
    shrunk = grown.remove([str(row) for row in (0, 70, 149, 150, 249)])
    assert_forward_matches_lists(shrunk)
    assert_forward_matches_lists(shrunk.remove([str(row) for row in range(100, 140)]))
    assert_forward_matches_lists(index)  # the old index is unchanged


def test_float16_widened_to_float32_keeps_the_forward_view_exact():
    docs = skewed(200, seed=34)
    index = SparseIndex.build(docs, precision="float16").add(skewed(10, seed=35) * 1e5)  # beyond float16
    assert index.precision == "float32" and index.inverted.forward.weights.dtype == np.float32
    assert_forward_matches_lists(index)


def test_saved_forward_view_loads_memory_mapped_and_equal(tmp_path, precision):
    index = SparseIndex.build(skewed(300, seed=36), precision=precision)
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    assert set(FORWARD_FILES.values()) <= set(manifest["files"]) and manifest["forward"] == stored_nonzero(index.inverted)
    loaded = SparseIndex.load(tmp_path / "idx")
    stored = loaded.inverted.stored_forward
    assert isinstance(stored.terms.base, np.memmap) or stored.terms.size == 0
    assert_forward_matches_lists(loaded)
    for row in (0, 123, 299):
        np.testing.assert_array_equal(loaded.document(row).toarray(), index.document(row).toarray())


@pytest.mark.parametrize("precision, n", [("uint8", 300), ("float16", 300), ("float32", 300), ("float16", 0)])
def test_an_index_saved_without_a_forward_view_derives_it(tmp_path, precision, n):
    SparseIndex.build(skewed(n, seed=37), precision=precision).save(tmp_path / "idx")
    folder = tmp_path / "idx"
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    for file in FORWARD_FILES.values():  # as an index saved before the view was kept
        del manifest["files"][file]
        (folder / file).unlink()
    del manifest["forward"]
    write_manifest(folder, manifest)
    loaded = SparseIndex.load(folder)
    assert loaded.inverted.stored_forward is None
    assert_forward_matches_lists(loaded)
    forward = loaded.inverted.forward  # float16 stays float16; uint8 and float32 read as float32
    if n:
        terms, weights = forward.document(n - 1)  # a row is always read as int32 terms and float32 weights
        assert terms.dtype == np.int32 and weights.dtype == np.float32
    assert forward.weights.dtype == ("float16" if precision == "float16" else "float32")
    assert forward.terms.dtype == np.uint16 and forward.indptr.dtype == np.int64 and forward.n_docs == n
    loaded.save(tmp_path / "again")  # saved again: the view is stored
    assert SparseIndex.load(tmp_path / "again").inverted.stored_forward is not None


def _swap_in_row(terms, folder):
    indptr = np.load(folder / FORWARD_FILES["indptr"])
    start = int(indptr[np.flatnonzero(np.diff(indptr) >= 2)[0]])
    terms[start], terms[start + 1] = terms[start + 1], terms[start]
    return terms


def _other_row(weights, folder):
    indptr = np.load(folder / FORWARD_FILES["indptr"])
    weights[indptr[-2]] += 1  # the last row's first weight: a spot-checked row
    return weights


DAMAGES = {  # name: (file, what the error says, change of the loaded array)
    "term-outside-the-vocabulary": ("terms", "outside the vocabulary", lambda a, f: _set(a, 3, VOCAB)),
    "terms-not-ascending": ("terms", "not ascending within a row", _swap_in_row),
    "offsets-beyond-the-terms": ("indptr", "offsets are inconsistent", lambda a, f: _set(a, 10, a[-1] + 5)),
    "offsets-going-down": ("indptr", "offsets are inconsistent", lambda a, f: _set(a, 20, a[19] - 1)),
    "a-row-short": ("terms", "forward postings", lambda a, f: a[:-1]),
    "nan-weight": ("weights", "NaN or infinite", lambda a, f: _set(a, 7, np.nan)),
    "weights-as-float64": ("weights", "unexpected types", lambda a, f: a.astype(np.float64)),
    "terms-as-int64": ("terms", "unexpected types", lambda a, f: a.astype(np.int64)),
    "weights-one-short": ("weights", "forward view has inconsistent shapes", lambda a, f: a[:-1]),
    "offsets-one-longer": ("indptr", "forward view has inconsistent shapes", lambda a, f: np.append(a, a[-1])),
    "terms-as-a-column": ("terms", "forward view has inconsistent shapes", lambda a, f: a.reshape(-1, 1)),
    "a-weight-not-the-lists": ("weights", "differs from the inverted lists", _other_row),
}


def _set(array, where, value):
    array[where] = value
    return array


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_forward_view_is_refused_on_load(tmp_path, damage):
    """Hostile forward arrays under a manifest that vouches for them: refused, naming the problem."""
    name, message, change = DAMAGES[damage]
    SparseIndex.build(skewed(300, seed=38), precision="float16").save(tmp_path / "idx")
    folder = tmp_path / "idx"
    SparseIndex.load(folder)  # sound before the change
    rewrite(folder, FORWARD_FILES[name], change(np.load(folder / FORWARD_FILES[name]), folder))
    with pytest.raises(IndexFormatError, match=f"({message}).*; rebuild the index[.]$"):
        SparseIndex.load(folder)


@pytest.mark.parametrize("at", [6, 7])
def test_forward_damage_on_either_side_of_a_check_chunk_is_found(tmp_path, monkeypatch, at):
    """Checked 7 postings at a time: a NaN weight, or a term that falls inside a row, at a chunk's last posting or
    the next one's first; sound rows that start low at a chunk's edge pass."""
    monkeypatch.setattr("mlsr.index.forward._CHECK_CHUNK", 7)
    SparseIndex.build(skewed(40, seed=41), precision="float32").save(tmp_path / "idx")
    folder = tmp_path / "idx"
    SparseIndex.load(folder)  # sound, whatever the chunk
    indptr = np.load(folder / FORWARD_FILES["indptr"])
    assert not np.isin([at - 1, at, at + 1], indptr).any()  # one row holds positions at - 1 .. at + 1
    weights = np.load(folder / FORWARD_FILES["weights"])
    rewrite(folder, FORWARD_FILES["weights"], _set(weights.copy(), at, np.nan))
    with pytest.raises(IndexFormatError, match="NaN or infinite"):
        SparseIndex.load(folder)
    rewrite(folder, FORWARD_FILES["weights"], weights)
    terms = np.load(folder / FORWARD_FILES["terms"])
    rewrite(folder, FORWARD_FILES["terms"], _set(terms.copy(), at, terms[at - 1]))  # a term twice in a row
    with pytest.raises(IndexFormatError, match="not ascending within a row"):
        SparseIndex.load(folder)


def test_a_flipped_bit_in_a_forward_file_fails_its_checksum(tmp_path):
    SparseIndex.build(skewed(300, seed=39)).save(tmp_path / "idx")
    file = tmp_path / "idx" / FORWARD_FILES["weights"]
    data = bytearray(file.read_bytes())
    data[-3] ^= 0x10
    file.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum"):
        SparseIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("change", ["one-file-unlisted", "count-wrong", "count-missing"])
def test_a_manifest_that_lists_the_forward_view_wrongly_is_refused(tmp_path, change):
    SparseIndex.build(skewed(100, seed=40)).save(tmp_path / "idx")
    folder = tmp_path / "idx"
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    if change == "one-file-unlisted":
        del manifest["files"][FORWARD_FILES["weights"]]
    elif change == "count-wrong":
        manifest["forward"] += 1
    else:
        del manifest["forward"]
    write_manifest(folder, manifest)
    with pytest.raises(IndexFormatError, match="forward"):
        SparseIndex.load(folder)


def test_rows_and_explain_read_the_forward_view(precision):
    docs = skewed(120, seed=41)
    index = SparseIndex.build(docs, precision=precision)
    query = skewed(1, seed=42)
    chosen = [5, 0, 119, 5]
    np.testing.assert_array_equal(index.rows(chosen).toarray(), index.vectors[chosen].toarray())
    for row in (0, 77):
        matches = index.explain(query, row)
        assert sum(match.contribution for match in matches) == pytest.approx(float(index.score(query, [row])[0]),
                                                                             rel=1e-5)
        assert [match.contribution for match in matches] == sorted((m.contribution for m in matches), reverse=True)
    with pytest.raises(InputError, match="rows must lie"):
        index.rows([120])
    with pytest.raises(InputError, match="whole numbers"):
        index.rows([1.5])


def test_sha256_of_the_forward_files_is_recorded(tmp_path):
    SparseIndex.build(skewed(50, seed=43)).save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    for file in FORWARD_FILES.values():
        assert manifest["files"][file]["sha256"] == sha256_file(tmp_path / "idx" / file)


def test_uint8_lists_whose_groups_do_not_settle_keep_their_weights_aligned(tmp_path, monkeypatch):
    """quantize_lists regroups after dropping impacts that round to 0; after 8 rounds the zeros left stay. It once
    dropped them from the rows but not from the impacts: weights longer than rows, misaligned from there on, and
    a saved index that would not load. Heavy-tailed weights need more than 8 rounds."""
    from mlsr.index.blocks import quantize_lists
    from tests.index.test_search_fast import check

    monkeypatch.setattr(blocks, "BLOCK_DOCS", 4096)
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 10**9)  # every term a list
    rng = np.random.default_rng(0)
    n, per = 4000, 3
    docs = sp.csr_matrix((rng.lognormal(0, 2, n * per).astype(np.float32),
                          (np.repeat(np.arange(n), per), rng.integers(0, VOCAB, n * per))), shape=(n, VOCAB))
    docs.sum_duplicates()
    impacts, scales, kept = quantize_lists(docs.tocsc().data)  # the block's lists, in posting order
    assert len(impacts) == len(kept) and len(scales) == -(-len(kept) // blocks.LIST_GROUP)
    assert not impacts.all()  # zeros were left: this block reaches the last round
    index = SparseIndex.build(docs, precision="uint8")
    assert len(index.inverted.weights) == len(index.inverted.docs)
    assert_forward_matches_lists(index)
    check(index, skewed(5, seed=45), 10)
    index.save(tmp_path / "idx")
    assert_forward_matches_lists(SparseIndex.load(tmp_path / "idx"))


@pytest.mark.parametrize("n", [40, 70])  # one block (its view is the index's as it is), and two joined
def test_float16_weights_that_round_to_zero_leave_the_forward_view_aligned(tmp_path, n):
    """A float16 index drops weights below its smallest step (they round to 0): the forward view leaves them out of
    their rows, every row still reads as the lists do, and the view saves and loads."""
    docs = skewed(n, seed=42).toarray()
    docs[[0, 5, 33, n - 1], [3, 7, 1, 11]] = 1e-9  # round to 0 in float16, in the first, middle and last rows
    index = SparseIndex.build(sp.csr_matrix(docs), precision="float16")
    index.save(tmp_path / "idx")
    assert SparseIndex.load(tmp_path / "idx").inverted.stored_forward is not None
    forward = index.inverted.forward
    assert forward.indptr.dtype == np.int64 and forward.weights.dtype == np.float16
    assert len(forward.terms) == int(np.count_nonzero(docs.astype(np.float16)))
    for row in range(n):
        for got, want in zip(forward.document(row), index.inverted.document_from_lists(row)):
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("vocab_size, dtype", [(65_536, np.uint16), (65_537, np.int32), (131_072, np.int32)])
def test_forward_terms_fit_their_type_at_the_vocabulary_bound(vocab_size, dtype):
    """uint16 holds term ids up to 65,535: a vocabulary one term larger needs int32."""
    docs = sp.csr_matrix(([1.0, 2.0], ([0, 1], [0, vocab_size - 1])), shape=(2, vocab_size), dtype=np.float32)
    index = SparseIndex.build(docs, precision="float32")
    assert index.inverted.forward.terms.dtype == dtype
    assert index.inverted.forward.document(1)[0].tolist() == [vocab_size - 1]

