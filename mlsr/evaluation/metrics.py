"""Retrieval metrics as trec_eval defines them (R@k, MRR@k, NDCG@k, MAP@k), TREC run/qrels files, and the
cost of sparse vectors (active terms, FLOPs). Plain numpy; cross-checked against pytrec_eval in the tests.

A ranking is a list of document ids, best first; qrels map a query id to {document id: relevance}, where a
relevance >= 1 counts as relevant (trec_eval's default) and its value is the NDCG gain.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr._files import atomic_path

Qrels = dict[str, dict[str, int]]
_MEASURE = re.compile(r"^(R|MRR|NDCG|MAP)@(\d+)$")


def recall(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Relevant documents in the top k / all relevant documents (trec_eval `recall.k`)."""
    judged = {doc for doc, rel in relevant.items() if rel >= 1}
    if not judged:
        return 0.0
    return sum(1 for doc in ranking[:k] if doc in judged) / len(judged)


def reciprocal_rank(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """1 / rank of the first relevant document within the top k, else 0 (trec_eval `recip_rank` on a cut run)."""
    for rank, doc in enumerate(ranking[:k], 1):
        if relevant.get(doc, 0) >= 1:
            return 1.0 / rank
    return 0.0


def ndcg(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """DCG@k / ideal DCG@k, gain = relevance, discount log2(rank + 1) (trec_eval `ndcg_cut.k`)."""
    gains = sorted((rel for rel in relevant.values() if rel > 0), reverse=True)[:k]
    ideal = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(gains, 1))
    if ideal == 0:
        return 0.0
    dcg = sum(max(relevant.get(doc, 0), 0) / math.log2(rank + 1) for rank, doc in enumerate(ranking[:k], 1))
    return dcg / ideal


def average_precision(ranking: Sequence[str], relevant: Mapping[str, int], k: int) -> float:
    """Sum of precision at the ranks of relevant documents in the top k / all relevant (trec_eval `map_cut.k`)."""
    judged = {doc for doc, rel in relevant.items() if rel >= 1}
    if not judged:
        return 0.0
    hits, total = 0, 0.0
    for rank, doc in enumerate(ranking[:k], 1):
        if doc in judged:
            hits += 1
            total += hits / rank
    return total / len(judged)


_FUNCTIONS = {"R": recall, "MRR": reciprocal_rank, "NDCG": ndcg, "MAP": average_precision}


def parse_measure(name: str) -> tuple[str, int]:
    """'NDCG@10' -> ('NDCG', 10); the names R@k, MRR@k, NDCG@k, MAP@k."""
    match = _MEASURE.match(name.strip())
    if not match or int(match.group(2)) < 1:
        raise InputError(f"unknown measure {name!r}: use R@k, MRR@k, NDCG@k or MAP@k with k >= 1.")
    return match.group(1), int(match.group(2))


def per_query(rankings: Mapping[str, Sequence[str]], qrels: Qrels, measures: Sequence[str]) -> dict[str, dict[str, float]]:
    """{measure: {query id: value}} over the queries of `qrels`.

    As trec_eval: a judged query without a relevant document scores 0, and so does one with no
    ranking (trec_eval -c); queries that are not in `qrels` are not evaluated.
    """
    parsed = [(name, *parse_measure(name)) for name in measures]
    queries = list(qrels)
    return {name: {q: _FUNCTIONS[kind](list(rankings.get(q, ())), qrels[q], k) for q in queries}
            for name, kind, k in parsed}


def mean_metrics(rankings: Mapping[str, Sequence[str]], qrels: Qrels, measures: Sequence[str]) -> dict[str, float]:
    """{measure: mean over the queries of `qrels`}."""
    values = per_query(rankings, qrels, measures)
    return {name: (float(np.mean(list(by_query.values()))) if by_query else 0.0) for name, by_query in values.items()}


def score_rankings(indices: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str], qrels: Qrels,
                   measures: Sequence[str]) -> dict[str, float]:
    """Mean metrics of (q, k) ranked document rows, vectorised: the same numbers as `mean_metrics`.

    Row q of `indices` ranks the documents `doc_ids[row]` for query `query_ids[q]`. Averaged over the
    queries of `qrels` (as `per_query`): one absent from `query_ids` or without a relevant document scores 0.
    """
    parsed = [(name, *parse_measure(name)) for name in measures]
    indices = np.asarray(indices, dtype=np.int64).reshape(len(query_ids), -1)
    deepest = max([k for _, _, k in parsed] + [indices.shape[1]])
    gains, num_rel, ideal = _gains(indices, query_ids, doc_ids, qrels, deepest)
    judged = num_rel > 0  # the others score 0 but count
    count = len(qrels)
    if count == 0:
        return {name: 0.0 for name, _, _ in parsed}
    gains, num_rel, ideal = gains[judged], num_rel[judged].astype(np.float64), ideal[judged]
    hit = gains >= 1
    ranks = np.arange(1, deepest + 1, dtype=np.float64)
    discount = 1.0 / np.log2(ranks + 1)
    out = {}
    for name, kind, k in parsed:
        cut_hit, cut_gain = hit[:, :k], np.maximum(gains[:, :k], 0)
        if kind == "R":
            values = cut_hit.sum(axis=1) / num_rel
        elif kind == "MRR":
            first = np.where(cut_hit.any(axis=1), cut_hit.argmax(axis=1) + 1, np.inf)
            values = 1.0 / first
        elif kind == "NDCG":
            dcg = (cut_gain * discount[: cut_gain.shape[1]]).sum(axis=1)
            best = (ideal[:, :k] * discount[:k]).sum(axis=1)
            values = np.divide(dcg, best, out=np.zeros_like(dcg), where=best > 0)
        else:  # MAP
            precision = np.cumsum(cut_hit, axis=1) / ranks[: cut_hit.shape[1]]
            values = (precision * cut_hit).sum(axis=1) / num_rel
        out[name] = float(values.sum() / count) if len(values) else 0.0
    return out


def _gains(indices: np.ndarray, query_ids: Sequence[str], doc_ids: Sequence[str], qrels: Qrels, width: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, k) relevance of each ranked document, relevant count per query, and (q, width) ideal gains (sorted)."""
    n_docs = len(doc_ids)
    doc_row = {str(doc): row for row, doc in enumerate(doc_ids)}
    keys, values = [], []
    num_rel = np.zeros(len(query_ids), dtype=np.int64)
    ideal = np.zeros((len(query_ids), width), dtype=np.float64)
    for q, qid in enumerate(query_ids):
        judged = qrels.get(str(qid)) or {}
        positive = sorted((rel for rel in judged.values() if rel > 0), reverse=True)[:width]
        ideal[q, : len(positive)] = positive
        num_rel[q] = sum(1 for rel in judged.values() if rel >= 1)
        for doc, rel in judged.items():
            row = doc_row.get(str(doc))
            if row is not None and rel != 0:
                keys.append(q * n_docs + row)
                values.append(rel)
    gains = np.zeros(indices.shape, dtype=np.float64)
    if keys:
        keys_array, values_array = np.asarray(keys, dtype=np.int64), np.asarray(values, dtype=np.float64)
        order = np.argsort(keys_array)
        keys_array, values_array = keys_array[order], values_array[order]
        wanted = np.arange(len(query_ids), dtype=np.int64)[:, None] * n_docs + indices
        at = np.clip(np.searchsorted(keys_array, wanted), 0, len(keys_array) - 1)
        found = keys_array[at] == wanted
        gains[found] = values_array[at[found]]
    return gains, num_rel, ideal


# -- sparse vector cost ------------------------------------------------------------------------------


def active_terms(vectors: sp.spmatrix) -> float:
    """Mean number of non-zero terms per row."""
    vectors = sp.csr_matrix(vectors, copy=True)
    if vectors.shape[0] == 0:
        return 0.0
    vectors.eliminate_zeros()
    return float(vectors.getnnz(axis=1).mean())


def flops(queries: sp.spmatrix, documents: sp.spmatrix) -> float:
    """Expected multiplications per query-document pair: sum over terms of df_docs(t) * df_queries(t) / (Q * D)."""
    queries, documents = sp.csc_matrix(queries), sp.csc_matrix(documents)
    if queries.shape[1] != documents.shape[1]:
        raise InputError(f"queries have {queries.shape[1]} terms, documents {documents.shape[1]}.")
    if queries.shape[0] == 0 or documents.shape[0] == 0:
        return 0.0
    q_df = np.asarray((queries != 0).sum(axis=0), dtype=np.float64).ravel()
    d_df = np.asarray((documents != 0).sum(axis=0), dtype=np.float64).ravel()
    return float((q_df * d_df).sum() / (queries.shape[0] * documents.shape[0]))


# -- TREC files --------------------------------------------------------------------------------------


def write_run(path: str | Path, query_ids: Sequence[str], doc_ids: Sequence[str], indices: np.ndarray,
              scores: np.ndarray, name: str) -> None:
    """A TREC run file, `qid Q0 docid rank score name` per line, written atomically.

    Ranks follow our order (score descending, then index row); trec_eval re-sorts by score and breaks
    ties by document id, so tied documents may be ordered differently by it.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for q, qid in enumerate(query_ids):
            for rank, (row, score) in enumerate(zip(indices[q], scores[q]), 1):
                handle.write(f"{qid} Q0 {doc_ids[int(row)]} {rank} {float(score):.6f} {name}\n")


def read_run(path: str | Path) -> dict[str, list[str]]:
    """A TREC run file -> {query id: document ids best first} (by score descending, then rank)."""
    rows: dict[str, list[tuple[float, int, str]]] = {}
    for number, parts in _lines(path, 6):
        try:
            rows.setdefault(parts[0], []).append((-float(parts[4]), int(parts[3]), parts[2]))
        except ValueError:
            raise InputError(f"{path}:{number}: rank and score must be numbers: {' '.join(parts)!r}.") from None
    return {q: [doc for _, _, doc in sorted(entries)] for q, entries in rows.items()}


def read_qrels(path: str | Path) -> Qrels:
    """A TREC qrels file (`qid iter docid rel` per line) -> {query id: {document id: relevance}}."""
    qrels: Qrels = {}
    for number, parts in _lines(path, 4):
        try:
            qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
        except ValueError:
            raise InputError(f"{path}:{number}: relevance must be an integer: {' '.join(parts)!r}.") from None
    if not qrels:
        raise InputError(f"{path} holds no judgements.")
    return qrels


def write_qrels(path: str | Path, qrels: Qrels) -> None:
    """Write qrels in TREC format (`qid 0 docid rel`), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for qid, judged in qrels.items():
            for doc, rel in judged.items():
                handle.write(f"{qid} 0 {doc} {rel}\n")


def _lines(path: str | Path, columns: int):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path} ({error}).") from None
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != columns:
            raise InputError(f"{path}:{number}: expected {columns} columns, got {len(parts)}: {line[:80]!r}.")
        yield number, parts
