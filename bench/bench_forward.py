"""Reading documents by row: the forward view against the search in every term's list it replaced, in one run.

    python -m bench.bench_forward [--docs 100000] [--repeat 200] [--out bench/results/forward.json]

Times, on a synthetic index with the real vocabulary (bench_core's Zipf-like rows, ~150 terms each):
`SparseIndex.document(row)` (after: the forward view's slice; before: `document_from_lists`, the old search in all
30,522 lists), and an 8-section article's search stage as `Service.suggest_article` runs it (one batched search,
then `assign` with near-duplicates collapsed, which reads each candidate's vector) with each `document`. Wall time
and CPU time are printed with the load average: on a shared machine wall time includes the wait for a core.
Also what the view costs a build: the CPU time of `SparseIndex.build` in float16 and uint8, and the part of it
spent making the forward view (its functions timed inside the same builds).
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.bench_core import synthetic_docs
from bench.timing import load, wall_and_cpu


def build_cost(docs) -> dict:
    """CPU seconds of a build in float16 and uint8, and of the forward view's part of each (timed where it is made)."""
    import time

    from mlsr.index import forward, inverted
    from mlsr.index.sparse import SparseIndex

    spent = [0.0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            start = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.process_time() - start
        return wrapper

    originals = forward.of_block, forward.joined
    forward.of_block, forward.joined = timed(originals[0]), timed(originals[1])
    try:
        result = {}
        for precision in ("float16", "uint8"):
            spent[0] = 0.0
            start = time.process_time()
            index = SparseIndex.build(docs, precision=precision)
            assert index.inverted.stored_forward is not None and inverted.rows_view is forward
            result[f"build_{precision}_cpu_s"] = time.process_time() - start
            result[f"build_{precision}_forward_cpu_s"] = spent[0]
    finally:
        forward.of_block, forward.joined = originals
    return result


def bench(n_docs: int, repeat: int, sections: int = 8, k: int = 3) -> dict:
    from mlsr.articles.suggestions import assign
    from mlsr.settings import NEAR_DUPLICATE_COSINE
    from mlsr.index.sparse import SparseIndex

    docs = synthetic_docs(n_docs, 170, seed=1)
    cost = build_cost(docs)
    index = SparseIndex.build(docs)
    rows = np.random.default_rng(3).integers(0, n_docs, repeat)

    def before(row: int) -> sp.csr_matrix:  # the old `document`: a search in every term's list
        terms, weights = index.inverted.document_from_lists(int(row))
        return sp.csr_matrix((weights, terms, [0, len(terms)]), shape=(1, index.vocab_size))

    for row in rows[:20]:  # the same vectors both ways
        assert (before(row) != index.document(int(row))).nnz == 0
    result = {"docs": n_docs, "postings": index.nnz, "forward_bytes": index.inverted.forward.nbytes,
              "inverted_bytes": index.inverted.nbytes, **cost}
    result["document_after"] = wall_and_cpu(lambda i: index.document(int(rows[i])), repeat)
    result["document_before"] = wall_and_cpu(lambda i: before(rows[i]), max(20, repeat // 10))
    # an article's sections as queries: ~40 terms each, like encoded captions (bench_core's query shape)
    queries = synthetic_docs(sections, 40, seed=4)
    depth = min(n_docs, k * sections)

    def stage(document) -> None:
        results = index.search(queries, depth)
        assign(results.scores, results.indices, k, unique=True, document=document,
               near_duplicate=NEAR_DUPLICATE_COSINE)

    calls = []
    stage(lambda row: calls.append(row) or index.document(row))
    result["article_sections"], result["article_document_calls"] = sections, len(calls)
    result["article_search_after"] = wall_and_cpu(lambda i: stage(index.document), max(10, repeat // 10))
    result["article_search_before"] = wall_and_cpu(lambda i: stage(before), 5, warmup=1)
    for name in ("document", "article_search"):
        before, after = result[f"{name}_before"], result[f"{name}_after"]
        result[f"{name}_speedup_wall"] = before["wall_p50_ms"] / after["wall_p50_ms"]
        result[f"{name}_speedup_cpu"] = before["cpu_p50_ms"] / max(after["cpu_p50_ms"], 1e-3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("bench/results/forward.json"))
    args = parser.parse_args()
    before = load()
    result = {"machine": f"{platform.processor() or platform.machine()}", "load_before": before,
              "forward": bench(args.docs, args.repeat), "load_after": load()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["machine"], "|", before, "| after:", result["load_after"])
    for key, value in result["forward"].items():
        if isinstance(value, dict):
            value = ", ".join(f"{name} {number:,.3f}" for name, number in value.items())
        print(f"{key:<28} {value:,.2f}" if isinstance(value, float) else f"{key:<28} {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
