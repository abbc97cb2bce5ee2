"""An index folder's vectors in a Milvus collection, searched with the index's own conventions (export: milvus_export).

One collection per index folder: primary key `row` (the index row), `item_id`, `item` (the item as JSON),
`sparse` (SPARSE_FLOAT_VECTOR, inner product, SPARSE_INVERTED_INDEX), `digest` (a hash of the row's item and
vectors, so that a later export rewrites only the rows that changed) and, when the index has them, `dense`
(FLOAT_VECTOR, inner product, FLAT: exact, like the FAISS baseline). The collection records the index
folder's fingerprint (counts and checksums from its manifest, and its lineage); searches refuse a
collection exported from another folder, or from another version of it. `pymilvus` and `milvus-lite` are
optional and imported here only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.checks import check_k
from mlsr.errors import BackendError, InputError
from mlsr.index.manifest import DENSE_FILE, ITEMS_FILE, MANIFEST_FILE, POSTING_FILES, SPARSE_FILE
from mlsr.index.sparse import Results, SparseIndex
from mlsr.index.rows import as_csr

logger = logging.getLogger(__name__)

DEFAULT_COLLECTION = "mlsr"
CONNECT_TIMEOUT_S = 5.0  # an unreachable address fails in seconds, not minutes
EXPORT_BATCH = 1000  # rows per insert request: ~150 terms each keeps a request near 2 MB
MAX_TOPK = 16384  # Milvus's limit on `limit` (and on query vectors per request)
TIE_MARGIN = 16  # extra hits fetched so ties at the k-th score are broken by row, as in the scipy index
QUERY_CHUNK = 256  # query vectors per search request
MAX_ID_LENGTH = 1024
SPARSE_INDEX_TYPES = ("SPARSE_INVERTED_INDEX", "SPARSE_WAND")
FINGERPRINT_FORMAT = "mlsr-milvus-export"
FINGERPRINT_PROPERTY = "mlsr.index"
_INSTALL = "pip install pymilvus==3.0.2 milvus-lite==3.2.2"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")


def pymilvus_module():
    try:
        import pymilvus
    except ImportError:
        raise BackendError(f"the Milvus backend needs pymilvus and, for local files, milvus-lite: {_INSTALL}") from None
    return pymilvus


def check_uri(uri: str) -> str:
    """A cluster address (http(s)://host:port) or a Milvus Lite file path ending in .db."""
    uri = str(uri).strip()
    if re.match(r"^(https?|tcp|grpc)://", uri):
        return uri
    if not uri.endswith(".db"):
        raise InputError(f"Milvus uri {uri!r}: give http://host:19530 for a cluster or a path ending in .db for"
                         " Milvus Lite.")
    if not Path(uri).expanduser().resolve().parent.is_dir():
        raise InputError(f"Milvus uri {uri!r}: the folder {Path(uri).parent} does not exist.")
    return str(Path(uri).expanduser().resolve())


def connect(uri: str, timeout: float = CONNECT_TIMEOUT_S):
    """A MilvusClient for `uri`; a local .db path starts Milvus Lite in this process."""
    uri = check_uri(uri)
    pymilvus = pymilvus_module()
    if uri.endswith(".db"):
        try:
            import milvus_lite  # noqa: F401
        except ImportError:
            raise BackendError(f"a .db URI runs Milvus Lite, which is not installed: {_INSTALL}") from None
        # Milvus Lite's in-process gRPC server logs a traceback for AllocTimestamp, which it does not implement
        # and pymilvus only calls while waiting for an index to be created (harmless there).
        logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    try:
        return pymilvus.MilvusClient(uri=uri, timeout=timeout)
    except pymilvus.MilvusException as error:
        raise BackendError(f"cannot reach Milvus at {uri}: {_reason(error)}") from None


def _reason(error: Exception) -> str:
    return str(getattr(error, "message", "") or error).strip() or type(error).__name__


def check_collection_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise InputError(f"collection name {name!r}: use letters, digits and underscores, starting with a letter.")
    return name


def index_fingerprint(index_dir: str | Path) -> dict:
    """What identifies an index folder's content: counts, vocabulary hash and file checksums from its manifest."""
    manifest = json.loads((Path(index_dir) / MANIFEST_FILE).read_text(encoding="utf-8"))
    files = manifest.get("files") or {}
    fingerprint = {
        "format": FINGERPRINT_FORMAT,
        "count": manifest.get("count"),
        "vocab_size": manifest.get("vocab_size"),
        "vocab_sha256": manifest.get("vocab_sha256"),
        "dense_size": manifest.get("dense_size"),
        "sparse_sha256": _sparse_checksum(files),
        "items_sha256": (files.get(ITEMS_FILE) or {}).get("sha256"),
        "dense_sha256": (files.get(DENSE_FILE) or {}).get("sha256"),
    }
    # shared by the versions `add` / `remove` make (mlsr.index.folder); older folders lack it
    if manifest.get("lineage"):
        fingerprint["lineage"] = manifest["lineage"]
    return fingerprint


def _sparse_checksum(files: dict) -> str:
    """One checksum of the sparse vectors' files, whatever the index format (sparse.npz, or the postings)."""
    names = [name for name in (SPARSE_FILE, *POSTING_FILES.values()) if name in files]
    listing = "".join(f"{name} {(files[name] or {}).get('sha256')}\n" for name in names)
    return hashlib.sha256(listing.encode()).hexdigest()


def sparse_rows(matrix: sp.csr_matrix) -> list[dict[int, float]]:
    """CSR rows as Milvus sparse vectors ({term id: weight}), zeros dropped."""
    rows = []
    for i in range(matrix.shape[0]):
        start, end = matrix.indptr[i], matrix.indptr[i + 1]
        ids, weights = matrix.indices[start:end], matrix.data[start:end]
        keep = weights != 0
        rows.append(dict(zip(ids[keep].tolist(), weights[keep].tolist())))
    return rows


def recorded_fingerprint(client, collection: str) -> dict | None:
    described = client.describe_collection(collection)
    text = (described.get("properties") or {}).get(FINGERPRINT_PROPERTY) or described.get("description") or ""
    try:
        recorded = json.loads(text)
    except ValueError:
        return None
    return recorded if isinstance(recorded, dict) and recorded.get("format") == FINGERPRINT_FORMAT else None


def describe_fingerprint(fingerprint: dict | None) -> str:
    if fingerprint is None:
        return "data that mlsr did not export"
    if not fingerprint.get("lineage"):
        return (f"an export made before index lineages ({fingerprint.get('count')} rows: another index, or an older"
                " version)")
    sparse = str(fingerprint.get("sparse_sha256"))[:12]
    return f"an export of another index ({fingerprint.get('count')} rows, sparse vectors {sparse})"


def count_rows(client, collection: str, uri: str, where: str = "") -> int:
    result = milvus_call(lambda: client.query(collection, filter=where, output_fields=["count(*)"]), uri)
    return int(result[0]["count(*)"])


def milvus_call(fn, uri: str):
    """Run a client call; Milvus's errors become one BackendError line."""
    pymilvus = pymilvus_module()
    try:
        return fn()
    except pymilvus.MilvusException as error:
        raise BackendError(f"Milvus at {uri}: {_reason(error)}") from None


class MilvusBackend:
    """Search a collection exported from an index folder; results follow the scipy index's conventions.

    Milvus returns its own tie order and only documents sharing a term with the query. So each query
    fetches `k + TIE_MARGIN` hits, sorts them by (score desc, row asc), and fills a short list with
    zero-score rows in row order, exactly as `SparseIndex.search` ranks them.
    """

    name = "milvus"

    def __init__(self, client, collection: str, index: SparseIndex, uri: str, has_dense: bool) -> None:
        self.client = client
        self.collection = collection
        self.index = index
        self.uri = uri
        self.has_dense = has_dense

    @classmethod
    def open(cls, index: SparseIndex, uri: str, collection: str = DEFAULT_COLLECTION) -> MilvusBackend:
        """Connect, check the collection came from `index`'s folder and is complete, and load it for search."""
        check_collection_name(collection)
        if index.path is None:
            raise InputError("the Milvus backend needs an index loaded from a folder (SparseIndex.load).")
        client = connect(uri)
        try:
            if not milvus_call(lambda: client.has_collection(collection), uri):
                raise BackendError(f"Milvus at {uri} has no collection {collection!r}; run `python -m mlsr export"
                                   f" --index {index.source or index.path} --milvus-uri {uri}"
                                   f" --collection {collection}`.")
            expected = index_fingerprint(index.path)
            recorded = milvus_call(lambda: recorded_fingerprint(client, collection), uri)
            if recorded != expected:
                raise BackendError(f"collection {collection!r} at {uri} holds {describe_fingerprint(recorded)}, not"
                                   f" the index"
                                   f" {index.source or index.path}; export this index (replace=True) or choose"
                                   " another collection.")
            # Loading builds the sealed segments' search indexes once, up front, instead of at the first query.
            milvus_call(lambda: client.load_collection(collection), uri)
            stored = count_rows(client, collection, uri)
            if stored != len(index):
                raise BackendError(f"collection {collection!r} holds {stored} of {len(index)} rows (an export was"
                                   " interrupted); re-run export to finish it.")
            fields = milvus_call(lambda: client.describe_collection(collection), uri)["fields"]
            backend = cls(client, collection, index, uri, any(field["name"] == "dense" for field in fields))
            backend.warm_up()
        except BaseException:
            client.close()
            raise
        return backend

    def warm_up(self) -> None:
        """One search per vector field, so that the first user's query does not pay for index building.

        Milvus Lite builds a sealed segment's sparse index at its first search (seconds per 10k rows, measured
        in bench/bench_milvus.py); a cluster has built them at load and answers at once.
        """
        started = time.perf_counter()
        term = int(np.argmax(self.index.document_frequency()))  # a term most rows hold (no document matrix built)
        self.search(sp.csr_matrix(([1.0], ([0], [term])), shape=(1, self.index.vocab_size), dtype=np.float32), 1)
        if self.has_dense and self.index.dense is not None:
            self.dense_search(self.index.dense[:1], 1)
        logger.info("Milvus collection %s ready in %.1f s", self.collection, time.perf_counter() - started)

    def __len__(self) -> int:
        return len(self.index)

    def close(self) -> None:
        """Close the connection (Milvus Lite keeps its file until the process exits)."""
        self.client.close()

    def search(self, queries: sp.spmatrix, k: int = 10) -> Results:
        """Top-k rows per (q, vocab) query by dot product, as `SparseIndex.search` ranks them."""
        queries = self._check_queries(queries)
        vectors = sparse_rows(queries)
        return self._search("sparse", vectors, k, empty=[not v for v in vectors])

    def dense_search(self, vectors: np.ndarray, k: int = 10) -> Results:
        """Top-k rows per (q, d) dense query by inner product (exact FLAT index)."""
        if not self.has_dense:
            raise InputError("this collection has no dense vectors; rebuild the index with dense vectors (dense=True)"
                             " and export it.")
        vectors = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if self.index.dense is not None and vectors.shape[1] != self.index.dense.shape[1]:
            raise InputError(f"queries have {vectors.shape[1]} dims, the dense vectors {self.index.dense.shape[1]}.")
        if not np.isfinite(vectors).all():
            raise InputError("dense queries hold NaN or infinite values.")
        return self._search("dense", list(vectors), k, empty=[False] * len(vectors))

    def score(self, query: sp.spmatrix, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Exact scores from the index folder's sparse vectors (the ones the collection was exported from)."""
        return self.index.score(query, rows)

    def _search(self, field: str, vectors: list, k: int, empty: list[bool]) -> Results:
        n = len(self.index)
        k = min(check_k(k), n)
        if k > MAX_TOPK:
            raise InputError(f"k={k} is more than Milvus returns per query ({MAX_TOPK}).")
        fetch = min(n, k + TIE_MARGIN, MAX_TOPK)
        scores = np.zeros((len(vectors), k), dtype=np.float32)
        indices = np.zeros((len(vectors), k), dtype=np.int64)
        if k == 0:
            return Results(scores, indices)
        asked = [i for i, is_empty in enumerate(empty) if not is_empty]
        hits: dict[int, list] = {}
        for start in range(0, len(asked), QUERY_CHUNK):
            chunk = asked[start : start + QUERY_CHUNK]
            found = milvus_call(lambda: self.client.search(  # milvus_call calls it at once (B023 below)
                self.collection, data=[vectors[i] for i in chunk], anns_field=field, limit=fetch,  # noqa: B023
                output_fields=["row"], search_params={"metric_type": "IP"},
                # an exported collection is read-only: no need to wait (Strong) for writes in flight
                consistency_level="Bounded"), self.uri)
            for i, query_hits in zip(chunk, found):
                hits[i] = query_hits
        for i in range(len(vectors)):
            rows = np.array([hit["row"] for hit in hits.get(i, [])], dtype=np.int64)
            values = np.array([hit["distance"] for hit in hits.get(i, [])], dtype=np.float32)
            if field == "sparse":  # documents sharing no term with the query score 0 and are never returned
                keep = values > 0
                rows, values = rows[keep], values[keep]
            order = np.lexsort((rows, -values))[:k]
            rows, values = rows[order], values[order]
            if len(rows) < k:
                rest = np.setdiff1d(np.arange(min(n, k + len(rows)), dtype=np.int64), rows)[: k - len(rows)]
                rows = np.concatenate([rows, rest])
                values = np.concatenate([values, np.zeros(len(rest), dtype=np.float32)])
            indices[i], scores[i] = rows, values
        return Results(scores, indices)

    def _check_queries(self, queries: sp.spmatrix) -> sp.csr_matrix:
        queries = as_csr(queries, "queries")  # a canonical copy: the caller's matrix is never changed
        if queries.shape[1] != self.index.vocab_size:
            raise InputError(f"queries have {queries.shape[1]} columns but the index has {self.index.vocab_size} terms;"
                             " encode them with the vocabulary the index was built with.")
        if queries.nnz and float(queries.data.min()) < 0:
            raise InputError("the Milvus backend takes non-negative query weights only (Milvus's sparse vectors"
                             " reject negative values); remove the negative terms or use backend='scipy'.")
        return queries
