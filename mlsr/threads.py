"""The thread policy: how many threads one request's work may use, so that concurrent requests never oversubscribe.

On a machine with C cores serving R requests at once (the app's concurrency), each request's torch intra-op
pool, FAISS's OpenMP team, numba and the sparse search's block split get max(1, C // R) threads. Oversubscribed
intra-op threads spin and wait for each other: on 2 shared cores the text encoder's p50 for one caption went
from ~90 ms of CPU to ~1 s of wall time on torch's default (every core). `MLSR_THREADS` (a whole number >= 1)
overrides. C is the cores this process may run on: its CPU affinity, capped by a cgroup CPU quota when one is
set (containers, Spaces). The app applies the policy with its concurrency, the command line with 1.
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

from mlsr.errors import InputError

ENV = "MLSR_THREADS"
_CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
_APPLIED: list[int] = []  # the threads per request the policy set, once applied


def available_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup (v2) CPU quota when there is one."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = _CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max" and int(period) > 0:
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def policy_threads(concurrency: int = 1) -> int:
    """Threads per request: `MLSR_THREADS` when set, else the available cores shared by `concurrency` requests."""
    configured = os.environ.get(ENV, "").strip()
    if configured:
        if not configured.isdigit() or int(configured) < 1:
            raise InputError(f"{ENV} must be a whole number >= 1, got {configured[:20]!r}.")
        return int(configured)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise InputError(f"concurrency must be a whole number >= 1, got {concurrency!r}.")
    return max(1, available_cores() // concurrency)


def apply_threads(concurrency: int = 1) -> int:
    """Set torch's, numba's and FAISS's threads (those already loaded; the others when they load) and the sparse
    search's to `policy_threads(concurrency)`; returns it."""
    threads = policy_threads(concurrency)
    _APPLIED[:] = [threads]
    if "torch" in sys.modules:
        configure_torch(sys.modules["torch"])
    if "numba" in sys.modules:
        numba = sys.modules["numba"]
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    else:
        os.environ.setdefault("NUMBA_NUM_THREADS", str(threads))
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)  # this thread's; DenseIndex.search sets its caller's
    return threads


def _applied_threads() -> int | None:
    """The threads per request the policy set (None until `apply_threads` runs)."""
    return _APPLIED[0] if _APPLIED else None


def request_threads() -> int:
    """Threads one request's work may use: the policy's once applied, else every available core."""
    return _applied_threads() or available_cores()


def configure_torch(torch) -> None:
    """Give torch the policy's intra-op threads (nothing before the policy is applied); the encoder calls it on load."""
    threads = _applied_threads()
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
