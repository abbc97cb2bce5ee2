"""Exporting to Milvus at its edges, without a Milvus server: the checks that refuse before any connection (ids at
1,024 bytes, negative weights, bad settings), resuming after the stored prefix (empty, one row, all, a gap) in
batches, and bringing an earlier export up to date (only changed rows, stale ones deleted, errors naming the
address), over stand-in clients that keep rows like a collection (mutation testing found these unchecked)."""

from __future__ import annotations

import pytest

from mlsr.backends.milvus_export import export_index
from mlsr.errors import BackendError, IndexFormatError, InputError
from mlsr.index.sparse import SparseIndex
from tests.backends.test_backends_boundaries import tied_docs


# -- export's checks, before any connection -----------------------------------------------------------------------

class Unreachable:
    """A client that must not be reached: the checks before it refuse first."""

    def __getattr__(self, name):
        raise AssertionError(f"the client was used ({name}) before the checks refused")


@pytest.mark.parametrize("kwargs, message", [
    ({"sparse_index": "HNSW"}, r"^sparse index type must be one of \('SPARSE_INVERTED_INDEX', 'SPARSE_WAND'\)"),
    ({"batch_size": 0}, "^batch size must be at least 1, got 0.$"),
    ({"collection": "1st"}, "^collection name '1st'"),
])
def test_export_refuses_bad_settings_before_connecting(tmp_path, kwargs, message):
    SparseIndex.build(tied_docs(3)).save(tmp_path / "idx")
    with pytest.raises(InputError, match=message):
        export_index(tmp_path / "idx", "http://h:1", client=Unreachable(), **kwargs)


def test_export_refuses_an_index_it_cannot_store_before_connecting(tmp_path):
    with pytest.raises(InputError, match=r"^export needs an index loaded from a folder \(SparseIndex\.load\): the folder is"
                                         r" its identity\.$"):
        export_index(SparseIndex.build(tied_docs(3)), "http://h:1", client=Unreachable())
    negative = tied_docs(3)
    negative[1, 4] = -0.5
    SparseIndex.build(negative).save(tmp_path / "negative")
    with pytest.raises(IndexFormatError, match="holds negative term weights; Milvus's sparse vectors take"):
        export_index(tmp_path / "negative", "http://h:1", client=Unreachable())
    for length, refused in ((1024, False), (1025, True)):  # bytes: 2-byte characters count twice
        items = [{"id": "0"}, {"id": "é" * (length // 2) + "x" * (length % 2)}, {"id": "2"}]
        SparseIndex.build(tied_docs(3), items).save(tmp_path / str(length))
        if refused:
            with pytest.raises(IndexFormatError, match=r"^item id 'é{40}'\.\.\. is longer than 1024 bytes\.$"):  # 40 shown
                export_index(tmp_path / str(length), "http://h:1", client=Unreachable())
        else:
            with pytest.raises(AssertionError, match="the client was used"):  # the checks passed
                export_index(tmp_path / str(length), "http://h:1", client=Unreachable())


# -- bringing an earlier export up to date ------------------------------------------------------------------------

class StoredRows:
    """A collection's rows ({row: record}) behind the calls an update makes; `failing` names a call that fails."""

    def __init__(self, records: dict[int, dict], failing: str | None = None) -> None:
        self.records, self.failing, self.calls = dict(records), failing, []

    def _maybe_fail(self, name: str) -> None:
        from pymilvus import MilvusException

        self.calls.append(name)
        if name == self.failing:
            raise MilvusException(code=1, message=f"{name} refused")

    def query_iterator(self, collection, batch_size, filter, output_fields):
        self._maybe_fail("query_iterator")
        unknown = set(output_fields or []) - {"row", "item_id", "item", "sparse", "digest", "dense"}
        if unknown:
            from pymilvus import MilvusException

            raise MilvusException(code=1, message=f"field {unknown} not exist")
        fields = {"row", *(output_fields or [])}  # as Milvus: the primary key and the fields asked for
        records = [{name: value for name, value in record.items() if name in fields}
                   for record in sorted(self.records.values(), key=lambda record: record["row"])]
        batches = iter([records[:3], records[3:], []])

        stored = self

        class Iterator:
            def next(self):
                stored._maybe_fail("next")
                return next(batches)

            def close(self):
                pass

        return Iterator()

    def delete(self, collection, filter):
        self._maybe_fail("delete")
        assert filter.startswith("row >= ")
        first = int(filter.split()[-1])
        self.records = {row: record for row, record in self.records.items() if row < first}

    def upsert(self, collection, rows):
        self._maybe_fail("upsert")
        self.calls[-1] = ("upsert", [record["row"] for record in rows])
        self.records.update({record["row"]: record for record in rows})


@pytest.mark.parametrize("batch_size, batches", [(1, [[1], [3]]), (2, [[1, 3]]), (5, [[1, 3]])])
def test_an_update_rewrites_only_changed_rows_in_batches_and_deletes_the_rest(tmp_path, batch_size, batches):
    from mlsr.backends.milvus_export import _update, row_digests

    index = SparseIndex.build(tied_docs(5), [{"id": f"r{row}"} for row in range(5)])
    digests = row_digests(index)
    stored = {row: {"row": row, "digest": digests[row] if row < 5 and row not in (1, 3) else "old"} for row in range(7)}
    client, progress = StoredRows(stored), []
    assert _update(client, "c", index, batch_size, progress.append, "http://h:1") == (2, 3, 2)  # written, same, deleted
    assert [call for call in client.calls if call[0] == "upsert"] == [("upsert", batch) for batch in batches]
    assert progress == [3] + [len(batch) for batch in batches]
    assert sorted(client.records) == [0, 1, 2, 3, 4] and [client.records[row]["digest"] for row in range(5)] == digests
    assert client.records[3]["item_id"] == "r3" and client.records[3]["sparse"] == {1: 2.0}  # row 3: term 1 only


@pytest.mark.parametrize("failing", ["query_iterator", "next", "delete", "upsert"])
def test_an_update_that_milvus_refuses_names_the_address(failing):
    from mlsr.backends.milvus_export import _update

    index = SparseIndex.build(tied_docs(2))
    client = StoredRows({row: {"row": row, "digest": "old"} for row in range(3)}, failing)
    with pytest.raises(BackendError, match=f"^Milvus at http://h:1: {failing} refused$"):
        _update(client, "c", index, 10, None, "http://h:1")


class CountedRows:
    """A collection holding some rows, behind the count queries and writes that an export's resume makes."""

    def __init__(self, rows: set[int]) -> None:
        self.rows, self.writes = set(rows), []

    def query(self, collection, filter, output_fields):
        assert output_fields == ["count(*)"]
        below = int(filter.split("<")[1]) if filter else None
        return [{"count(*)": sum(1 for row in self.rows if below is None or row < below)}]

    def insert(self, collection, rows):
        self.writes.append(("insert", [record["row"] for record in rows], rows))
        self.rows |= {record["row"] for record in rows}

    def upsert(self, collection, rows):
        self.writes.append(("upsert", [record["row"] for record in rows], rows))
        self.rows |= {record["row"] for record in rows}


@pytest.mark.parametrize("stored, kind, batches, progress", [
    (set(), "insert", [[0, 1], [2, 3], [4, 5], [6]], [2, 2, 2, 1]),
    ({0}, "insert", [[1, 2], [3, 4], [5, 6]], [1, 2, 2, 2]),
    ({0, 1, 2}, "insert", [[3, 4], [5, 6]], [3, 2, 2]),
    ({0, 1, 2, 3, 4, 5}, "insert", [[6]], [6, 1]),
    (set(range(7)), "insert", [], [7]),
    ({1, 2}, "upsert", [[0, 1], [2, 3], [4, 5], [6]], [2, 2, 2, 1]),  # not a prefix: every row rewritten
    ({6}, "upsert", [[0, 1], [2, 3], [4, 5], [6]], [2, 2, 2, 1]),
])
def test_an_export_resumes_after_the_stored_prefix_or_rewrites_everything(stored, kind, batches, progress):
    from mlsr.backends.milvus_export import _continue, row_digests

    index = SparseIndex.build(tied_docs(7))
    client, seen = CountedRows(stored), []
    written = _continue(client, "c", index, 2, seen.append, "http://h:1", True)
    assert written == sum(len(batch) for batch in batches) and seen == progress
    assert [(call, rows) for call, rows, _ in client.writes] == [(kind, batch) for batch in batches]
    digests = row_digests(index)
    assert all(record["digest"] == digests[record["row"]] for _, _, records in client.writes for record in records)
    bare = CountedRows(set())
    assert _continue(bare, "c", index, 7, None, "http://h:1", False) == 7  # a collection made before row digests
    assert [rows for _, rows, _ in bare.writes] == [list(range(7))]
    assert all("digest" not in record for record in bare.writes[0][2])
