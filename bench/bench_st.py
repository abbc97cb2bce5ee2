"""Exact sparse search: sentence-transformers' `semantic_search` over sparse tensors against mlsr's SparseIndex.

    python -m bench.bench_st [--docs 100000] [--queries 100] [--single 20] [--helper-single 2] [--out FILE]

The same synthetic collection for both (bench_core's generator: Zipf-like popularity over the 30,522-term
vocabulary, ~150 distinct terms per document, log1p-exponential weights; queries of 20-40 of those terms, as
bench_milvus). sentence-transformers side: `util.semantic_search(queries, corpus, score_function=dot_score)` on
torch sparse COO tensors, as a `SparseEncoder` returns them (its exact search: every score, then top-k).
mlsr side: `SparseIndex.search` (float32 weights, exact, the query terms' postings only). Both find the same
top-10 (the agreement is printed); timed in the same run, batch (all queries at once) and one query at a time.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.bench_core import synthetic_docs, timed
from bench.bench_milvus import synthetic_queries


def as_torch(matrix: sp.csr_matrix):
    """A scipy CSR matrix as the coalesced torch sparse COO tensor a SparseEncoder gives."""
    import torch

    coo = matrix.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(indices, torch.from_numpy(coo.data), coo.shape).coalesce()


def run(n_docs: int, n_queries: int, n_single: int, n_helper_single: int, k: int = 10) -> dict:
    """Both searches on the same collection: agreement, batch and single-query times, ratios to mlsr."""
    import torch
    from sentence_transformers.util import dot_score, semantic_search

    from mlsr.index.sparse import SparseIndex

    docs = synthetic_docs(n_docs, 170, seed=1)
    queries = synthetic_queries(n_queries, seed=2)
    index = SparseIndex.build(docs, precision="float32")
    corpus, torch_queries = as_torch(docs), as_torch(queries)
    rows = [torch_queries.index_select(0, torch.tensor([i])) for i in range(n_queries)]

    def helper(chunk):  # sentence-transformers' own exact search, as its docs show it for sparse embeddings
        return semantic_search(chunk, corpus, query_chunk_size=100, top_k=k, score_function=dot_score)

    start = time.perf_counter()
    prepared = corpus.t().to_sparse_csr()  # the best case: the corpus laid out for products once, ahead of time
    prepare_s = time.perf_counter() - start

    def product(chunk):  # the same scores without semantic_search's per-call corpus preparation
        return torch.topk(torch.sparse.mm(chunk.to_sparse_csr(), prepared).to_dense(), k, dim=1)

    start = time.perf_counter()
    theirs = helper(torch_queries)
    helper_batch_s = time.perf_counter() - start
    ours = index.search(queries, k)
    same = np.mean([set(row[row >= 0].tolist()) == {hit["corpus_id"] for hit in hits}
                    for row, hits in zip(ours.indices, theirs)])
    result = {
        "docs": n_docs, "queries": n_queries, "k": k, "doc_terms": docs.nnz / n_docs,
        "query_terms": queries.nnz / n_queries, "same_top_k": float(same),
        "st_semantic_search_batch_s": helper_batch_s,
        "st_semantic_search_single_ms": 1000 * statistics.mean(
            _seconds(lambda row=row: helper(row)) for row in rows[:n_helper_single]),
        "st_prepare_corpus_s": prepare_s,
        "st_product_batch_s": statistics.median(timed(lambda: product(torch_queries), 3)),
        "st_product_single_ms": 1000 * timed(lambda: [product(rows[i]) for i in range(n_single)], 1)[0] / n_single,
        "mlsr_batch_s": statistics.median(timed(lambda: index.search(queries, k), 3)),
        "mlsr_single_ms": 1000 * timed(lambda: [index.search(queries[i], k) for i in range(n_single)], 1)[0] / n_single,
    }
    for kind, unit in (("batch", "s"), ("single", "ms")):
        mlsr = result[f"mlsr_{kind}_{unit}"]
        result[f"semantic_search_{kind}_ratio"] = result[f"st_semantic_search_{kind}_{unit}"] / mlsr
        result[f"product_{kind}_ratio"] = result[f"st_product_{kind}_{unit}"] / mlsr
    return result


def _seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def report(r: dict) -> None:
    """The numbers, one line each, ratios as 'N x mlsr' (how many times mlsr's time)."""
    print(f"{r['docs']:,} documents ({r['doc_terms']:.0f} terms each), {r['queries']} queries ({r['query_terms']:.0f}"
          f" terms), exact top-{r['k']}; the same top-{r['k']} on both sides for {r['same_top_k']:.0%} of the queries")
    print(f"batch of {r['queries']}: mlsr SparseIndex.search {r['mlsr_batch_s'] * 1000:.1f} ms;"
          f" sentence-transformers semantic_search {r['st_semantic_search_batch_s']:.2f} s"
          f" ({r['semantic_search_batch_ratio']:,.0f}x mlsr); a prepared sparse product + topk"
          f" {r['st_product_batch_s']:.3f} s ({r['product_batch_ratio']:,.0f}x mlsr)")
    print(f"one query: mlsr {r['mlsr_single_ms']:.2f} ms; semantic_search {r['st_semantic_search_single_ms']:,.0f} ms"
          f" ({r['semantic_search_single_ratio']:,.0f}x mlsr); prepared product {r['st_product_single_ms']:.1f} ms"
          f" ({r['product_single_ratio']:,.0f}x mlsr); preparing that corpus once took {r['st_prepare_corpus_s']:.1f} s")
    print(f"({r['seconds']} s in all; torch on {r['torch_threads']} threads)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--single", type=int, default=20, help="queries timed one at a time")
    parser.add_argument("--helper-single", type=int, default=2,
                        help="queries timed one at a time through semantic_search (each call prepares the corpus)")
    parser.add_argument("--out", type=Path, help="also write the numbers as JSON")
    args = parser.parse_args()
    import torch

    started = time.perf_counter()
    result = run(args.docs, args.queries, min(args.single, args.queries), min(args.helper_single, args.queries))
    result.update(machine=platform.processor() or platform.machine(), torch_threads=torch.get_num_threads(),
                  seconds=round(time.perf_counter() - started, 1))
    report(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
