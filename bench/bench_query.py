"""Where the time of one query goes: text -> sparse vector -> search, and image -> terms, stage by stage.

    python -m bench.bench_query [--docs 1000000] [--repeat 20] [--out bench/results/query.json]

Models: real-size BLIP-base retrieval (ViT-B/16 at 384 px, BERT-base text encoder) and a
256 -> 768 -> 30,522 head with random weights (speed does not depend on the weights), built by
tests/helpers/models.py and loaded through `Encoder.from_pretrained`, as in bench_core.py. The index is the
uniform synthetic collection of bench/synthetic.py. Each stage is timed on its own (median of --repeat runs after a
warm-up), then the whole public call (`encode_text` + `search`, `encode_images` + `decode`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

CAPTION = "a boy leading water buffalo through a market field"


def median_ms(fn, repeat: int) -> float:
    """Median milliseconds per call, after one warm-up call."""
    from bench.bench_core import timed

    return 1000 * statistics.median(timed(fn, repeat))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/query.json")
    args = parser.parse_args()
    import torch
    from PIL import Image
    from transformers.utils import logging as transformers_logging

    from bench.bench_core import make_real_size_models
    from bench.synthetic import Profile
    from mlsr.models.encoder import Encoder, to_csr
    from mlsr.images import load_image
    from mlsr.index.sparse import SparseIndex

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        encoder = Encoder.from_pretrained(*map(str, make_real_size_models(Path(tmp))), device="cpu")
    index = SparseIndex.build(Profile("uniform").documents(args.docs))
    backbone, head, r = encoder.backbone, encoder.head, args.repeat

    torch.set_grad_enabled(False)  # as inside the encoder (inference mode): the head is timed on its own
    # text query, stage by stage (a caption-sized text: one window)
    windows, _, _ = encoder._windows([CAPTION])
    dense = backbone.embed_texts(windows)
    with torch.inference_mode():
        weights = head(dense)
    query = to_csr(weights)
    text = {
        "clean_and_split_ms": median_ms(lambda: encoder._windows([CAPTION]), r),
        "tokenise_ms": median_ms(lambda: backbone.tokenizer(windows, padding=True, truncation=True,
                                                           max_length=backbone.max_text_tokens, return_tensors="pt"), r),
        "text_encoder_ms": median_ms(lambda: backbone.embed_texts(windows), r),  # includes its tokenisation
        "head_ms": median_ms(lambda: torch.inference_mode()(head)(dense), r),
        "to_csr_ms": median_ms(lambda: to_csr(weights), r),
        "search_ms": median_ms(lambda: index.search(query, 10), r),
        "query_terms": int(query.nnz),
        "total_ms": median_ms(lambda: index.search(encoder.encode_text(CAPTION), 10), r),
    }
    text["text_encoder_ms"] -= text["tokenise_ms"]

    # image -> terms
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8))
    loaded = load_image(photo)
    pixels = backbone.image_processor(images=[loaded], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        vision = lambda: backbone.model.vision_model(pixel_values=pixels)  # noqa: E731
        image_dense = backbone.embed_images([loaded])
        image_weights = head(image_dense)
    repeat_image = max(3, r // 4)
    image = {
        "load_image_ms": median_ms(lambda: load_image(photo), repeat_image),
        "processor_ms": median_ms(lambda: backbone.image_processor(images=[loaded], return_tensors="pt"), repeat_image),
        "vision_encoder_ms": median_ms(lambda: torch.inference_mode()(vision)(), repeat_image),
        "head_ms": median_ms(lambda: torch.inference_mode()(head)(image_dense), repeat_image),
        "to_csr_ms": median_ms(lambda: to_csr(image_weights), repeat_image),
        "decode_ms": median_ms(lambda: encoder.decode(to_csr(image_weights)[0], top_k=20), repeat_image),
        "total_ms": median_ms(lambda: encoder.decode(encoder.encode_images([photo])[0], top_k=20), repeat_image),
    }
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, torch threads {torch.get_num_threads()}",
        "docs": args.docs, "text_query": text, "image_to_terms": image,
        "image_processor": type(backbone.image_processor).__name__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for section in ("text_query", "image_to_terms"):
        for key, value in result[section].items():
            print(f"{section:<15} {key:<22} {value:,.2f}")
    print(result["machine"], "| processor:", result["image_processor"])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
