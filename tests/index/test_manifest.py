"""The manifest is checked as a schema: every field's type, range and allowed values, the fields that must agree,
and its own checksum, so that a damaged manifest is blamed on the manifest and never on a file it lists."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.errors import IndexFormatError
from mlsr.index.manifest import FORMAT_VERSION, MANIFEST_FILE, SEAL_FIELD
from mlsr.index.sparse import SparseIndex
from mlsr.vocab import Vocabulary
from tests.helpers.data import write_manifest

VOCAB = 60
MODELS = {"backbone": {"id": "b", "revision": None, "fingerprint": "f1"}, "head": {"id": "h", "revision": None,
          "fingerprint": "f2"}, "tokenizer": {"id": "t", "revision": None, "fingerprint": None},
          "vocab_size": VOCAB, "vocab_sha256": None, "dense_size": 8}


@pytest.fixture
def saved(tmp_path):
    rng = np.random.default_rng(0)
    vectors = sp.random(12, VOCAB, density=0.2, random_state=1, dtype=np.float32, format="csr")
    index = SparseIndex.build(vectors, vocab=Vocabulary(tuple(f"t{i}" for i in range(VOCAB))),
                              dense=rng.normal(size=(12, 8)).astype(np.float32),
                              info={"documents": "image", "models": MODELS, "build": {"images": "photos"}})
    index.save(tmp_path / "idx")
    return tmp_path / "idx"


def edit(folder, change) -> None:
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    change(manifest)
    write_manifest(folder, manifest)  # sealed again, as a tool that knows the format would write it


def put(field, value):
    return lambda manifest: manifest.__setitem__(field, value)


@pytest.mark.parametrize("change, message", [
    (put("precision", "float64"), r"'precision' must be one of float16, float32, uint8, got 'float64'; rebuild"),
    (put("precision", "float32"), "precision float32, the postings hold float16"),
    (put("dense_size", 128), r"dense.npy has shape \(12, 8\), the manifest says \(12, 128\)"),
    (put("dense_size", "8"), "'dense_size' must be a whole number >= 1"),
    (put("documents", "bogus"), "'documents' must be one of image, caption, image.caption, got 'bogus'"),
    (lambda m: m.pop("models"), "'models' is missing"),
    (put("count", -1), "'count' must be a whole number >= 0, got -1"),
    (put("count", 12.0), "'count' must be a whole number >= 0, got 12.0"),
    (put("vocab_size", True), "'vocab_size' must be a whole number >= 1, got True"),
    (put("format_version", "2"), "'format_version' must be a whole number >= 1, got '2'"),
    (lambda m: m.pop("format_version"), "'format_version' must be a whole number >= 1, but it is missing"),
    (put("vocab_sha256", "0" * 63), "'vocab_sha256' must be 64 hex digits"),
    (lambda m: m["files"]["dense.npy"].__setitem__("bytes", "12"), r"'files.dense.npy' must be"),
    (lambda m: m["files"]["items.jsonl"].__setitem__("sha256", None), r"'files.items.jsonl' must be"),
    (lambda m: m["files"].pop("postings.docs.npy"), "'files' must list"),
    (put("postings", {"stored": -3, "dense_terms": 0}), "'postings' must be"),
    (lambda m: m["postings"].__setitem__("stored", m["postings"]["stored"] + 1), "postings.stored = "),
    (lambda m: m["models"].__setitem__("head", "h"), "'models' head must be"),
    (lambda m: m["models"].__setitem__("backbone", 5), r"'models' backbone must be \{'id', 'revision', 'fingerprint'\}"
                                                       r" \(text or null\), got 5"),
    (lambda m: m["models"].__setitem__("tokenizer", {"id": 5}), "'models' tokenizer must be"),
    (put("models", "mine"), "'models' must be a record of the backbone, head and tokenizer, got 'mine'"),
    (lambda m: m["models"].__setitem__("dense_size", "256"),
     "'models' dense_size must be a whole number >= 1 or null, got '256'"),
    (lambda m: m["models"].__setitem__("dense_size", 0), "'models' dense_size must be a whole number >= 1 or null"),
    (lambda m: m["models"].__setitem__("vocab_sha256", "f" * 63),
     f"'models' vocab_sha256 must be 64 hex digits or null, got '{'f' * 38}…; rebuild"),
    (lambda m: m["models"].__setitem__("vocab_size", VOCAB + 1), f"'models' vocab_size must equal the index's {VOCAB}"),
    (put("saved", 20260101), r"'saved' must be a date \(text\), got 20260101; rebuild the index\.$"),
    (put("forward", -1), "'forward' must count the forward view's postings exactly when its files are listed, got -1;"),
    (put("block_size", 1), "the postings have inconsistent shapes"),  # 1 is a block size: then the arrays disagree
    (put("block_size", 0), "'block_size' must be a whole number in 1..65,536, got 0; rebuild the index"),
    (put("block_size", 65_537), "'block_size' must be a whole number in 1..65,536, got 65537; rebuild the index"),
    (put("block_size", 65_536), "the postings have inconsistent shapes"),  # allowed: then the arrays disagree
    (put("lineage", "xyz"), "'lineage' must be 16 to 64 hex digits, got 'xyz'; rebuild the index"),
    (lambda m: m["files"].pop("forward.terms.npy"),
     "'files' must list all of forward.indptr.npy, forward.terms.npy, forward.weights.npy, or none; rebuild"),
    (lambda m: m["files"].__setitem__("thumbnails.data.npy", {"bytes": 1, "sha256": "0" * 64}),
     "'files' must list both thumbnails.offsets.npy and thumbnails.data.npy, or neither; rebuild the index"),
    (lambda m: m["files"].__setitem__("..", {"bytes": 1, "sha256": "0" * 64}),
     r"the manifest names a file outside the folder \('\.\.'\)\.$"),
    (put("files", ["items.jsonl"]), r"'files' must list postings\.indptr\.npy, .*, items\.jsonl, got \['items.jsonl'\];"),
    (lambda m: m["files"].pop("items.jsonl"), r"'files' must list postings\.indptr\.npy, .*, items\.jsonl; rebuild"),
    (put("manifest_sha257", "x"), "'manifest_sha257' is not a field of the format"),
])
def test_each_field_is_checked_and_named(saved, change, message):
    edit(saved, change)
    with pytest.raises(IndexFormatError, match=message):
        SparseIndex.load(saved)


def test_a_newer_format_asks_for_an_upgrade_and_an_edit_without_the_seal_is_blamed_on_the_manifest(saved):
    edit(saved, put("format_version", 99))
    with pytest.raises(IndexFormatError, match=f"format version 99; this mlsr reads up to {FORMAT_VERSION}. Upgrade mlsr"):
        SparseIndex.load(saved)
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    manifest["format_version"] = 2
    (saved / MANIFEST_FILE).write_text(json.dumps(manifest))  # edited by hand: the seal is now stale
    with pytest.raises(IndexFormatError, match="manifest.json does not match its own checksum"):
        SparseIndex.load(saved)


def test_every_flipped_bit_in_the_manifest_is_blamed_on_the_manifest(saved):
    """A bit flipped anywhere (one per byte, all eight in the seal's name) is refused as the manifest's fault,
    unless it leaves the same JSON values (1e5 and 1E5), when the index loads as it was."""
    original = (saved / MANIFEST_FILE).read_bytes()
    parsed = json.loads(original)
    seal_name = original.index(SEAL_FIELD.encode())
    flips = [(i, i % 8) for i in range(len(original))]
    flips += [(i, bit) for i in range(seal_name, seal_name + len(SEAL_FIELD)) for bit in range(8)]
    blamed_elsewhere = []
    for position, bit in flips:
        damaged = bytearray(original)
        damaged[position] ^= 1 << bit
        (saved / MANIFEST_FILE).write_bytes(bytes(damaged))
        try:
            SparseIndex.load(saved)
        except IndexFormatError as error:
            if MANIFEST_FILE not in str(error):
                blamed_elsewhere.append((position, bit, str(error)))
            continue
        assert json.loads(bytes(damaged)) == parsed, (position, bit)
    assert blamed_elsewhere == []


def test_an_index_saved_before_the_seal_still_loads(saved):
    manifest = json.loads((saved / MANIFEST_FILE).read_text())
    del manifest[SEAL_FIELD]
    (saved / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert len(SparseIndex.load(saved)) == 12


def test_a_library_index_without_models_loads_and_says_it_cannot_check_them(tmp_path, caplog):
    from mlsr.models.record import ModelRecord, ModelRef

    SparseIndex.build(sp.eye(3, VOCAB, format="csr", dtype=np.float32)).save(tmp_path / "plain")
    index = SparseIndex.load(tmp_path / "plain")
    index.check_models(ModelRecord(ModelRef("b"), ModelRef("h"), ModelRef("t"), vocab_size=VOCAB))
    assert "records no models" in caplog.text


def test_an_index_that_would_be_refused_on_load_is_refused_on_save(tmp_path):
    """One schema for writing and reading: `documents` without `models` is refused before any file is written."""
    from mlsr.errors import InputError

    index = SparseIndex.build(sp.random(4, 30, density=0.3, format="csr", random_state=0, dtype=np.float32),
                              info={"documents": "image"})
    with pytest.raises(InputError, match="'models' is missing"):
        index.save(tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


WRONG_JSON = [None, True, False, 0, -1, 2.5, 10 ** 12, "", "uint8", "x" * 300, [], ["uint8"], [1, 2], {}, {"a": 1}]


def leaves(value, path=()):
    """Every field of a manifest as a key path, the nested ones (`models.head.id`, `files.X.bytes`) included."""
    yield path
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from leaves(inner, (*path, key))


def test_every_field_set_to_every_json_type_loads_or_is_refused_in_one_line(saved, tmp_path):
    """Each field of the manifest, at every depth, set to each JSON type (re-sealed, as a tool that knows the format
    would): `load` either accepts it or raises IndexFormatError with one line, never another exception."""
    import shutil

    original = json.loads((saved / MANIFEST_FILE).read_text())
    fields = [path for path in leaves(original) if path and path[0] != SEAL_FIELD]
    assert len(fields) > 40
    refused = 0
    for path in fields:
        for value in WRONG_JSON:
            folder = tmp_path / "case"
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(saved, folder)
            manifest = json.loads(json.dumps(original))
            target = manifest
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
            write_manifest(folder, manifest)
            try:
                SparseIndex.load(folder)
            except IndexFormatError as error:
                assert "\n" not in str(error) and str(error), (path, value)
                refused += 1
            except Exception as error:  # noqa: BLE001 (the point: nothing else may escape)
                pytest.fail(f"{'.'.join(path)} = {value!r}: {type(error).__name__}: {error}")
    assert refused > len(fields) * len(WRONG_JSON) // 2


def test_the_seal_is_the_documented_hash_of_the_other_fields(saved):
    """docs/index-format.md: sha256 of the other fields as JSON with sorted keys, compact separators and text
    unescaped (UTF-8), computed here from that sentence, with a non-ASCII field."""
    import hashlib

    edit(saved, put("caption_language", "fran\u00e7ais"))
    manifest = json.loads((saved / MANIFEST_FILE).read_text(encoding="utf-8"))
    body = {key: value for key, value in manifest.items() if key != SEAL_FIELD}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))  # the documented expression
    assert "fran\u00e7ais" in text
    assert manifest[SEAL_FIELD] == hashlib.sha256(text.encode("utf-8")).hexdigest()
    assert SparseIndex.load(saved).info["caption_language"] == "fran\u00e7ais"

