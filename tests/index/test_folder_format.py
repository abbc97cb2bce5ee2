"""Index folders on disk: format 3 (the blocked layout) round trips memory-mapped in every precision; older
formats 1 and 2 still load with their stored weights; hostile arrays under a consistent manifest are refused
before the kernel can read outside them."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr._files import sha256_file
from mlsr.errors import IndexFormatError
from mlsr.index.manifest import FORMAT_VERSION, MANIFEST_FILE, POSTING_FILES
from mlsr.index.sparse import SparseIndex
from mlsr.settings import PRECISIONS
from mlsr.vocab import Vocabulary
from tests.helpers.data import write_format1_index, write_format2_index, write_manifest
from tests.index.test_search_fast import VOCAB, check, path, skewed  # noqa: F401  (path: the search-path fixture)
from tests.index.conftest import use_small_blocks


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 documents with dense columns, so that 300 documents make 5 blocks (the last one partial)."""
    use_small_blocks(monkeypatch, 64)


@pytest.mark.parametrize("precision", sorted(PRECISIONS))
def test_save_then_memory_mapped_load_equals_in_memory(path, tmp_path, precision):
    docs = skewed(300, seed=19)
    index = SparseIndex.build(docs, dense=np.random.default_rng(0).random((300, 8), dtype=np.float32), precision=precision)
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 3 and manifest["precision"] == precision
    assert manifest["block_size"] == index.inverted.block_size and set(POSTING_FILES.values()) <= set(manifest["files"])
    loaded = SparseIndex.load(tmp_path / "idx")
    assert loaded.precision == precision
    assert isinstance(np.lib.format.open_memmap(tmp_path / "idx" / POSTING_FILES["docs"], mode="r"), np.memmap)
    assert not loaded.inverted.docs.flags.writeable and not loaded.inverted.weights.flags.writeable  # a map, not a copy
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
    assert json.loads((tmp_path / "new" / MANIFEST_FILE).read_text())["format_version"] == FORMAT_VERSION
    again = SparseIndex.load(tmp_path / "new")
    np.testing.assert_array_equal(again.search(skewed(5, seed=22), 10).indices, loaded.search(skewed(5, seed=22), 10).indices)


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_format_2_folder_still_loads_with_its_stored_weights(path, tmp_path, precision):
    docs = skewed(200, seed=40)
    items = [{"id": f"img{i}"} for i in range(200)]
    write_format2_index(tmp_path / "old", docs, items, precision=precision, info={"documents": "image", "models": {"head": {"id": "h"}}})
    assert len(np.load(tmp_path / "old" / "postings.dense_terms.npy")) >= 3  # the common terms were dense columns
    loaded = SparseIndex.load(tmp_path / "old")
    assert loaded.precision == precision and loaded.items == items and loaded.info["documents"] == "image"
    np.testing.assert_array_equal(loaded.vectors.toarray(), docs.toarray().astype(precision).astype(np.float32))
    check(loaded, skewed(6, seed=41), 10)
    loaded.save(tmp_path / "new")
    assert json.loads((tmp_path / "new" / MANIFEST_FILE).read_text())["format_version"] == FORMAT_VERSION
    again = SparseIndex.load(tmp_path / "new")
    for got, want in zip(again.search(skewed(6, seed=41), 10), loaded.search(skewed(6, seed=41), 10)):
        np.testing.assert_array_equal(got, want)


def rewrite(folder, name, array=None, manifest_change=None):
    """Replace one file's array (and/or manifest fields), with a manifest that vouches for it: what an attacker can do."""
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    if array is not None:
        np.save(folder / name, array)
        manifest["files"][name] = {"bytes": (folder / name).stat().st_size, "sha256": sha256_file(folder / name)}
    manifest.update(manifest_change or {})
    write_manifest(folder, manifest)


def listed_and_dense(folder):
    """dense_terms with one column's term replaced by a term that also has a posting list in that block."""
    terms, indptr = np.load(folder / POSTING_FILES["dense_terms"]), np.load(folder / POSTING_FILES["indptr"])
    starts = np.load(folder / POSTING_FILES["dense_indptr"])
    first, last = int(starts[0]), int(starts[1]) - 1  # block 0's columns
    listed = np.flatnonzero(np.diff(indptr[: VOCAB + 1]))
    above = listed[listed > terms[last]]  # a listed term past block 0's last column keeps the order ascending
    assert last >= first and len(above)
    terms[last] = above[0]
    return terms


DAMAGES = {  # name: (precision, file, what the error says, change of the loaded array)
    "row-beyond-the-last-block": ("uint8", "docs", "outside the index", lambda a, f: _set_last(a, f, 50)),  # 300 - 256 = 44 rows there
    "row-beyond-16-bits": ("uint8", "docs", "outside the index", lambda a, f: _set(a, 5, 65535)),
    "unsorted-list": ("uint8", "docs", "ascending document order", lambda a, f: _swap_first_list(a, f)),
    "offsets-beyond-the-postings": ("uint8", "indptr", "offsets are inconsistent", lambda a, f: _set(a, 10, a[-1] + 5)),
    "offsets-going-down": ("uint8", "indptr", "offsets are inconsistent", lambda a, f: _set(a, 700, a[699] - 1)),
    "dense-offsets": ("uint8", "dense_indptr", "dense column offsets", lambda a, f: _set(a, 1, a[-1] + 3)),
    "dense-term-outside-the-vocabulary": ("uint8", "dense_terms", "dense terms are inconsistent", lambda a, f: _set(a, 0, VOCAB)),
    "dense-terms-not-ascending": ("uint8", "dense_terms", "dense terms are inconsistent", lambda a, f: _set(a, 1, a[0])),
    "term-both-listed-and-dense": ("uint8", "dense_terms", "dense terms are inconsistent", lambda a, f: listed_and_dense(f)),
    "nan-scale": ("uint8", "scales", "scales are not finite", lambda a, f: _set(a, 0, np.nan)),
    "negative-scale": ("uint8", "scales", "scales are not finite", lambda a, f: _set(a, 3, -1.0)),
    "infinite-column-scale": ("uint8", "dense_scales", "scales are not finite", lambda a, f: _set(a, (0, 0), np.inf)),
    "scales-of-another-shape": ("uint8", "scales", "inconsistent shapes", lambda a, f: a[:-1]),
    "column-scales-of-another-shape": ("uint8", "dense_scales", "inconsistent shapes", lambda a, f: a[:, :-1]),
    "scales-on-float-weights": ("float16", "scales", "inconsistent shapes", lambda a, f: np.ones(5, np.float32)),
    "nan-weight": ("float16", "weights", "NaN or infinite", lambda a, f: _set(a, 3, np.nan)),
    "infinite-dense-weight": ("float32", "dense_weights", "NaN or infinite", lambda a, f: _set(a, (0, 0), np.inf)),
    "rows-as-int32": ("uint8", "docs", "unexpected types", lambda a, f: a.astype(np.int32)),
    "weights-as-int8": ("uint8", "weights", "unexpected types", lambda a, f: a.astype(np.int8)),
    "dense-weights-of-another-type": ("uint8", "dense_weights", "unexpected types", lambda a, f: a.astype(np.float16)),
}


def _set(array, where, value):
    array[where] = value
    return array


def _set_last(array, folder, value):
    indptr = np.load(folder / POSTING_FILES["indptr"])
    array[indptr[4 * VOCAB]] = value  # the first posting of block 4
    return array


def _swap_first_list(array, folder):
    indptr = np.load(folder / POSTING_FILES["indptr"])
    start = int(indptr[np.flatnonzero(np.diff(indptr) >= 2)[0]])
    array[start], array[start + 1] = array[start + 1], array[start]
    return array


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_postings_that_would_mislead_the_kernel_are_refused(small_blocks, tmp_path, damage):
    """A consistent manifest over hostile arrays: the kernel must never index outside its arrays."""
    precision, name, message, change = DAMAGES[damage]
    SparseIndex.build(skewed(300, seed=23), precision=precision).save(tmp_path / "idx")
    folder = tmp_path / "idx"
    SparseIndex.load(folder)  # sound before the change
    rewrite(folder, POSTING_FILES[name], change(np.load(folder / POSTING_FILES[name]), folder))
    with pytest.raises(IndexFormatError, match=f"{message}.*rebuild the index"):
        SparseIndex.load(folder)


@pytest.mark.parametrize("block_size", [0, 70_000, "64", True, 128, None])
def test_a_manifest_block_size_that_does_not_fit_the_arrays_is_refused(small_blocks, tmp_path, block_size):
    SparseIndex.build(skewed(300, seed=24), precision="uint8").save(tmp_path / "idx")
    rewrite(tmp_path / "idx", None, manifest_change={"block_size": block_size})
    with pytest.raises(IndexFormatError, match="rebuild the index"):
        SparseIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("name", ["scales", "dense_indptr", "docs"])
def test_a_flipped_bit_in_a_postings_file_fails_its_checksum(small_blocks, tmp_path, name):
    SparseIndex.build(skewed(300, seed=25), precision="uint8").save(tmp_path / "idx")
    file = tmp_path / "idx" / POSTING_FILES[name]
    data = bytearray(file.read_bytes())
    data[-3] ^= 0x10
    file.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match="checksum"):
        SparseIndex.load(tmp_path / "idx")


@pytest.mark.parametrize("damage", ["row-out-of-range", "unsorted-list", "nan-weight", "offsets"])
def test_hostile_format_2_postings_are_refused(tmp_path, damage):
    write_format2_index(tmp_path / "idx", skewed(50, seed=26), [{"id": str(i)} for i in range(50)])
    folder = tmp_path / "idx"
    name = f"postings.{'weights' if damage == 'nan-weight' else 'indptr' if damage == 'offsets' else 'docs'}.npy"
    array = np.load(folder / name)
    if damage == "row-out-of-range":
        array[5] = 10_000
    elif damage == "unsorted-list":
        start = np.load(folder / "postings.indptr.npy")[0]
        array[start], array[start + 1] = array[start + 1], array[start]
    elif damage == "nan-weight":
        array[3] = np.nan
    else:
        array[10] = array[-1] + 5
    rewrite(folder, name, array)
    with pytest.raises(IndexFormatError, match="rebuild the index"):
        SparseIndex.load(folder)


@pytest.mark.parametrize("damage", ["duplicate-id", "broken-line", "merged-lines", "not-an-object"])
def test_bad_items_in_a_loaded_index_are_refused(tmp_path, damage):
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


def test_an_empty_index_round_trips(tmp_path):
    SparseIndex.build(sp.csr_matrix((0, VOCAB), dtype=np.float32), [], precision="uint8").save(tmp_path / "idx")
    loaded = SparseIndex.load(tmp_path / "idx")
    assert len(loaded) == 0 and loaded.search(skewed(2, seed=27), 5).indices.shape == (2, 0)
