"""The evaluation loop (`mlsr.evaluation.runs`) ranks each run exactly as the query modes do on their own:
expand and no_expand as `search`, hybrid as `hybrid_search(no_expand, expand)`, at the depth it is given."""

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tests.helpers.vectors import VOCAB, planted_rank_depth_plus_one, random_queries
from mlsr.evaluation.runs import QuerySet, evaluate_index
from mlsr.index.modes import hybrid_search, rank
from mlsr.query_vectors import QueryVectors
from mlsr.index.sparse import SparseIndex


def ranked_rows(run_file: Path, doc_ids: list[str]) -> dict[str, list[int]]:
    """A TREC run file as {query id: rows in the file's rank order} (not re-sorted by score)."""
    row = {doc: i for i, doc in enumerate(doc_ids)}
    ranked: dict[str, list[tuple[int, int]]] = {}
    for line in run_file.read_text().splitlines():
        qid, _, doc, position, _, _ = line.split()
        ranked.setdefault(qid, []).append((int(position), row[doc]))
    return {qid: [r for _, r in sorted(pairs)] for qid, pairs in ranked.items()}


def test_every_sparse_run_ranks_as_its_mode_does_on_its_own(tmp_path):
    rng = np.random.default_rng(5)
    docs = sp.random(70, VOCAB, density=0.08, format="csr", dtype=np.float32, random_state=rng)
    docs.data = rng.choice(np.array([0.5, 1.0, 2.0], dtype=np.float32), docs.nnz)
    index = SparseIndex.build(docs, [{"id": f"d{i}"} for i in range(70)])
    no_expand, expand = random_queries(20, seed=6)
    ids = [f"q{i}" for i in range(20)]
    qrels = {qid: {f"d{int(rng.integers(70))}": 1} for qid in ids}
    doc_ids = [item["id"] for item in index.items]
    evaluate_index(index, QuerySet(ids, QueryVectors(expand, no_expand)), qrels, runs=["expand", "no_expand", "hybrid"],
                   measures=["R@1", "R@5"], hybrid_depth=7, batch_size=6, runs_dir=tmp_path)
    want = {"expand": rank(index, QueryVectors(expand), "expand", 5).indices,
            "no_expand": rank(index, QueryVectors(expand, no_expand), "no_expand", 5).indices,
            "hybrid": hybrid_search(index, no_expand, expand, k=5, depth=7).indices}
    assert not np.array_equal(want["hybrid"], hybrid_search(index, expand, no_expand, k=5, depth=7).indices)
    assert (want["no_expand"] == -1).any()  # some queries share a token with fewer than 5 documents
    for run, rows in want.items():
        got = ranked_rows(tmp_path / f"{run}.trec", doc_ids)
        assert [got.get(qid, []) for qid in ids] == [[r for r in row if r >= 0] for row in rows.tolist()], run


@pytest.mark.parametrize("depth", [2, 5])
def test_the_hybrid_run_uses_the_depth_it_is_given(depth):
    index, no_expand, expand, target = planted_rank_depth_plus_one(depth)
    index.items = [{"id": f"d{i}"} for i in range(len(index))]
    queries = QuerySet(["q"], QueryVectors(expand, no_expand))
    qrels = {"q": {f"d{target}": 1}}
    recall = {d: evaluate_index(index, queries, qrels, runs=["hybrid"], measures=["R@1"],
                                hybrid_depth=d).run("hybrid").metrics["R@1"] for d in (depth, depth + 1)}
    assert recall == {depth: 0.0, depth + 1: 1.0}
