"""The fixed cost of one query: `SparseIndex.search` against the path it replaced (a canonical copy of the query
through scipy's constructors, `linspace` bounds and the parts' merge even for one part), in one run.

    python -m bench.bench_thin [--sizes 5000 100000] [--repeat 3000] [--out bench/results/thin.json]

For each index size and search thread count, the p50 of: the compiled kernel alone on prepared arrays (the
search's own work), `search` now, and the old path (`legacy_search` below, the code as it was); the fixed cost
is each minus the kernel alone. A query of one term, so that the kernel's work is small; and a 32-term query
(a caption's size). Small indexes (< KERNEL_MIN_DOCS) search with scipy: the kernel-alone column is then the
scipy product's. Wall and CPU time with the load average (a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from bench.bench_core import synthetic_docs
from bench.timing import load, wall_and_cpu


def legacy_search(index, queries, k: int):
    """The search path before the thin one: as_csr's copy, then the kernel's parts and merge (or scipy)."""
    from mlsr.index.inverted import KERNEL_MIN_DOCS
    from mlsr.index.kernel_search import _scratch, compiled_kernel, search_threads
    from mlsr.index.rows import as_csr

    queries = as_csr(queries, "queries")
    inverted = index.inverted
    k = min(k, inverted.n_docs)
    if inverted.n_docs < KERNEL_MIN_DOCS:
        return inverted._search_scipy(queries, k)
    n_queries, kernel = queries.shape[0], compiled_kernel()
    parts = max(1, min(search_threads(), inverted.n_blocks))
    bounds = np.linspace(0, inverted.n_blocks, parts + 1).astype(np.int64)
    part_scores = np.full((parts, n_queries, k), -np.inf, dtype=np.float32)
    part_rows = np.full((parts, n_queries, k), -1, dtype=np.int64)
    q_indptr, q_terms = queries.indptr.astype(np.int64), queries.indices.astype(np.int32)
    q_weights = queries.data.astype(np.float32)
    for part in range(parts):  # the old path handed parts > 0 to a pool; timed here with one part
        lo, hi = int(bounds[part]), int(bounds[part + 1])
        keep = min(k, min(inverted.n_docs, hi * inverted.block_size) - lo * inverted.block_size)
        kernel(*inverted._kernel_arrays, inverted.vocab_size, inverted.block_size, inverted.n_docs, q_indptr, q_terms,
               q_weights, lo, hi, keep, part_scores[part, :, :keep], part_rows[part, :, :keep],
               _scratch(inverted.block_size))
    scores = part_scores.transpose(1, 0, 2).reshape(n_queries, parts * k)
    rows = part_rows.transpose(1, 0, 2).reshape(n_queries, parts * k)
    order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def kernel_alone(index, queries, k: int):
    """The search's own work with nothing around it: the kernel (or scipy's product) on prepared arrays."""
    from mlsr.index.inverted import KERNEL_MIN_DOCS
    from mlsr.index.kernel_search import _scratch, compiled_kernel
    from mlsr.index.rows import query_arrays

    inverted, prepared = index.inverted, query_arrays(queries)
    if inverted.n_docs < KERNEL_MIN_DOCS:
        operand, matrix = inverted._scipy_operand, prepared.csr()
        return lambda i: (matrix @ operand).toarray()
    scores, rows = np.empty((1, k), np.float32), np.empty((1, k), np.int64)
    args = (*inverted._kernel_arrays, inverted.vocab_size, inverted.block_size, inverted.n_docs, prepared.indptr,
            prepared.terms, prepared.weights, 0, inverted.n_blocks, k, scores, rows, _scratch(inverted.block_size))
    kernel = compiled_kernel()
    return lambda i: kernel(*args)


def bench(sizes: list[int], repeat: int, k: int = 10) -> dict:
    from mlsr.index.sparse import SparseIndex

    result = {}
    one_term, caption = synthetic_docs(1, 1, seed=5), synthetic_docs(1, 40, seed=6)
    for n in sizes:
        index = SparseIndex.build(synthetic_docs(n, 170, seed=1))
        for threads in (1, 2):
            os.environ["MLSR_SEARCH_THREADS"] = str(threads)
            for name, query in (("1_term", one_term), ("caption", caption)):
                for got, want in zip(index.search(query, k), legacy_search(index, query, k)):
                    np.testing.assert_array_equal(got, want)  # the same results both ways
                row = {"alone": wall_and_cpu(kernel_alone(index, query, k), repeat, warmup=50),
                       "after": wall_and_cpu(lambda i: index.search(query, k), repeat, warmup=50),
                       "before": wall_and_cpu(lambda i: legacy_search(index, query, k), repeat, warmup=50)}
                for when in ("after", "before"):
                    row[f"fixed_{when}_us"] = 1000 * (row[when]["wall_p50_ms"] - row["alone"]["wall_p50_ms"])
                result[f"{n}_docs_{threads}_thread_{name}"] = row
    os.environ.pop("MLSR_SEARCH_THREADS", None)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 100_000])
    parser.add_argument("--repeat", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/thin.json"))
    args = parser.parse_args()
    before = load()
    result = {"machine": platform.processor() or platform.machine(), "load_before": before,
              "thin": bench(args.sizes, args.repeat), "load_after": load()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["machine"], "|", before, "| after:", result["load_after"])
    print(f"{'case':<34} {'kernel alone':>13} {'after':>9} {'before':>9} {'fixed after':>12} {'fixed before':>13}"
          "   (wall p50, us; cpu p50 in brackets)")
    for case, row in result["thin"].items():
        cells = [f"{1000 * row[w]['wall_p50_ms']:7.1f} [{1000 * row[w]['cpu_p50_ms']:.0f}]" for w in
                 ("alone", "after", "before")]
        print(f"{case:<34} {cells[0]:>13} {cells[1]:>9} {cells[2]:>9} {row['fixed_after_us']:12.1f}"
              f" {row['fixed_before_us']:13.1f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
