"""Seeded synthetic learned-sparse collections, generated in row chunks (int32 rows, float32 weights) so that
10M documents fit a 24 GB machine: the index is built from the chunks as they come.

Two profiles over the 30,522-term BERT vocabulary (term ids are a fixed random permutation of the
popularity ranks, so common terms are spread over the vocabulary as in BERT's):

- `uniform`: term t is in each document independently with probability share[t] = min(0.9,
  a / (rank + 3)) (~150 terms per document; the 34 most common terms are in most documents), with
  log1p-ReLU-like weights log1p(lognormal(0, 0.5) * s[t]) where common terms weigh less; queries
  are 20-40 terms drawn with the same popularity. Terms are independent, so scores barely skew:
  the worst case for dynamic pruning.
- `skewed`: what learned sparse vectors of images and captions look like. 4,096 latent topics of
  16 mid-frequency terms, each term with an importance b in [0.4, 1]. A document has 1-3 topics
  (Zipf-like topic popularity) and from each 3-6 strong terms (weight b * U(1.2, 2.8)), over ~130
  weak background terms with the uniform profile's popularity (weights ~0.05-0.5). A query, as D2S
  expands a caption, has one topic (two for 30%), 5-8 strong terms of it (weight b * U(1, 2.5):
  correlated with the documents' weights through b) and 90 weak expansion terms drawn with
  popularity^0.7: ~100 terms.

Chunk i of a profile depends only on (seed, i): a 100k collection is the first rows of the 1M one.
`statistics` reports terms per document and query and the postings each query touches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import scipy.sparse as sp

VOCAB_SIZE = 30_522
CHUNK_ROWS = 65_536
PROFILES = ("uniform", "skewed")


def popularity(avg_terms: float, cap: float = 0.9) -> np.ndarray:
    """Share of documents holding each popularity rank: min(cap, a / (rank + 3)), with a set for `avg_terms` per document."""
    base = 1.0 / (np.arange(VOCAB_SIZE) + 3.0)
    lo, hi = 0.0, 1e9
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.minimum(mid * base, cap).sum() < avg_terms else (lo, mid)
    return np.minimum(lo * base, cap)


def bernoulli_postings(share: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For every term t, the rows (ascending int32) of n in which it occurs independently with probability share[t].

    Drawn as a Bernoulli process: geometric gaps between occurrences (enough of them for 4 sigma
    + 8 beyond the expected count; the rare shortfall just ends a term's list early). Returns the
    (terms + 1,) int64 offsets and the rows.
    """
    expected = share * n
    draws = np.ceil(expected + 4 * np.sqrt(expected * (1 - share)) + 8).astype(np.int64)
    log_miss = np.repeat(np.log1p(-share).astype(np.float32), draws)
    uniform = rng.random(int(draws.sum()), dtype=np.float32)
    np.maximum(uniform, np.float32(1e-30), out=uniform)
    gaps = (np.floor(np.log(uniform) / log_miss) + 1).clip(1, n + 1).astype(np.int64)
    del uniform, log_miss
    positions = np.cumsum(gaps)
    ends = np.cumsum(draws)
    positions -= np.repeat(np.concatenate([[0], positions[ends[:-1] - 1]]), draws)  # restart at each term
    positions -= 1
    keep = positions < n
    counts = np.add.reduceat(keep, np.concatenate([[0], ends[:-1]])) if len(draws) else np.zeros(0, np.int64)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, positions[keep].astype(np.int32)


@dataclass
class Profile:
    """One synthetic collection family: documents in chunks, queries, all seeded."""

    name: str
    seed: int = 0
    permutation: np.ndarray = field(init=False, repr=False)  # popularity rank -> term id
    background: np.ndarray = field(init=False, repr=False)  # share of documents per rank

    def __post_init__(self) -> None:
        if self.name not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.name!r}")
        structure = np.random.default_rng([self.seed, 1_000_003])
        self.permutation = structure.permutation(VOCAB_SIZE)
        self.background = popularity(150.0 if self.name == "uniform" else 130.0)
        # common terms weigh less, as in learned sparse vectors
        self.weight_scale = (0.3 + 2.7 * (1.0 - self.background) ** 2).astype(np.float32)
        self.share_by_term = np.empty(VOCAB_SIZE)
        self.share_by_term[self.permutation] = self.background
        self.scale_by_term = np.empty(VOCAB_SIZE, dtype=np.float32)
        self.scale_by_term[self.permutation] = self.weight_scale
        if self.name == "skewed":
            ranks = np.arange(200, VOCAB_SIZE)
            p = 1.0 / (ranks - 150.0) ** 0.7
            self.topic_terms = np.stack([structure.choice(ranks, 16, replace=False, p=p / p.sum()) for _ in range(4096)])
            self.topic_importance = np.sort(structure.uniform(0.4, 1.0, (4096, 16)), axis=1)[:, ::-1].astype(np.float32)
            topic_p = 1.0 / (np.arange(4096) + 20.0)
            self.topic_p = topic_p / topic_p.sum()

    # -- documents ------------------------------------------------------------------------------

    def documents(self, n: int, start: int = 0) -> Iterator[sp.csr_matrix]:
        """Documents start..n-1 as (rows, vocab) CSR float32 chunks of CHUNK_ROWS rows (the last may be shorter);
        `start` is a multiple of CHUNK_ROWS."""
        if start % CHUNK_ROWS:
            raise ValueError(f"start must be a multiple of {CHUNK_ROWS}")
        for first in range(start, n, CHUNK_ROWS):
            chunk = self.chunk(first // CHUNK_ROWS)
            yield chunk if first + CHUNK_ROWS <= n else chunk[: n - first]

    def chunk(self, index: int) -> sp.csr_matrix:
        """Documents index * CHUNK_ROWS .. (index + 1) * CHUNK_ROWS - 1, canonical CSR float32."""
        rng = np.random.default_rng([self.seed, self.name == "skewed", index])
        indptr, rows = bernoulli_postings(self.share_by_term, CHUNK_ROWS, rng)  # grouped by term id
        noise = rng.standard_normal(len(rows), dtype=np.float32)
        mean, spread = (0.0, 0.5) if self.name == "uniform" else (-1.6, 0.6)
        noise *= np.float32(spread)
        noise += np.float32(mean)
        weights = np.log1p(np.exp(noise, out=noise) * np.repeat(self.scale_by_term, np.diff(indptr)))
        matrix = sp.csc_matrix((weights, rows, indptr), shape=(CHUNK_ROWS, VOCAB_SIZE)).tocsr()  # sorted rows
        if self.name == "skewed":
            strong_rows, strong_terms, strong_weights = self._strong_terms(CHUNK_ROWS, rng)
            strong = sp.coo_matrix((strong_weights, (strong_rows, strong_terms)), shape=matrix.shape).tocsr()
            matrix = matrix + strong  # a term that is both strong and background adds up
        matrix.sum_duplicates()
        return matrix

    def _strong_terms(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per document 1-3 topics and 3-6 of each topic's terms (importance-weighted): (rows, term ids, weights)."""
        topics_per_doc = 1 + rng.binomial(2, 0.3, n)
        slot_rows = np.repeat(np.arange(n, dtype=np.int32), topics_per_doc)
        topics = rng.choice(4096, len(slot_rows), p=self.topic_p)
        picks = rng.integers(3, 7, len(slot_rows))
        rows, terms, weights = self._pick(topics, picks, rng, 1.2, 2.8)
        return slot_rows[rows], terms, weights

    def _pick(self, topics: np.ndarray, picks: np.ndarray, rng: np.random.Generator, low: float, high: float):
        """From each topic slot, `picks` of its 16 terms without replacement, likelier by importance^2 (Gumbel top-k)."""
        importance = self.topic_importance[topics]
        uniform = np.maximum(rng.random(importance.shape, dtype=np.float32), np.float32(1e-30))
        keys = 2 * np.log(importance) - np.log(-np.log(uniform))
        order = np.argsort(-keys, axis=1)
        chosen = np.arange(16)[None, :] < picks[:, None]
        slot, rank = np.nonzero(chosen)
        column = order[slot, rank]
        terms = self.permutation[self.topic_terms[topics[slot], column]].astype(np.int32)
        weights = importance[slot, column] * rng.uniform(low, high, len(slot)).astype(np.float32)
        return slot, terms, weights.astype(np.float32)

    # -- queries --------------------------------------------------------------------------------

    def queries(self, count: int) -> sp.csr_matrix:
        """(count, vocab) CSR float32 queries, canonical."""
        rng = np.random.default_rng([self.seed, self.name == "skewed", 10**9])
        if self.name == "uniform":
            p = self.background / self.background.sum()
            sizes = rng.integers(20, 41, count)
            rows = np.repeat(np.arange(count), sizes)
            ranks = np.concatenate([rng.choice(VOCAB_SIZE, size, replace=False, p=p) for size in sizes])
            weights = np.log1p(rng.lognormal(0.0, 0.5, len(ranks))).astype(np.float32)
            terms = self.permutation[ranks]
        else:
            p = self.background**0.7
            p /= p.sum()
            weak = [rng.choice(VOCAB_SIZE, 90, replace=False, p=p) for _ in range(count)]
            weak_rows = np.repeat(np.arange(count), 90)
            weak_ranks = np.concatenate(weak)
            weak_weights = np.log1p(np.exp(-1.6 + 0.6 * rng.standard_normal(len(weak_ranks))) * self.weight_scale[weak_ranks])
            topics_per_query = 1 + (rng.random(count) < 0.3)
            slot_queries = np.repeat(np.arange(count), topics_per_query)
            topics = rng.choice(4096, len(slot_queries), p=self.topic_p)
            slot, strong_terms, strong_weights = self._pick(topics, rng.integers(5, 9, len(slot_queries)), rng, 1.0, 2.5)
            rows = np.concatenate([weak_rows, slot_queries[slot]])
            terms = np.concatenate([self.permutation[weak_ranks], strong_terms])
            weights = np.concatenate([weak_weights.astype(np.float32), strong_weights])
        matrix = sp.coo_matrix((weights.astype(np.float32), (rows, terms)), shape=(count, VOCAB_SIZE)).tocsr()
        matrix.sum_duplicates()
        matrix.sort_indices()
        return matrix


def statistics(document_frequency: np.ndarray, n_docs: int, postings: int, queries: sp.csr_matrix) -> dict:
    """Terms per document and query, and the postings each query touches (sum of its terms' document frequencies)."""
    touched = np.add.reduceat(np.append(document_frequency[queries.indices], 0), queries.indptr[:-1])
    terms = np.diff(queries.indptr)
    return {
        "terms_per_doc": postings / max(n_docs, 1),
        "terms_per_query": float(terms.mean()),
        "postings_touched_per_query_mean": float(touched.mean()),
        "postings_touched_per_query_p50": float(np.median(touched)),
        "postings_touched_share_of_all": float(touched.mean() / max(postings, 1)),
    }
