"""`export`: an index folder's items and vectors into a Milvus collection, in batches, resumable and idempotent.

The collection layout and the fingerprint that ties it to its index folder are described in `mlsr.backends.milvus`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.backends.milvus import (
    DEFAULT_COLLECTION,
    EXPORT_BATCH,
    FINGERPRINT_PROPERTY,
    MAX_ID_LENGTH,
    SPARSE_INDEX_TYPES,
    check_collection_name,
    connect,
    count_rows,
    describe_fingerprint,
    index_fingerprint,
    milvus_call,
    pymilvus_module,
    recorded_fingerprint,
    sparse_rows,
)
from mlsr.errors import BackendError, IndexFormatError, InputError
from mlsr.index.sparse import SparseIndex

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportReport:
    """What an export did: rows written now, rows already there (resumed or unchanged), rows deleted, time taken."""

    collection: str
    count: int
    written: int
    already: int
    seconds: float
    deleted: int = 0


def export_index(
    index: SparseIndex | str | Path,
    uri: str,
    collection: str = DEFAULT_COLLECTION,
    *,
    batch_size: int = EXPORT_BATCH,
    replace: bool = False,
    sparse_index: str = "SPARSE_INVERTED_INDEX",
    progress: Callable[[int], None] | None = None,
    client=None,
) -> ExportReport:
    """Load an index folder (path or loaded SparseIndex) into a Milvus collection in batches; a re-run continues.

    Row numbers are the primary key, so nothing is duplicated: an interrupted export resumes after the
    rows already stored, a finished one writes nothing. A collection exported from an earlier version
    of this index (the same lineage: before an `add` or `remove`) is brought up to date: only the rows
    whose digest changed are written, the rows beyond the new count deleted. A collection holding
    another index is refused unless `replace` drops it first. The collection is flushed at the end so
    every row is indexed.
    """
    started = time.perf_counter()
    check_collection_name(collection)
    if sparse_index not in SPARSE_INDEX_TYPES:
        raise InputError(f"sparse index type must be one of {SPARSE_INDEX_TYPES}, got {sparse_index!r}.")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}.")
    if not isinstance(index, SparseIndex):
        index = SparseIndex.load(index)
    if index.path is None:
        raise InputError("export needs an index loaded from a folder (SparseIndex.load): the folder is its identity.")
    index_dir = index.path
    if index.has_negative_weights():
        raise IndexFormatError(f"index {index_dir} holds negative term weights; Milvus's sparse vectors take"
                               " non-negative weights only.")
    too_long = next((item["id"] for item in index.items if len(str(item["id"]).encode()) > MAX_ID_LENGTH), None)
    if too_long is not None:
        raise IndexFormatError(f"item id {too_long[:40]!r}... is longer than {MAX_ID_LENGTH} bytes.")
    fingerprint = index_fingerprint(index_dir)
    own_client = client is None
    client = client or connect(uri)
    try:
        earlier = milvus_call(lambda: _prepare_collection(client, collection, fingerprint, index, replace,
                                                          sparse_index), uri)
        fields = milvus_call(lambda: client.describe_collection(collection), uri)["fields"]
        # collections exported before row digests have none
        digests = any(field["name"] == "digest" for field in fields)
        if earlier:
            written, already, deleted = _update(client, collection, index, batch_size, progress, uri)
        else:
            written = _continue(client, collection, index, batch_size, progress, uri, digests)
            already, deleted = len(index) - written, 0
        milvus_call(lambda: client.flush(collection), uri)
        stored = count_rows(client, collection, uri)
        if stored != len(index):
            raise BackendError(f"collection {collection!r} holds {stored} rows after export, expected {len(index)};"
                               " re-run export.")
        if earlier:  # only now does the collection stand for this version of the index
            text = json.dumps(fingerprint, sort_keys=True)
            milvus_call(lambda: client.alter_collection_properties(collection, properties={FINGERPRINT_PROPERTY: text}),
                        uri)
        return ExportReport(collection, len(index), written, already, time.perf_counter() - started, deleted)
    finally:
        if own_client:
            client.close()


def _continue(client, collection: str, index: SparseIndex, batch_size: int, progress, uri: str,
              digests: bool) -> int:
    """Write the rows after the stored prefix (all of them, by upsert, when the stored rows are no prefix)."""
    already = _stored_prefix(client, collection, uri)
    n = len(index)
    upsert = already < 0  # rows stored out of order: rewrite everything, which upsert keeps idempotent
    start = 0 if upsert else already
    if progress is not None and start:
        progress(start)
    for first in range(start, n, batch_size):
        rows = _rows(index, range(first, min(n, first + batch_size)), digests=digests)
        write = client.upsert if upsert else client.insert
        milvus_call(lambda: write(collection, rows), uri)  # noqa: B023 (milvus_call calls it at once)
        if progress is not None:
            progress(len(rows))
    return n - start


def _update(client, collection: str, index: SparseIndex, batch_size: int, progress, uri: str) -> tuple[int, int, int]:
    """Bring a collection of an earlier version of the index up to date: (rows written, unchanged, deleted)."""
    stored = _stored_digests(client, collection, uri)
    n = len(index)
    wanted = row_digests(index)
    stale = sum(1 for row in stored if row >= n)
    if stale:
        milvus_call(lambda: client.delete(collection, filter=f"row >= {n}"), uri)
    changed = [row for row in range(n) if stored.get(row) != wanted[row]]
    if progress is not None:
        progress(n - len(changed))
    for first in range(0, len(changed), batch_size):
        rows = _rows(index, changed[first : first + batch_size], wanted)
        milvus_call(lambda: client.upsert(collection, rows), uri)  # noqa: B023 (called at once)
        if progress is not None:
            progress(len(rows))
    return len(changed), n - len(changed), stale


def _stored_digests(client, collection: str, uri: str) -> dict[int, str]:
    """{row: digest} of every stored row."""
    iterator = milvus_call(lambda: client.query_iterator(collection, batch_size=16384, filter="row >= 0",
                                                         output_fields=["row", "digest"]), uri)
    stored: dict[int, str] = {}
    try:
        while batch := milvus_call(iterator.next, uri):
            stored.update((int(record["row"]), record.get("digest")) for record in batch)
    finally:
        iterator.close()
    return stored


def row_digests(index: SparseIndex, rows: Sequence[int] | None = None, vectors: sp.csr_matrix | None = None
                ) -> list[str]:
    """A 16-byte hash per row of its item (as JSON), stored sparse vector and dense vector: what a collection row holds.

    `rows` default to all; `vectors` are those rows' stored vectors in that order, when the caller has them.
    """
    if rows is None:
        rows = range(len(index))
    if vectors is None:
        vectors = index.rows(np.asarray(rows, dtype=np.int64))  # the forward view: no whole matrix built
    digests = []
    for offset, row in enumerate(rows):
        digest = hashlib.blake2b(digest_size=16)
        digest.update(json.dumps(index.items[row], sort_keys=True, ensure_ascii=False).encode())
        start, stop = vectors.indptr[offset], vectors.indptr[offset + 1]
        digest.update(vectors.indices[start:stop].astype("<i4").tobytes())
        digest.update(vectors.data[start:stop].astype("<f4").tobytes())
        if index.dense is not None:
            digest.update(index.dense[row].astype("<f4").tobytes())
        digests.append(digest.hexdigest())
    return digests


def _prepare_collection(client, collection: str, fingerprint: dict, index: SparseIndex, replace: bool,
                        sparse_index: str) -> bool:
    """Make sure the collection exists for this index; True when it holds an earlier version of it to update."""
    pymilvus = pymilvus_module()
    if client.has_collection(collection):
        recorded = recorded_fingerprint(client, collection)
        if recorded == fingerprint:
            client.load_collection(collection)
            return False
        lineage = fingerprint.get("lineage")
        if not replace and recorded is not None and lineage and recorded.get("lineage") == lineage:
            client.load_collection(collection)
            return True
        if not replace:
            raise BackendError(
                f"collection {collection!r} holds {describe_fingerprint(recorded)}, not this index folder"
                f" ({fingerprint['count']} rows, sparse vectors {str(fingerprint['sparse_sha256'])[:12]});"
                " replace=True drops it, or choose another collection."
            )
        logger.info("dropping collection %s (it held another index)", collection)
        client.drop_collection(collection)
    DataType = pymilvus.DataType
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                  description=json.dumps(fingerprint, sort_keys=True))
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("item_id", DataType.VARCHAR, max_length=MAX_ID_LENGTH)
    schema.add_field("item", DataType.JSON)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_field("digest", DataType.VARCHAR, max_length=32)
    params = client.prepare_index_params()
    # drop_ratio_build stays 0: every weight is indexed, so search is exact (recall 1.0 against scipy).
    params.add_index("sparse", index_type=sparse_index, metric_type="IP")
    if index.dense is not None:
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=int(index.dense.shape[1]))
        params.add_index("dense", index_type="FLAT", metric_type="IP")
    # The fingerprint goes in a collection property (Milvus Lite keeps no description) and the description.
    client.create_collection(collection, schema=schema, index_params=params,
                             properties={FINGERPRINT_PROPERTY: json.dumps(fingerprint, sort_keys=True)})
    client.load_collection(collection)
    return False


def _rows(index: SparseIndex, rows, known: list[str] | None = None, digests: bool = True) -> list[dict]:
    """Collection records of these index rows, with their digests (`known`: every row's, else computed) when
    `digests`."""
    rows = list(rows)
    vectors = index.rows(np.asarray(rows, dtype=np.int64))  # the forward view: a slice per row
    sparse = sparse_rows(vectors)
    own = [known[row] for row in rows] if known is not None else row_digests(index, rows, vectors) if digests else None
    records = []
    for offset, row in enumerate(rows):
        item = index.items[row]
        record = {"row": row, "item_id": str(item["id"]), "item": item, "sparse": sparse[offset]}
        if own is not None:
            record["digest"] = own[offset]
        if index.dense is not None:
            record["dense"] = index.dense[row]
        records.append(record)
    return records


def _stored_prefix(client, collection: str, uri: str) -> int:
    """How many rows 0..m-1 are stored (batches go in row order); -1 when the stored rows are not such a prefix."""
    stored = count_rows(client, collection, uri)
    if stored == 0:
        return 0
    return stored if count_rows(client, collection, uri, f"row < {stored}") == stored else -1
