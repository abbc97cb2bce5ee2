"""Article mode's cost: a 10-section article with real-size (random-weight) BLIP + D2S head, end to end.

    python -m bench.bench_article [--docs 5000] [--sections 10] [--repeat 5] [--out bench/results/article.json]

`Service.suggest_article` (split, AToMiC queries, ONE `encode_text_views` call for all sections, one batched
search, assignment with no image twice and near-duplicates collapsed, explanations) is timed against the
baseline measured in the same run: the same sections encoded one by one (one `encode_text_views` call each)
and searched one by one. The index is synthetic (bench_core's Zipf-like documents) with the real vocabulary
size; the models are BLIP-base retrieval and a 256 -> 768 -> 30,522 head, loaded through
`Encoder.from_pretrained`. Timings do not depend on the weights being trained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

from bench.bench_core import make_real_size_models, synthetic_docs, timed

SECTION = ("Farmers lead the water buffalo through the flooded rice fields early in the morning, and children"
           " walk the animals to the village market carrying umbrellas against the sun. The animals pull carts"
           " along dirt roads and give milk; their dung is dried and burned as fuel in the kitchens.")


def make_article(sections: int) -> str:
    """A Markdown article with a page title and `sections` sections of about 55 words each."""
    parts = ["# Water buffalo in village farming", ""]
    for number in range(1, sections + 1):
        parts += [f"## Part {number}: the fields and the market", "", SECTION, ""]
    return "\n".join(parts)


def bench(n_docs: int, sections: int, repeat: int) -> dict:
    from mlsr.articles.sections import split_article
    from mlsr.serving.service import Service
    from mlsr.index.modes import rank
    from mlsr.index.sparse import SparseIndex
    from mlsr.models.encoder import Encoder

    with tempfile.TemporaryDirectory() as tmp:
        backbone_dir, head_dir, tokenizer_dir = make_real_size_models(Path(tmp))
        encoder = Encoder.from_pretrained(str(backbone_dir), str(head_dir), str(tokenizer_dir), device="cpu",
                                          batch_size=16)  # the app's batch size (Service.load)
    docs = synthetic_docs(n_docs, 170, seed=1)
    index = SparseIndex.build(docs, [{"id": str(i), "image": f"photos/{i}.jpg"} for i in range(n_docs)])
    service = Service(encoder, index, Path("synthetic-index"))  # no image files there: hits carry image None
    article = make_article(sections)
    queries = split_article(article).queries()
    k = 3

    def one_batch():
        return service.suggest_article(article, k)

    def one_by_one():
        for query in queries:  # the baseline: a backbone pass and a search per section
            rank(service.backend, encoder.encode_text_views([query]), "expand", k * len(queries))

    one_batch()  # warm-up: the search kernel and index.vectors (the near-duplicate check) are built once
    result = one_batch()
    windows = len(encoder._windows(queries)[0])
    batched = statistics.median(timed(one_batch, repeat))
    encode_batched = statistics.median(timed(lambda: encoder.encode_text_views(queries), repeat))
    separate = statistics.median(timed(one_by_one, repeat))
    encode_separate = statistics.median(timed(lambda: [encoder.encode_text_views([q]) for q in queries], repeat))
    return {
        "docs": n_docs, "sections": len(result.sections), "windows": windows, "k": k,
        "images_suggested": sum(len(s.hits) for s in result.sections),
        "article_one_batch_ms": 1000 * batched,
        "timings_of_one_call_ms": result.timings,
        "encode_one_batch_ms": 1000 * encode_batched,
        "baseline_one_by_one_ms": 1000 * separate,
        "baseline_encode_one_by_one_ms": 1000 * encode_separate,
        "speedup_vs_one_by_one": separate / batched,
        "encode_speedup_vs_one_by_one": encode_separate / encode_batched,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=5000, help="synthetic indexed images (the app's COCO test: 5,000)")
    parser.add_argument("--sections", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/article.json"))
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    import torch

    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads"
                         f" {torch.get_num_threads()}", "python": platform.python_version(),
              "article": bench(args.docs, args.sections, args.repeat)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["machine"])
    for key, value in result["article"].items():
        print(f"{key:<32} {value:,.2f}" if isinstance(value, float) else f"{key:<32} {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
