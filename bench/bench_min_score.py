"""Choose the minimum score ("no good match") from measurement, on AToMiC sections with judged images.

For each section query, the best score over the gallery is measured twice: with the section's relevant images in
the gallery (an image should be offered: "match") and with them taken out (the gallery has nothing right for it:
"no good match" is the honest answer). A threshold t offers an image when the best score >= t; it is scored by
balanced accuracy (mean of: share of "match" sections that still get an image, share of "no match" sections that
get none). Prints the best t, its rates, and the baseline t = 0 (off: every section gets an image) measured in the
same run. The default in mlsr/settings.py (DEFAULT_MIN_SCORE) should come from this run with the real models:

    python -m bench.bench_min_score --texts DIR --images DIR --qrels DIR [--limit 500] [--doc image+caption] \\
        [--backbone ... --head ... --tokenizer ...]

Without arguments it runs on the tests' tiny AToMiC layout with random-weight models: the numbers then only
show that the script works, not a threshold to use.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from mlsr.data.atomic_trec import load_collection
from mlsr.evaluation.atomic_task import document_vectors
from mlsr.settings import DEFAULT_BACKBONE, DEFAULT_HEAD, DEFAULT_TOKENIZER


def best_scores(scores: np.ndarray, relevant: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Per query: the best score with its relevant images in the gallery, and without them."""
    with_them = scores.max(axis=1)
    without = np.array([np.delete(row, sorted(rel)).max(initial=0.0) for row, rel in zip(scores, relevant)])
    return with_them, without


def choose(with_them: np.ndarray, without: np.ndarray) -> tuple[float, float, float, float]:
    """(threshold, balanced accuracy, share of match sections kept, share of no-match sections refused)."""
    candidates = np.unique(np.concatenate([[0.0], with_them, without]))
    best = (0.0, -1.0, 0.0, 0.0)
    for t in candidates:
        kept, refused = float((with_them >= t).mean()), float((without < t).mean())
        if (kept + refused) / 2 > best[1]:
            best = (float(t), (kept + refused) / 2, kept, refused)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("texts", "images", "qrels"):
        parser.add_argument(f"--{name}", type=Path)
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--doc", default="image+caption", choices=("image", "caption", "image+caption"))
    parser.add_argument("--backbone", default=DEFAULT_BACKBONE)
    parser.add_argument("--head", default=DEFAULT_HEAD)
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER)
    parser.add_argument("--device")
    args = parser.parse_args()
    from mlsr.models.encoder import Encoder

    with tempfile.TemporaryDirectory() as tmp:
        if args.texts is None:  # the tests' tiny layout and random-weight models
            from tests.helpers.datasets import write_atomic
            from tests.helpers.models import make_head, save_tiny_blip, save_tokenizer

            args.texts, args.images, args.qrels = write_atomic(Path(tmp))
            args.tokenizer = str(save_tokenizer(Path(tmp) / "tok"))
            args.backbone = str(save_tiny_blip(Path(tmp) / "blip", Path(args.tokenizer)))
            make_head().save_pretrained(Path(tmp) / "head")
            args.head = str(Path(tmp) / "head")
        collection = load_collection(texts=args.texts, images=args.images, qrels=args.qrels, limit=args.limit)
        encoder = Encoder.from_pretrained(args.backbone, args.head, args.tokenizer, device=args.device)
        queries = encoder.encode_text_views(collection.queries).expand
        documents = document_vectors(encoder, collection, [args.doc])[args.doc]
    scores = (queries @ documents.T).toarray()
    column = {image_id: n for n, image_id in enumerate(collection.image_ids)}
    relevant = [{column[i] for i, grade in collection.qrels.get(q, {}).items() if grade > 0 and i in column}
                for q in collection.query_ids]
    keep = [n for n, rel in enumerate(relevant) if rel]
    with_them, without = best_scores(scores[keep], [relevant[n] for n in keep])
    t, balanced, kept, refused = choose(with_them, without)
    print(f"{len(keep)} judged sections, {len(collection.image_ids)} images, {args.doc} documents")
    print(f"best score with the relevant images: median {np.median(with_them):.3f}; without them: median"
          f" {np.median(without):.3f}")
    print(f"baseline t=0 (off): balanced accuracy {0.5 * (1 + float((without < 0).mean())):.3f} (every section gets"
          " an image)")
    print(f"chosen t={t:.3f}: balanced accuracy {balanced:.3f} ({kept:.0%} of match sections keep an image,"
          f" {refused:.0%} of no-match sections say so)")


if __name__ == "__main__":
    main()
