"""pytrec_eval (trec_eval's own C code, a test-only dependency) over a run file exactly as it was written."""

from __future__ import annotations

from pathlib import Path

import pytrec_eval


def file_run(path: Path) -> dict[str, list[tuple[str, float, int]]]:
    """A run file as written: {query: [(doc, score, rank)] in file order}."""
    run: dict[str, list[tuple[str, float, int]]] = {}
    for line in Path(path).read_text().splitlines():
        qid, _, doc, rank, score, _ = line.split()
        run.setdefault(qid, []).append((doc, float(score), int(rank)))
    return run


def trec_eval(path: Path, qrels: dict, measures: list[str]) -> dict[str, float]:
    """R@k, NDCG@k, MAP@k and MRR@k (over each query's k best by score) of a run file, by its own scores, as
    trec_eval reads it: averaged over the judged queries."""
    run = {qid: {doc: score for doc, score, _ in entries} for qid, entries in file_run(path).items()}
    names = {"R": ("recall.{}", "recall_{}"), "NDCG": ("ndcg_cut.{}", "ndcg_cut_{}"), "MAP": ("map_cut.{}", "map_cut_{}")}
    out = {}
    for measure in measures:
        kind, k = measure.split("@")
        if kind == "MRR":
            cut = {q: dict(sorted(d.items(), key=lambda item: -item[1])[: int(k)]) for q, d in run.items()}
            values = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
            out[measure] = sum(values.get(q, {}).get("recip_rank", 0) for q in qrels) / len(qrels)
        else:
            request, key = names[kind]
            values = pytrec_eval.RelevanceEvaluator(qrels, {request.format(k)}).evaluate(run)
            out[measure] = sum(values.get(q, {}).get(key.format(k), 0) for q in qrels) / len(qrels)
    return out
