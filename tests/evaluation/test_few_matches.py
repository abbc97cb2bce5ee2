"""Where many queries share a word with fewer than k images (the reference-equality fixture matches every image to
every query, so it cannot see this): only hits are ranked in every mode, hybrid re-scores its candidates and
returns only those, and every run file `evaluate` writes reads, to trec_eval, exactly as mlsr ranked it, so
pytrec_eval over the files equals the printed metrics."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.data.trec import read_qrels
from mlsr.evaluation.runs import DEFAULT_MEASURES, DEFAULT_RUNS, QuerySet, evaluate_index
from mlsr.query_vectors import QueryVectors
from mlsr.index.sparse import SparseIndex
from tests.helpers.trec import file_run, trec_eval

TERMS, DOCS, QUERIES, DENSE = 300, 120, 90, 16
LEVELS = np.array([0.5, 1.0, 2.0], dtype=np.float32)  # exact sums: real ties


def few_matches(seed: int = 0) -> tuple[SparseIndex, QuerySet, dict]:
    """120 documents of 3 terms each over 300 terms (terms 250.. in no document), 90 queries of 1-2 own terms
    (a third of them from the unused range: no hit at all) plus 4 expansion terms, dense vectors, one
    relevant document per query."""
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(DOCS), 3)
    docs = sp.csr_matrix((rng.choice(LEVELS, DOCS * 3), (rows, rng.integers(0, 250, DOCS * 3))), shape=(DOCS, TERMS))
    own, extra = sp.lil_matrix((QUERIES, TERMS), dtype=np.float32), sp.lil_matrix((QUERIES, TERMS), dtype=np.float32)
    for q in range(QUERIES):
        pool = (250, 300) if q % 3 == 0 else (0, 250)
        for term in rng.integers(*pool, rng.integers(1, 3)):
            own[q, term] = rng.choice(LEVELS)
        for term in rng.integers(0, 250, 4):
            extra[q, term] = rng.choice(LEVELS)
    no_expand = own.tocsr()
    expand = no_expand.maximum(extra.tocsr()).tocsr()  # the expanded query holds every own term, as heavy
    dense = rng.normal(size=(DOCS + QUERIES, DENSE)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    index = SparseIndex.build(docs, [{"id": f"d{i:03d}"} for i in range(DOCS)], dense=dense[:DOCS], precision="float32")
    ids = [f"q{q:02d}" for q in range(QUERIES)]
    qrels = {qid: {f"d{int(rng.integers(DOCS)):03d}": 1} for qid in ids}
    return index, QuerySet(ids, QueryVectors(expand, no_expand, dense[DOCS:])), qrels


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    index, queries, qrels = few_matches()
    runs_dir = tmp_path_factory.mktemp("runs")
    evaluation = evaluate_index(index, queries, qrels, runs=DEFAULT_RUNS, measures=DEFAULT_MEASURES, runs_dir=runs_dir)
    return index, queries, qrels, evaluation, runs_dir


def test_the_fixture_has_many_queries_with_few_or_no_hits(evaluated):
    index, queries, _, _, _ = evaluated
    matching = ((queries.vectors.no_expand @ index.vectors.T).toarray() > 0).sum(axis=1)
    assert (matching < 10).mean() > 0.5 and (matching == 0).sum() >= QUERIES // 3


def test_no_run_file_holds_a_document_that_shares_no_term_and_scores_never_rise(evaluated):
    index, queries, _, evaluation, runs_dir = evaluated
    row = {item["id"]: r for r, item in enumerate(index.items)}
    for result in evaluation.results:
        run = file_run(runs_dir / f"{result.run}.trec")
        view = queries.vectors.no_expand if result.run == "no_expand" else queries.vectors.expand
        for q, qid in enumerate(queries.ids):
            entries = run.get(qid, [])
            assert [rank for _, _, rank in entries] == list(range(1, len(entries) + 1))
            scores = [score for _, score, _ in entries]
            assert all(a > b for a, b in zip(scores, scores[1:])), (result.run, qid)  # strictly: trec_eval's order
            if result.run == "dense":
                assert len(entries) == min(DOCS, 1000)
                continue
            shared = (view[q] @ index.vectors[[row[doc] for doc, _, _ in entries]].T).toarray().ravel()
            assert (shared > 0).all() and all(score > 0 for score in scores), (result.run, qid)


def test_pytrec_eval_over_every_run_file_equals_the_printed_metrics(evaluated):
    _, _, _, evaluation, runs_dir = evaluated
    qrels = read_qrels(runs_dir / "qrels.trec")
    assert {result.run for result in evaluation.results} == {"expand", "no_expand", "hybrid@10", "hybrid", "dense"}
    for result in evaluation.results:
        reference = trec_eval(runs_dir / f"{result.run}.trec", qrels, list(DEFAULT_MEASURES))
        assert result.metrics == pytest.approx(reference, abs=1e-9), result.run


@pytest.mark.parametrize("run, depth", [("hybrid@10", 10), ("hybrid", 1000)])
def test_hybrid_runs_re_score_their_candidates_and_return_only_those(evaluated, run, depth):
    index, queries, _, _, runs_dir = evaluated
    exact = (queries.vectors.no_expand @ index.vectors.T).toarray()
    full = (queries.vectors.expand @ index.vectors.T).toarray()
    written = file_run(runs_dir / f"{run}.trec")
    rows = np.arange(DOCS)
    for q, qid in enumerate(queries.ids):
        candidates = [int(r) for r in np.lexsort((rows, -exact[q]))[:depth] if exact[q, r] > 0]
        want = sorted(candidates, key=lambda r: (-full[q, r], r))
        assert [doc for doc, _, _ in written.get(qid, [])] == [index.items[r]["id"] for r in want]
