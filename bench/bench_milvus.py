"""Milvus Lite against the in-process scipy index on the same synthetic documents and queries.

    python -m bench.bench_milvus [--docs 100000] [--queries 100] [--diagnose-docs 10000] [--milvus-uri URI]
                                 [--out bench/results/milvus.json]

Documents: bench_core's generator (Zipf-like popularity over the 30,522-term vocabulary, ~150 distinct terms
per document, log1p-exponential weights) plus 256-d unit dense vectors. Queries: the same popularity, 20-40
terms each. Both backends answer the same queries; recall@10 is against the exact scipy ranking.

Timed: export (index folder -> Milvus Lite collection, flushed), open (load: Milvus builds its per-segment
search indexes), single-query latency p50/p95, a batch of 64 queries, and dense search. Then, on
`--diagnose-docs` documents, where the ~2 s per query reported in issue 8 comes from: rows still in the
unflushed memtable vs. sealed segments, returned fields, consistency level, and CPU time vs wall time
(CPU ~ wall: the time is computation, not waiting for a busy machine).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent

from bench.bench_core import VOCAB_SIZE, synthetic_docs  # the same document generator as the core benchmark


def synthetic_queries(n: int, seed: int) -> sp.csr_matrix:
    """(n, vocab) queries of 20-40 distinct terms with bench_core's term popularity."""
    full = synthetic_docs(n, 48, seed)
    rng = np.random.default_rng(seed)
    rows, cols, vals = [], [], []
    for i in range(n):
        start, end = full.indptr[i], full.indptr[i + 1]
        keep = rng.permutation(end - start)[: rng.integers(20, 41)]
        rows += [i] * len(keep)
        cols += full.indices[start:end][keep].tolist()
        vals += full.data[start:end][keep].tolist()
    return sp.csr_matrix((vals, (rows, cols)), shape=(n, VOCAB_SIZE), dtype=np.float32)


def unit_vectors(n: int, d: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def latencies(fn, n: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds of fn(i) for i in range(n), after one warm-up call."""
    fn(0)
    wall, cpu = [], []
    for i in range(n):
        w, c = time.perf_counter(), time.process_time()
        fn(i)
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return wall, cpu


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q) * 1000)


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / len(e) for f, e in zip(found.tolist(), exact.tolist())]))


def bench_backends(n_docs: int, n_queries: int, folder: Path, uri: str | None = None) -> dict:
    from mlsr.index.sparse import SparseIndex
    from mlsr.backends.milvus import MilvusBackend
    from mlsr.backends.milvus_export import export_index

    docs = synthetic_docs(n_docs, 170, seed=1)
    queries = synthetic_queries(max(n_queries, 64), seed=2)
    dense = unit_vectors(n_docs, 256, seed=3)
    dense_queries = unit_vectors(n_queries, 256, seed=4)
    SparseIndex.build(docs, dense=dense).save(folder / "index")
    index = SparseIndex.load(folder / "index")
    started = time.perf_counter()
    _ = index.inverted.term_major()
    scipy_build_s = time.perf_counter() - started
    exact = index.search(queries, 10)

    uri = uri or str(folder / "bench.db")
    started = time.perf_counter()
    report = export_index(index, uri, "mlsr_bench", replace=True)
    export_s = time.perf_counter() - started
    if uri.endswith(".db"):
        from milvus_lite import server_manager_instance

        server_manager_instance.release_server(uri)  # open as a fresh process would: Lite restarts from its files
    started = time.perf_counter()
    milvus = MilvusBackend.open(index, uri, "mlsr_bench")  # loads and warms up (builds Milvus Lite's indexes)
    open_s = time.perf_counter() - started
    started = time.perf_counter()
    found = milvus.search(queries, 10)
    first_s = time.perf_counter() - started

    result = {"docs": n_docs, "queries": n_queries, "avg_terms_per_doc": docs.nnz / n_docs,
              "avg_terms_per_query": queries.nnz / queries.shape[0], "dense_dim": 256}
    scipy_wall, _ = latencies(lambda i: index.search(queries[i], 10), n_queries)
    milvus_wall, milvus_cpu = latencies(lambda i: milvus.search(queries[i], 10), n_queries)
    batch = queries[:64]
    scipy_batch = statistics.median(latencies(lambda i: index.search(batch, 10), 3)[0])
    milvus_batch = statistics.median(latencies(lambda i: milvus.search(batch, 10), 3)[0])
    from mlsr.index.dense import DenseIndex

    faiss = DenseIndex(dense)
    faiss_wall, _ = latencies(lambda i: faiss.search(dense_queries[i : i + 1], 10), n_queries)
    milvus_dense_wall, _ = latencies(lambda i: milvus.dense_search(dense_queries[i : i + 1], 10), n_queries)
    dense_exact = faiss.search(dense_queries, 10)
    dense_found = milvus.dense_search(dense_queries, 10)
    result["scipy"] = {"build_s": scipy_build_s, "p50_ms": pct(scipy_wall, 50), "p95_ms": pct(scipy_wall, 95),
                       "batch64_ms_per_query": 1000 * scipy_batch / 64, "dense_faiss_p50_ms": pct(faiss_wall, 50)}
    result["milvus_lite"] = {
        "export_s": export_s, "export_rows_per_s": report.count / export_s, "open_load_warm_up_s": open_s,
        "first_batch_after_open_s": first_s,
        "p50_ms": pct(milvus_wall, 50), "p95_ms": pct(milvus_wall, 95),
        "cpu_over_wall": sum(milvus_cpu) / sum(milvus_wall),
        "batch64_ms_per_query": 1000 * milvus_batch / 64,
        "recall_at_10": recall_at(found.indices, exact.indices),
        "identical_top10_rankings": float(np.mean((found.indices == exact.indices).all(axis=1))),
        "dense_p50_ms": pct(milvus_dense_wall, 50),
        "dense_recall_at_10": recall_at(dense_found.indices, dense_exact.indices),
    }
    result["p50_ratio_milvus_over_scipy"] = result["milvus_lite"]["p50_ms"] / result["scipy"]["p50_ms"]
    milvus.close()
    return result


def diagnose(n_docs: int, folder: Path, repeat: int = 5) -> dict:
    """Single-query latency on the same rows in the states a user can leave them in."""
    from pymilvus import DataType, MilvusClient

    from mlsr.backends.milvus import sparse_rows

    docs = synthetic_docs(n_docs, 170, seed=5)
    queries = sparse_rows(synthetic_queries(repeat + 1, seed=6))
    client = MilvusClient(str(folder / "diagnose.db"))
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("row", DataType.INT64, is_primary=True)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    params = client.prepare_index_params()
    params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
    client.create_collection("diagnose", schema=schema, index_params=params)
    rows = sparse_rows(docs)
    started = time.perf_counter()
    for first in range(0, n_docs, 1000):
        client.insert("diagnose", [{"row": i, "sparse": rows[i]} for i in range(first, min(n_docs, first + 1000))])
    insert_s = time.perf_counter() - started

    def timed(**kwargs) -> dict:
        wall, cpu = latencies(lambda i: client.search("diagnose", data=[queries[i]], anns_field="sparse", limit=10,
                                                      **kwargs), repeat)
        return {"p50_ms": pct(wall, 50), "cpu_over_wall": sum(cpu) / sum(wall)}

    out = {"docs": n_docs, "insert_s": insert_s}
    out["unflushed_memtable"] = timed(output_fields=["row"])
    out["unflushed_all_fields"] = timed()
    out["unflushed_eventually"] = timed(output_fields=["row"], consistency_level="Eventually")
    started = time.perf_counter()
    client.flush("diagnose")
    out["flush_s"] = time.perf_counter() - started
    started = time.perf_counter()
    client.search("diagnose", data=[queries[0]], anns_field="sparse", limit=10, output_fields=["row"])
    out["first_search_after_flush_s"] = time.perf_counter() - started  # builds the sealed segment's index
    out["flushed"] = timed(output_fields=["row"])
    out["flushed_all_fields"] = timed()
    out["flushed_eventually"] = timed(output_fields=["row"], consistency_level="Eventually")
    client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--diagnose-docs", type=int, default=10_000, help="0 skips the diagnosis")
    parser.add_argument("--milvus-uri", help="a cluster (http://host:19530) instead of a temporary Milvus Lite file;"
                                             " its collection mlsr_bench is replaced")
    parser.add_argument("--out", type=Path, default=Path("bench/results/milvus.json"))
    args = parser.parse_args()
    import milvus_lite
    import pymilvus

    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores,"
                         f" load average {os.getloadavg()[0]:.1f} at start (shared machine: noisy timings)",
              "python": platform.python_version(), "pymilvus": pymilvus.__version__,
              "milvus_lite": milvus_lite.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        result["search"] = bench_backends(args.docs, args.queries, Path(tmp), args.milvus_uri)
        result["milvus_uri"] = args.milvus_uri or "Milvus Lite (temporary .db)"
        if args.diagnose_docs:
            result["diagnosis"] = diagnose(args.diagnose_docs, Path(tmp))
    result["load_average_at_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    s = result["search"]
    print(f"{s['docs']:,} documents ({s['avg_terms_per_doc']:.0f} terms), {s['queries']} queries"
          f" ({s['avg_terms_per_query']:.0f} terms); {result['machine']}")
    print(f"{'':28}{'scipy SparseIndex':>20}{'Milvus':>16}   ({result['milvus_uri']})")
    rows = [("single query p50 (ms)", s["scipy"]["p50_ms"], s["milvus_lite"]["p50_ms"]),
            ("single query p95 (ms)", s["scipy"]["p95_ms"], s["milvus_lite"]["p95_ms"]),
            ("batch of 64, per query (ms)", s["scipy"]["batch64_ms_per_query"],
             s["milvus_lite"]["batch64_ms_per_query"]),
            ("dense single query p50 (ms)", s["scipy"]["dense_faiss_p50_ms"], s["milvus_lite"]["dense_p50_ms"]),
            ("build / export (s)", s["scipy"]["build_s"], s["milvus_lite"]["export_s"])]
    for name, a, b in rows:
        print(f"{name:<28}{a:>20,.2f}{b:>16,.2f}")
    m = s["milvus_lite"]
    print(f"Milvus Lite: recall@10 {m['recall_at_10']:.4f} (identical top-10 for {m['identical_top10_rankings']:.0%}"
          f" of queries), dense recall@10 {m['dense_recall_at_10']:.4f},"
          f" open (load + warm-up) {m['open_load_warm_up_s']:.1f} s,"
          f" {m['export_rows_per_s']:,.0f} rows/s export, CPU/wall {m['cpu_over_wall']:.2f};"
          f" p50 ratio Milvus/scipy {s['p50_ratio_milvus_over_scipy']:.1f}x")
    if "diagnosis" in result:
        d = result["diagnosis"]
        print(f"diagnosis on {d['docs']:,} documents (single query p50 ms, CPU/wall):")
        for key in ("unflushed_memtable", "unflushed_all_fields", "unflushed_eventually", "flushed",
                    "flushed_all_fields", "flushed_eventually"):
            print(f"  {key:<24}{d[key]['p50_ms']:>10,.1f} ms   CPU/wall {d[key]['cpu_over_wall']:.2f}")
        print(f"  insert {d['insert_s']:.1f} s, flush {d['flush_s']:.2f} s,"
              f" first search after flush {d['first_search_after_flush_s']:.2f} s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
