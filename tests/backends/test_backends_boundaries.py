"""The backends' contracts at their edges, without a Milvus server: the Milvus backend's ranking over a stand-in
client that answers like Milvus (only hits, its own tie order, at most `limit`), at k around the number of rows,
the tie margin and the per-request caps; what it refuses; the checks that run before any connection; the local
backend; and the fingerprint that ties a collection to its folder (mutation testing found these unchecked)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.backends import BACKENDS, open_backend
from mlsr.backends import milvus as milvus_module
from mlsr.backends.local import LocalBackend
from mlsr.backends.milvus import (FINGERPRINT_FORMAT, FINGERPRINT_PROPERTY, MilvusBackend, check_collection_name,
                                  check_uri, describe_fingerprint, index_fingerprint, recorded_fingerprint, sparse_rows)
from mlsr.errors import BackendError, InputError
from mlsr.index.sparse import SparseIndex

VOCAB = 8


class ReverseTiesClient:
    """Answers `search` like Milvus from brute force: only rows with a positive score (sparse), best first, ties in
    descending row order (the opposite of the index's), at most `limit`; records every request."""

    def __init__(self, docs: np.ndarray, dense: np.ndarray | None = None) -> None:
        self.docs, self.dense, self.requests = docs, dense, []

    def search(self, collection, data, anns_field, limit, output_fields, search_params, consistency_level):
        self.requests.append((anns_field, len(data), limit))
        self.data = data
        assert search_params == {"metric_type": "IP"} and output_fields == ["row"]
        assert consistency_level == "Bounded"  # an exported collection is read-only: no wait for writes in flight
        if anns_field == "dense":
            assert all(np.asarray(vector).dtype == np.float32 for vector in data)  # a FLOAT_VECTOR field's type
        answers = []
        for vector in data:
            if anns_field == "sparse":
                query = np.zeros(self.docs.shape[1], dtype=np.float32)
                query[list(vector)] = list(vector.values())
                scores = self.docs @ query
                rows = [row for row in range(len(scores)) if scores[row] > 0]
            else:
                scores = self.dense @ np.asarray(vector)
                rows = list(range(len(scores)))
            rows.sort(key=lambda row: (-scores[row], -row))
            answers.append([{"row": row, "distance": float(scores[row])} for row in rows[:limit]])
        return answers


def backend_over(docs: np.ndarray, dense: np.ndarray | None = None) -> tuple[MilvusBackend, ReverseTiesClient]:
    index = SparseIndex.build(docs, dense=dense, precision="float32")
    client = ReverseTiesClient(docs, dense)
    return MilvusBackend(client, "c", index, "http://milvus.test:19530", dense is not None), client


def expected(scores: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    """The index's ranking by a full sort: score descending, then row ascending."""
    rows = sorted(range(len(scores)), key=lambda row: (-scores[row], row))[:k]
    return rows, [float(scores[row]) for row in rows]


def tied_docs(n: int) -> np.ndarray:
    """n documents: even rows hold term 0 (weight 1), rows divisible by 3 also term 1 (weight 2); the rest nothing."""
    docs = np.zeros((n, VOCAB), dtype=np.float32)
    docs[::2, 0] = 1.0
    docs[::3, 1] = 2.0
    docs[n - 1, 7] = 0.5  # the last row holds a term of its own
    return docs


@pytest.mark.parametrize("k", [1, 2, 5, 9, 10, 11, 25])
def test_milvus_ranking_equals_a_full_sort_for_k_around_the_hits_and_rows(k):
    docs = tied_docs(10)  # 6 rows hit [1, 1, 0, ...]: rows 0, 2, 3, 4, 6, 8 and 9
    backend, client = backend_over(docs)
    query = np.array([[1, 1, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    got = backend.search(sp.csr_matrix(query), k)
    rows, scores = expected(docs @ query[0], min(k, 10))
    assert got.indices.tolist() == [rows] and got.scores.tolist() == [scores]
    assert got.scores.dtype == np.float32 and got.indices.dtype == np.int64
    assert client.requests == [("sparse", 1, min(10, min(k, 10) + 16))]  # k + TIE_MARGIN, at most every row


def test_ties_wider_than_k_are_broken_by_row_and_zero_score_rows_fill_in_row_order():
    docs = np.zeros((6, VOCAB), dtype=np.float32)
    docs[[1, 3, 5], 2] = 1.0  # three rows tie; Milvus gives them as 5, 3, 1
    backend, _ = backend_over(docs)
    query = sp.csr_matrix(np.eye(1, VOCAB, 2, dtype=np.float32))
    assert backend.search(query, 2).indices.tolist() == [[1, 3]]
    got = backend.search(query, 5)
    assert got.indices.tolist() == [[1, 3, 5, 0, 2]] and got.scores.tolist() == [[1, 1, 1, 0, 0]]
    everything = backend.search(query, 6)
    assert everything.indices.tolist() == [[1, 3, 5, 0, 2, 4]]


def test_the_tie_margin_and_the_per_request_caps_are_the_configured_ones(monkeypatch):
    monkeypatch.setattr(milvus_module, "TIE_MARGIN", 2)
    monkeypatch.setattr(milvus_module, "MAX_TOPK", 4)
    monkeypatch.setattr(milvus_module, "QUERY_CHUNK", 2)
    docs = np.zeros((10, VOCAB), dtype=np.float32)
    docs[:, 0] = np.arange(10) / 8  # distinct scores (row 0 holds no term): no tie is wider than the margin
    docs[5, 7] = 3.0
    backend, client = backend_over(docs)
    queries = np.zeros((5, VOCAB), dtype=np.float32)
    queries[:, 0] = 1.0
    queries[2] = 0.0  # an empty query: never sent, ranks rows in order with score 0
    queries[4, 7] = 3.0
    got = backend.search(sp.csr_matrix(queries), 3)
    # 4 non-empty queries in requests of 2; limit = min(rows, k + margin, cap) = min(10, 5, 4)
    assert client.requests == [("sparse", 2, 4), ("sparse", 2, 4)]
    for q in range(5):
        rows, scores = expected(docs @ queries[q], 3)
        assert got.indices[q].tolist() == rows and got.scores[q].tolist() == scores, q
    client.requests.clear()
    assert backend.search(sp.csr_matrix(queries[:1]), 4).indices.tolist() == [expected(docs @ queries[0], 4)[0]]
    assert client.requests == [("sparse", 1, 4)]
    with pytest.raises(InputError, match=r"^k=5 is more than Milvus returns per query \(4\)\.$"):
        backend.search(sp.csr_matrix(queries[:1]), 5)


def test_dense_search_ranks_like_a_full_sort_and_checks_its_vectors():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((7, 3)).astype(np.float32)
    backend, client = backend_over(tied_docs(7), dense)
    vectors = rng.standard_normal((2, 3)).astype(np.float64)
    got = backend.dense_search(vectors, 7)
    full = vectors.astype(np.float32) @ dense.T
    for q in range(2):
        assert got.indices[q].tolist() == expected(full[q], 7)[0]
    assert client.requests == [("dense", 2, 7)]
    assert backend.dense_search(vectors[0], 1).indices.shape == (1, 1)  # one vector is one query
    with pytest.raises(InputError, match=r"^queries have 4 dims, the dense vectors 3\.$"):
        backend.dense_search(np.ones((1, 4)), 1)
    with pytest.raises(InputError, match="^dense queries hold NaN or infinite values.$"):
        backend.dense_search(np.array([[np.nan, 0, 0]]), 1)
    no_dense, _ = backend_over(tied_docs(7))
    with pytest.raises(InputError, match=r"^this collection has no dense vectors; rebuild the index with dense vectors"
                                         r" \(dense=True\) and export it\.$"):
        no_dense.dense_search(np.ones((1, 3)), 1)


def test_the_warm_up_asks_once_for_the_most_common_term_and_the_first_dense_vector():
    docs = tied_docs(40)  # term 0 in the even rows, term 1 in every third
    docs[1:, 3] = 0.25  # term 3 in 39 rows: the most common
    dense = np.arange(80, dtype=np.float32).reshape(40, 2)
    backend, client = backend_over(docs, dense)
    backend.warm_up()
    assert client.requests == [("sparse", 1, 17), ("dense", 1, 17)]  # k = 1, plus the 16 of the tie margin
    assert [np.asarray(vector).tolist() for vector in client.data] == [[0.0, 1.0]]
    sparse_only, client = backend_over(docs)
    sparse_only.warm_up()
    assert client.requests == [("sparse", 1, 17)] and client.data == [{3: 1.0}]
    no_dense_field = MilvusBackend(client, "c", SparseIndex.build(docs, dense=dense), "http://h:1", False)
    client.requests.clear()
    no_dense_field.warm_up()  # the index has dense vectors, the collection none: only the sparse field is warmed
    assert client.requests == [("sparse", 1, 17)]


def test_the_warm_up_logs_the_collection_and_the_seconds_it_took(monkeypatch, caplog):
    clock = iter([100.0, 102.25])
    monkeypatch.setattr(milvus_module.time, "perf_counter", lambda: next(clock))
    backend, _ = backend_over(tied_docs(5))
    with caplog.at_level("INFO", logger="mlsr.backends.milvus"):
        backend.warm_up()
    assert [record.getMessage() for record in caplog.records] == ["Milvus collection c ready in 2.2 s"]


def test_milvus_queries_are_checked_before_anything_is_sent():
    backend, client = backend_over(tied_docs(5))
    with pytest.raises(InputError, match=r"^queries have 9 columns but the index has 8 terms; encode them"):
        backend.search(sp.csr_matrix(np.ones((1, 9), dtype=np.float32)), 1)
    with pytest.raises(InputError, match="^the Milvus backend takes non-negative query weights only"):
        backend.search(sp.csr_matrix(np.array([[0, -0.5, 0, 0, 0, 0, 0, 1]], dtype=np.float32)), 1)
    zero_weight = sp.csr_matrix((np.array([0.0, 1.0], dtype=np.float32), [1, 0], [0, 2]), shape=(1, VOCAB))
    assert backend.search(zero_weight, 2).indices.tolist() == [[0, 2]]  # the explicit zero is no term
    assert client.requests == [("sparse", 1, 5)]


def test_sparse_rows_drop_explicit_zeros_and_keep_empty_rows():
    matrix = sp.csr_matrix((np.array([0.5, 0.0, 2.0], dtype=np.float32), [3, 1, 0], [0, 2, 2, 3]), shape=(3, 4))
    assert sparse_rows(matrix) == [{3: 0.5}, {}, {0: 2.0}]


@pytest.mark.parametrize("uri", ["http://h:19530", "https://h", "tcp://h:1", "grpc://h:1"])
def test_cluster_addresses_are_taken_as_written(uri):
    assert check_uri(f"  {uri} ") == uri


def test_a_lite_path_must_end_in_db_inside_an_existing_folder(tmp_path):
    assert check_uri(str(tmp_path / "x.db")) == str((tmp_path / "x.db").resolve())
    with pytest.raises(InputError, match=r"^Milvus uri '.*x\.txt': give http://host:19530 for a cluster or a path"):
        check_uri(str(tmp_path / "x.txt"))
    with pytest.raises(InputError, match=r"^Milvus uri '.*x\.db': the folder .*missing does not exist\.$"):
        check_uri(str(tmp_path / "missing" / "x.db"))


def test_collection_names_are_letters_digits_and_underscores_up_to_255():
    for good in ("a", "_", "A" + "b" * 254, "mlsr_2"):
        assert check_collection_name(good) == good
    for bad in ("", "2a", "a-b", "a b", "A" + "b" * 255, None):
        with pytest.raises(InputError, match="^collection name .*: use letters, digits and underscores"):
            check_collection_name(bad)


def test_a_missing_pymilvus_is_named_with_its_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(BackendError, match=r"^the Milvus backend needs pymilvus and, for local files, milvus-lite: pip"
                                           r" install pymilvus==3\.0\.2 milvus-lite==3\.2\.2$"):
        milvus_module.pymilvus_module()


def test_open_backend_names_what_it_needs():
    index = SparseIndex.build(tied_docs(3))
    local = open_backend(index)
    assert isinstance(local, LocalBackend) and local.name == "scipy" and len(local) == 3 and BACKENDS == ("scipy",
                                                                                                        "milvus")
    with pytest.raises(InputError, match=r"^the milvus backend needs a uri \(a \.db file for Milvus Lite, or"):
        open_backend(index, "milvus")
    with pytest.raises(InputError, match=r"^backend must be one of \('scipy', 'milvus'\), got 'faiss'\.$"):
        open_backend(index, "faiss")
    with pytest.raises(InputError, match=r"^the Milvus backend needs an index loaded from a folder"):
        open_backend(index, "milvus", "http://h:19530")


def test_both_backends_give_ten_hits_by_default():
    docs = np.zeros((12, VOCAB), dtype=np.float32)
    docs[:, 0] = 1 + np.arange(12)  # row r scores r + 1 for term 0
    dense = np.zeros((12, 2), dtype=np.float32)
    dense[:, 0] = docs[:, 0]
    query, vector = sp.csr_matrix(np.eye(1, VOCAB, dtype=np.float32)), np.array([[1.0, 0.0]])
    milvus, _ = backend_over(docs, dense)
    local = LocalBackend(SparseIndex.build(docs, dense=dense, precision="float32"))
    for backend in (milvus, local):
        assert backend.search(query).indices.tolist() == [list(range(11, 1, -1))], backend.name
        assert backend.dense_search(vector).indices.tolist() == [list(range(11, 1, -1))], backend.name


def test_the_local_backend_is_the_index_and_faiss():
    docs = tied_docs(6)
    dense = np.eye(6, 3, dtype=np.float32)
    local = LocalBackend(SparseIndex.build(docs, dense=dense, precision="float32"))
    query = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0, 0, 0]], dtype=np.float32))
    assert local.search(query, 3).indices.tolist() == [expected(docs @ query.toarray()[0], 3)[0]]
    assert local.score(query, [0, 1, 5]).tolist() == [3.0, 0.0, 0.0]
    assert local.dense_search(np.array([[0, 1, 0]]), 1).indices.tolist() == [[1]]
    local.close()
    bare = LocalBackend(SparseIndex.build(docs))
    with pytest.raises(InputError, match=r"^this index has no dense vectors; rebuild it with dense vectors"):
        bare.dense_search(np.ones((1, 3)), 1)


# -- the fingerprint ----------------------------------------------------------------------------------------------

class DescribedClient:
    def __init__(self, described: dict) -> None:
        self.described = described

    def describe_collection(self, collection):
        return self.described


def test_the_fingerprint_is_read_from_the_property_else_the_description(tmp_path):
    SparseIndex.build(tied_docs(4)).save(tmp_path / "idx")
    fingerprint = index_fingerprint(tmp_path / "idx")
    assert fingerprint["format"] == FINGERPRINT_FORMAT and fingerprint["count"] == 4 and fingerprint["lineage"]
    assert fingerprint["vocab_size"] == VOCAB and fingerprint["items_sha256"] and fingerprint["dense_sha256"] is None
    text = json.dumps(fingerprint)
    read = recorded_fingerprint
    assert read(DescribedClient({"properties": {FINGERPRINT_PROPERTY: text}, "description": "x"}), "c") == fingerprint
    assert read(DescribedClient({"properties": {}, "description": text}), "c") == fingerprint
    assert read(DescribedClient({"description": text}), "c") == fingerprint
    for other in ("", "not json", json.dumps([1]), json.dumps({**fingerprint, "format": "else"})):
        assert read(DescribedClient({"description": other}), "c") is None, other


def test_a_refused_collection_is_described_by_what_it_holds():
    assert describe_fingerprint(None) == "data that mlsr did not export"
    assert describe_fingerprint({"count": 5}) == ("an export made before index lineages (5 rows: another index, or"
                                                  " an older version)")
    assert describe_fingerprint({"count": 5, "lineage": "l", "sparse_sha256": "0123456789abcdef"}) == (
        "an export of another index (5 rows, sparse vectors 0123456789ab)")


# -- Milvus's errors ----------------------------------------------------------------------------------------------

class Bare(Exception):
    """An error without a `message` attribute, whose text is blank."""

    def __str__(self) -> str:
        return "  "


def test_a_milvus_error_becomes_one_line_naming_the_address_and_the_reason():
    from pymilvus import MilvusException

    def fails():
        raise MilvusException(code=5, message="collection not loaded")

    with pytest.raises(BackendError, match="^Milvus at http://h:1: collection not loaded$"):
        milvus_module.milvus_call(fails, "http://h:1")
    assert milvus_module.milvus_call(lambda: 42, "http://h:1") == 42
    reason = milvus_module._reason
    assert reason(MilvusException(code=5, message=" padded ")) == "padded"
    assert reason(ValueError(" plain text ")) == "plain text"  # no `message`: the error's own text
    assert reason(Bare()) == "Bare"  # nothing to say: the error's kind
    assert reason(MilvusException(code=5, message="")).startswith("<MilvusException: (code=5")


class ZeroHitClient(ReverseTiesClient):
    """Also returns, after the real hits, a row that shares no term with the query at distance 0 (as a brute-force
    sparse search filling its limit may)."""

    def search(self, collection, data, anns_field, limit, output_fields, search_params, consistency_level):
        answers = super().search(collection, data, anns_field, limit, output_fields, search_params, consistency_level)
        return [hits + [{"row": 3, "distance": 0.0}] for hits in answers]


def test_sparse_hits_at_score_zero_are_ranked_like_every_other_zero():
    """Rows that share no term score 0 and rank by row after the real hits, whether Milvus returned one or not."""
    docs = np.zeros((5, VOCAB), dtype=np.float32)
    docs[0, 1], docs[4, 2] = 2.0, 1.0  # only rows 0 and 4 hold the query's terms
    index = SparseIndex.build(docs, precision="float32")
    backend = MilvusBackend(ZeroHitClient(docs), "c", index, "http://milvus.test:19530", False)
    query = sp.csr_matrix(([1.0, 1.0], ([0, 0], [1, 2])), shape=(1, VOCAB), dtype=np.float32)
    got = backend.search(query, 4)
    assert got.indices.tolist() == [[0, 4, 1, 2]] == index.search(query, 4).indices.tolist()
    assert got.scores.tolist() == [[2.0, 1.0, 0.0, 0.0]]



def test_a_db_uri_needs_milvus_lite_and_quiets_its_grpc_server(monkeypatch, tmp_path):
    """A .db path runs Milvus Lite in this process (its gRPC server's harmless tracebacks silenced); an address is a
    server, left as it logs. A URI that is neither says what to give."""
    import logging

    import pymilvus

    made = []
    monkeypatch.setattr(pymilvus, "MilvusClient", lambda uri, timeout: made.append(uri) or "client")
    grpc = logging.getLogger("grpc._server")
    monkeypatch.setattr(grpc, "level", logging.NOTSET)
    assert milvus_module.connect("http://h:1") == "client" and grpc.level == logging.NOTSET
    assert milvus_module.connect(str(tmp_path / "m.db")) == "client" and grpc.level == logging.CRITICAL
    assert made == ["http://h:1", str(tmp_path / "m.db")]
    monkeypatch.setitem(sys.modules, "milvus_lite", None)  # not installed
    with pytest.raises(BackendError, match=r"^a \.db URI runs Milvus Lite, which is not installed: "):
        milvus_module.connect(str(tmp_path / "m.db"))
    with pytest.raises(InputError) as raised:
        milvus_module.connect("m.sqlite")
    assert str(raised.value) == ("Milvus uri 'm.sqlite': give http://host:19530 for a cluster or a path ending in .db"
                                 " for Milvus Lite.")
