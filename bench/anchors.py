"""The engines bench_scale measures mlsr against, in the same process: PISA (pyterrier-pisa), Seismic and FAISS flat.

- PISA (the engine the reference code used), through pyterrier-pisa's bindings: its binary
  collection is written straight from the CSR documents with 8-bit impacts (per term: max weight /
  255, rounded, as mlsr's uint8 -- over the whole collection, since PISA has one list per term),
  queries as integer weights (PISA repeats a term that many times), 1..100 per query; its top-10
  is checked against an integer brute force of the same impacts. Every query algorithm is timed.
- Seismic (`pyseismic-lsr`, approximate), tuned to the fastest setting with recall@10 >= 0.98.
- FAISS `IndexFlatIP` on 256-d random unit vectors of the same N (exact dense search).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.timing import latencies, recall, summary, throughput
from mlsr.index.kernel_search import search_threads
from mlsr.index.ranking import top_k

K = 10
QUERY_LEVELS = 100  # PISA query weights: integers 1..100
PISA_ALGORITHMS = ("ranked_or", "ranked_or_taat", "maxscore", "block_max_maxscore", "wand", "block_max_wand")


@contextlib.contextmanager
def quiet_stdout():
    """Silence a native library's prints and progress bars (file descriptors 1 and 2)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for descriptor, copy in zip((1, 2), saved):
            os.dup2(copy, descriptor)
            os.close(copy)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


# -- PISA ---------------------------------------------------------------------------------------


def pisa_impacts(docs: sp.csr_matrix) -> tuple[sp.csc_matrix, np.ndarray]:
    """(n, vocab) CSC of uint8-range integer impacts (0 dropped) and each term's scale (max weight / 255)."""
    columns = docs.tocsc()
    columns.sort_indices()
    lengths = np.diff(columns.indptr)
    scales = np.zeros(docs.shape[1], dtype=np.float32)
    held = np.flatnonzero(lengths)
    scales[held] = np.maximum.reduceat(columns.data, columns.indptr[held]) / np.float32(255)
    impacts = np.rint(columns.data / np.repeat(np.where(scales > 0, scales, 1), lengths)).clip(0, 255)
    columns.data = impacts.astype(np.float32)
    columns.eliminate_zeros()
    return columns, scales


def pisa_queries(queries: sp.csr_matrix, scales: np.ndarray) -> sp.csr_matrix:
    """Integer query weights 1..QUERY_LEVELS proportional to query weight * term scale (ties the impacts to weights)."""
    weighted = queries.multiply(scales[None, :]).tocsr()
    weighted.eliminate_zeros()
    top = np.maximum.reduceat(np.append(weighted.data, 0), weighted.indptr[:-1]) if weighted.nnz else np.zeros(0)
    top = np.where(np.diff(weighted.indptr) > 0, top, 1)
    weighted.data = np.maximum(1, np.rint(QUERY_LEVELS * weighted.data / np.repeat(top, np.diff(weighted.indptr))))
    return weighted


def write_pisa_collection(columns: sp.csc_matrix, folder: Path) -> None:
    """PISA's binary collection (inv.docs / inv.freqs / inv.sizes, uint32) and lexicons, terms named %05d."""
    import pyterrier_pisa._pisathon as pisathon

    folder.mkdir(parents=True)
    n = columns.shape[0]
    lengths = np.diff(columns.indptr)
    held = np.flatnonzero(lengths)
    headers = np.cumsum(np.concatenate([[0], lengths[held][:-1] + 1]))  # where each list's length goes
    body = np.empty(len(held) + columns.nnz, dtype=np.uint32)
    body[headers] = lengths[held]
    mask = np.ones(len(body), dtype=bool)
    mask[headers] = False
    body[mask] = columns.indices
    np.concatenate([np.array([1, n], np.uint32), body]).tofile(folder / "inv.docs")
    body[mask] = columns.data.astype(np.uint32)
    body.tofile(folder / "inv.freqs")
    sizes = np.bincount(columns.indices, weights=columns.data, minlength=n).astype(np.uint32)
    np.concatenate([np.array([n], np.uint32), sizes]).tofile(folder / "inv.sizes")
    (folder / "fwd.documents").write_text("".join(f"{i}\n" for i in range(n)))
    (folder / "fwd.terms").write_text("".join(f"{t:05d}\n" for t in held))
    pisathon.build_binlex(str(folder / "fwd.documents"), str(folder / "fwd.doclex"))
    pisathon.build_binlex(str(folder / "fwd.terms"), str(folder / "fwd.termlex"))
    (folder / "pt_meta.json").write_text(json.dumps({"type": "sparse_index", "format": "pisa",
                                                      "package_hint": "pyterrier-pisa", "stemmer": "none"}))


def integer_top_k(columns: sp.csc_matrix, queries: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k of integer queries over integer impacts (int64 sums): scores and rows, ties by row."""
    product = (sp.csr_matrix(queries, dtype=np.int64) @ sp.csr_matrix(columns, dtype=np.int64).T).toarray()
    rows = np.array([top_k(row.astype(np.float64), K) for row in product])
    return np.take_along_axis(product, rows, 1), rows


def bench_pisa(docs: sp.csr_matrix, queries: sp.csr_matrix, truth: np.ndarray, work: Path, check_queries: int,
               single_queries: int) -> dict:
    try:
        import pyterrier_pisa
        import pyterrier_pisa._pisathon as pisathon
    except ImportError:
        return {"skipped": "pyterrier-pisa is not installed: pip install -r requirements-bench.txt"}
    start = time.perf_counter()
    columns, scales = pisa_impacts(docs)
    write_pisa_collection(columns, work / "pisa")
    index = pyterrier_pisa.PisaIndex(str(work / "pisa"), stemmer="none", stops="none")
    integer_queries = pisa_queries(queries, scales)
    inputs = [(i, {f"{t:05d}": float(w) for t, w in zip(row.indices, row.data)})
              for i, row in enumerate(integer_queries[i] for i in range(integer_queries.shape[0]))]
    result = {"impacts": "8-bit per term (max / 255)", "query_levels": QUERY_LEVELS, "algorithms": {}}
    with quiet_stdout():  # the retriever writes the block-max data and compresses the index (block_simdbp)
        context = index.quantized(num_results=K, threads=1)._ctxt
    result["build_s"] = time.perf_counter() - start
    result["bytes_per_posting"] = sum(p.stat().st_size for p in (work / "pisa").glob("*.block_simdbp")) / max(columns.nnz, 1)
    buffers = [np.empty(K, np.int32), np.empty(K, dtype=object), np.empty(K, np.int32), np.empty(K, np.float32)]

    def run(algorithm, i):
        size = pisathon.retrieve(context, algorithm, [inputs[i]], k=K, threads=1, query_weighted=1,
                                 pretokenised=True, result_qidxs=buffers[0], result_docnos=buffers[1],
                                 result_ranks=buffers[2], result_scores=buffers[3])
        return np.array([int(d) for d in buffers[1][:size]], np.int64), buffers[3][:size].copy()

    want_scores, _ = integer_top_k(columns, integer_queries[:check_queries])
    nq = min(single_queries, queries.shape[0])
    for algorithm in PISA_ALGORITHMS:
        found = [run(algorithm, i) for i in range(nq)]
        matches = np.mean([np.array_equal(np.sort(scores)[::-1], want_scores[i][: len(scores)].astype(np.float32))
                           for i, (_, scores) in enumerate(found[:check_queries])])
        seconds = latencies(lambda i: run(algorithm, i), nq, warmup=3)
        result["algorithms"][algorithm] = {**summary(seconds), "recall@10": recall([rows for rows, _ in found], truth[:nq]),
                                           "top10_scores_equal_integer_brute_force": float(matches)}
    best = min(result["algorithms"], key=lambda a: result["algorithms"][a]["p50_ms"])
    result.update({"best": best, **{key: result["algorithms"][best][key] for key in ("p50_ms", "p95_ms", "recall@10")},
                   "queries": nq, "checked_queries": min(check_queries, queries.shape[0])})
    return result


# -- Seismic ------------------------------------------------------------------------------------


def bench_seismic(docs: sp.csr_matrix, queries: sp.csr_matrix, truth: np.ndarray, work: Path, tune_queries: int,
                  target: float = 0.98) -> dict:
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
    string = seismic.get_seismic_string()
    ids = np.array([str(i) for i in range(queries.shape[0])], dtype=string)
    components = [queries.indices[queries.indptr[i] : queries.indptr[i + 1]].astype(str).astype(string)
                  for i in range(queries.shape[0])]
    values = [queries.data[queries.indptr[i] : queries.indptr[i + 1]].astype(np.float32) for i in range(queries.shape[0])]

    def run(i, query_cut, heap_factor):
        return index.search(ids[i], components[i], values[i], K, query_cut, heap_factor)

    def rows(result):
        return np.array([int(doc) for _, _, doc in result], dtype=np.int64)

    sample = min(tune_queries, queries.shape[0])
    tried = []
    for query_cut in (5, 10, 20, 40, 80):
        for heap_factor in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
            seconds = latencies(lambda i: run(i, query_cut, heap_factor), sample, warmup=5)
            got = recall([rows(run(i, query_cut, heap_factor)) for i in range(sample)], truth[:sample])
            tried.append({"query_cut": query_cut, "heap_factor": heap_factor, "recall@10": got,
                          "p50_ms": 1000 * float(np.median(seconds))})
    good = [t for t in tried if t["recall@10"] >= target] or [max(tried, key=lambda t: t["recall@10"])]
    best = min(good, key=lambda t: t["p50_ms"])
    nq = queries.shape[0]
    single = latencies(lambda i: run(i, best["query_cut"], best["heap_factor"]), nq)
    found = [rows(run(i, best["query_cut"], best["heap_factor"])) for i in range(nq)]
    return {"build_s": build_s, "load_s": load_s, "bytes_per_posting": folder_bytes(saved) / max(docs.nnz, 1),
            **summary(single), "recall@10": recall(found, truth), "recall_target": target,
            "query_cut": best["query_cut"], "heap_factor": best["heap_factor"], "tuning": tried}


# -- FAISS --------------------------------------------------------------------------------------


def bench_faiss(n: int, n_queries: int, work: Path, seed: int, single_queries: int, dim: int = 256) -> dict:
    import faiss

    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    index = faiss.IndexFlatIP(dim)
    for lo in range(0, n, 100_000):  # straight into the index: no second copy of 10M x 256 floats
        block = rng.standard_normal((min(100_000, n - lo), dim), dtype=np.float32)
        index.add(block / np.linalg.norm(block, axis=1, keepdims=True))
    build_s = time.perf_counter() - start
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    faiss.write_index(index, str(work / "faiss.index"))
    del index
    start = time.perf_counter()
    index = faiss.read_index(str(work / "faiss.index"))
    load_s = time.perf_counter() - start
    sample = min(single_queries, n_queries)
    threads = faiss.omp_get_max_threads()
    by_threads = {}  # one query at a time: OpenMP's hand-off can cost more than it saves; FAISS gets its better setting
    for count in sorted({1, threads}):
        faiss.omp_set_num_threads(count)
        by_threads[count] = latencies(lambda i: index.search(queries[i : i + 1], K), sample, warmup=3)
    best = min(by_threads, key=lambda count: np.median(by_threads[count]))
    faiss.omp_set_num_threads(threads)
    batch_qps = throughput(lambda lo, hi: index.search(queries[lo:hi], K), min(n_queries, 256))
    (work / "faiss.index").unlink()
    return {"build_s": build_s, "load_s": load_s, "bytes_per_doc": dim * 4.0, **summary(by_threads[best]),
            "single_query_threads": best, "queries": sample, "batch64_qps": batch_qps, "threads": threads}
