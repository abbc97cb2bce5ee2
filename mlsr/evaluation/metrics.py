"""Retrieval metrics as trec_eval defines them (R@k, MRR@k, NDCG@k, MAP@k), and the cost of sparse vectors
(active terms, FLOPs) from term document frequencies. Plain numpy; cross-checked against pytrec_eval in the tests.

A ranking is a list of document ids, best first; qrels map a query id to {document id: relevance}, where a
relevance >= 1 counts as relevant (trec_eval's default) and its value is the NDCG gain.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.data.trec import Qrels
from mlsr.errors import InputError

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


def per_query(rankings: Mapping[str, Sequence[str]], qrels: Qrels, measures: Sequence[str]
              ) -> dict[str, dict[str, float]]:
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

    Row q of `indices` ranks the documents `doc_ids[row]` for query `query_ids[q]`; a row of -1 is no
    document (a query with fewer hits than the depth). Averaged over the queries of `qrels` (as
    `per_query`): one absent from `query_ids` or without a relevant document scores 0.
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
        found = (keys_array[at] == wanted) & (indices >= 0)  # row -1: no hit there
        gains[found] = values_array[at[found]]
    return gains, num_rel, ideal


# -- sparse vector cost ------------------------------------------------------------------------------


def term_frequency(vectors) -> np.ndarray:
    """(vocab,) int64: how many rows of an (n, vocab) sparse matrix or dense array give each term a non-zero weight.

    The matrix is read, never changed (duplicates are summed on a copy)."""
    if sp.issparse(vectors):
        vectors = sp.csr_matrix(vectors, copy=True)
        vectors.sum_duplicates()  # on our copy: a repeated entry is one term, and one that sums to 0 is none
        vectors.eliminate_zeros()  # explicit zeros are not active terms
        return np.bincount(vectors.indices, minlength=vectors.shape[1]).astype(np.int64)
    if hasattr(vectors, "detach"):  # a torch tensor, without importing torch here
        return (vectors != 0).sum(dim=0).detach().to("cpu").numpy().astype(np.int64)
    return np.count_nonzero(np.asarray(vectors), axis=0).astype(np.int64)


def active_terms(vectors) -> float:
    """Mean number of non-zero terms per row."""
    rows = vectors.shape[0]
    return float(term_frequency(vectors).sum() / rows) if rows else 0.0


def flops_from_frequencies(query_frequency: np.ndarray, n_queries: int, doc_frequency: np.ndarray,
                           n_docs: int) -> float:
    """Expected multiplications per query-document pair: sum over terms of df_q(t) * df_d(t) / (Q * D).

    Only document frequencies are needed, so an index's cost is known without its document matrix.
    """
    if len(query_frequency) != len(doc_frequency):
        raise InputError(f"queries have {len(query_frequency)} terms, documents {len(doc_frequency)}.")
    if n_queries == 0 or n_docs == 0:
        return 0.0
    products = query_frequency.astype(np.float64) * doc_frequency.astype(np.float64)
    return float(products.sum() / (n_queries * n_docs))


def flops(queries, documents) -> float:
    """FLOPs (see `flops_from_frequencies`) of (q, vocab) queries against (d, vocab) documents."""
    if queries.shape[1] != documents.shape[1]:
        raise InputError(f"queries have {queries.shape[1]} terms, documents {documents.shape[1]}.")
    return flops_from_frequencies(term_frequency(queries), queries.shape[0], term_frequency(documents),
                                  documents.shape[0])
