"""One backbone pass per text: hybrid search and the sparse-vs-dense comparison, before and after, in one run.

    python -m bench.bench_views [--docs 5000] [--repeat 10] [--out bench/results/views.json]

Real-size random-weight BLIP-base + D2S head (as bench_core). "before" is how mlsr encoded a text for
these two operations until the redesign: `encode_text(mode="expand")`, `encode_text(mode="no_expand")`
and, for the comparison, the removed `dense_text` (windows, then the backbone alone: `backbone_dense` below),
each a backbone pass. "after" is `Encoder.encode_text_views`: one pass, three views. The plain expanded search
(one pass, no re-scoring) is the baseline both aim at.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np

from bench.bench_core import make_real_size_models, timed

ROOT = Path(__file__).resolve().parent.parent
QUERY = "A boy leads two water buffalo through a muddy market field while people watch from the road."


def gallery(encoder, n: int, seed: int = 0):
    """An index of n documents: random head outputs of unit dense vectors (realistic sparsity), with dense rows."""
    from mlsr.index.sparse import SparseIndex

    rng = np.random.default_rng(seed)
    dense = rng.normal(size=(n, encoder.dense_size)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    return SparseIndex.build(encoder.sparsify(dense), dense=dense)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=5000, help="gallery size (the app's default gallery: 5,000)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "views.json")
    args = parser.parse_args()

    from mlsr.backends.local import LocalBackend
    from mlsr.index.modes import hybrid_search, rank
    from mlsr.models.backbone import text_windows_of
    from mlsr.query_vectors import QueryVectors
    from mlsr.models.encoder import Encoder

    with tempfile.TemporaryDirectory() as tmp:
        backbone, head, tokenizer = make_real_size_models(Path(tmp))
        encoder = Encoder.from_pretrained(str(backbone), str(head), str(tokenizer), device="cpu")
    backend = LocalBackend(gallery(encoder, args.docs))

    def expand_only():
        return backend.search(encoder.encode_text(QUERY, mode="expand"), 12)

    def hybrid_before():
        expand, no_expand = encoder.encode_text(QUERY, mode="expand"), encoder.encode_text(QUERY, mode="no_expand")
        return [hybrid_search(backend, no_expand, expand, 12)]

    def hybrid_after():
        return [rank(backend, encoder.encode_text_views(QUERY), "hybrid", 12)]

    def backbone_dense():  # what `dense_text` did for one query (one window): windows, the backbone, no head
        windows, _, _ = text_windows_of([QUERY], encoder.backbone, encoder.max_chars)
        return encoder.backbone.embed_texts(windows).cpu().numpy()

    def compare_before():
        queries = QueryVectors(encoder.encode_text(QUERY, mode="expand"))
        return [rank(backend, queries, "expand", 10), backend.dense_search(backbone_dense(), 10)]

    def compare_after():
        queries = encoder.encode_text_views(QUERY)
        return [rank(backend, queries, "expand", 10), backend.dense_search(queries.dense, 10)]

    # the same rankings before and after (the views are the same vectors)
    for before, after in ((hybrid_before, hybrid_after), (compare_before, compare_after)):
        assert all(np.array_equal(a.indices, b.indices) for a, b in zip(after(), before())), "views changed a ranking"

    assert np.allclose(backbone_dense(), encoder.encode_text_views(QUERY).dense, atol=1e-6)
    cases = {"expand_only": expand_only, "hybrid_before": hybrid_before, "hybrid_after": hybrid_after,
             "compare_before": compare_before, "compare_after": compare_after}
    ms = {name: 1000 * statistics.median(timed(fn, args.repeat)) for name, fn in cases.items()}
    result = {
        "machine": platform.processor() or platform.machine(), "docs": args.docs, "repeat": args.repeat,
        "median_ms": {name: round(value, 2) for name, value in ms.items()},
        "hybrid_speedup": round(ms["hybrid_before"] / ms["hybrid_after"], 2),
        "compare_speedup": round(ms["compare_before"] / ms["compare_after"], 2),
        "hybrid_after_over_expand": round(ms["hybrid_after"] / ms["expand_only"], 2),
        "compare_after_over_expand": round(ms["compare_after"] / ms["expand_only"], 2),
    }
    for name, value in result["median_ms"].items():
        print(f"{name:>16}: {value:8.2f} ms")
    print(f"hybrid: {result['hybrid_speedup']}x faster than before, {result['hybrid_after_over_expand']}x expand alone")
    print(f"compare: {result['compare_speedup']}x faster than before, {result['compare_after_over_expand']}x expand alone")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
