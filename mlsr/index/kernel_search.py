"""Running the compiled kernel (`mlsr.index.kernels`) over an inverted index: blocks split between threads, and
the per-query work around it kept thin.

A search's fixed cost is what runs in Python around the kernel: with one part (one thread, as the thread policy
gives each of the app's concurrent requests on a small machine) the kernel writes straight into the result
arrays and only the k results are sorted; with several parts each thread fills its own slice and the parts'
candidates are merged. The query arrives as `mlsr.index.rows.QueryArrays` (checked and canonical once).
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from mlsr.threads import request_threads

if TYPE_CHECKING:
    from mlsr.index.inverted import InvertedIndex
    from mlsr.index.rows import QueryArrays

logger = logging.getLogger(__name__)

# A part handed to another thread costs a wake-up (tens of microseconds, far more on a busy machine): a search is
# split only when each part gets at least PART_WORK_NS of the kernel's work, estimated at ROW_NS per row of the
# blocks (clearing and scanning each block's scores) and POSTING_NS per posting of the query's terms.
PART_WORK_NS = 200_000
ROW_NS = 0.5
POSTING_NS = 1.0


def search_threads() -> int:
    """Cores a search may use: `MLSR_SEARCH_THREADS`, else the thread policy's per request (`mlsr.threads`)."""
    configured = os.environ.get("MLSR_SEARCH_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return request_threads()


def kernel_search(index: InvertedIndex, kernel, queries: QueryArrays, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (1 <= k <= n_docs) of checked queries with the compiled kernel: float32 scores, int64 rows (q, k)."""
    n_queries = queries.n_rows
    parts = max(1, min(search_threads(), index.n_blocks, _worth_parts(index, queries)))
    arrays, size = index._kernel_arrays, index.block_size
    shape = (index.vocab_size, index.block_size, index.n_docs, queries.indptr, queries.terms, queries.weights)
    if parts == 1:  # the kernel fills the results directly; only their order is left to do
        scores = np.empty((n_queries, k), dtype=np.float32)
        rows = np.empty((n_queries, k), dtype=np.int64)
        kernel(*arrays, *shape, 0, index.n_blocks, k, scores, rows, _scratch(size))
        if n_queries == 1:
            order = np.lexsort((rows[0], -scores[0]))
            return scores[:, order], rows[:, order]
        order = np.lexsort((rows, -scores), axis=-1)
        return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
    bounds = [index.n_blocks * part // parts for part in range(parts + 1)]
    part_scores = np.full((parts, n_queries, k), -np.inf, dtype=np.float32)
    part_rows = np.full((parts, n_queries, k), -1, dtype=np.int64)

    def run(part: int) -> None:
        lo, hi = bounds[part], bounds[part + 1]
        keep = min(k, min(index.n_docs, hi * size) - lo * size)
        kernel(*arrays, *shape, lo, hi, keep, part_scores[part, :, :keep], part_rows[part, :, :keep], _scratch(size))

    others = [_pool().submit(run, part) for part in range(1, parts)]
    run(0)  # the calling thread takes a part too: one hand-off fewer
    for other in others:
        other.result()
    # merge the parts' candidates: score descending, then row ascending (empty slots have row -1, -inf)
    scores = part_scores.transpose(1, 0, 2).reshape(n_queries, parts * k)
    rows = part_rows.transpose(1, 0, 2).reshape(n_queries, parts * k)
    order = np.lexsort((np.where(rows < 0, np.iinfo(np.int64).max, rows), -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def _worth_parts(index: InvertedIndex, queries: QueryArrays) -> int:
    """How many parts the estimated work of these queries pays for (at least 1)."""
    postings = float(index.term_postings[queries.terms].sum()) if len(queries.terms) else 0.0
    work = queries.n_rows * index.n_docs * ROW_NS + postings * POSTING_NS
    return max(1, int(work // PART_WORK_NS))


_LOCK = threading.Lock()
_LOCAL = threading.local()


def _scratch(size: int) -> np.ndarray:
    """This thread's float32 accumulator of at least `size` values, kept between searches."""
    buffer = getattr(_LOCAL, "scratch", None)
    if buffer is None or len(buffer) < size:
        buffer = _LOCAL.scratch = np.empty(size, dtype=np.float32)
    return buffer


_KERNEL: list = []  # [search_blocks] once imported, [None] when numba is missing
_POOL: list[ThreadPoolExecutor] = []


def compiled_kernel():
    """The compiled kernel, or None (with one warning) when numba cannot be imported."""
    if _KERNEL:
        return _KERNEL[0]
    with _LOCK:
        if not _KERNEL:
            try:
                from mlsr.index.kernels import search_blocks
            except ImportError as error:
                logger.warning("numba is not available (%s): large indexes search with scipy, slower."
                               " Install it: pip install -r requirements.txt", error)
                search_blocks = None
            _KERNEL.append(search_blocks)
    return _KERNEL[0]


def _pool() -> ThreadPoolExecutor:
    with _LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=search_threads(), thread_name_prefix="mlsr-search"))
    return _POOL[0]
