"""Adding and removing documents in a large index: `SparseIndex.add` / `remove` + `save`, against rebuilding the index.

    python -m bench.bench_edit [--docs 1000000] [--add 100] [--remove 100] [--profile skewed] [--precision uint8]

The collection is `bench/synthetic.py`'s (generation not timed). Timed, each the median of --repeat runs:

- add: `index.add(rows, items)` (the last, partial block inverted again; the others copied), then `save`
  (the whole folder written to a temp name, checksummed and swapped in), then `load` (every checksum);
- remove: `index.remove(ids)` of ids drawn uniformly (every block from the first removed row on is
  inverted again: the worst case is a removed id near the start), then `save`;
- the baseline, in the same run: `SparseIndex.build` of the changed collection from its rows, then `save`.

Also checked: the added index equals the rebuilt one array for array (not timed). Encoding the new images is not
part of this: at ~0.2 s per image on a CPU (bench_core), 100 images take far longer than the index change.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench.synthetic import Profile
from mlsr.index.sparse import SparseIndex

ROOT = Path(__file__).resolve().parents[1]
ARRAYS = ("indptr", "docs", "weights", "scales", "dense_indptr", "dense_terms", "dense_weights", "dense_scales")


def timed(fn, repeat: int) -> tuple[float, object]:
    """Median seconds of `repeat` calls of fn(), and the last result."""
    seconds, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--add", type=int, default=100)
    parser.add_argument("--remove", type=int, default=100)
    parser.add_argument("--profile", default="skewed", choices=("uniform", "skewed"))
    parser.add_argument("--precision", default="uint8", choices=("uint8", "float16", "float32"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/edit.json")
    args = parser.parse_args()

    profile = Profile(args.profile)
    rows = sp.vstack(list(profile.documents(args.docs + args.add)), format="csr")
    old_rows, new_rows = rows[: args.docs], rows[args.docs :]
    items = [{"id": f"doc{i}"} for i in range(args.docs + args.add)]
    index = SparseIndex.build(old_rows, items[: args.docs], precision=args.precision)
    result = {"docs": args.docs, "added": args.add, "removed": args.remove, "profile": args.profile,
              "precision": args.precision, "postings": index.nnz}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        folder = Path(tmp) / "index"
        index.save(folder)
        index = SparseIndex.load(folder)
        result["add_s"], added = timed(lambda: index.add(new_rows, items[args.docs :]), args.repeat)
        result["save_s"], _ = timed(lambda: added.save(folder), args.repeat)
        result["load_s"], _ = timed(lambda: SparseIndex.load(folder), args.repeat)
        result["folder_mb"] = sum(path.stat().st_size for path in folder.iterdir()) / 1e6
        # the baseline: the changed collection built again from its rows, and saved
        stored_union = sp.vstack([index.vectors, new_rows], format="csr")
        result["rebuild_s"], rebuilt = timed(lambda: SparseIndex.build(stored_union, items, precision=args.precision),
                                             args.repeat)
        result["add_equals_rebuild"] = all(np.array_equal(getattr(added.inverted, name), getattr(rebuilt.inverted, name))
                                           for name in ARRAYS)
        ids = [f"doc{i}" for i in np.random.default_rng(0).choice(args.docs, args.remove, replace=False)]
        result["remove_s"], removed = timed(lambda: index.remove(ids), args.repeat)
        keep = np.ones(args.docs, dtype=bool)
        keep[[int(name[3:]) for name in ids]] = False
        rest = index.vectors[keep]
        result["rebuild_rest_s"], _ = timed(lambda: SparseIndex.build(rest, [item for item, kept in
                                                                             zip(items, keep) if kept],
                                                                      precision=args.precision), args.repeat)
        result["remove_save_s"], _ = timed(lambda: removed.save(folder), args.repeat)
    result["add_vs_rebuild"] = result["rebuild_s"] / result["add_s"]
    result["remove_vs_rebuild"] = result["rebuild_rest_s"] / result["remove_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.docs:,} documents ({result['postings']:,} postings, {args.precision}, {args.profile}),"
          f" folder {result['folder_mb']:,.0f} MB:")
    print(f"  add {args.add}: {result['add_s']:.2f} s in memory + save {result['save_s']:.2f} s"
          f" (rebuild of the union: {result['rebuild_s']:.2f} s, {result['add_vs_rebuild']:.1f}x the add);"
          f" equal to the rebuild: {result['add_equals_rebuild']}")
    print(f"  remove {args.remove} random ids: {result['remove_s']:.2f} s + save {result['remove_save_s']:.2f} s"
          f" (rebuild of the rest: {result['rebuild_rest_s']:.2f} s, {result['remove_vs_rebuild']:.1f}x)")
    print(f"  load after a change: {result['load_s']:.2f} s (every checksum)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
