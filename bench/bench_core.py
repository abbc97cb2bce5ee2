"""Core timings on this machine: encoding with real-size (random-weight) BLIP + D2S head, and search.

    python -m bench.bench_core [--docs 100000] [--out bench/results/core.json]

Encoding: BLIP ViT-B/16 at 384 px + BERT-base text encoder, built from `BlipConfig()` defaults with
random weights (timing does not depend on the weights), saved and loaded through `Encoder.from_pretrained`.
Search: a synthetic index with Zipf-like term popularity; `SparseIndex.search` against the naive
`Q @ D.T` on the items x vocab CSR matrix, in the same run.
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

VOCAB_SIZE = 30522
ARTICLE = (
    "The water buffalo is a large bovid originating in the Indian subcontinent and Southeast Asia. "
    "It is widely kept as a draught animal in rice fields, where farmers lead it through the wet ground. "
    "In many villages children walk the animals to markets early in the morning, often carrying umbrellas "
    "against the sun. The animals are also a major source of milk, and their dung is used as fuel. "
) * 5


def timed(fn, repeat: int) -> list[float]:
    """Seconds per call, after one warm-up call."""
    fn()
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def make_real_size_models(folder: Path) -> tuple[Path, Path, Path]:
    """BLIP-base retrieval (random weights), a 256 -> 768 -> 30,522 head, and the real uncased vocabulary."""
    import torch

    from tests.helpers.models import save_tiny_blip, save_tokenizer
    from mlsr.models.head import HeadConfig, SparseHead

    tokenizer_dir = save_tokenizer(folder / "tokenizer")
    backbone_dir = save_tiny_blip(folder / "blip", tokenizer_dir, real_size=True)
    head = SparseHead(HeadConfig())
    with torch.no_grad():
        head.vocab_projector.bias.fill_(-2.0)  # a realistic ~100-300 active terms instead of half the vocabulary
    head.save_pretrained(folder / "head")
    return backbone_dir, folder / "head", tokenizer_dir


def bench_encoding(repeat: int) -> dict:
    from PIL import Image

    from mlsr.models.encoder import Encoder

    with tempfile.TemporaryDirectory() as tmp:
        backbone_dir, head_dir, tokenizer_dir = make_real_size_models(Path(tmp))
        start = time.perf_counter()
        encoder = Encoder.from_pretrained(str(backbone_dir), str(head_dir), str(tokenizer_dir), device="cpu")
        load_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    images16 = [image] * 16
    caption = "a boy leading water buffalo through a market field"
    captions32 = [caption] * 32
    windows = len(encoder._windows([ARTICLE])[0])
    return {
        "load_models_s": load_s,
        "caption_expand_ms": 1000 * statistics.median(timed(lambda: encoder.encode_text(caption), repeat)),
        "caption_batch32_ms_per_text": 1000 * statistics.median(timed(lambda: encoder.encode_text(captions32), 3)) / 32,
        "article_chars": len(ARTICLE),
        "article_windows": windows,
        "article_expand_ms": 1000 * statistics.median(timed(lambda: encoder.encode_text(ARTICLE), max(3, repeat // 3))),
        "image_ms": 1000 * statistics.median(timed(lambda: encoder.encode_images([image]), repeat)),
        "image_batch16_ms_per_image": 1000 * statistics.median(timed(lambda: encoder.encode_images(images16), 2)) / 16,
    }


def synthetic_docs(n: int, terms_per_doc: int, seed: int) -> sp.csr_matrix:
    """(n, vocab) CSR: Zipf-like term popularity (a few terms in most rows), log1p-ReLU-like weights."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / (np.arange(VOCAB_SIZE) + 20.0) ** 1.05
    cdf = np.cumsum(popularity / popularity.sum())
    cols = np.searchsorted(cdf, rng.random((n, terms_per_doc)))
    cols = rng.permutation(VOCAB_SIZE)[np.minimum(cols, VOCAB_SIZE - 1)]  # popular terms anywhere in the vocab
    rows = np.repeat(np.arange(n), terms_per_doc)
    weights = np.log1p(rng.exponential(1.0, size=n * terms_per_doc)).astype(np.float32)
    matrix = sp.csr_matrix((weights, (rows, cols.ravel())), shape=(n, VOCAB_SIZE), dtype=np.float32)
    matrix.sum_duplicates()
    return matrix


def bench_search(n_docs: int, n_queries: int) -> dict:
    from mlsr.index.sparse import SparseIndex

    docs = synthetic_docs(n_docs, 170, seed=1)  # ~150 distinct terms per row after duplicates merge
    queries = synthetic_docs(n_queries, 32, seed=2)
    start = time.perf_counter()
    index = SparseIndex.build(docs)
    index.search(queries[:1], 10)  # compiles (or loads) the search kernel
    build_s = time.perf_counter() - start
    single = timed(lambda: [index.search(queries[i], 10) for i in range(n_queries)], 1)[0] / n_queries
    batch64 = statistics.median(timed(lambda: index.search(queries[:64], 10), 3))
    few = min(n_queries, 20)
    naive = timed(lambda: [np.argsort(-(queries[i] @ docs.T).toarray()[0])[:10] for i in range(few)], 1)[0] / few
    return {
        "docs": n_docs,
        "avg_terms_per_doc": docs.nnz / n_docs,
        "avg_terms_per_query": queries.nnz / n_queries,
        "build_s": build_s,
        "single_query_ms": 1000 * single,
        "batch64_queries_per_s": 64 / batch64,
        "naive_q_at_DT_ms": 1000 * naive,
        "speedup_vs_naive": naive / single,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--skip-encoding", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/core.json"))
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    import torch

    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads"
                         f" {torch.get_num_threads()}", "python": platform.python_version()}
    if not args.skip_encoding:
        result["encoding"] = bench_encoding(args.repeat)
    result["search"] = bench_search(args.docs, args.queries)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for section in ("encoding", "search"):
        for key, value in result.get(section, {}).items():
            print(f"{section:<9} {key:<30} {value:,.2f}" if isinstance(value, float) else f"{section:<9} {key:<30} {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
