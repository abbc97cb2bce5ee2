"""Index folders on disk: format 3 (the blocked layout) round trips memory-mapped in every precision; older
formats 1 and 2 still load with their stored weights; hostile arrays under a consistent manifest are refused
before the kernel can read outside them."""

import json
from pathlib import Path

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
    # the last column of the last block: still ascending, only the vocabulary's bound can tell
    "dense-term-at-the-vocabulary-size": ("uint8", "dense_terms", "dense terms are inconsistent", lambda a, f: _set(a, -1, VOCAB)),
    "one-weight-short": ("uint8", "weights", "inconsistent shapes", lambda a, f: a[:-1]),
    "rows-as-a-column": ("uint8", "docs", "inconsistent shapes", lambda a, f: a.reshape(-1, 1)),
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
    with pytest.raises(IndexFormatError, match=f"{message}.*; rebuild the index[.]$"):
        SparseIndex.load(folder)


@pytest.mark.parametrize("block_size", [0, 65_537, 70_000, "64", True, None])
def test_the_postings_check_refuses_a_block_size_outside_its_range_itself(small_blocks, block_size):
    """The manifest's schema refuses these first on load; the postings check stands behind it on its own."""
    from mlsr.errors import InputError
    from mlsr.index.checks import checked_blocks

    index = SparseIndex.build(skewed(300, seed=23), precision="uint8")
    arrays = {name: getattr(index.inverted, name) for name in POSTING_FILES}
    assert checked_blocks(arrays, 300, VOCAB, 64).n_docs == 300
    with pytest.raises(InputError) as raised:
        checked_blocks(arrays, 300, VOCAB, block_size)
    assert str(raised.value) == f"the manifest's block size {block_size!r} is not 1..65,536; rebuild the index."


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


def _listed_term_as_dense(arrays):
    """The last dense column moved to a term that also has a posting list (kept ascending)."""
    listed = np.flatnonzero(np.diff(arrays["indptr"]))
    arrays["dense_terms"][-1] = listed[listed > arrays["dense_terms"][-2]][0]


def _as(name, dtype):
    def change(arrays):
        arrays[name] = arrays[name].astype(dtype)
    return change


def _at(name, where, value):
    def change(arrays):
        arrays[name][where] = value
    return change


def _shaped(change_shape, *names):
    def change(arrays):
        for name in names:
            arrays[name] = change_shape(arrays[name])
    return change


FORMAT2_DAMAGES = {  # name: (change of the loaded arrays, what the error says); each breaks one condition only
    "offsets-as-int32": (_as("indptr", np.int32), "unexpected types"),
    "rows-as-int64": (_as("docs", np.int64), "unexpected types"),
    "dense-terms-as-int64": (_as("dense_terms", np.int64), "unexpected types"),
    "dense-weights-of-another-type": (_as("dense_weights", np.float32), "unexpected types"),  # weights are float16
    "offsets-one-longer": (_shaped(lambda x: np.append(x, x[-1]), "indptr"), "inconsistent shapes"),
    "rows-as-a-column": (_shaped(lambda x: x.reshape(-1, 1), "docs", "weights"), "inconsistent shapes"),
    "one-weight-short": (_shaped(lambda x: x[:-1], "weights"), "inconsistent shapes"),
    "dense-terms-as-a-column": (_shaped(lambda x: x.reshape(-1, 1), "dense_terms"), "inconsistent shapes"),
    "dense-weights-one-row-longer": (_shaped(lambda x: x[:, :-1], "dense_weights"), "inconsistent shapes"),
    "first-offset-not-zero": (_at("indptr", 0, 1), "offsets are inconsistent"),
    "offsets-beyond-the-postings": (_at("indptr", -1, 10_000), "offsets are inconsistent"),
    "offsets-going-down": (lambda a: _at("indptr", 40, a["indptr"][39] - 1)(a), "offsets are inconsistent"),
    "dense-term-below-zero": (_at("dense_terms", 0, -1), "dense terms are inconsistent"),
    "dense-term-outside-the-vocabulary": (_at("dense_terms", -1, VOCAB), "dense terms are inconsistent"),
    "dense-terms-repeated": (lambda a: _at("dense_terms", 1, a["dense_terms"][0])(a), "dense terms are inconsistent"),
    "term-both-listed-and-dense": (_listed_term_as_dense, "dense terms are inconsistent"),
    "row-out-of-range": (_at("docs", 5, 50), "names a document outside the index"),
    "row-below-zero": (_at("docs", 5, -1), "names a document outside the index"),
    "unsorted-list": (lambda a: _at("docs", slice(0, 2), a["docs"][1::-1].copy())(a), "ascending document order"),
    "row-twice-in-a-list": (lambda a: _at("docs", 1, a["docs"][0])(a), "ascending document order"),
    "nan-weight": (_at("weights", 3, np.nan), "postings hold NaN or infinite"),
    "infinite-dense-weight": (_at("dense_weights", (0, 0), np.inf), "dense terms hold NaN or infinite"),
}


@pytest.mark.parametrize("damage", sorted(FORMAT2_DAMAGES))
def test_hostile_format_2_postings_are_refused(tmp_path, damage):
    """Each condition of format 2's checks alone, under a manifest that vouches for the changed files."""
    folder = write_format2_index(tmp_path / "idx", skewed(50, seed=26), [{"id": str(i)} for i in range(50)])
    change, message = FORMAT2_DAMAGES[damage]
    arrays = {name: np.load(folder / f"postings.{name}.npy") for name in
              ("indptr", "docs", "weights", "dense_terms", "dense_weights")}
    lengths = np.diff(arrays["indptr"])
    assert len(arrays["dense_terms"]) >= 2 and lengths[lengths > 0][0] >= 2  # every damage has its place
    before = {name: array.copy() for name, array in arrays.items()}
    change(arrays)
    for name, array in arrays.items():
        if array.shape != before[name].shape or array.dtype != before[name].dtype or (array != before[name]).any():
            rewrite(folder, f"postings.{name}.npy", array)
    with pytest.raises(IndexFormatError, match=f"{message}.*; rebuild the index[.]$"):
        SparseIndex.load(folder)


@pytest.mark.parametrize("chunk", [1 << 24, 7, 8, 9])
def test_sound_format_2_postings_load_whatever_the_check_chunk(tmp_path, monkeypatch, chunk):
    """Lists that start low after a list ending high, term 0 and 1 with lists, an empty last document: sound, at
    every chunk boundary of the checks (their real size, and ones that cut lists anywhere)."""
    monkeypatch.setattr("mlsr.index.checks._CHECK_CHUNK", chunk)
    docs = skewed(40, seed=28).toarray()
    docs[:, :2] = 0
    docs[[3, 30], 0], docs[[1, 2, 35], 1] = 0.5, 0.25  # lists for terms 0 and 1: a step down at list 1's start
    docs[-1] = 0  # the last document holds no term
    folder = write_format2_index(tmp_path / "idx", sp.csr_matrix(docs), [{"id": str(i)} for i in range(40)],
                                 precision="float32", dense_share=2.0)  # no dense columns: every term a list
    assert np.load(folder / "postings.indptr.npy")[1:3].tolist() == [2, 5]
    loaded = SparseIndex.load(folder)
    assert len(loaded) == 40 and loaded.vectors.shape == (40, VOCAB) and loaded.vectors.dtype == np.float32
    np.testing.assert_array_equal(loaded.vectors.toarray(), docs.astype(np.float32))


@pytest.mark.parametrize("at", [6, 7, 8])
def test_format_2_damage_on_either_side_of_a_check_chunk_is_found(tmp_path, monkeypatch, at):
    """A row out of range, or a step down inside a list, at the last posting of a chunk or the first of the next."""
    monkeypatch.setattr("mlsr.index.checks._CHECK_CHUNK", 7)
    folder = write_format2_index(tmp_path / "idx", skewed(60, seed=29), [{"id": str(i)} for i in range(60)],
                                 precision="float32", dense_share=2.0)
    indptr, docs = np.load(folder / "postings.indptr.npy"), np.load(folder / "postings.docs.npy")
    assert not np.isin(np.arange(at - 1, at + 2), indptr).any()  # positions at - 1 .. at + 1 are inside one list
    outside = docs.copy()
    outside[at] = 60
    rewrite(folder, "postings.docs.npy", outside)
    with pytest.raises(IndexFormatError, match="names a document outside the index"):
        SparseIndex.load(folder)
    falling = docs.copy()
    falling[at] = falling[at - 1]  # a row twice in one list, the second copy at `at`
    rewrite(folder, "postings.docs.npy", falling)
    with pytest.raises(IndexFormatError, match="not in ascending document order"):
        SparseIndex.load(folder)


def test_format_2_weights_of_a_type_it_never_wrote_are_refused(tmp_path):
    """float64 weights and columns agree with each other, but format 2 stored float16 or float32 only (the manifest's
    precision refuses them first on load: this is the check behind it)."""
    from mlsr.errors import InputError
    from mlsr.index.checks import format2_rows

    folder = write_format2_index(tmp_path / "idx", skewed(20, seed=27), [{"id": str(i)} for i in range(20)])
    arrays = {name: np.load(folder / f"postings.{name}.npy") for name in
              ("indptr", "docs", "weights", "dense_terms", "dense_weights")}
    rows = format2_rows(arrays, 20, VOCAB)
    assert rows.shape == (20, VOCAB) and rows.dtype == np.float32 and rows.indices.dtype == np.int32
    arrays["weights"], arrays["dense_weights"] = arrays["weights"].astype(np.float64), arrays["dense_weights"].astype(
        np.float64)
    with pytest.raises(InputError, match="^the postings have unexpected types; rebuild the index.$"):
        format2_rows(arrays, 20, VOCAB)


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


@pytest.mark.parametrize("manifest, described", [
    ({"count": 1234, "documents": "image+caption", "dense_size": 256,
      "models": {"backbone": {"id": "Salesforce/blip"}, "head": {"id": "lsr42/h"}, "tokenizer": {"id": "t"}}},
     "1,234 items, image+caption documents, dense vectors, head lsr42/h, backbone Salesforce/blip"),
    ({"count": 0}, "0 items, image documents, no dense vectors"),
    ({"count": 3, "dense_size": None, "models": {"head": {"id": None}, "backbone": "b"}},
     "3 items, image documents, no dense vectors"),
    ({"count": 3, "models": None}, "3 items, image documents, no dense vectors"),
    ({"count": "many"}, "its manifest cannot be read"), ({"documents": "image"}, "its manifest cannot be read"),
    ({"count": 3, "models": ["head"]}, "its manifest cannot be read"), ([1, 2], "its manifest cannot be read"),
    ("{not json", "its manifest cannot be read"), (b"\xff\xfe", "its manifest cannot be read"),
])
def test_a_folder_holding_an_index_is_refused_saying_what_it_holds(tmp_path, manifest, described):
    """Read as it is (no checks): the message helps whoever is about to replace it, whatever state it is in."""
    from mlsr.errors import InputError
    from mlsr.index.folder import check_new_target, manifest_as_is

    folder = tmp_path / "idx"
    folder.mkdir()
    raw = manifest if isinstance(manifest, (str, bytes)) else json.dumps(manifest)
    (folder / MANIFEST_FILE).write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    with pytest.raises(InputError) as raised:
        check_new_target(folder, how="--overwrite")
    assert str(raised.value) == (f"{folder} holds an index already ({described}); nothing was changed. To replace it,"
                                 " say so (--overwrite), or choose another folder.")
    with pytest.raises(InputError, match=r"; nothing was changed\. To replace it, say so \(overwrite=True\), or"):
        check_new_target(folder)  # the library's own words by default
    assert check_new_target(folder, overwrite=True) == folder
    assert manifest_as_is(folder) == (manifest if isinstance(manifest, dict) else None)


def test_a_manifest_is_read_as_utf8_whatever_the_locale(tmp_path):
    """A non-ASCII field (a caption, a date) in the manifest under an ASCII locale without UTF-8 mode: read for a
    Hub download and for the message about a folder that holds an index (here first, then under C)."""
    import os
    import subprocess
    import sys

    from mlsr.index.folder import manifest_as_is
    from mlsr.index.hub import HubIndexId, _listed_files

    SparseIndex.build(skewed(3, seed=9)).save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["note"] = "caf\u00e9"
    (tmp_path / "idx" / MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False), encoding="utf-8")
    assert len(_listed_files(tmp_path / "idx", HubIndexId("me/x"))) == len(manifest["files"])
    assert manifest_as_is(tmp_path / "idx")["note"] == "caf\u00e9"
    script = ("import sys; from pathlib import Path; from mlsr.index.hub import HubIndexId, _listed_files;"
              " from mlsr.index.folder import manifest_as_is; folder = Path(sys.argv[1]);"
              " assert manifest_as_is(folder)['note'] == 'caf\\u00e9';"
              " print(len(_listed_files(folder, HubIndexId('me/x'))))")
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "idx")], env=env, capture_output=True,
                            text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout) == len(manifest["files"])


def test_a_loaded_index_keeps_only_what_searches_read_resident(tmp_path):
    """The load's checks read every page of the postings and the forward view once; the pages are given back after
    (Linux: /proc/self/smaps), so a large index costs resident memory only for what searches touch."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/smaps")
    from tests.test_files_release import resident_kib

    SparseIndex.build(skewed(4000, seed=30, per_row=40), precision="float32").save(tmp_path / "idx")
    loaded = SparseIndex.load(tmp_path / "idx")
    for name in ("postings.docs.npy", "postings.weights.npy", "forward.terms.npy", "forward.weights.npy"):
        assert (tmp_path / "idx" / name).stat().st_size > 64 * 1024, name  # pages enough to tell
        assert resident_kib(tmp_path / "idx" / name) < 16, name
    assert len(loaded) == 4000


def test_a_folder_with_thumbnails_and_a_vocabulary_loads_them_as_saved(tmp_path):
    from mlsr.index.thumbnails import Thumbnails

    vocab = Vocabulary(tuple(f"t{i}" for i in range(VOCAB)))
    pictures = Thumbnails.from_pictures([b"RIFF1", None, b"RIFF22"])
    SparseIndex.build(skewed(3, seed=31), vocab=vocab, thumbnails=pictures).save(tmp_path / "idx")
    for mmap in (True, False):
        loaded = SparseIndex.load(tmp_path / "idx", mmap=mmap)
        assert loaded.vocab is not None and loaded.vocab.sha256 == vocab.sha256
        assert [loaded.thumbnails.picture(row) for row in range(3)] == [b"RIFF1", None, b"RIFF22"]
    rewrite(tmp_path / "idx", None, manifest_change={"thumbnails": 1})
    with pytest.raises(IndexFormatError, match=r": the manifest says 1 thumbnails, the files hold 2$"):
        SparseIndex.load(tmp_path / "idx")


def test_an_item_count_that_disagrees_with_the_manifest_is_refused(tmp_path):
    SparseIndex.build(skewed(3, seed=32)).save(tmp_path / "idx")
    rewrite(tmp_path / "idx", None, manifest_change={"count": 4})
    with pytest.raises(IndexFormatError, match=r": the manifest says 4 items, items.jsonl holds 3; rebuild the"
                                               r" index\.$"):
        SparseIndex.load(tmp_path / "idx")


def test_an_index_keeps_its_lineage_through_saves_and_edits_and_another_has_its_own(tmp_path, caplog):
    """The first save names the index (32 hex digits from its files' checksums); a save of it loaded, or of an edit
    of it, keeps the name; another index gets another."""
    import re

    with caplog.at_level("INFO", logger="mlsr.index.folder"):
        SparseIndex.build(skewed(5, seed=33)).save(tmp_path / "a")
    assert f"saved 5 documents to {tmp_path / 'a'}" in [record.getMessage() for record in caplog.records]
    manifest = json.loads((tmp_path / "a" / MANIFEST_FILE).read_text())
    lineage = manifest["lineage"]
    assert re.fullmatch("[0-9a-f]{32}", lineage) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", manifest["saved"])
    loaded = SparseIndex.load(tmp_path / "a")
    loaded.save(tmp_path / "again")
    loaded.add(skewed(2, seed=34)).save(tmp_path / "added")
    SparseIndex.build(skewed(5, seed=35)).save(tmp_path / "other")
    lineages = [json.loads((tmp_path / name / MANIFEST_FILE).read_text())["lineage"]
                for name in ("again", "added", "other")]
    assert lineages[:2] == [lineage, lineage] and lineages[2] != lineage


def test_a_manifest_the_os_cannot_read_is_named_with_the_reason(tmp_path):
    (tmp_path / "idx" / MANIFEST_FILE).mkdir(parents=True)  # a folder where the file should be
    with pytest.raises(IndexFormatError) as raised:
        SparseIndex.load(tmp_path / "idx")
    assert str(raised.value) == f"index {tmp_path / 'idx'}: manifest.json cannot be read (is a directory)."


def test_a_missing_folder_or_a_file_is_not_an_index_and_says_what_to_do(tmp_path):
    with pytest.raises(IndexFormatError) as raised:
        SparseIndex.load(tmp_path / "nowhere")
    assert str(raised.value) == (f"no index at {tmp_path / 'nowhere'}. Build one with `python -m mlsr build-index"
                                 f" --images DIR --out {tmp_path / 'nowhere'}`.")
    (tmp_path / "file").write_text("x")
    with pytest.raises(IndexFormatError) as raised:
        SparseIndex.load(tmp_path / "file")
    assert str(raised.value) == f"{tmp_path / 'file'} is a file, not an index folder."


def test_a_listed_file_the_os_refuses_to_read_is_named_with_the_reason(tmp_path, monkeypatch):
    from mlsr.index import folder as folder_module

    SparseIndex.build(skewed(3, seed=36)).save(tmp_path / "idx")
    digest = folder_module.sha256_file

    def refuse_items(file):
        if file.name == "items.jsonl":
            raise PermissionError(13, "Permission denied")
        return digest(file)

    monkeypatch.setattr(folder_module, "sha256_file", refuse_items)
    with pytest.raises(IndexFormatError) as raised:
        SparseIndex.load(tmp_path / "idx")
    assert str(raised.value) == f"index {tmp_path / 'idx'}: items.jsonl cannot be read (permission denied)."


def test_saving_an_index_whose_info_breaks_the_schema_says_so_before_writing(tmp_path):
    from mlsr.errors import InputError

    index = SparseIndex.build(skewed(3, seed=37), info={"documents": "image"})  # documents, but no models
    with pytest.raises(InputError) as raised:
        index.save(tmp_path / "idx")
    assert str(raised.value).startswith("the index to save: manifest.json: 'models' is missing")
    assert str(raised.value).endswith("; give the index the info mlsr's builders record.")
    assert not (tmp_path / "idx").exists()


def test_a_format_2_manifest_is_checked_for_its_postings_counts(tmp_path):
    folder = write_format2_index(tmp_path / "idx", skewed(20, seed=38), [{"id": str(i)} for i in range(20)])
    rewrite(folder, None, manifest_change={"postings": {"stored": -1, "dense_terms": 0}})
    with pytest.raises(IndexFormatError, match=r"'postings' must be \{'stored': n, 'dense_terms': m\} \(whole"):
        SparseIndex.load(folder)


def test_a_thumbnail_count_past_the_item_count_is_refused_by_the_schema(tmp_path):
    from mlsr.index.thumbnails import Thumbnails

    SparseIndex.build(skewed(3, seed=39), thumbnails=Thumbnails.from_pictures([b"a", b"b", None])).save(tmp_path / "i")
    rewrite(tmp_path / "i", None, manifest_change={"thumbnails": 4})
    with pytest.raises(IndexFormatError, match=r"'thumbnails' must count the rows with a picture \(0\.\.count\) exactly"
                                               r" when the thumbnail files are listed, got 4; rebuild the index\.$"):
        SparseIndex.load(tmp_path / "i")

