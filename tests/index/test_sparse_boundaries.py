"""SparseIndex's own checks and its loading at their edges: `score` on empty, first and last rows and on what it
refuses; loading the older formats (their items, vocabulary, dense vectors, info and precision kept), memory
mapping, a Hub copy's name and hint, and what `save` records (mutation testing found these unchecked)."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.errors import IndexFormatError, InputError
from mlsr.index.manifest import MANIFEST_FILE, POSTING_FILES, THUMBNAIL_FILES
from mlsr.index.sparse import SparseIndex
from mlsr.index.thumbnails import Thumbnails
from mlsr.vocab import Vocabulary
from tests.helpers.data import write_format1_index, write_format2_index, write_manifest
from tests.helpers.hub import add_snapshot, offline_hub

MATRIX = np.array([[1.0, 0, 2, 0], [0, 0.5, 0, 0], [3, 0, 0, 0.25]], dtype=np.float32)  # 3 documents, 4 terms
ITEMS = [{"id": "first", "image": "a.jpg"}, {"id": "middle"}, {"id": "last", "captions": ["x"]}]


def test_score_of_first_last_and_repeated_rows_is_the_hand_product():
    index = SparseIndex.build(MATRIX, precision="float32")
    query = sp.csr_matrix(np.array([[2, 0, 1, 4]], dtype=np.float32))
    got = index.score(query, [2, 0, 0, 1])
    assert got.dtype == np.float32 and got.tolist() == [7.0, 4.0, 4.0, 0.0]  # 2*3 + 4*0.25, 2*1 + 1*2, -, none
    assert index.score(query, np.array([[2], [0]])).tolist() == [7.0, 4.0]
    for empty in ([], np.array([], dtype=np.float64), np.zeros((0, 2), dtype=np.int32)):
        scores = index.score(query, empty)
        assert scores.shape == (0,) and scores.dtype == np.float32


@pytest.mark.parametrize("rows, message", [
    ([3], r"^rows must lie in 0\.\.2\.$"), ([-1], r"^rows must lie in 0\.\.2\.$"),
    ([0, 3], r"^rows must lie in 0\.\.2\.$"),
    ([1.0], "^rows must be whole numbers, got float64.$"), ([True, False], "^rows must be whole numbers, got bool.$"),
    (["1"], "^rows must be whole numbers, got <U1.$"),
])
def test_score_refuses_rows_outside_the_index_or_not_whole(rows, message):
    index = SparseIndex.build(MATRIX, precision="float32")
    with pytest.raises(InputError, match=message):
        index.score(sp.csr_matrix(np.ones((1, 4), dtype=np.float32)), rows)


def test_score_takes_one_named_query_row():
    index = SparseIndex.build(MATRIX, precision="float32")
    with pytest.raises(InputError, match=r"^score\(\) takes one query row, got 2\.$"):
        index.score(np.ones((2, 4), dtype=np.float32), [0])
    with pytest.raises(InputError, match="^queries hold NaN"):
        index.score(np.array([[np.nan, 0, 0, 0]]), [0])


@pytest.mark.parametrize("row", [1.0, "1", None, True, np.float64(0)])
def test_a_row_must_be_a_whole_number(row):
    index = SparseIndex.build(MATRIX, precision="float32")
    for read in (index.document, index.picture, lambda r: index.explain(np.ones((1, 4)), r)):
        with pytest.raises(InputError, match=f"^row must be a whole number, got {re.escape(repr(row))}.$"):
            read(row)
    assert index.document(np.int64(2)).toarray()[0].tolist() == MATRIX[2].tolist()


def test_terms_are_named_by_the_vocabulary_or_by_number():
    assert SparseIndex.build(MATRIX, vocab=Vocabulary(["a", "b", "c", "d"])).term(2) == "c"
    assert SparseIndex.build(MATRIX).term(2) == "#2"


def test_a_document_is_its_matrix_row_with_sorted_terms():
    index = SparseIndex.build(MATRIX, precision="float32")
    for row in (0, 2):
        document = index.document(row)
        assert document.shape == (1, 4) and document.has_sorted_indices
        np.testing.assert_array_equal(document.toarray()[0], MATRIX[row])


@pytest.mark.parametrize("fmt", [1, 2])
def test_an_older_format_loads_with_everything_it_holds(tmp_path, fmt):
    vocab = Vocabulary(["a", "b", "c", "d"])
    models = {"vocab_size": 4, "vocab_sha256": vocab.sha256, "head": {"id": "h"}, "backbone": {"id": "b"}}
    info = {"documents": "image", "note": "kept", "models": models}
    if fmt == 1:
        dense = np.arange(6, dtype=np.float32).reshape(3, 2)
        folder = write_format1_index(tmp_path / "old", MATRIX, ITEMS, vocab=vocab, dense=dense, info=info)
    else:
        dense = None
        folder = write_format2_index(tmp_path / "old", MATRIX, ITEMS, precision="float32", vocab=vocab, info=info)
    loaded = SparseIndex.load(folder)
    assert loaded.items == ITEMS and list(loaded.vocab.terms) == ["a", "b", "c", "d"] and loaded.precision == "float32"
    assert loaded.info["documents"] == "image" and loaded.info["note"] == "kept"
    np.testing.assert_array_equal(loaded.vectors.toarray(), MATRIX)
    if dense is not None:
        np.testing.assert_array_equal(loaded.dense, dense)
    assert loaded.path == folder and loaded.hub_id is None and loaded.public_name == "old"


def test_an_older_format_keeps_the_pictures_added_to_it(tmp_path):
    folder = write_format1_index(tmp_path / "old", MATRIX, ITEMS)
    pictures = Thumbnails.from_pictures([None, b"RIFFmiddle", None])
    np.save(folder / THUMBNAIL_FILES["offsets"], pictures.offsets, allow_pickle=False)
    np.save(folder / THUMBNAIL_FILES["data"], pictures.data, allow_pickle=False)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    for name in THUMBNAIL_FILES.values():
        manifest["files"][name] = {"bytes": (folder / name).stat().st_size,
                                   "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()}
    write_manifest(folder, {**manifest, "thumbnails": 1})
    loaded = SparseIndex.load(folder)
    assert [loaded.picture(row) for row in range(3)] == [None, b"RIFFmiddle", None]


def test_an_older_format_whose_vectors_are_bad_is_blamed_on_the_folder(tmp_path):
    bad = MATRIX.copy()
    bad[1, 1] = np.inf
    folder = write_format1_index(tmp_path / "old", bad, ITEMS)
    with pytest.raises(IndexFormatError, match=f"^index {folder}: document vectors hold NaN, infinite"):
        SparseIndex.load(folder)


def test_loading_maps_the_postings_unless_told_not_to(tmp_path):
    SparseIndex.build(MATRIX, ITEMS, precision="float32").save(tmp_path / "idx")
    mapped, in_memory = SparseIndex.load(tmp_path / "idx"), SparseIndex.load(tmp_path / "idx", mmap=False)
    assert isinstance(mapped.inverted.weights.base, np.memmap) and not mapped.inverted.weights.flags.writeable
    assert not isinstance(in_memory.inverted.weights.base, np.memmap) and in_memory.inverted.weights.flags.writeable
    np.testing.assert_array_equal(mapped.vectors.toarray(), in_memory.vectors.toarray())


def test_save_records_the_lineage_and_keeps_the_pictures(tmp_path):
    index = SparseIndex.build(MATRIX, ITEMS, thumbnails=Thumbnails.from_pictures([b"RIFF0", None, b"RIFF2"]))
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    assert index.info["lineage"] == manifest["lineage"] and manifest["lineage"]
    loaded = SparseIndex.load(tmp_path / "idx")
    assert [loaded.picture(row) for row in range(3)] == [b"RIFF0", None, b"RIFF2"]
    assert loaded.info["lineage"] == manifest["lineage"]


def test_a_hub_copy_is_named_by_its_id_and_a_damaged_one_says_how_to_fetch_it_again(tmp_path, monkeypatch):
    cache = offline_hub(monkeypatch, tmp_path / "cache")
    SparseIndex.build(MATRIX, ITEMS).save(tmp_path / "idx")
    commit = "a" * 40
    snapshot = add_snapshot(cache, "owner/tiny", tmp_path / "idx", commit, links=False)
    monkeypatch.chdir(tmp_path)
    loaded = SparseIndex.load("owner/tiny")
    assert loaded.hub_id == loaded.source == f"owner/tiny@{commit}" and loaded.public_name == loaded.hub_id
    (snapshot / POSTING_FILES["weights"]).write_bytes(b"\0" * (snapshot / POSTING_FILES["weights"]).stat().st_size)
    with pytest.raises(IndexFormatError, match="This is the cached copy of Hub dataset owner/tiny@a+: remove it with"
                                               " `hf cache rm dataset/owner/tiny`"):
        SparseIndex.load("owner/tiny")
    (tmp_path / "idx" / POSTING_FILES["weights"]).write_bytes(b"\0" * 4)  # a damaged folder: no Hub hint
    with pytest.raises(IndexFormatError) as refused:
        SparseIndex.load(tmp_path / "idx")
    assert "cached copy" not in str(refused.value)


# -- add: dense vectors and pictures ------------------------------------------------------------------------------

def test_add_appends_dense_vectors_as_float32_and_names_a_mismatch():
    index = SparseIndex.build(MATRIX, dense=np.ones((3, 2), dtype=np.float32))
    grown = index.add(np.eye(1, 4, dtype=np.float32), dense=np.array([[0.5, 2.0]], dtype=np.float64))
    assert grown.dense.dtype == np.float32 and grown.dense.tolist() == [[1, 1], [1, 1], [1, 1], [0.5, 2.0]]
    with pytest.raises(InputError, match="^this index keeps dense vectors: give `dense` for the new rows too.$"):
        index.add(np.eye(1, 4, dtype=np.float32))
    with pytest.raises(InputError, match=r"^this index keeps no dense vectors: build it with dense ones to add them.$"):
        SparseIndex.build(MATRIX).add(np.eye(1, 4, dtype=np.float32), dense=np.ones((1, 2)))
    with pytest.raises(InputError, match=r"^dense vectors must be a finite \(1, 2\) array, got shape \(1, 3\)\.$"):
        index.add(np.eye(1, 4, dtype=np.float32), dense=np.ones((1, 3)))
    with pytest.raises(InputError, match="^new document vectors hold NaN"):
        index.add(np.array([[np.nan, 0, 0, 0]]), dense=np.ones((1, 2)))


def test_add_keeps_every_row_s_picture_whichever_side_has_them():
    new = np.eye(2, 4, dtype=np.float32)
    with_pictures = SparseIndex.build(MATRIX, thumbnails=Thumbnails.from_pictures([b"RIFF0", None, b"RIFF2"]))
    pictured = [with_pictures.add(new).picture(row) for row in range(5)]
    assert pictured == [b"RIFF0", None, b"RIFF2", None, None]
    both = with_pictures.add(new, thumbnails=Thumbnails.from_pictures([None, b"RIFF4"]))
    assert [both.picture(row) for row in range(5)] == [b"RIFF0", None, b"RIFF2", None, b"RIFF4"]
    bare = SparseIndex.build(MATRIX)
    late = bare.add(new, thumbnails=Thumbnails.from_pictures([b"RIFF3", None]))
    assert [late.picture(row) for row in range(5)] == [None, None, None, b"RIFF3", None]
    assert bare.add(new).thumbnails is None
    with pytest.raises(InputError, match=r"^thumbnails: 1 rows of offsets \(int64\) for 2 items\.$"):
        bare.add(new, thumbnails=Thumbnails.from_pictures([b"RIFF3"]))


# -- what build and search refuse, by name ------------------------------------------------------------------------

def test_build_names_what_does_not_fit_the_rows():
    with pytest.raises(InputError, match=r"^vocabulary has 3 terms but vectors have 4 columns\.$"):
        SparseIndex.build(MATRIX, vocab=Vocabulary(["a", "b", "c"]))
    message = r"^dense vectors must be a finite \(n=3, d\) array, got shape "
    cases = ((np.ones((2, 2)), r"\(2, 2\)"), (np.ones(3), r"\(3,\)"), (np.full((3, 2), np.nan), r"\(3, 2\)"))
    for dense, shape in cases:
        with pytest.raises(InputError, match=rf"{message}{shape}\.$"):
            SparseIndex.build(MATRIX, dense=dense)
    chunks = [sp.csr_matrix(MATRIX[:2]), sp.csr_matrix(np.ones((1, 5), dtype=np.float32))]
    with pytest.raises(InputError, match="^row chunks must all have 4 columns; one has 5.$"):
        SparseIndex.build(iter(chunks))
    with pytest.raises(InputError, match=r"^uint8 impacts need document weights >= 0; use precision 'float16' or"
                                         r" 'float32'\.$"):
        SparseIndex.build(-MATRIX, precision="uint8")


def test_search_gives_ten_hits_by_default_and_names_bad_queries():
    docs = np.eye(12, 4, dtype=np.float32) + np.arange(12, dtype=np.float32)[:, None] / 16  # row r: r/16 each term
    got = SparseIndex.build(docs, precision="float32").search(np.ones((1, 4), dtype=np.float32))
    # row r scores r/4, plus 1 for rows 0-3: 11, 10, 9, 8 (2.75 .. 2), then ties 3 = 7, 2 = 6, 1 = 5 by row
    assert got.indices.shape == (1, 10) and got.indices[0].tolist() == [11, 10, 9, 8, 3, 7, 2, 6, 1, 5]
    from mlsr.index.rows import query_arrays

    for bad in (np.array([[np.nan, 0, 0, 0]]), sp.csr_matrix(np.array([[np.inf, 0, 0, 0]]))):
        with pytest.raises(InputError, match="^queries hold NaN"):
            SparseIndex.build(MATRIX).search(bad)
        with pytest.raises(InputError, match="^queries hold NaN"):
            query_arrays(bad)


def test_build_keeps_its_own_float32_c_ordered_dense_copy():
    for given in (np.arange(6, dtype=np.float64).reshape(3, 2), np.asfortranarray(np.ones((3, 2), np.float32)),
                  np.ones((3, 2), np.float32)):
        before = given.copy()
        index = SparseIndex.build(MATRIX, dense=given)
        assert index.dense.dtype == np.float32 and index.dense.flags.c_contiguous
        given += 5  # the caller's array changes afterwards: the index's does not
        np.testing.assert_array_equal(index.dense, before.astype(np.float32))


def test_anything_with_an_array_interface_is_one_matrix():
    class Table:  # say, a data frame: not an ndarray, yet convertible to one
        def __array__(self, dtype=None, copy=None):
            return MATRIX.copy()

    index = SparseIndex.build(Table(), precision="float32")
    assert len(index) == 3 and index.vectors.toarray().tolist() == MATRIX.tolist()
