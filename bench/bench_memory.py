"""Resident memory after loading an index, against the bytes of its arrays: before and after, in one run.

    python -m bench.bench_memory [--docs 1000000] [--precision float16] [--out bench/results/memory.json]

Builds a synthetic index (bench/synthetic.py's uniform profile), saves it, and loads it in fresh processes:
`after` as mlsr loads now (the pages the load's checks read dropped again, glibc's allocator fixed to return
large blocks: mlsr.allocator, as the app and the command line set it); `before` as it loaded before (a copy of
the folder without the forward view, nothing released, the allocator as it comes). Each process reports its
resident memory (anonymous and file-backed, /proc/self/status) after the load and after 50 single queries, and
the bytes of the arrays a search reads (the postings), of the forward view (memory-mapped, paged in only by what
reads rows) and of the items. Wall and CPU time of each load with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

PROBE = r"""
import json, sys, time
sys.path.insert(0, {root!r})
def rss():
    out = {{}}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS", "RssAnon", "RssFile")):
            name, value = line.split(":")
            out[name] = int(value.split()[0]) * 1024
    return out
before = {before}
import numpy as np
from mlsr.index import folder
from mlsr.index.sparse import SparseIndex
if before:
    folder.release_pages = lambda *arrays: None
else:
    from mlsr.allocator import return_large_blocks
    return_large_blocks()
from bench.bench_core import synthetic_docs
queries = synthetic_docs(50, 40, seed=3)
start, cpu = time.perf_counter(), time.process_time()
index = SparseIndex.load({path!r})
result = {{"load_s": time.perf_counter() - start, "load_cpu_s": time.process_time() - cpu, "after_load": rss()}}
for i in range(50):
    index.search(queries[i], 10)
result["after_50_queries"] = rss()
result["postings_bytes"] = index.inverted.nbytes
stored = index.inverted.stored_forward
result["forward_bytes"] = stored.nbytes if stored is not None else 0
print(json.dumps(result))
"""


def without_forward(source: Path, target: Path) -> None:
    """A copy of an index folder as saved before the forward view was kept (its files unlisted, the manifest sealed)."""
    from mlsr.index.manifest import FORWARD_FILES, MANIFEST_FILE, sealed

    target.mkdir()
    manifest = json.loads((source / MANIFEST_FILE).read_text())
    for name in manifest["files"]:
        if name not in FORWARD_FILES.values():
            os.link(source / name, target / name)
    for name in FORWARD_FILES.values():
        del manifest["files"][name]
    del manifest["forward"]
    (target / MANIFEST_FILE).write_text(json.dumps(sealed(manifest)))


def probe(path: Path, before: bool) -> dict:
    code = PROBE.format(root=str(ROOT), before=before, path=str(path))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(n_docs: int, precision: str, work: Path) -> dict:
    from bench.synthetic import Profile
    from mlsr.index.sparse import SparseIndex

    start = time.perf_counter()
    index = SparseIndex.build(Profile("uniform").documents(n_docs), precision=precision)
    build_s = time.perf_counter() - start
    index.save(work / "index")
    items_bytes = (work / "index" / "items.jsonl").stat().st_size
    del index
    without_forward(work / "index", work / "before")
    result = {"docs": n_docs, "precision": precision, "build_s": build_s, "items_jsonl_bytes": items_bytes}
    for name, path, before in (("before", work / "before", True), ("after", work / "index", False),
                               ("before_again", work / "before", True), ("after_again", work / "index", False)):
        result[name] = probe(path, before)
    for name in ("before", "after"):
        run = result[name]
        run["resident_over_postings_after_load"] = run["after_load"]["VmRSS"] / run["postings_bytes"]
        run["resident_over_postings_after_queries"] = run["after_50_queries"]["VmRSS"] / run["postings_bytes"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--precision", default="float16", choices=["uint8", "float16", "float32"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/memory.json")
    args = parser.parse_args()
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        result = bench(args.docs, args.precision, Path(tmp))
    result.update(machine=platform.processor() or platform.machine(), cores=os.cpu_count(),
                  load_average_before=load_before, load_average_after=" ".join(f"{x:.2f}" for x in os.getloadavg()))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    mb = 2**20
    print(f"{result['machine']}, {result['cores']} cores, load average {load_before} -> {result['load_average_after']}")
    print(f"{args.docs:,} documents, {args.precision}; items.jsonl {result['items_jsonl_bytes'] / mb:,.0f} MB")
    for name in ("before", "after", "before_again", "after_again"):
        run = result[name]
        load, done = run["after_load"], run["after_50_queries"]
        print(f"{name:<13} load {run['load_s']:.2f} s ({run['load_cpu_s']:.2f} s cpu) | postings"
              f" {run['postings_bytes'] / mb:,.0f} MB, forward {run['forward_bytes'] / mb:,.0f} MB (mapped) | resident"
              f" after load {load['VmRSS'] / mb:,.0f} MB (anon {load['RssAnon'] / mb:,.0f}, file"
              f" {load['RssFile'] / mb:,.0f}) | after 50 queries {done['VmRSS'] / mb:,.0f} MB (anon"
              f" {done['RssAnon'] / mb:,.0f}, file {done['RssFile'] / mb:,.0f})")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
