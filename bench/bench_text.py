"""The text path: one head pass per text in `encode_text_views`, and the opt-in 8-bit text encoder's speed and its
agreement with float32, in one run.

    python -m bench.bench_text [--captions 200] [--repeat 30] [--threads 1] [--out bench/results/text.json]

Real-size random-weight models (BLIP-base text encoder, a 256 -> 768 -> 30,522 head with ~100-300 active terms;
timings do not depend on trained weights, agreement does: `mlsr verify --only int8` measures it on the real models).

- views: `encode_text_views` for one caption now (one head pass) against the two passes it made before
  (`_sparsify` expanded, then `_sparsify` masked), p50;
- dense alone: the dense vector of one caption from `encode_text_views(...).dense` (backbone and head) against
  the backbone pass alone (what `dense_text` did until issue 27 folded it into the views), interleaved in rounds;
- int8: one caption's `encode_text` p50, float32 against int8 (`Encoder.with_int8_text`), interleaved in rounds;
  agreement over `--captions` generated captions: the sparse cosine of each caption's float32 and int8 vectors
  (min, median) and the top-10 overlap of the ranked gallery (a synthetic 5,000-document index, as the app's).

Torch runs on `--threads` threads (the thread policy's share of a 2-core machine serving 2 requests: 1). Wall and
CPU time with the load average (a shared machine).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np

from bench.bench_core import synthetic_docs
from bench.timing import load, wall_and_cpu

WORDS = ("a man woman child dog cat bus train boat plate pizza red blue green small large old young sitting standing"
         " riding eating holding next to on in with the street field beach kitchen table water snow city park").split()
CAPTION = "a boy leading water buffalo through a market field"


def captions(n: int, seed: int = 0) -> list[str]:
    """Caption-like texts of 6 to 12 words drawn from a small vocabulary of COCO-ish words."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, rng.integers(6, 13))) for _ in range(n)]


def sparse_cosines(a, b) -> np.ndarray:
    dots = np.asarray(a.multiply(b).sum(axis=1)).ravel()
    norms = np.sqrt(np.asarray(a.multiply(a).sum(axis=1)).ravel() * np.asarray(b.multiply(b).sum(axis=1)).ravel())
    return dots / np.maximum(norms, 1e-12)


def bench(n_captions: int, repeat: int, rounds: int = 3) -> dict:
    import torch

    from bench.bench_core import make_real_size_models
    from mlsr.index.sparse import SparseIndex
    from mlsr.models.encoder import Encoder

    with tempfile.TemporaryDirectory() as tmp:
        plain = Encoder.from_pretrained(*map(str, make_real_size_models(Path(tmp))), device="cpu")
    int8 = plain.with_int8_text()
    windows, raws, _ = plain._windows([CAPTION])
    dense = plain.backbone.embed_texts(windows)

    def two_passes(i):  # the views' head work before: expanded, then masked, each a head pass
        plain._sparsify(dense)
        plain._sparsify(dense, raws)

    result = {"torch_threads": torch.get_num_threads(),
              "views_head_after": wall_and_cpu(lambda i: plain._sparsify_views(dense, raws), repeat),
              "views_head_before": wall_and_cpu(two_passes, repeat),
              "views_after": wall_and_cpu(lambda i: plain.encode_text_views([CAPTION]), repeat)}
    dense_alone: dict[str, list[dict]] = {"dense_backbone_only": [], "dense_view": []}
    for _ in range(rounds):  # the removed dense_text: windows, then the backbone, no head
        dense_alone["dense_backbone_only"].append(
            wall_and_cpu(lambda i: plain.backbone.embed_texts(plain._windows([CAPTION])[0]).numpy(), repeat, warmup=3))
        dense_alone["dense_view"].append(
            wall_and_cpu(lambda i: plain.encode_text_views([CAPTION]).dense, repeat, warmup=3))
    for name, runs in dense_alone.items():
        result[name] = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
    result["dense_view_over_backbone_only_cpu"] = (result["dense_view"]["cpu_p50_ms"]
                                                   / result["dense_backbone_only"]["cpu_p50_ms"])
    timings: dict[str, list[dict]] = {"float32": [], "int8": []}
    for _ in range(rounds):
        for name, encoder in (("float32", plain), ("int8", int8)):
            timings[name].append(wall_and_cpu(lambda i: encoder.encode_text(CAPTION), repeat, warmup=3))
    for name, runs in timings.items():
        result[f"caption_{name}"] = {key: float(np.median([run[key] for run in runs])) for key in runs[0]}
    result["int8_speedup_cpu"] = result["caption_float32"]["cpu_p50_ms"] / result["caption_int8"]["cpu_p50_ms"]
    result["int8_speedup_wall"] = result["caption_float32"]["wall_p50_ms"] / result["caption_int8"]["wall_p50_ms"]
    texts = captions(n_captions)
    float_vectors, int8_vectors = plain.encode_text(texts), int8.encode_text(texts)
    cosines = sparse_cosines(float_vectors, int8_vectors)
    gallery = SparseIndex.build(synthetic_docs(5000, 170, seed=1))
    found_float, found_int8 = gallery.search(float_vectors, 10).indices, gallery.search(int8_vectors, 10).indices
    overlap = [len(set(a) & set(b)) / 10 for a, b in zip(found_float.tolist(), found_int8.tolist())]
    result.update(captions=n_captions, terms_per_caption=float(np.diff(float_vectors.indptr).mean()),
                  cosine_min=float(cosines.min()), cosine_median=float(np.median(cosines)),
                  top10_overlap_mean=float(np.mean(overlap)), top10_overlap_min=float(np.min(overlap)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch's intra-op threads")
    parser.add_argument("--out", type=Path, default=Path("bench/results/text.json"))
    args = parser.parse_args()
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    before = load()
    result = {"machine": platform.processor() or platform.machine(), "load_before": before,
              "text": bench(args.captions, args.repeat), "load_after": load()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["machine"], "|", before, "| after:", result["load_after"])
    for key, value in result["text"].items():
        if isinstance(value, dict):
            value = ", ".join(f"{name} {number:,.2f}" for name, number in value.items())
        print(f"{key:<22} {value:,.3f}" if isinstance(value, float) else f"{key:<22} {value}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
