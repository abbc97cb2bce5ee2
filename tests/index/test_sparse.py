"""SparseIndex: exact search against brute force, explanations, and the folder format."""

import json

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.errors import IndexFormatError, IndexMismatchError, InputError
from tests.helpers.data import write_manifest
from mlsr.index.manifest import FORMAT_VERSION, FORWARD_FILES, MANIFEST_FILE, POSTING_FILES
from mlsr.index.sparse import SparseIndex
from mlsr.models.record import ModelRecord
from mlsr.index.ranking import top_k
from mlsr.index.modes import hybrid_search
from mlsr.vocab import Vocabulary

VOCAB = 300


def random_vectors(n, density=0.05, seed=0, levels=None):
    """Sparse non-negative vectors; with `levels`, weights come from a few values so scores tie often."""
    rng = np.random.default_rng(seed)
    matrix = sp.random(n, VOCAB, density=density, format="csr", dtype=np.float32, random_state=rng)
    if levels:
        matrix.data = rng.choice(np.array(levels, dtype=np.float32), size=matrix.nnz)
    return matrix


def brute_force(queries, docs, k):
    """Full scores and a full stable sort: score descending, then row ascending."""
    scores = (queries @ docs.T).toarray()
    order = np.array([np.lexsort((np.arange(len(row)), -row)) for row in scores])[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("levels", [None, [0.5, 1.0]], ids=["continuous", "many-ties"])
@pytest.mark.parametrize("k", [1, 7, 50, 1000])
def test_search_equals_brute_force(levels, k):
    docs = random_vectors(200, seed=1, levels=levels)
    queries = random_vectors(30, density=0.03, seed=2, levels=levels)
    index = SparseIndex.build(docs)
    docs = index.vectors  # the stored (float16) weights: tests/test_search_fast.py bounds the rounding
    scores, indices = index.search(queries, k)
    want_scores, want_indices = brute_force(queries, docs, min(k, 200))
    assert scores.dtype == np.float32 and indices.dtype == np.int64
    assert scores.shape == (30, min(k, 200))
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    if levels:  # weights are exact binary fractions: scores are exact, so ties are real and resolved by row
        np.testing.assert_array_equal(indices, want_indices)
    else:  # float rounding may order near-equal scores differently; the true scores of what we return must match
        true = (queries @ docs.T).toarray()
        np.testing.assert_allclose(np.take_along_axis(true, indices, 1), want_scores, rtol=1e-6)


def test_batch_equals_one_by_one():
    index = SparseIndex.build(random_vectors(100, seed=3))
    queries = random_vectors(8, seed=4)
    batch = index.search(queries, 5)
    for q in range(8):
        single = index.search(queries[q], 5)
        np.testing.assert_array_equal(single.indices[0], batch.indices[q])
        np.testing.assert_array_equal(single.scores[0], batch.scores[q])


def test_edge_cases_empty_query_single_item_and_k_zero_refused():
    docs = random_vectors(5, seed=5)
    index = SparseIndex.build(docs)
    empty = sp.csr_matrix((1, VOCAB), dtype=np.float32)
    scores, indices = index.search(empty, 3)
    assert indices.tolist() == [[0, 1, 2]] and scores.tolist() == [[0, 0, 0]]
    with pytest.raises(InputError, match="k must be at least 1"):
        index.search(docs[0], 0)
    one = SparseIndex.build(docs[:1])
    assert one.search(docs, 10).indices.tolist() == [[0]] * 5


def test_top_k_breaks_ties_by_row():
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0, 0.0], dtype=np.float32)
    assert top_k(scores, 2).tolist() == [1, 2]
    assert top_k(scores, 4).tolist() == [1, 2, 4, 3]
    assert top_k(scores, 99).tolist() == [1, 2, 4, 3, 0, 5]


def test_explain_sums_to_the_score_and_is_sorted():
    docs = random_vectors(50, density=0.2, seed=6)
    queries = random_vectors(4, density=0.2, seed=7)
    index = SparseIndex.build(docs, vocab=Vocabulary(tuple(f"t{i}" for i in range(VOCAB))))
    docs = index.vectors  # explanations read the stored (float16) weights, as search does
    scores, indices = index.search(queries, 3)
    for q in range(4):
        for score, row in zip(scores[q], indices[q]):
            matches = index.explain(queries[q], row)
            assert sum(m.contribution for m in matches) == pytest.approx(float(score), rel=1e-5)
            contributions = [m.contribution for m in matches]
            assert contributions == sorted(contributions, reverse=True)
            for m in matches:
                term = int(m.term[1:])
                assert m.query_weight == pytest.approx(queries[q, term]) and m.doc_weight == pytest.approx(docs[row, term])
                assert m.contribution == pytest.approx(m.query_weight * m.doc_weight)
    assert len(index.explain(queries[0], indices[0][0], top_k=2)) <= 2
    with pytest.raises(InputError, match="outside"):
        index.explain(queries[0], 50)


def test_bad_queries_and_items_are_refused():
    index = SparseIndex.build(random_vectors(10))
    with pytest.raises(InputError, match="columns"):
        index.search(sp.csr_matrix((1, VOCAB + 1), dtype=np.float32))
    with pytest.raises(InputError, match="sparse matrix or a 2-D array"):
        index.search([[1.0] * VOCAB])
    with pytest.raises(InputError, match="2-D"):
        index.search(np.ones(VOCAB))
    np.testing.assert_array_equal(index.search(np.ones((1, VOCAB))).indices,  # a dense row ranks as its CSR
                                  index.search(sp.csr_matrix(np.ones((1, VOCAB)))).indices)
    nan = sp.csr_matrix(np.full((1, VOCAB), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="NaN"):
        index.search(nan)
    with pytest.raises(InputError, match="unique"):
        SparseIndex.build(random_vectors(2), [{"id": "a"}, {"id": "a"}])
    with pytest.raises(InputError, match="one item per row"):
        SparseIndex.build(random_vectors(2), [{"id": "a"}])


def test_hybrid_reranks_exact_candidates_by_the_expanded_query():
    docs = sp.csr_matrix(np.array([
        [1, 0, 0, 0],   # shares term 0 with the query, weak on term 3
        [1, 0, 0, 5],   # shares term 0, strong on the expansion term 3
        [0, 0, 0, 9],   # no shared token: only the expanded query reaches it
        [0, 1, 0, 0],
    ], dtype=np.float32))
    index = SparseIndex.build(docs)
    exact = sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32))
    expanded = sp.csr_matrix(np.array([[1, 0, 0, 1]], dtype=np.float32))
    scores, indices = hybrid_search(index, exact, expanded, k=3)
    # candidates 1 (score 6) and 0 (score 1) only: row 2 shares no token with the text, so it is no hit
    assert indices.tolist() == [[1, 0, -1]] and scores.tolist() == [[6, 1, 0]]
    assert index.search(expanded, 3).indices.tolist() == [[2, 1, 0]]


def test_hybrid_re_scores_exactly_depth_candidates_and_returns_only_those():
    docs = sp.csr_matrix(np.array([[2, 0, 0, 0], [1, 0, 0, 5], [0, 0, 0, 9], [1, 0, 0, 1]], dtype=np.float32))
    index = SparseIndex.build(docs, precision="float32")
    exact = sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32))
    expanded = sp.csr_matrix(np.array([[1, 0, 0, 1]], dtype=np.float32))
    # depth 1: only the best no_expand candidate (row 0) is re-scored and returned
    assert hybrid_search(index, exact, expanded, k=3, depth=1).indices.tolist() == [[0, -1, -1]]
    # depth 2: rows 0 and 1 are candidates, re-ranked by expanded score (1: 6 before 0: 2); nothing else
    assert hybrid_search(index, exact, expanded, k=3, depth=2).indices.tolist() == [[1, 0, -1]]
    assert hybrid_search(index, exact, expanded, k=3, depth=1000).indices.tolist() == [[1, 0, 3]]
    for bad in (0, -1, 2.5, True, "10"):
        with pytest.raises(InputError, match="hybrid depth"):
            hybrid_search(index, exact, expanded, k=3, depth=bad)


@pytest.fixture
def saved_index(tmp_path):
    vocab = Vocabulary(tuple(f"t{i}" for i in range(VOCAB)))
    index = SparseIndex.build(
        random_vectors(40, seed=8), [{"id": f"img{i}", "image": f"img{i}.jpg", "captions": [f"c {i}"]} for i in range(40)],
        vocab=vocab, dense=np.random.default_rng(0).normal(size=(40, 16)).astype(np.float32),
        info={"documents": "image", "models": {"head": {"id": "h", "fingerprint": "aaa"},
                                               "backbone": {"id": "b", "fingerprint": "bbb"}}},
    )
    index.save(tmp_path / "idx")
    return index, tmp_path / "idx"


def models(vocab_sha, head="aaa", backbone="bbb", vocab_size=VOCAB):
    return ModelRecord.from_json({"vocab_sha256": vocab_sha, "vocab_size": vocab_size,
                                  "head": {"id": "h2", "fingerprint": head}, "backbone": {"id": "b2", "fingerprint": backbone}})


def test_save_then_load_gives_identical_results(saved_index):
    index, path = saved_index
    loaded = SparseIndex.load(path, models=models(index.vocab.sha256))
    queries = random_vectors(5, seed=9)
    for got, want in zip(loaded.search(queries, 10), index.search(queries, 10)):
        np.testing.assert_array_equal(got, want)
    assert loaded.items == index.items and loaded.vocab == index.vocab
    np.testing.assert_array_equal(loaded.dense, index.dense)
    assert loaded.info["documents"] == "image" and len(loaded) == 40
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    assert manifest["format_version"] == FORMAT_VERSION and set(manifest["files"]) == {
        *POSTING_FILES.values(), *FORWARD_FILES.values(), "items.jsonl", "vocab.txt", "dense.npy"}


def test_resave_replaces_atomically_and_leaves_no_temp_folders(saved_index):
    index, path = saved_index
    smaller = SparseIndex.build(index.vectors[:3], index.items[:3], vocab=index.vocab)
    smaller.save(path)
    assert len(SparseIndex.load(path)) == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["idx"]


def test_save_refuses_to_overwrite_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(IndexFormatError, match="not an mlsr index"):
        SparseIndex.build(random_vectors(2)).save(tmp_path / "photos")
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete", "manifest-json", "newer-version", "count"])
def test_damaged_index_is_refused_with_a_clear_error(saved_index, damage):
    _, path = saved_index
    sparse = path / POSTING_FILES["docs"]
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    if damage == "truncate":
        sparse.write_bytes(sparse.read_bytes()[:-100])
        match = "truncated or altered"
    elif damage == "alter":
        data = bytearray(sparse.read_bytes())
        data[-10] ^= 0xFF
        sparse.write_bytes(bytes(data))
        match = "checksum"
    elif damage == "delete":
        (path / "items.jsonl").unlink()
        match = "items.jsonl is missing"
    elif damage == "manifest-json":
        (path / MANIFEST_FILE).write_text("{not json")
        match = "not valid JSON"
    elif damage == "newer-version":
        manifest["format_version"] = 99
        write_manifest(path, manifest)
        match = "Upgrade mlsr"
    else:
        manifest["count"] = 41
        write_manifest(path, manifest)
        match = "manifest says 41"
    with pytest.raises(IndexFormatError, match=match):
        SparseIndex.load(path)


def test_missing_folder_says_how_to_build_one(tmp_path):
    with pytest.raises(IndexFormatError, match="build-index"):
        SparseIndex.load(tmp_path / "nowhere")


def test_index_built_with_other_models_is_refused(saved_index):
    index, path = saved_index
    sha = index.vocab.sha256
    with pytest.raises(IndexMismatchError, match="another vocabulary"):
        SparseIndex.load(path, models=models("0" * 64))
    with pytest.raises(IndexMismatchError, match="head"):
        SparseIndex.load(path, models=models(sha, head="zzz"))
    with pytest.raises(IndexMismatchError, match="backbone"):
        SparseIndex.load(path, models=models(sha, backbone="zzz"))
    with pytest.raises(IndexMismatchError, match="terms"):
        SparseIndex.load(path, models=models(sha, vocab_size=VOCAB + 1))
    SparseIndex.load(path, models=models(sha))  # the right models pass


def test_a_symlink_escaping_the_index_folder_is_refused(saved_index, tmp_path):
    _, path = saved_index
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes((path / "items.jsonl").read_bytes())  # same bytes, so only the link itself is wrong
    (path / "items.jsonl").unlink()
    (path / "items.jsonl").symlink_to(outside)
    with pytest.raises(IndexFormatError, match="items.jsonl is missing .or not a regular file"):
        SparseIndex.load(path)


def test_a_manifest_naming_a_file_outside_the_folder_is_refused(saved_index):
    _, path = saved_index
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["files"]["../../etc/passwd"] = {"bytes": 1, "sha256": "0"}
    write_manifest(path, manifest)
    with pytest.raises(IndexFormatError, match="outside the folder"):
        SparseIndex.load(path)


@pytest.mark.parametrize("k, message", [("3", "whole number, got '3'"), (True, "whole number, got True"),
                                        (1.5, "whole number, got 1.5"), (0, "at least 1, got 0"),
                                        (None, "whole number, got None")])
def test_k_has_one_rule(k, message):
    """The rule of mlsr.checks, the same in the library, the command line and the app's API."""
    index = SparseIndex.build(random_vectors(5, seed=3))
    with pytest.raises(InputError, match=f"^k must be a {message}[.]$" if "whole" in message else f"^k must be {message}[.]$"):
        index.search(random_vectors(1, seed=4), k)
    assert index.search(random_vectors(1, seed=4), 3.0).indices.shape == (1, 3)  # a whole number written as a float


def test_explain_with_negative_document_weights_sums_to_score():
    rng = np.random.default_rng(11)
    docs = random_vectors(40, density=0.3, seed=12)
    docs.data[rng.random(docs.nnz) < 0.4] *= -1  # some documents weigh some terms negatively
    queries = random_vectors(5, density=0.3, seed=13)
    index = SparseIndex.build(docs, vocab=Vocabulary(tuple(f"t{i}" for i in range(VOCAB))))
    assert index.has_negative_weights()
    negative_matches = 0
    for q in range(5):
        scores = index.score(queries[q], np.arange(40))
        for row in range(40):
            matches = index.explain(queries[q], row)
            assert sum(m.contribution for m in matches) == pytest.approx(float(scores[row]), rel=1e-5, abs=1e-6)
            negative_matches += sum(m.doc_weight < 0 for m in matches)
    assert negative_matches > 20


def test_a_format_1_folder_with_dense_vectors_loads_them(tmp_path):
    from tests.helpers.data import write_format1_index

    docs = random_vectors(30, seed=14)
    dense = np.random.default_rng(15).normal(size=(30, 8)).astype(np.float32)
    write_format1_index(tmp_path / "old", docs, [{"id": f"img{i}"} for i in range(30)], dense=dense)
    loaded = SparseIndex.load(tmp_path / "old")
    np.testing.assert_array_equal(loaded.dense, dense)
    loaded.save(tmp_path / "new")  # re-saved in the current format, the dense vectors go along
    np.testing.assert_array_equal(SparseIndex.load(tmp_path / "new").dense, dense)
