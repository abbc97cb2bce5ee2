"""The Milvus backend on Milvus Lite (started in this process on a temp folder), against the scipy index.

The same search tests run on both backends: ranking equal to a brute-force full sort (score desc, row asc),
ties, k clamping, empty queries, batches, hybrid mode, dense search. Then export resume/idempotence,
refusals (another index, unreachable address, negative weights), the CLI and the app's service layer.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import scipy.sparse as sp
from milvus_lite import server_manager_instance

from mlsr.backends import SearchBackend, open_backend
from mlsr.backends.local import LocalBackend
from mlsr.cli import main
from mlsr.index.dense import DenseIndex
from mlsr.errors import BackendError, InputError
from mlsr.index.sparse import SparseIndex
from mlsr.backends.milvus import MilvusBackend, connect, sparse_rows
from mlsr.backends.milvus_export import export_index, row_digests
from mlsr.index.modes import hybrid_search

VOCAB = 30522
N_DOCS = 600
TWINS = (3, 40, 41, 42)  # identical documents: their scores tie exactly, so the row must break the tie


def random_vectors(n: int, terms: int, seed: int) -> sp.csr_matrix:
    """Zipf-like term popularity over the BERT vocabulary, positive weights (like log1p(ReLU(.)))."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / (np.arange(VOCAB) + 20.0) ** 1.05
    cols = np.minimum(np.searchsorted(np.cumsum(popularity / popularity.sum()), rng.random((n, terms))), VOCAB - 1)
    rows = np.repeat(np.arange(n), terms)
    weights = np.log1p(rng.exponential(1.0, n * terms)).astype(np.float32) + 0.01
    matrix = sp.csr_matrix((weights, (rows, cols.ravel())), shape=(n, VOCAB), dtype=np.float32)
    matrix.sum_duplicates()
    return matrix


def brute_force(index: SparseIndex, queries: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Independent reference: every score, full sort by (score desc, row asc)."""
    scores = (queries @ index.vectors.T).toarray()
    order = np.array([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores])
    return np.take_along_axis(scores, order, axis=1), order


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    vectors = random_vectors(N_DOCS, 60, seed=1).tolil()
    for twin in TWINS[1:]:
        vectors[twin] = vectors[TWINS[0]]
    dense = np.random.default_rng(2).standard_normal((N_DOCS, 16)).astype(np.float32)
    items = [{"id": f"img-{i}", "image": f"photos/{i}.jpg", "captions": [f"caption {i}"]} for i in range(N_DOCS)]
    folder = tmp_path_factory.mktemp("random") / "index"
    SparseIndex.build(vectors.tocsr(), items, dense=dense).save(folder)
    return folder


@pytest.fixture(scope="module")
def index(index_dir) -> SparseIndex:
    return SparseIndex.load(index_dir)


@pytest.fixture(scope="module")
def lite_uri(index_dir, tmp_path_factory) -> str:
    uri = str(tmp_path_factory.mktemp("milvus") / "mlsr.db")
    report = export_index(index_dir, uri, batch_size=250)
    assert (report.count, report.written, report.already) == (N_DOCS, N_DOCS, 0)
    return uri


@pytest.fixture(scope="module")
def milvus(index, lite_uri):
    backend = open_backend(index, "milvus", lite_uri)
    yield backend
    backend.close()


@pytest.fixture(params=["scipy", "milvus"])
def backend(request, index):
    return LocalBackend(index) if request.param == "scipy" else request.getfixturevalue("milvus")


@pytest.fixture(scope="module")
def queries() -> sp.csr_matrix:
    return random_vectors(25, 30, seed=3)


# -- the same search tests on both backends -------------------------------------------------------


def test_ranking_equals_a_full_sort(backend, index, queries):
    found = backend.search(queries, 10)
    scores, rows = brute_force(index, queries, 10)
    assert found.indices.dtype == np.int64 and found.scores.dtype == np.float32
    np.testing.assert_allclose(found.scores, scores, rtol=1e-5, atol=1e-5)
    distinct = np.abs(np.diff(scores, axis=1, append=-1.0)) > 1e-4  # no near-tie with the next one: order is fixed
    assert (found.indices[distinct] == rows[distinct]).all()
    assert (found.indices == rows).mean() > 0.95


def test_exact_ties_are_broken_by_row(backend, index):
    query = index.vectors[TWINS[-1]]  # the twins share the best score
    found = backend.search(query, 6)
    assert found.indices[0, : len(TWINS)].tolist() == list(TWINS)
    assert len(set(found.scores[0, : len(TWINS)].tolist())) == 1


def test_k_is_clamped_and_documents_without_shared_terms_score_zero(backend, index):
    one_term = sp.csr_matrix(([1.0], ([0], [int(index.vectors[5].indices[0])])), shape=(1, VOCAB), dtype=np.float32)
    matching = int((index.vectors[:, one_term.indices[0]] > 0).sum())
    found = backend.search(one_term, matching + 5)
    assert (found.scores[0, :matching] > 0).all() and (found.scores[0, matching:] == 0).all()
    zero_rows = found.indices[0, matching:]
    assert zero_rows.tolist() == sorted(zero_rows.tolist())  # zero scores in row order, as a full sort has them
    assert backend.search(one_term, 10 * N_DOCS).indices.shape == (1, N_DOCS)
    with pytest.raises(InputError, match="k must be at least 1"):  # one rule for k on every backend
        backend.search(one_term, 0)


def test_a_query_in_any_form_is_left_as_it_was(backend, index):
    """Duplicates and unsorted indices in a float32 CSR query: scipy shares its arrays, so a backend that
    summed them in place would move the caller's weights; every backend ranks a canonical copy instead."""
    from tests.helpers.matrices import snapshot

    terms = [int(t) for t in index.vectors[3].indices[:3]]
    query = sp.csr_matrix((np.array([0.5, 1.0, 0.25, 2.0], np.float32), np.array([terms[2], terms[0], terms[2], terms[1]],
                           np.int32), np.array([0, 4], np.int32)), shape=(1, VOCAB))
    before = snapshot(query)
    found = backend.search(query, 5)
    assert snapshot(query) == before
    expected = index.search(sp.csr_matrix(query.toarray()), 5)
    np.testing.assert_array_equal(found.indices, expected.indices)


def test_an_empty_query_ranks_rows_in_order(backend):
    found = backend.search(sp.csr_matrix((2, VOCAB), dtype=np.float32), 4)
    assert found.indices.tolist() == [[0, 1, 2, 3]] * 2 and not found.scores.any()


def test_batch_equals_one_by_one(backend, queries):
    assert isinstance(backend, SearchBackend) and len(backend) == N_DOCS
    batch = backend.search(queries[:6], 5)
    for i in range(6):
        single = backend.search(queries[i], 5)
        assert single.indices[0].tolist() == batch.indices[i].tolist()


def test_hybrid_mode_re_scores_candidates_identically(backend, index, queries):
    exact = queries[:4].copy()
    exact.data[:] = 1.0
    expected = hybrid_search(index, exact, queries[:4], k=5, depth=50)
    found = hybrid_search(backend, exact, queries[:4], k=5, depth=50)
    np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-5)
    assert found.indices.tolist() == expected.indices.tolist()


def test_dense_search_equals_faiss(backend, index):
    vectors = np.random.default_rng(4).standard_normal((3, 16)).astype(np.float32)
    expected = DenseIndex(index.dense).search(vectors, 7)
    found = backend.dense_search(vectors, 7)
    assert found.indices.tolist() == expected.indices.tolist()
    np.testing.assert_allclose(found.scores, expected.scores, rtol=1e-5, atol=1e-5)


# -- Milvus specifics -----------------------------------------------------------------------------


def test_evaluate_gives_the_same_numbers_on_both_backends(milvus, index, queries, tmp_path):
    from mlsr.evaluation.runs import QuerySet, evaluate_index
    from mlsr.query_vectors import QueryVectors

    rng = np.random.default_rng(4)
    dense = rng.standard_normal((queries.shape[0], 16)).astype(np.float32)
    query_set = QuerySet([f"q{i}" for i in range(queries.shape[0])],
                         QueryVectors(queries, random_vectors(25, 5, seed=5), dense))
    qrels = {f"q{i}": {f"img-{j}": 1 for j in rng.choice(N_DOCS, 3, replace=False)} for i in range(queries.shape[0])}
    measures = ["R@1", "R@10", "MRR@10", "NDCG@10", "MAP@100"]
    on_scipy = evaluate_index(index, query_set, qrels, measures=measures, runs_dir=tmp_path / "scipy")
    on_milvus = evaluate_index(index, query_set, qrels, measures=measures, runs_dir=tmp_path / "milvus", backend=milvus)
    assert [r.run for r in on_milvus.results] == ["expand", "no_expand", "hybrid@10", "hybrid", "dense"]
    for ours, theirs in zip(on_scipy.results, on_milvus.results):
        assert ours.metrics == pytest.approx(theirs.metrics), ours.run
        ranked = [[line.split()[i] for i in (0, 2, 3)] for line in
                  (tmp_path / "scipy" / f"{ours.run}.trec").read_text().splitlines()]
        assert ranked == [[line.split()[i] for i in (0, 2, 3)] for line in
                          (tmp_path / "milvus" / f"{ours.run}.trec").read_text().splitlines()]


def test_the_collection_holds_the_index_folder(milvus, index):
    stored = milvus.client.query("mlsr", filter="row >= 0", output_fields=["row", "item_id", "item", "sparse"],
                                 limit=N_DOCS)
    assert sorted(record["row"] for record in stored) == list(range(N_DOCS))
    expected = sparse_rows(index.vectors)
    for record in stored:
        assert record["item_id"] == index.items[record["row"]]["id"] and record["item"] == index.items[record["row"]]
        assert record["sparse"] == pytest.approx(expected[record["row"]])


def test_milvus_tie_order_is_repaired(index, tmp_path):
    """Milvus orders ties its own way (here: a rewritten row comes after the sealed ones); we re-sort by row."""
    small = SparseIndex.build(index.vectors[:100], index.items[:100])
    small.save(tmp_path / "small")
    uri = str(tmp_path / "ties.db")
    export_index(tmp_path / "small", uri)
    backend = MilvusBackend.open(SparseIndex.load(tmp_path / "small"), uri)
    twin = TWINS[1]
    backend.client.upsert("mlsr", [{"row": twin, "item_id": small.items[twin]["id"], "item": small.items[twin],
                                    "sparse": sparse_rows(small.vectors[twin])[0],
                                    "digest": row_digests(small, [twin])[0]}])  # same content, newer version
    query = small.vectors[TWINS[0]]
    raw = backend.client.search("mlsr", data=sparse_rows(query), anns_field="sparse", limit=len(TWINS),
                                output_fields=["row"])[0]
    assert [hit["row"] for hit in raw] != list(TWINS)  # Milvus's own order: the test exercises the repair
    assert backend.search(query, len(TWINS)).indices[0].tolist() == list(TWINS)
    assert backend.search(query, 2).indices[0].tolist() == list(TWINS[:2])  # the tie crosses the k-th place
    backend.close()


def test_re_export_writes_nothing(index_dir, lite_uri, milvus):
    report = export_index(index_dir, lite_uri)
    assert (report.written, report.already) == (0, N_DOCS)
    assert milvus.client.query("mlsr", filter="", output_fields=["count(*)"])[0]["count(*)"] == N_DOCS


def test_an_interrupted_export_resumes(index_dir, index, tmp_path):
    uri = str(tmp_path / "interrupted.db")
    written = []

    def drop_after_two_batches(rows: int) -> None:
        written.append(rows)
        if len(written) == 2:
            raise ConnectionError("connection dropped")

    with pytest.raises(ConnectionError):
        export_index(index_dir, uri, batch_size=100, progress=drop_after_two_batches)
    with pytest.raises(BackendError, match="200 of 600 rows .*re-run export"):
        MilvusBackend.open(index, uri)
    server_manager_instance.release_server(uri)  # the server goes away too; its write-ahead log keeps the rows
    report = export_index(index_dir, uri, batch_size=100)
    assert (report.already, report.written) == (200, 400)
    backend = MilvusBackend.open(index, uri)
    stored = backend.client.query("mlsr", filter="row >= 0", output_fields=["row", "sparse"], limit=N_DOCS + 10)
    assert sorted(record["row"] for record in stored) == list(range(N_DOCS))
    expected = sparse_rows(index.vectors)
    assert all(record["sparse"] == pytest.approx(expected[record["row"]]) for record in stored)
    assert backend.search(index.vectors[7], 1).indices[0, 0] == 7
    backend.close()


def test_rows_stored_out_of_order_are_rewritten(index, tmp_path):
    """Export cannot resume after a gap, so it rewrites every row with upserts.

    Milvus Lite resolves a primary key to its latest version even after a plain insert, so this test cannot
    tell upsert from insert; upsert is what keeps a cluster (which keeps duplicate inserts) duplicate-free.
    """
    small = SparseIndex.build(index.vectors[:100], index.items[:100])
    small.save(tmp_path / "small")
    uri = str(tmp_path / "gaps.db")

    def stop_after_one_batch(rows: int) -> None:
        raise ConnectionError("connection dropped")

    with pytest.raises(ConnectionError):
        export_index(tmp_path / "small", uri, batch_size=30, progress=stop_after_one_batch)
    client = connect(uri)
    client.delete("mlsr", ids=[0])  # rows 1..29 stored: not a prefix, so the export cannot just continue
    report = export_index(tmp_path / "small", uri, batch_size=30, client=client)
    assert (report.written, report.already) == (100, 0)
    stored = client.query("mlsr", filter="row >= 0", output_fields=["row"], limit=200)
    assert sorted(record["row"] for record in stored) == list(range(100))
    client.close()


def test_a_collection_from_another_index_is_refused(index, lite_uri, tmp_path):
    other = SparseIndex.build(index.vectors[:50], index.items[:50])
    other.save(tmp_path / "other")
    other = SparseIndex.load(tmp_path / "other")
    with pytest.raises(BackendError, match="not the index"):
        open_backend(other, "milvus", lite_uri)
    with pytest.raises(BackendError, match="replace=True"):
        export_index(other, lite_uri)
    # Same items and count, other weights (say, rebuilt with another head): still another index.
    SparseIndex.build(index.vectors * 2, index.items, dense=index.dense).save(tmp_path / "reweighted")
    with pytest.raises(BackendError, match="not the index"):
        open_backend(SparseIndex.load(tmp_path / "reweighted"), "milvus", lite_uri)
    with pytest.raises(BackendError, match="no collection 'elsewhere'.*export"):
        open_backend(index, "milvus", lite_uri, "elsewhere")
    report = export_index(other, lite_uri, "other_index")  # another collection in the same database is fine
    assert report.count == 50
    assert len(open_backend(other, "milvus", lite_uri, "other_index")) == 50


def test_negative_query_weights_are_refused(milvus):
    query = sp.csr_matrix(([1.0, -0.5], ([0, 0], [100, 200])), shape=(1, VOCAB), dtype=np.float32)
    with pytest.raises(InputError, match="non-negative"):
        milvus.search(query, 3)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_address_fails_fast_on_one_line(index_dir, capsys, monkeypatch):
    import pymilvus

    from mlsr.backends.milvus import CONNECT_TIMEOUT_S

    uri = f"http://127.0.0.1:{closed_port()}"
    timeouts = []
    real_client = pymilvus.MilvusClient

    def client(*args, **kwargs):
        timeouts.append(kwargs.get("timeout"))
        return real_client(*args, **kwargs)

    monkeypatch.setattr(pymilvus, "MilvusClient", client)
    with pytest.raises(BackendError, match=f"cannot reach Milvus at {uri}"):
        connect(uri)
    # fast: the client gives up after a timeout of seconds (no wall-clock check here; timing is for bench scripts)
    assert timeouts == [CONNECT_TIMEOUT_S] and CONNECT_TIMEOUT_S <= 10
    assert main(["export", "--index", str(index_dir), "--milvus-uri", uri]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach Milvus at {uri}") and err.count("\n") == 1
    with pytest.raises(InputError, match=r"\.db"):
        connect("not-a-database")


# -- the CLI and the app's service on Milvus ------------------------------------------------------


@pytest.fixture
def model_args(backbone_dir, head_dir, tokenizer_dir):
    return ["--backbone", str(backbone_dir), "--head", str(head_dir), "--tokenizer", str(tokenizer_dir),
            "--device", "cpu"]


@pytest.mark.parametrize("mode", ["expand", "hybrid"])
def test_cli_search_on_milvus_ranks_like_scipy(mode, model_args, encoder, image_folder, tmp_path, capsys):
    from mlsr.data.captions import read_captions
    from mlsr.ingest.images import build_index

    build_index(encoder, image_folder, out=tmp_path / "idx", documents="image+caption", dense=True,
                captions=read_captions(image_folder / "captions.csv"))
    uri = str(tmp_path / "cli.db")
    assert main(["export", "--index", str(tmp_path / "idx"), "--milvus-uri", uri, "--collection", "photos"]) == 0
    assert "exported 6 rows" in capsys.readouterr().out
    search = ["search", "--index", str(tmp_path / "idx"), "--mode", mode, "-k", "4", "--json", *model_args,
              "two dogs playing", "a boat"]
    assert main(search) == 0
    local = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main([*search, "--backend", "milvus", "--milvus-uri", uri, "--collection", "photos"]) == 0
    remote = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [[hit["id"] for hit in q["results"]] for q in remote] == [[hit["id"] for hit in q["results"]] for q in local]
    for q_remote, q_local in zip(remote, local):
        for hit_remote, hit_local in zip(q_remote["results"], q_local["results"]):
            assert hit_remote["score"] == pytest.approx(hit_local["score"], abs=2e-4)
            assert hit_remote["terms"] == hit_local["terms"]  # explanations come from the index folder


def test_service_on_milvus_matches_scipy(app_encoder, app_index, tmp_path, monkeypatch):
    from app import parse_args
    from mlsr.serving.service import Service

    uri = str(tmp_path / "app.db")
    export_index(app_index, uri)
    index = SparseIndex.load(app_index)
    local = Service(app_encoder, index, app_index)
    remote = Service(app_encoder, index, app_index, open_backend(index, "milvus", uri))
    text = "a boy leads water buffalo through the market"
    for mode in ("expand", "no_expand", "hybrid"):
        assert [h.row for h in remote.suggest(text, 5, mode).hits] == [h.row for h in local.suggest(text, 5, mode).hits]
    compared, expected = remote.compare(text, 5), local.compare(text, 5)
    # The tiny random backbone gives nearly parallel dense vectors (all scores ~1): compare scores, not tie order.
    assert [h.score for h in compared.dense] == pytest.approx([h.score for h in expected.dense], abs=1e-4)
    assert [h.row for h in compared.sparse] == [h.row for h in expected.sparse]
    rows = [["buffalo", 1.0], ["market", 0.5]]
    assert [h.row for h in remote.search_terms(rows, 3)[0]] == [h.row for h in local.search_terms(rows, 3)[0]]
    assert remote.about()["backend"] == "milvus" and local.about()["backend"] == "scipy"

    monkeypatch.setenv("MLSR_BACKEND", "milvus")
    monkeypatch.setenv("MLSR_MILVUS_URI", uri)
    args = parse_args(["--index", str(app_index)])
    assert (args.backend, args.milvus_uri) == ("milvus", uri)


def collection_equals_index(client, collection, index):
    stored = client.query(collection, filter="row >= 0", output_fields=["row", "item_id", "sparse", "dense"],
                          limit=len(index) + 100)
    assert sorted(record["row"] for record in stored) == list(range(len(index)))
    expected = sparse_rows(index.vectors)
    for record in stored:
        assert record["item_id"] == index.items[record["row"]]["id"]
        assert record["sparse"] == pytest.approx(expected[record["row"]])
        np.testing.assert_allclose(record["dense"], index.dense[record["row"]], rtol=1e-6)


def test_export_after_add_and_remove_sends_only_the_rows_that_changed(index, tmp_path):
    """Same lineage (add / remove copy it): the collection is brought up to date, not refused or rebuilt."""
    folder = tmp_path / "growing"
    SparseIndex.build(index.vectors[:200], index.items[:200], dense=index.dense[:200]).save(folder)
    uri = str(tmp_path / "growing.db")
    assert export_index(folder, uri).written == 200
    grown = SparseIndex.load(folder).add(index.vectors[200:210], index.items[200:210], dense=index.dense[200:210])
    grown.save(folder)
    with pytest.raises(BackendError, match="not the index"):  # until it is exported again
        MilvusBackend.open(SparseIndex.load(folder), uri)
    report = export_index(folder, uri)
    assert (report.written, report.already, report.deleted) == (10, 200, 0)
    backend = MilvusBackend.open(SparseIndex.load(folder), uri)
    collection_equals_index(backend.client, "mlsr", grown)
    queries = random_vectors(5, 30, seed=9)
    np.testing.assert_array_equal(backend.search(queries, 10).indices, grown.search(queries, 10).indices)
    backend.close()

    shrunk = SparseIndex.load(folder).remove([index.items[i]["id"] for i in (195, 197, 209)])
    shrunk.save(folder)
    report = export_index(folder, uri)
    # rows 195.. moved up: those are rewritten, the last three deleted, rows 0..194 untouched
    assert (report.written, report.already, report.deleted) == (12, 195, 3)
    backend = MilvusBackend.open(SparseIndex.load(folder), uri)
    collection_equals_index(backend.client, "mlsr", shrunk)
    np.testing.assert_array_equal(backend.search(queries, 10).indices, shrunk.search(queries, 10).indices)
    assert export_index(folder, uri, client=backend.client).written == 0  # up to date: nothing to send
    backend.close()
