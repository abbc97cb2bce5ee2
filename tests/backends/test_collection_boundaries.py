"""A whole export and opening its collection, over an in-memory stand-in for a Milvus collection (rows, schema,
properties, count queries, brute-force search): what the collection is made of, a re-export, another index
refused or replaced, an earlier version brought up to date, an export that falls short, and the checks `open`
makes before it searches (mutation testing found these unchecked; tests/backends/test_milvus.py runs the same
flows on Milvus Lite)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlsr.backends import milvus as milvus_module
from mlsr.backends.milvus import FINGERPRINT_PROPERTY, MilvusBackend, index_fingerprint
from mlsr.backends.milvus_export import export_index, row_digests
from mlsr.errors import BackendError
from mlsr.index.sparse import SparseIndex
from tests.backends.test_backends_boundaries import VOCAB, tied_docs


class Schema:
    def __init__(self, description: str) -> None:
        self.description, self.fields = description, []

    def add_field(self, name, kind, **options):
        self.fields.append({"name": name, "type": str(kind), **options})


class IndexParams:
    def __init__(self) -> None:
        self.indexes = []

    def add_index(self, field, **options):
        self.indexes.append((field, options))


class Collection:
    """One collection of the stand-in Milvus: rows by primary key, schema, properties; every call recorded."""

    def __init__(self, lose_last: bool = False) -> None:
        self.rows, self.schema, self.properties, self.calls, self.lose_last = {}, None, {}, [], lose_last
        self.closed = False

    def has_collection(self, name):
        return self.schema is not None

    def create_schema(self, auto_id, enable_dynamic_field, description):
        assert (auto_id, enable_dynamic_field) == (False, False)
        return Schema(description)

    def prepare_index_params(self):
        return IndexParams()

    def create_collection(self, name, schema, index_params, properties):
        self.calls.append("create")
        self.schema, self.index_params, self.properties, self.rows = schema, index_params, dict(properties), {}

    def drop_collection(self, name):
        self.calls.append("drop")
        self.dropped = name
        self.schema, self.rows = None, {}

    def describe_collection(self, name):
        return {"fields": list(self.schema.fields), "properties": dict(self.properties),
                "description": self.schema.description}

    def load_collection(self, name):
        self.calls.append("load")

    def query(self, name, filter, output_fields):
        below = int(filter.split("<")[1]) if filter else None
        return [{"count(*)": sum(1 for row in self.rows if below is None or row < below)}]

    def insert(self, name, rows):
        self.calls.append("insert")
        self.rows.update({record["row"]: record for record in rows[: len(rows) - self.lose_last]})

    def upsert(self, name, rows):
        self.calls.append("upsert")
        self.rows.update({record["row"]: record for record in rows})

    def delete(self, name, filter):
        self.calls.append(filter)
        first = int(filter.split(">=")[1])
        self.rows = {row: record for row, record in self.rows.items() if row < first}

    def query_iterator(self, name, batch_size, filter, output_fields):
        batches = iter([[{"row": row, "digest": record.get("digest")} for row, record in self.rows.items()], []])

        class Iterator:
            def next(self):
                return next(batches)

            def close(self):
                pass

        return Iterator()

    def flush(self, name):
        self.calls.append("flush")

    def alter_collection_properties(self, name, properties):
        self.calls.append("alter")
        self.properties.update(properties)

    def close(self):
        self.closed = True


def saved(tmp_path, name: str, n: int, dense: bool = True) -> SparseIndex:
    vectors = tied_docs(n)
    SparseIndex.build(vectors, [{"id": f"item-{row}"} for row in range(n)],
                      dense=np.arange(2 * n, dtype=np.float32).reshape(n, 2) if dense else None).save(tmp_path / name)
    return SparseIndex.load(tmp_path / name)


@pytest.mark.parametrize("dense", [True, False])
def test_a_fresh_export_makes_the_documented_collection(tmp_path, dense):
    index = saved(tmp_path, "idx", 5, dense)
    client = Collection()
    report = export_index(index, "http://h:1", "c", batch_size=2, sparse_index="SPARSE_WAND", client=client)
    assert (report.collection, report.count, report.written, report.already, report.deleted) == ("c", 5, 5, 0, 0)
    names = [field["name"] for field in client.schema.fields]
    assert names == ["row", "item_id", "item", "sparse", "digest"] + (["dense"] if dense else [])
    assert client.schema.fields[0]["is_primary"] and client.schema.fields[1]["max_length"] == 1024
    assert client.schema.fields[4]["max_length"] == 32 and (not dense or client.schema.fields[5]["dim"] == 2)
    assert client.index_params.indexes == [("sparse", {"index_type": "SPARSE_WAND", "metric_type": "IP"})] + (
        [("dense", {"index_type": "FLAT", "metric_type": "IP"})] if dense else [])
    fingerprint = index_fingerprint(tmp_path / "idx")
    assert json.loads(client.properties[FINGERPRINT_PROPERTY]) == fingerprint
    assert json.loads(client.schema.description) == fingerprint
    assert client.calls == ["create", "load", "insert", "insert", "insert", "flush"] and not client.closed
    digests = row_digests(index)
    for row in range(5):
        record = client.rows[row]
        assert (record["item_id"], record["item"], record["digest"]) == (f"item-{row}", {"id": f"item-{row}"},
                                                                         digests[row])
        assert dense == ("dense" in record)


def test_a_re_export_writes_nothing_and_another_index_is_refused_unless_replaced(tmp_path):
    index, other = saved(tmp_path, "idx", 5), saved(tmp_path, "other", 3)
    client = Collection()
    export_index(index, "http://h:1", "c", client=client)
    client.calls.clear()
    report = export_index(index, "http://h:1", "c", client=client)
    assert (report.written, report.already, report.deleted) == (0, 5, 0) and "insert" not in client.calls
    with pytest.raises(BackendError, match=r"^collection 'c' holds an export of another index \(5 rows, sparse"
                                           r" vectors [0-9a-f]{12}\), not this index folder \(3 rows, sparse vectors"
                                           r" [0-9a-f]{12}\); replace=True drops it, or choose another collection\.$"):
        export_index(other, "http://h:1", "c", client=client)
    report = export_index(other, "http://h:1", "c", replace=True, client=client)
    assert (report.count, report.written) == (3, 3) and "drop" in client.calls and sorted(client.rows) == [0, 1, 2]
    assert client.dropped == "c"


def test_an_earlier_version_is_brought_up_to_date_and_then_stands_for_this_one(tmp_path):
    index = saved(tmp_path, "idx", 6)
    client = Collection()
    export_index(index, "http://h:1", "c", client=client)
    smaller = index.remove(["item-5", "item-0"])  # the same lineage: every row moves up, the last two go
    smaller.save(tmp_path / "idx")
    smaller = SparseIndex.load(tmp_path / "idx")
    client.calls.clear()
    report = export_index(smaller, "http://h:1", "c", client=client)
    assert (report.count, report.deleted) == (4, 2) and report.written + report.already == 4
    assert client.calls[0] == "load" and "row >= 4" in client.calls and client.calls[-1] == "alter"
    assert json.loads(client.properties[FINGERPRINT_PROPERTY]) == index_fingerprint(tmp_path / "idx")
    assert [client.rows[row]["item_id"] for row in range(4)] == ["item-1", "item-2", "item-3", "item-4"]


def test_an_export_that_falls_short_says_so(tmp_path):
    index = saved(tmp_path, "idx", 5)
    # batches of 2, 2 and 1 rows, each losing its last: 1 + 1 + 0 rows stored
    with pytest.raises(BackendError, match=r"^collection 'c' holds 2 rows after export, expected 5; re-run export\.$"):
        export_index(index, "http://h:1", "c", batch_size=2, client=Collection(lose_last=True))


def test_opening_checks_the_collection_before_searching(tmp_path, monkeypatch):
    index = saved(tmp_path, "idx", 5)
    client = Collection()
    monkeypatch.setattr(milvus_module, "connect", lambda uri: client)
    with pytest.raises(BackendError, match=f"^Milvus at http://h:1 has no collection 'c'; run `python -m mlsr export"
                                           f" --index {tmp_path / 'idx'} --milvus-uri http://h:1 --collection c`.$"):
        MilvusBackend.open(index, "http://h:1", "c")
    assert client.closed
    export_index(index, "http://h:1", "c", client=client)
    client.rows.pop(4)
    with pytest.raises(BackendError, match=r"^collection 'c' holds 4 of 5 rows \(an export was interrupted\); re-run"):
        MilvusBackend.open(index, "http://h:1", "c")
    other = saved(tmp_path, "other", 3)
    with pytest.raises(BackendError, match=r"^collection 'c' at http://h:1 holds an export of another index \(5 rows,"):
        MilvusBackend.open(other, "http://h:1", "c")
    export_index(index, "http://h:1", "c", client=client)  # resumes: row 4 again
    searched = []
    monkeypatch.setattr(MilvusBackend, "warm_up", lambda self: searched.append(self.has_dense))
    client.closed = False
    backend = MilvusBackend.open(index, "http://h:1", "c")
    assert searched == [True] and backend.collection == "c" and backend.uri == "http://h:1" and not client.closed


def refusing(name: str):
    """A client call that Milvus refuses."""
    def refuse(*args, **kwargs):
        from pymilvus import MilvusException

        raise MilvusException(code=1, message=f"{name} refused")
    return refuse


@pytest.mark.parametrize("failing", ["query", "describe_collection", "load_collection", "fields"])
def test_opening_a_collection_milvus_refuses_to_describe_names_the_address(tmp_path, monkeypatch, failing):
    """Each call of opening: the count, the fingerprint's description, the load, the fields' description."""
    index = saved(tmp_path, "idx", 5)
    client = Collection()
    export_index(index, "http://h:1", "c", client=client)
    if failing == "fields":  # the fingerprint is read, then the fields' description is refused
        described = iter([client.describe_collection("c")])
        client.describe_collection = lambda name: next(described, None) or refusing("fields")()
    else:
        setattr(client, failing, refusing(failing))
    monkeypatch.setattr(milvus_module, "connect", lambda uri: client)
    with pytest.raises(BackendError, match=f"^Milvus at http://h:1: {failing} refused$"):
        MilvusBackend.open(index, "http://h:1", "c")


@pytest.mark.parametrize("failing, stored", [("insert", 0), ("query", 2)])
def test_an_export_whose_write_or_resume_count_milvus_refuses_names_the_address(tmp_path, failing, stored):
    """A write, or the count of the stored prefix (`row < m`) an interrupted export resumes from."""
    index = saved(tmp_path, "idx", 5)
    client = Collection()
    export_index(index, "http://h:1", "c", client=client)
    client.rows = {row: client.rows[row] for row in range(stored)}
    if failing == "insert":
        client.insert = refusing("insert")
    else:  # the plain count answers; the count below the stored rows is refused
        client.query = lambda name, filter, output_fields: (refusing("query")() if filter
                                                            else Collection.query(client, name, filter, output_fields))
    with pytest.raises(BackendError, match=f"^Milvus at http://h:1: {failing} refused$"):
        export_index(index, "http://h:1", "c", client=client)


def test_an_export_in_batches_of_one_row_writes_each_row_once(tmp_path):
    index = saved(tmp_path, "idx", 3)
    client = Collection()
    report = export_index(index, "http://h:1", "c", batch_size=1, client=client)
    assert report.written == 3 and client.calls.count("insert") == 3 and sorted(client.rows) == [0, 1, 2]


def test_an_export_whose_collection_milvus_refuses_to_make_names_the_address(tmp_path):
    client = Collection()
    client.create_collection = refusing("create_collection")
    with pytest.raises(BackendError, match="^Milvus at http://h:1: create_collection refused$"):
        export_index(saved(tmp_path, "idx", 3), "http://h:1", "c", client=client)


def test_the_fingerprint_holds_what_the_docs_list_from_the_manifest(tmp_path):
    """docs/milvus.md: count, vocabulary size and hash, dense size, and the sha256 of the sparse vectors' files (one
    hash over their `name sha256` lines, as every earlier export recorded it), items.jsonl and dense.npy; the lineage."""
    import hashlib

    from mlsr.backends.milvus import FINGERPRINT_FORMAT
    from mlsr.index.manifest import POSTING_FILES
    from mlsr.vocab import Vocabulary

    vocab = Vocabulary(tuple(f"t{i}" for i in range(VOCAB)))
    SparseIndex.build(tied_docs(4), vocab=vocab, dense=np.ones((4, 3), np.float32)).save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    files = manifest["files"]
    listing = "".join(f"{name} {files[name]['sha256']}\n" for name in POSTING_FILES.values())
    assert index_fingerprint(tmp_path / "idx") == {
        "format": FINGERPRINT_FORMAT, "count": 4, "vocab_size": VOCAB, "vocab_sha256": vocab.sha256, "dense_size": 3,
        "sparse_sha256": hashlib.sha256(listing.encode()).hexdigest(), "items_sha256": files["items.jsonl"]["sha256"],
        "dense_sha256": files["dense.npy"]["sha256"], "lineage": manifest["lineage"]}

