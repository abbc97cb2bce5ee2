"""mlsr.evaluation.metrics against hand-computed values and against pytrec_eval (trec_eval's own C code) on random runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import pytrec_eval  # test-only dependency (requirements-dev.txt): trec_eval's C code
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.data.trec import read_qrels, read_run, write_qrels, write_run
from mlsr.evaluation.metrics import (active_terms, average_precision, flops, mean_metrics, ndcg, parse_measure, recall,
                                     reciprocal_rank, score_rankings)

RANKING = ["d3", "d1", "d7", "d2", "d9"]
JUDGED = {"d1": 1, "d2": 2, "d5": 1, "d8": 0}  # d5 relevant but not retrieved; d8 judged non-relevant


def test_hand_computed_values():
    # relevant: d1 at rank 2, d2 (gain 2) at rank 4; d5 never retrieved; 3 relevant in all
    assert recall(RANKING, JUDGED, 1) == 0
    assert recall(RANKING, JUDGED, 2) == pytest.approx(1 / 3)
    assert recall(RANKING, JUDGED, 5) == pytest.approx(2 / 3)
    assert reciprocal_rank(RANKING, JUDGED, 10) == 0.5
    assert reciprocal_rank(RANKING, JUDGED, 1) == 0
    assert average_precision(RANKING, JUDGED, 5) == pytest.approx((1 / 2 + 2 / 4) / 3)
    assert average_precision(RANKING, JUDGED, 3) == pytest.approx((1 / 2) / 3)
    dcg = 1 / math.log2(3) + 2 / math.log2(5)
    ideal = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg(RANKING, JUDGED, 5) == pytest.approx(dcg / ideal)
    assert ndcg(RANKING, JUDGED, 2) == pytest.approx((1 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert recall(RANKING, {"d8": 0}, 5) == ndcg(RANKING, {}, 5) == average_precision(RANKING, {"x": 0}, 5) == 0


def test_one_relevant_image_per_caption_is_the_usual_recall_at_k():
    # COCO text-to-image: R@k is 1 when the caption's image is in the top k
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}, "q3": {"c": 1}}
    rankings = {"q1": ["a", "b"], "q2": ["a", "b"], "q3": ["a", "b"]}
    assert mean_metrics(rankings, qrels, ["R@1", "R@2", "MRR@10"]) == pytest.approx(
        {"R@1": 1 / 3, "R@2": 2 / 3, "MRR@10": (1 + 0.5 + 0) / 3})


def _random_case(seed: int, queries=60, docs=300, depth=120):
    rng = np.random.default_rng(seed)
    doc_ids = [f"D{i}" for i in range(docs)]
    query_ids = [f"Q{i}" for i in range(queries)]
    qrels = {}
    for q in query_ids[:-3]:  # the last three queries are unjudged: not evaluated
        picked = rng.choice(docs, rng.integers(1, 12), replace=False)
        qrels[q] = {doc_ids[j]: int(rng.integers(0, 4)) for j in picked}
    qrels[query_ids[0]] = {doc_ids[0]: 0}  # judged, but nothing relevant: counts as 0
    qrels["Q-absent"] = {doc_ids[1]: 1}  # judged but never ranked: counts as 0 (trec_eval -c)
    indices = np.stack([rng.permutation(docs)[:depth] for _ in query_ids])
    return query_ids, doc_ids, qrels, indices


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_pytrec_eval_on_random_runs(seed):
    query_ids, doc_ids, qrels, indices = _random_case(seed)
    measures = ["R@1", "R@5", "R@10", "R@100", "MRR@10", "NDCG@5", "NDCG@10", "NDCG@100", "NDCG@1000",
                "MAP@5", "MAP@10", "MAP@100", "MAP@1000"]
    ours = score_rankings(indices, query_ids, doc_ids, qrels, measures)
    run = {q: {doc_ids[r]: float(len(doc_ids) - j) for j, r in enumerate(indices[i])} for i, q in enumerate(query_ids)}
    run["Q-absent"] = {}
    cut10 = {q: dict(list(docs.items())[:10]) for q, docs in run.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"recall.1,5,10,100", "ndcg_cut.5,10,100,1000",
                                                       "map_cut.5,10,100,1000"})
    reference = evaluator.evaluate(run)
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut10)
    names = {"R": "recall_{}", "NDCG": "ndcg_cut_{}", "MAP": "map_cut_{}"}
    for measure in measures:
        kind, k = parse_measure(measure)
        if kind == "MRR":
            expected = sum(rr.get(q, {}).get("recip_rank", 0.0) for q in qrels) / len(qrels)
        else:
            expected = sum(reference.get(q, {}).get(names[kind].format(k), 0.0) for q in qrels) / len(qrels)
        assert ours[measure] == pytest.approx(expected, abs=1e-9), measure
    lists = {q: [doc_ids[r] for r in indices[i]] for i, q in enumerate(query_ids)}
    assert mean_metrics(lists, qrels, measures) == pytest.approx(ours, abs=1e-12)


def test_trec_files_round_trip(tmp_path):
    query_ids, doc_ids, qrels, indices = _random_case(3, queries=5, docs=20, depth=6)
    scores = np.sort(np.random.default_rng(0).random(indices.shape))[:, ::-1].astype(np.float32)
    write_run(tmp_path / "run.trec", query_ids, doc_ids, indices, scores, "test")
    assert read_run(tmp_path / "run.trec") == {q: [doc_ids[r] for r in indices[i]] for i, q in enumerate(query_ids)}
    write_qrels(tmp_path / "qrels.trec", qrels)
    assert read_qrels(tmp_path / "qrels.trec") == qrels
    (tmp_path / "bad.trec").write_text("q1 0 d1\n")
    with pytest.raises(InputError, match="expected 4 columns"):
        read_qrels(tmp_path / "bad.trec")
    with pytest.raises(InputError, match="unknown measure"):
        parse_measure("P@10")


def test_flops_and_active_terms_by_hand():
    queries = sp.csr_matrix(np.array([[1, 0, 2, 0], [0, 0, 3, 1]], dtype=np.float32))
    docs = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 0]], dtype=np.float32))
    # term 0: 1 query x 1 doc; term 2: 2 x 2; term 3: 1 x 1 -> 6 multiplications over 2 x 3 pairs
    assert flops(queries, docs) == pytest.approx(6 / 6)
    # the same number from its definition: shared terms, pair by pair
    shared = ((queries != 0).astype(np.float32) @ (docs != 0).astype(np.float32).T).toarray()
    assert flops(queries, docs) == pytest.approx(shared.mean())
    assert active_terms(queries) == 2 and active_terms(docs) == pytest.approx(5 / 3)
