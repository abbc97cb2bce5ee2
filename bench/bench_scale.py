"""Retrieval at scale: mlsr's exact sparse index beside PISA, Seismic and FAISS flat, in one process, with ratios.

    pip install -r requirements-bench.txt      # pyterrier-pisa (PISA) and pyseismic-lsr (Seismic); FAISS is required
    python -m bench.bench_scale --sizes 100000 1000000 10000000 --profiles uniform skewed   # -> bench/results/scale.json

Collections are the seeded synthetic profiles of `bench/synthetic.py` (uniform and skewed), generated
in chunks so that 10M documents fit a 24 GB machine. For every profile and N, with the same queries:

- the machine's read bandwidth, measured in the same run (numpy sum of 1 GB on one and on all
  threads): the floor of a query is the bytes of postings it must read / that bandwidth;
- mlsr `SparseIndex` in each precision (uint8 first; float16 and float32 up to --compare-max-docs):
  build from the chunks (generation not counted), save, load (checksums verified, memory-mapped),
  single-query p50/p95 on all threads and on one, batch-64 throughput, bytes read per query and the
  ratio of p50 to the floor, recall@10 against float32 exact, and equality with a brute force over
  the stored weights (scipy, block by block, on a sample of queries);
- PISA (pyterrier-pisa) with 8-bit impacts, every query algorithm, top-10 checked against an integer
  brute force; Seismic tuned to recall@10 >= 0.98; FAISS IndexFlatIP 256-d (see bench/anchors.py).

Timings taken while other work runs are noisy: the JSON records the load average before and after.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench import anchors
from bench.synthetic import PROFILES, Profile, statistics
from bench.timing import Stopwatch, bandwidth, latencies, peak_rss_gb, recall, summary, throughput
from mlsr.index.kernel_search import search_threads
from mlsr.index.sparse import SparseIndex

ROOT = Path(__file__).resolve().parent.parent
K = 10


def load_average() -> list[str] | None:
    path = Path("/proc/loadavg")
    return path.read_text().split()[:3] if path.exists() else None


def exact_over_stored(index: SparseIndex, queries: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-k over the stored weights, block by block (scipy products), ties by row."""
    inverted = index.inverted
    rows, scores = [], []
    for b in range(inverted.n_blocks):
        block = (queries @ inverted.block_term_major(b)).toarray()
        best = np.argsort(-block, axis=1, kind="stable")[:, :K]  # stable: equal scores keep ascending rows
        rows.append(best + b * inverted.block_size)
        scores.append(np.take_along_axis(block, best, 1))
    rows, scores = np.concatenate(rows, axis=1), np.concatenate(scores, axis=1)
    order = np.lexsort((rows, -scores), axis=-1)[:, :K]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def float_truth(profile: Profile, n: int, queries: sp.csr_matrix, parts: int) -> tuple[np.ndarray, np.ndarray]:
    """The float32 exact top-k over documents 0..n-1, built and searched in `parts` ranges of documents (each a
    float32 mlsr index: exact over the original weights) and merged, so that 10M never needs a 10M float32 index
    in memory. Returns the rows and each term's document frequency."""
    from bench.synthetic import CHUNK_ROWS

    step = -(-n // parts // CHUNK_ROWS) * CHUNK_ROWS
    rows, scores, frequency = [], [], 0
    for start in range(0, n, step):
        index = SparseIndex.build(profile.documents(min(n, start + step), start), precision="float32")
        found = index.search(queries, K)
        rows.append(found.indices + start)
        scores.append(found.scores)
        frequency = frequency + index.document_frequency()
        del index
        gc.collect()
    rows, scores = np.concatenate(rows, axis=1), np.concatenate(scores, axis=1)
    order = np.lexsort((rows, -scores), axis=-1)[:, :K]
    return np.take_along_axis(rows, order, 1), frequency


def load_postings(path: Path) -> float:
    """Seconds to load only the postings (every checksum, the memory maps and the load-time checks), without
    parsing items.jsonl: at 10M its 10M JSON objects are most of a load."""
    from mlsr.index.checks import checked_blocks
    from mlsr.index.folder import read_manifest
    from mlsr.index.manifest import POSTING_FILES

    start = time.perf_counter()
    manifest = read_manifest(path)
    arrays = {name: np.load(path / file, mmap_mode="r") for name, file in POSTING_FILES.items()}
    checked_blocks(arrays, manifest["count"], manifest["vocab_size"], manifest["block_size"])
    return time.perf_counter() - start


def single_thread(fn):
    """fn() with searches on one thread (MLSR_SEARCH_THREADS=1), as PISA and Seismic are timed."""
    saved = os.environ.get("MLSR_SEARCH_THREADS")
    os.environ["MLSR_SEARCH_THREADS"] = "1"
    try:
        return fn()
    finally:
        os.environ.pop("MLSR_SEARCH_THREADS") if saved is None else os.environ.update(MLSR_SEARCH_THREADS=saved)


def bench_mlsr(profile: Profile, n: int, queries: sp.csr_matrix, precision: str, work: Path, args,
               speed: dict, full: bool) -> tuple[dict, SparseIndex, np.ndarray]:
    """Build (from generated chunks), save, load and time one precision; `full=False` only builds and searches."""
    chunks = Stopwatch(profile.documents(n))
    start = time.perf_counter()
    index = SparseIndex.build(chunks, precision=precision)
    build_s = time.perf_counter() - start - chunks.seconds
    inverted = index.inverted
    result = {"precision": index.precision, "build_s": build_s, "generate_s": chunks.seconds,
              "bytes_per_posting": inverted.nbytes / max(inverted.nnz, 1), "bytes_per_doc": inverted.nbytes / n,
              "postings": int(inverted.nnz), "dense_columns": int(len(inverted.dense_terms)),
              "peak_rss_gb_after_build": peak_rss_gb()}
    if not full:
        result["found"] = index.search(queries, K)
        return result, index, result.pop("found").indices
    start = time.perf_counter()
    index.save(work / "mlsr")
    result["save_s"] = time.perf_counter() - start
    del index, inverted
    gc.collect()
    start = time.perf_counter()
    index = SparseIndex.load(work / "mlsr")
    result["load_s"] = time.perf_counter() - start
    start = time.perf_counter()
    SparseIndex.load(work / "mlsr")
    result["load_again_s"] = time.perf_counter() - start
    result["load_postings_s"] = load_postings(work / "mlsr")
    result["disk_bytes_per_doc"] = anchors.folder_bytes(work / "mlsr") / n
    nq = queries.shape[0]
    rows = [queries[i] for i in range(nq)]
    seconds = latencies(lambda i: index.search(rows[i], K), nq)
    one = single_thread(lambda: latencies(lambda i: index.search(rows[i], K), min(nq, args.single_thread_queries)))
    result.update(summary(seconds))
    result["threads"] = search_threads()
    result["one_thread"] = {**summary(one), "queries": len(one)}
    result["batch64_qps"] = throughput(lambda lo, hi: index.search(queries[lo:hi], K), nq)
    read = index.inverted.bytes_read(queries).astype(np.float64)
    threads = speed["threads"]
    result["mb_read_p50"] = float(np.median(read)) / 1e6
    result["floor_ms"] = 1000 * float(np.median(read)) / (speed[f"sum_{threads}_threads_gb_s"] * 1e9)
    result["floor_one_thread_ms"] = 1000 * float(np.median(read)) / (speed["sum_1_thread_gb_s"] * 1e9)
    result["p50_over_floor"] = result["p50_ms"] / result["floor_ms"]
    result["one_thread_p50_over_floor"] = result["one_thread"]["p50_ms"] / result["floor_one_thread_ms"]
    found = index.search(queries, K)
    sample = min(nq, args.exact_queries if n <= args.compare_max_docs else args.exact_queries_large)
    want_scores, want_rows = exact_over_stored(index, queries[:sample])
    result["identical_to_brute_force_over_stored_weights"] = bool(
        np.array_equal(found.indices[:sample], want_rows) and np.array_equal(found.scores[:sample], want_scores))
    result["brute_force_queries"] = sample
    result["peak_rss_gb"] = peak_rss_gb()
    return result, index, found.indices


def run_size(profile_name: str, n: int, args) -> dict:
    print(f"\n== {profile_name}, N = {n:,} ==", flush=True)
    profile = Profile(profile_name)
    queries = profile.queries(args.queries)
    speed = bandwidth(search_threads())
    result = {"profile": profile_name, "docs": n, "queries": queries.shape[0], "bandwidth": speed, "mlsr": {}}
    print(f"bandwidth: {speed}", flush=True)
    large = n > args.compare_max_docs
    precisions = [args.precisions[0]] if large else list(args.precisions)
    if not large and "float32" not in precisions:
        precisions.append("float32")  # the float exact top-10 that recall is measured against
    found = {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        # FAISS first: 10M x 256 floats (10 GB) fit best before the other stages have fragmented the heap
        if n <= args.faiss_max_docs and not args.skip_faiss:
            result["faiss_flat_256d"] = anchors.bench_faiss(n, args.queries, work, seed=n + 1,
                                                           single_queries=args.faiss_queries)
            print(f"faiss: p50 {result['faiss_flat_256d']['p50_ms']:.2f} ms", flush=True)
        for precision in precisions:
            full = not (precision == "float32" and precision not in args.precisions)
            measured, index, found[precision] = bench_mlsr(profile, n, queries, precision, work, args, speed, full)
            if precision == "float32":
                inverted = index.inverted
                result["statistics"] = statistics(inverted.document_frequency(), n, inverted.nnz, queries)
            result["mlsr"][precision] = measured
            print(f"mlsr {precision}: " + ", ".join(f"{key} {value:.3g}" for key, value in measured.items()
                                                   if isinstance(value, float)), flush=True)
            del index
            gc.collect()
            if (work / "mlsr").exists():
                for file in (work / "mlsr").iterdir():
                    file.unlink()
        if large:  # float32 exact in parts (a 10M float32 index would not fit beside the rest)
            found["float32"], frequency = float_truth(profile, n, queries, args.truth_parts)
            result["statistics"] = statistics(frequency, n, int(frequency.sum()), queries)
        truth = found["float32"]
        for precision, measured in result["mlsr"].items():
            measured["recall@10_vs_float32"] = recall(found[precision], truth)
        print(f"statistics: {result['statistics']}", flush=True)
        if n <= max(args.pisa_max_docs, args.seismic_max_docs):
            docs = sp.vstack(list(profile.documents(n)), format="csr")
            if n <= args.pisa_max_docs and not args.skip_pisa:
                result["pisa"] = anchors.bench_pisa(docs, queries, truth, work, args.exact_queries, args.anchor_queries)
                print(f"pisa: best {result['pisa'].get('best')} p50 {result['pisa'].get('p50_ms', float('nan')):.2f} ms", flush=True)
            if n <= args.seismic_max_docs and not args.skip_seismic:
                result["seismic"] = anchors.bench_seismic(docs, queries, truth, work, args.tune_queries,
                                                          args.seismic_recall)
                print(f"seismic: p50 {result['seismic'].get('p50_ms', float('nan')):.2f} ms,"
                      f" recall {result['seismic'].get('recall@10', float('nan')):.3f}", flush=True)
            del docs
            gc.collect()
    result["peak_rss_gb"] = peak_rss_gb()
    result["ratios"] = ratios(result, args.precisions[0])
    return result


def ratios(result: dict, headline: str) -> dict:
    """How many times faster mlsr (`headline` precision) is than each anchor, all threads and one thread."""
    m = result["mlsr"][headline]
    out = {"mlsr_p50_over_floor": m.get("p50_over_floor")}
    for name, key in (("pisa_best", "pisa"), ("seismic", "seismic"), ("faiss_flat", "faiss_flat_256d")):
        p50 = result.get(key, {}).get("p50_ms")
        if p50 is not None and "p50_ms" in m:
            out[f"{name}_over_mlsr"] = p50 / m["p50_ms"]
            out[f"{name}_over_mlsr_one_thread"] = p50 / m["one_thread"]["p50_ms"]
    return out


def table(results: list[dict]) -> str:
    lines = ["| profile | N | system | recall@10 | p50 ms | p95 ms | 1-thread p50 | batch q/s | B/posting | MB read | p50/floor"
             " | build s | load s |", "|" + "---|" * 13]
    for r in results:
        head = f"| {r['profile']} | {r['docs']:,} |"
        for precision, m in r["mlsr"].items():
            if "p50_ms" not in m:
                continue
            lines.append(f"{head} mlsr {precision} (exact) | {m['recall@10_vs_float32']:.3f} | {m['p50_ms']:.2f} |"
                         f" {m['p95_ms']:.2f} | {m['one_thread']['p50_ms']:.2f} | {m['batch64_qps']:,.0f} |"
                         f" {m['bytes_per_posting']:.2f} | {m['mb_read_p50']:.1f} | {m['p50_over_floor']:.2f} |"
                         f" {m['build_s']:.1f} | {m['load_s']:.2f} |")
        p = r.get("pisa", {})
        for algorithm, a in p.get("algorithms", {}).items():
            lines.append(f"{head} PISA {algorithm} | {a['recall@10']:.3f} | {a['p50_ms']:.2f} | {a['p95_ms']:.2f} |"
                         f" {a['p50_ms']:.2f} | | {p['bytes_per_posting']:.2f} | | | {p['build_s']:.1f} | |")
        s = r.get("seismic", {})
        if "p50_ms" in s:
            lines.append(f"{head} Seismic (cut {s['query_cut']}, heap {s['heap_factor']}) | {s['recall@10']:.3f} |"
                         f" {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p50_ms']:.2f} | | {s['bytes_per_posting']:.2f} |"
                         f" | | {s['build_s']:.1f} | {s['load_s']:.2f} |")
        f = r.get("faiss_flat_256d")
        if f:
            lines.append(f"{head} FAISS flat 256-d ({f['single_query_threads']} thr) | (dense) | {f['p50_ms']:.2f} |"
                         f" {f['p95_ms']:.2f} | | {f['batch64_qps']:,.0f} | | | | {f['build_s']:.1f} | {f['load_s']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5_000, 100_000, 1_000_000])
    parser.add_argument("--profiles", nargs="+", choices=PROFILES, default=list(PROFILES))
    parser.add_argument("--precisions", nargs="+", choices=["uint8", "float16", "float32"],
                        default=["uint8", "float16", "float32"], help="the first is the headline")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single-thread-queries", type=int, default=200)
    parser.add_argument("--exact-queries", type=int, default=100, help="queries checked against brute force")
    parser.add_argument("--exact-queries-large", type=int, default=20, help="...above --compare-max-docs")
    parser.add_argument("--compare-max-docs", type=int, default=1_000_000,
                        help="above this N, only the first precision is timed; float32 gives the truth in parts")
    parser.add_argument("--truth-parts", type=int, default=4, help="document ranges of the float32 truth above it")
    parser.add_argument("--anchor-queries", type=int, default=200, help="queries timed with each PISA algorithm")
    parser.add_argument("--faiss-queries", type=int, default=100, help="single queries timed with FAISS")
    parser.add_argument("--tune-queries", type=int, default=100, help="queries used to tune Seismic")
    parser.add_argument("--seismic-recall", type=float, default=0.99, help="Seismic's recall@10 target when tuned")
    parser.add_argument("--pisa-max-docs", type=int, default=1_000_000)
    parser.add_argument("--seismic-max-docs", type=int, default=1_000_000)
    parser.add_argument("--faiss-max-docs", type=int, default=10_000_000)
    parser.add_argument("--skip-pisa", action="store_true")
    parser.add_argument("--skip-seismic", action="store_true")
    parser.add_argument("--skip-faiss", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder for the saved indexes (default: temp)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/scale.json")
    args = parser.parse_args()
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    machine = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "search_threads": search_threads(),
               "python": platform.python_version(), "load_average_before": load_average()}
    results = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for profile in args.profiles:
        for n in args.sizes:
            results.append(run_size(profile, n, args))
            args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2, default=float) + "\n")
    machine["load_average_after"] = load_average()
    args.out.write_text(json.dumps({"machine": machine, "results": results}, indent=2, default=float) + "\n")
    print()
    print(table(results))
    for r in results:
        print(f"{r['profile']} N={r['docs']:,}: " + ", ".join(f"{key} {value:.2f}" for key, value in r["ratios"].items()
                                                            if value is not None))
    print(f"machine: {machine}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
