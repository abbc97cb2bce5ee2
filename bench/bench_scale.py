"""Retrieval at scale: mlsr's exact sparse index against the naive product, FAISS flat and Seismic, same run.

    pip install -r requirements-bench.txt      # adds pyseismic-lsr (Seismic); FAISS is already required
    python -m bench.bench_scale --sizes 5000 100000 1000000 [--queries 1000] [--out bench/results/scale.json]

Collections are synthetic and seeded: N documents over the 30,522-term vocabulary, ~150 active terms
per document with Zipf-like term popularity (p(rank r) ~ 1/(r + 3), capped at 0.9: the 34 most common
terms are in most documents), log1p-ReLU-like positive weights (common terms weigh less); 1,000 queries
of 20-40 terms drawn with the same skew. For every N, in one process and with the same queries:

- mlsr `SparseIndex`: build, save, load (checksums verified, postings memory-mapped), single-query
  latency p50/p95 after warm-up, batch-64 throughput, recall@10 and exact equality against brute force;
- brute force (= mlsr before this change): scipy `queries @ postings` over the stored weights + a full
  stable sort (score descending, row ascending); it also gives the reference top-10s;
- naive `q @ D.T` with D the documents x vocab CSR (on a sample of queries);
- FAISS `IndexFlatIP` on 256-d float32 random unit vectors of the same N (exact dense search);
- Seismic (`pyseismic-lsr`, approximate) on the same sparse vectors, its query settings tuned to the
  fastest with recall@10 >= 0.95 against the exact results.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent

from mlsr.index.sparse import SparseIndex
from mlsr.index.inverted import search_threads, top_k

VOCAB_SIZE = 30_522
DENSE_DIM = 256
K = 10
BATCH = 64


# -- data ---------------------------------------------------------------------------------------


def popularity(avg_terms: float = 150.0, cap: float = 0.9) -> np.ndarray:
    """Share of documents holding each term: min(cap, a / (rank + 3)), with a set for `avg_terms` per document."""
    base = 1.0 / (np.arange(VOCAB_SIZE) + 3.0)
    lo, hi = 0.0, 1e9
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.minimum(mid * base, cap).sum() < avg_terms else (lo, mid)
    return np.minimum(lo * base, cap)


def synthetic_docs(n: int, share: np.ndarray, seed: int) -> sp.csr_matrix:
    """(n, vocab) CSR float32: term t in a random share[t] of the rows, weight log1p(lognormal * scale[t])."""
    rng = np.random.default_rng(seed)
    indptr, rows = [0], []
    for term in range(VOCAB_SIZE):
        if share[term] > 0.05:
            docs = np.flatnonzero(rng.random(n) < share[term])
        else:
            docs = np.unique(rng.integers(0, n, rng.binomial(n, share[term])))
        rows.append(docs.astype(np.int32))
        indptr.append(indptr[-1] + len(docs))
    rows = np.concatenate(rows)
    terms = np.repeat(np.arange(VOCAB_SIZE), np.diff(indptr))
    scale = (0.3 + 2.7 * (1.0 - share) ** 2)[terms]  # common terms weigh less, as in learned sparse vectors
    weights = np.log1p(rng.lognormal(0.0, 0.5, len(rows)) * scale).astype(np.float32)
    del terms, scale
    by_term = sp.csc_matrix((weights, rows, np.array(indptr, dtype=np.int64)), shape=(n, VOCAB_SIZE))
    return by_term.tocsr()


def synthetic_queries(count: int, share: np.ndarray, seed: int) -> sp.csr_matrix:
    """(count, vocab) CSR float32: 20-40 distinct terms each, drawn with the documents' popularity."""
    rng = np.random.default_rng(seed)
    p = share / share.sum()
    rows, cols, data = [], [], []
    for i in range(count):
        size = int(rng.integers(20, 41))
        terms = rng.choice(VOCAB_SIZE, size, replace=False, p=p)
        rows += [i] * size
        cols += terms.tolist()
        data += np.log1p(rng.lognormal(0.0, 0.5, size)).tolist()
    return sp.csr_matrix((np.array(data, np.float32), (rows, cols)), shape=(count, VOCAB_SIZE), dtype=np.float32)


# -- helpers ------------------------------------------------------------------------------------


def latencies(fn, n: int, warmup: int = 20) -> np.ndarray:
    """Seconds per call fn(i) for i in 0..n-1, after `warmup` untimed calls."""
    for i in range(min(warmup, n)):
        fn(i)
    out = np.empty(n)
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out[i] = time.perf_counter() - start
    return out


def throughput(fn, n: int, batch: int = BATCH) -> float:
    """Queries per second of fn(start, stop) over 0..n-1 in batches, after one warm-up batch."""
    fn(0, min(batch, n))
    start = time.perf_counter()
    for lo in range(0, n, batch):
        fn(lo, min(lo + batch, n))
    return n / (time.perf_counter() - start)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of the true top-k found (row sets)."""
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / max(len(b), 1) for a, b in zip(found, truth)]))


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def summary(seconds: np.ndarray) -> dict:
    return {"p50_ms": 1000 * float(np.median(seconds)), "p95_ms": 1000 * float(np.percentile(seconds, 95))}


@contextlib.contextmanager
def quiet_stdout():
    """Silence a native library's prints to file descriptor 1."""
    sys.stdout.flush()
    saved = os.dup(1)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


# -- systems ------------------------------------------------------------------------------------


def bench_mlsr(docs: sp.csr_matrix, queries: sp.csr_matrix, work: Path) -> tuple[dict, SparseIndex, np.ndarray]:
    n = docs.shape[0]
    start = time.perf_counter()
    built = SparseIndex.build(docs)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    built.save(work / "mlsr")
    save_s = time.perf_counter() - start
    del built
    gc.collect()
    start = time.perf_counter()
    index = SparseIndex.load(work / "mlsr")
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    SparseIndex.load(work / "mlsr")
    load_again_s = time.perf_counter() - start
    nq = queries.shape[0]
    rows = [queries[i] for i in range(nq)]
    single = latencies(lambda i: index.search(rows[i], K), nq)
    batch_qps = throughput(lambda lo, hi: index.search(queries[lo:hi], K), nq)
    found = index.search(queries, K)
    inverted = index.inverted
    return {
        "build_s": build_s, "save_s": save_s, "load_s": load_s, "load_again_s": load_again_s,
        "bytes_per_doc": inverted.nbytes / n, "bytes_per_posting": inverted.nbytes / inverted.nnz,
        "disk_bytes_per_doc": folder_bytes(work / "mlsr") / n,
        "dense_terms": int(len(inverted.dense_terms)), "postings": int(inverted.nnz),
        **summary(single), "batch64_qps": batch_qps, "threads": search_threads(),
    }, index, found


def bench_brute_force(index: SparseIndex, queries: sp.csr_matrix, found, naive_sample: int) -> dict:
    """Reference top-10s from scipy (the previous mlsr search), and the naive q @ D.T on a sample."""
    operand = index.inverted.term_major()  # (vocab, n) CSR float32 of the stored weights
    nq = queries.shape[0]
    truth_rows = np.zeros((nq, K), np.int64)
    truth_scores = np.zeros((nq, K), np.float32)
    chunk = max(1, (1 << 25) // len(index))
    start = time.perf_counter()
    for lo in range(0, nq, chunk):
        block = (queries[lo : lo + chunk] @ operand).toarray()
        for j, row in enumerate(block):
            best = top_k(row, K)
            truth_rows[lo + j], truth_scores[lo + j] = best, row[best]
    scipy_ms = 1000 * (time.perf_counter() - start) / nq
    rows = [queries[i] for i in range(min(nq, 200))]
    # the previous SparseIndex.search, one query: the same input checks, then the product and top_k
    previous = latencies(lambda i: top_k((index._check_queries(rows[i]) @ operand).toarray()[0], K), len(rows))
    docs = index.vectors  # (n, vocab) CSR
    sample = min(naive_sample, nq)
    naive = latencies(lambda i: top_k((queries[i] @ docs.T).toarray()[0], K), sample, warmup=1)
    return {
        "truth": (truth_rows, truth_scores),
        "scipy_inverted_ms_per_query": scipy_ms,
        "previous_single": {**summary(previous), "queries": len(rows)},
        "naive_ms": 1000 * float(np.median(naive)), "naive_queries": sample,
        "mlsr_recall@10": recall(found.indices, truth_rows),
        "mlsr_identical_to_brute_force": bool(
            np.array_equal(found.indices, truth_rows) and np.array_equal(found.scores, truth_scores)
        ),
    }


def bench_faiss(n: int, n_queries: int, work: Path, seed: int, single_sample: int) -> dict:
    import faiss

    rng = np.random.default_rng(seed)
    vectors = np.empty((n, DENSE_DIM), dtype=np.float32)
    for lo in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - lo), DENSE_DIM), dtype=np.float32)
        vectors[lo : lo + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    queries = rng.standard_normal((n_queries, DENSE_DIM), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    start = time.perf_counter()
    index = faiss.IndexFlatIP(DENSE_DIM)
    index.add(vectors)
    build_s = time.perf_counter() - start
    del vectors
    faiss.write_index(index, str(work / "faiss.index"))
    start = time.perf_counter()
    index = faiss.read_index(str(work / "faiss.index"))
    load_s = time.perf_counter() - start
    sample = min(single_sample, n_queries)
    threads = faiss.omp_get_max_threads()
    # one query at a time: OpenMP's hand-off can cost more than it saves, so FAISS gets its better setting
    by_threads = {}
    for count in sorted({1, threads}):
        faiss.omp_set_num_threads(count)
        by_threads[count] = latencies(lambda i: index.search(queries[i : i + 1], K), sample, warmup=3)
    best = min(by_threads, key=lambda count: np.median(by_threads[count]))
    faiss.omp_set_num_threads(threads)
    batch_qps = throughput(lambda lo, hi: index.search(queries[lo:hi], K), min(n_queries, 4 * BATCH))
    return {"build_s": build_s, "load_s": load_s, "bytes_per_doc": DENSE_DIM * 4.0, **summary(by_threads[best]),
            "single_query_threads": best, "single_p50_ms_by_threads": {c: 1000 * float(np.median(v)) for c, v in by_threads.items()},
            "single_queries": sample, "batch64_qps": batch_qps, "threads": threads}


def seismic_queries(queries: sp.csr_matrix):
    import seismic

    string = seismic.get_seismic_string()
    ids = np.array([str(i) for i in range(queries.shape[0])], dtype=string)
    components = [queries.indices[queries.indptr[i] : queries.indptr[i + 1]].astype(str).astype(string)
                  for i in range(queries.shape[0])]
    values = [queries.data[queries.indptr[i] : queries.indptr[i + 1]].astype(np.float32) for i in range(queries.shape[0])]
    return ids, components, values


def bench_seismic(docs: sp.csr_matrix, queries: sp.csr_matrix, truth: np.ndarray, work: Path, tune_queries: int) -> dict:
    try:
        import seismic
    except ImportError:
        return {"skipped": "pyseismic-lsr is not installed: pip install -r requirements-bench.txt"}
    n = docs.shape[0]
    start = time.perf_counter()
    dataset = seismic.SeismicDataset()
    dataset.add_documents_by_id([str(i) for i in range(n)], docs.indices.astype(np.int64), docs.data.astype(np.float32),
                                docs.indptr.astype(np.int64))
    # the authors' settings for MS MARCO-size collections; lists are statically pruned to ~n_postings documents
    with quiet_stdout():
        index = seismic.SeismicIndex.build_from_dataset(dataset, n_postings=max(1000, min(4000, n // 50)),
                                                        centroid_fraction=0.1, summary_energy=0.4, num_threads=search_threads())
    build_s = time.perf_counter() - start
    del dataset
    with quiet_stdout():
        index.save(str(work / "seismic"))
    saved = next(work.glob("seismic*"))
    start = time.perf_counter()
    with quiet_stdout():
        index = seismic.SeismicIndex.load(str(saved))
    load_s = time.perf_counter() - start
    ids, components, values = seismic_queries(queries)

    def run(i, query_cut, heap_factor):
        return index.search(ids[i], components[i], values[i], K, query_cut, heap_factor)

    def rows(result):
        return np.array([int(doc) for _, _, doc in result], dtype=np.int64)

    # tune: the fastest (query_cut, heap_factor) with recall@10 >= 0.95 on a sample of queries
    sample = min(tune_queries, queries.shape[0])
    tried = []
    for query_cut in (5, 8, 10, 15, 20, 40):
        for heap_factor in (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
            seconds = latencies(lambda i: run(i, query_cut, heap_factor), sample, warmup=5)
            got = recall([rows(run(i, query_cut, heap_factor)) for i in range(sample)], truth[:sample])
            tried.append({"query_cut": query_cut, "heap_factor": heap_factor, "recall@10": got,
                          "p50_ms": 1000 * float(np.median(seconds))})
    good = [t for t in tried if t["recall@10"] >= 0.95] or [max(tried, key=lambda t: t["recall@10"])]
    best = min(good, key=lambda t: t["p50_ms"])
    nq = queries.shape[0]
    single = latencies(lambda i: run(i, best["query_cut"], best["heap_factor"]), nq)
    found = [rows(run(i, best["query_cut"], best["heap_factor"])) for i in range(nq)]

    def batch(lo, hi):
        index.batch_search(ids[lo:hi], components[lo:hi], values[lo:hi], K, best["query_cut"], best["heap_factor"],
                           num_threads=search_threads())

    return {"build_s": build_s, "load_s": load_s, "bytes_per_doc": folder_bytes(saved) / n if saved.is_dir()
            else saved.stat().st_size / n, **summary(single), "batch64_qps": throughput(batch, nq),
            "recall@10": recall(found, truth), "query_cut": best["query_cut"], "heap_factor": best["heap_factor"],
            "tuning": tried}


# -- main ---------------------------------------------------------------------------------------


def run_size(n: int, args, share: np.ndarray) -> dict:
    print(f"\n== N = {n:,} ==", flush=True)
    start = time.perf_counter()
    docs = synthetic_docs(n, share, seed=n)
    queries = synthetic_queries(args.queries, share, seed=1)
    result = {"docs": n, "generate_s": time.perf_counter() - start, "avg_terms_per_doc": docs.nnz / n,
              "avg_terms_per_query": queries.nnz / queries.shape[0]}
    print(f"generated in {result['generate_s']:.1f} s: {result['avg_terms_per_doc']:.1f} terms per document", flush=True)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        result["mlsr"], index, found = bench_mlsr(docs, queries, work)
        print(f"mlsr: p50 {result['mlsr']['p50_ms']:.2f} ms, batch {result['mlsr']['batch64_qps']:.0f} q/s", flush=True)
        brute = bench_brute_force(index, queries, found, args.naive_queries)
        truth, _ = brute.pop("truth")
        result["brute_force"] = brute
        print(f"brute force: recall {brute['mlsr_recall@10']:.4f}, identical {brute['mlsr_identical_to_brute_force']}", flush=True)
        del index
        gc.collect()
        if not args.skip_faiss:
            result["faiss_flat_256d"] = bench_faiss(n, args.queries, work, seed=n + 1, single_sample=args.faiss_queries)
            print(f"faiss: p50 {result['faiss_flat_256d']['p50_ms']:.2f} ms", flush=True)
        if n > args.seismic_max_docs:
            result["seismic"] = {"skipped": f"N > --seismic-max-docs {args.seismic_max_docs:,} (its build took"
                                            " about a minute at 100k documents on this machine, far longer at 1M)"}
        elif not args.skip_seismic:
            result["seismic"] = bench_seismic(docs, queries, truth, work, args.tune_queries)
            if "p50_ms" in result["seismic"]:
                print(f"seismic: p50 {result['seismic']['p50_ms']:.2f} ms, recall {result['seismic']['recall@10']:.3f}", flush=True)
    return result


def table(results: list[dict]) -> str:
    lines = ["| N | system | recall@10 | p50 ms | p95 ms | batch-64 q/s | bytes/doc | build s | load s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        n = f"{r['docs']:,}"
        m, b = r["mlsr"], r["brute_force"]
        lines.append(f"| {n} | **mlsr** (exact) | {b['mlsr_recall@10']:.3f} | {m['p50_ms']:.2f} | {m['p95_ms']:.2f} |"
                     f" {m['batch64_qps']:,.0f} | {m['bytes_per_doc']:,.0f} | {m['build_s']:.1f} | {m['load_s']:.2f} |")
        p = b["previous_single"]
        lines.append(f"| {n} | scipy `q @ postings` (previous mlsr) | 1.000 | {p['p50_ms']:.2f} | {p['p95_ms']:.2f} |"
                     f" {1000 / b['scipy_inverted_ms_per_query']:,.0f} | | | |")
        lines.append(f"| {n} | naive `q @ D.T` ({b['naive_queries']} queries) | 1.000 | {b['naive_ms']:.1f} | | | | | |")
        if "faiss_flat_256d" in r:
            f = r["faiss_flat_256d"]
            lines.append(f"| {n} | FAISS IndexFlatIP 256-d | (dense) | {f['p50_ms']:.2f} | {f['p95_ms']:.2f} |"
                         f" {f['batch64_qps']:,.0f} | {f['bytes_per_doc']:,.0f} | {f['build_s']:.1f} | {f['load_s']:.2f} |")
        s = r.get("seismic", {})
        if "p50_ms" in s:
            lines.append(f"| {n} | Seismic (cut {s['query_cut']}, heap {s['heap_factor']}) | {s['recall@10']:.3f} |"
                         f" {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['batch64_qps']:,.0f} | {s['bytes_per_doc']:,.0f} |"
                         f" {s['build_s']:.1f} | {s['load_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--naive-queries", type=int, default=5, help="queries timed with the naive q @ D.T")
    parser.add_argument("--faiss-queries", type=int, default=200, help="single queries timed with FAISS")
    parser.add_argument("--tune-queries", type=int, default=100, help="queries used to tune Seismic")
    parser.add_argument("--skip-faiss", action="store_true")
    parser.add_argument("--skip-seismic", action="store_true")
    parser.add_argument("--seismic-max-docs", type=int, default=100_000,
                        help="build Seismic only up to this N (its build is the slowest step by far)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder for the saved indexes (default: temp)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scale.json")
    args = parser.parse_args()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    share = popularity()
    with open("/proc/loadavg") if Path("/proc/loadavg").exists() else contextlib.nullcontext() as handle:
        load_before = handle.read().split()[:3] if handle else None
    results = [run_size(n, args, share) for n in args.sizes]
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "search_threads": search_threads(),
               "python": platform.python_version(), "load_average_before": load_before}
    if Path("/proc/loadavg").exists():
        machine["load_average_after"] = Path("/proc/loadavg").read_text().split()[:3]
    for r in results:
        m, b = r["mlsr"], r["brute_force"]
        r["ratios"] = {"naive_over_mlsr": b["naive_ms"] / m["p50_ms"],
                       "previous_over_mlsr_p50": b["previous_single"]["p50_ms"] / m["p50_ms"]}
        if "faiss_flat_256d" in r:
            r["ratios"]["faiss_over_mlsr_p50"] = r["faiss_flat_256d"]["p50_ms"] / m["p50_ms"]
        if "p50_ms" in r.get("seismic", {}):
            r["ratios"]["mlsr_over_seismic_p50"] = m["p50_ms"] / r["seismic"]["p50_ms"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2) + "\n")
    print()
    print(table(results))
    for r in results:
        print(f"N={r['docs']:,}: " + ", ".join(f"{key} {value:.1f}x" for key, value in r["ratios"].items()))
    print(f"machine: {machine}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
