"""Timing and quality helpers shared by the scale benchmark and its anchors."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


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


def wall_and_cpu(fn, n: int, warmup: int = 5) -> dict:
    """p50 of wall time and of this process's CPU time per call fn(i), in ms, after `warmup` untimed calls.

    On a shared machine wall time includes waiting for a core; CPU time does not: print both, with `load()`.
    """
    for i in range(min(warmup, n)):
        fn(i)
    wall, cpu = np.empty(n), np.empty(n)
    for i in range(n):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(i)
        wall[i], cpu[i] = time.perf_counter() - start, time.process_time() - start_cpu
    return {"wall_p50_ms": 1000 * float(np.median(wall)), "cpu_p50_ms": 1000 * float(np.median(cpu)),
            "wall_min_ms": 1000 * float(wall.min())}


def load() -> str:
    """The 1-, 5- and 15-minute load averages and the cores, as one line (what else was running)."""
    import os

    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def throughput(fn, n: int, batch: int = 64) -> float:
    """Queries per second of fn(start, stop) over 0..n-1 in batches, after one warm-up batch."""
    fn(0, min(batch, n))
    start = time.perf_counter()
    for lo in range(0, n, batch):
        fn(lo, min(lo + batch, n))
    return n / (time.perf_counter() - start)


def summary(seconds: np.ndarray) -> dict:
    return {"p50_ms": 1000 * float(np.median(seconds)), "p95_ms": 1000 * float(np.percentile(seconds, 95))}


def recall(found, truth) -> float:
    """Mean share of the true top-k found (row sets)."""
    return float(np.mean([len(set(np.asarray(a).tolist()) & set(np.asarray(b).tolist())) / max(len(b), 1)
                          for a, b in zip(found, truth)]))


def bandwidth(threads: int, gigabytes: float = 1.0, repeat: int = 3) -> dict:
    """Read bandwidth (GB/s) of numpy summing a float32 array of `gigabytes` (the best of `repeat`), on one
    thread and on `threads` threads (numpy releases the GIL), and of np.copyto (read + write, one thread)."""
    data = np.ones(int(gigabytes * 2**30) // 4, dtype=np.float32)
    target = np.empty_like(data)
    parts = np.array_split(data, threads)

    def best(fn) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return data.nbytes / min(times) / 1e9

    with ThreadPoolExecutor(max_workers=threads) as pool:
        result = {
            "sum_1_thread_gb_s": best(data.sum),
            f"sum_{threads}_threads_gb_s": best(lambda: list(pool.map(np.sum, parts))),
            "copy_1_thread_gb_s": 2 * best(lambda: np.copyto(target, data)),
            "threads": threads,
        }
    return result


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (Linux: ru_maxrss in KB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Stopwatch:
    """Wraps an iterator and adds the time spent producing its items (e.g. generating chunks) to `seconds`."""

    def __init__(self, items):
        self.items = iter(items)
        self.seconds = 0.0
        self.lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.items)
        finally:
            with self.lock:
                self.seconds += time.perf_counter() - start
