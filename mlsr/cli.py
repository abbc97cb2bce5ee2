"""The command line: `python -m mlsr build-index | search | terms | encode-dense | train`.

Errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from mlsr.backbone import DEFAULT_BACKBONE
from mlsr.encoder import DEFAULT_TOKENIZER
from mlsr.errors import MlsrError
from mlsr.head import DEFAULT_HEAD

logger = logging.getLogger("mlsr")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--backbone/--head/--tokenizer/--device, each a Hub id or a folder; defaults come from MLSR_* variables."""
    group = parser.add_argument_group("models (Hub repo id or local folder)")
    group.add_argument("--backbone", default=os.environ.get("MLSR_BACKBONE", DEFAULT_BACKBONE),
                       help="BLIP retrieval or CLIP model (env MLSR_BACKBONE; default %(default)s)")
    group.add_argument("--head", default=os.environ.get("MLSR_HEAD", DEFAULT_HEAD),
                       help="D2S sparse head (env MLSR_HEAD; default %(default)s)")
    group.add_argument("--tokenizer", default=os.environ.get("MLSR_TOKENIZER", DEFAULT_TOKENIZER),
                       help="tokenizer of the head's vocabulary (env MLSR_TOKENIZER; default %(default)s)")
    group.add_argument("--device", default=os.environ.get("MLSR_DEVICE"),
                       help="torch device, e.g. cpu or cuda (env MLSR_DEVICE; default: cuda when present)")
    group.add_argument("--batch-size", type=int, default=16, help="images or text windows per forward pass")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlsr", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser("build-index", help="encode a folder of images (and captions) into an index",
                                description="Encode a folder of images, optionally with captions, into an index folder.")
    build.add_argument("--images", required=True, type=Path, help="folder of images (searched recursively)")
    build.add_argument("--captions", type=Path, help="CSV (columns file,caption) or JSONL ({file, caption}) file")
    build.add_argument("--doc", choices=("image", "caption", "image+caption"), default="image",
                       help="document representation (the seed paper's three runs; image+caption sums both vectors)")
    build.add_argument("--dense", action="store_true", help="also keep the dense image vectors for FAISS comparison")
    build.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")
    build.add_argument("--out", required=True, type=Path,
                       help="index folder to write (replaced atomically; an interrupted build resumes on re-run)")
    add_model_arguments(build)

    search = commands.add_parser("search", help="rank the index for one or more text queries",
                                 description="Rank an index for text queries and show the matched terms.")
    search.add_argument("queries", nargs="+", metavar="QUERY",
                        help="query text (several queries run as a batch; - reads one query from standard input)")
    search.add_argument("--index", required=True, type=Path, help="index folder")
    search.add_argument("--mode", choices=("expand", "no_expand", "hybrid"), default="expand", help="query encoding")
    search.add_argument("-k", type=int, default=10, help="results per query (default %(default)s)")
    search.add_argument("--terms", type=int, default=5, help="matched terms shown per result")
    search.add_argument("--json", action="store_true", help="print one JSON object per query")
    add_model_arguments(search)

    terms = commands.add_parser("terms", help="show the weighted terms of an image or a text",
                                description="Print the top weighted vocabulary terms of an image or a text.")
    source = terms.add_mutually_exclusive_group(required=True)
    source.add_argument("image", nargs="?", type=Path, help="image file")
    source.add_argument("--text", help="text to encode instead of an image (- reads it from standard input)")
    terms.add_argument("--mode", choices=("expand", "no_expand"), default="expand", help="text encoding")
    terms.add_argument("--top-k", type=int, default=20, help="terms to print (default %(default)s)")
    terms.add_argument("--json", action="store_true", help="print JSON")
    add_model_arguments(terms)
    add_training_commands(commands)
    return parser


def add_training_commands(commands) -> None:
    """`encode-dense` (images + captions -> dense dataset) and `train` (dense dataset -> sparse head)."""
    encode = commands.add_parser(
        "encode-dense", help="embed images and their captions with a dense model, for training",
        description="Embed captioned images with a BLIP or CLIP model into a dense dataset (the layout of the"
                    " published lsr42 datasets): img_embs.parquet, text_embs.parquet, dataset_meta.json.")
    encode.add_argument("--backbone", default=os.environ.get("MLSR_BACKBONE", DEFAULT_BACKBONE),
                        help="BLIP retrieval or CLIP model, Hub id or folder (env MLSR_BACKBONE; default %(default)s)")
    encode.add_argument("--images", required=True, type=Path, help="folder of images (searched recursively)")
    encode.add_argument("--captions", required=True, type=Path,
                        help="CSV (file,caption[,split]) or JSONL; split is train/val/test/restval per image")
    encode.add_argument("--out", required=True, type=Path, help="dataset folder to write")
    encode.add_argument("--val-fraction", type=float,
                        help="without a split column: share of images drawn for validation (default 0.1)")
    encode.add_argument("--test-fraction", type=float, default=0.0, help="... and for test (default 0)")
    encode.add_argument("--seed", type=int, default=0, help="seed of that draw (default %(default)s)")
    encode.add_argument("--batch-size", type=int, default=32, help="images or captions per forward pass")
    encode.add_argument("--device", default=os.environ.get("MLSR_DEVICE"), help="torch device (default: cuda when present)")
    encode.add_argument("--strict", action="store_true", help="stop at the first unreadable image instead of skipping it")

    from mlsr.training import AMP_MODES, TrainConfig

    defaults = TrainConfig()
    train = commands.add_parser(
        "train", help="train a sparse head on a dense dataset",
        description="Train a dense-to-sparse head by distillation from a dense model's scores (ECIR 2024 recipe).")
    train.add_argument("--data", required=True, help="dense dataset: folder or Hub dataset id (e.g. lsr42/mscoco-blip-dense)")
    train.add_argument("--out", required=True, type=Path, help="folder for the head, its tokenizer, logs and checkpoint")
    train.add_argument("--tokenizer", help="vocabulary of the head, Hub id or folder (default: the --mlm model's,"
                                           f" else {DEFAULT_TOKENIZER})")
    train.add_argument("--mlm", help="masked-LM whose LayerNorm + vocabulary projector initialise the head"
                                     " (DistilBERT or BERT, e.g. distilbert-base-uncased); default: random")
    train.add_argument("--epochs", type=int, default=defaults.epochs, help="default %(default)s")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help="pairs per batch (default %(default)s)")
    train.add_argument("--q-reg", type=float, default=defaults.q_reg, help="L1 weight on captions (default %(default)s)")
    train.add_argument("--d-reg", type=float, default=defaults.d_reg, help="L1 weight on images (default %(default)s)")
    train.add_argument("--temperature", type=float, default=defaults.temperature,
                       help="of the dense teacher's softmax (default %(default)s)")
    train.add_argument("--lr", type=float, default=defaults.lr,
                       help="learning rate of LayerNorm + vocab projector (default %(default)s)")
    train.add_argument("--proj-lr", type=float, default=defaults.proj_lr,
                       help="learning rate of the dense -> hidden projection (default %(default)s)")
    train.add_argument("--warmup", type=float, default=defaults.warmup,
                       help="share of steps for L1 and learning-rate warm-up (default %(default)s)")
    train.add_argument("--mask-ratio", type=float,
                       help="fixed probability of masking a batch's captions to their tokens (default: 1 -> 0 schedule)")
    train.add_argument("--hidden-size", type=int, default=defaults.hidden_size,
                       help="hidden size of a randomly initialised head (default %(default)s)")
    train.add_argument("--train-splits", default=",".join(defaults.train_splits),
                       help="comma-separated splits to train on (default %(default)s)")
    train.add_argument("--val-split", default=defaults.val_split, help="split to validate on (default %(default)s)")
    train.add_argument("--seed", type=int, default=defaults.seed, help="default %(default)s")
    train.add_argument("--amp", choices=AMP_MODES, default=defaults.amp, help="mixed precision (fp16: CUDA only)")
    train.add_argument("--eval-batch-size", type=int, default=defaults.eval_batch_size, help="default %(default)s")
    train.add_argument("--device", default=os.environ.get("MLSR_DEVICE"), help="torch device (default: cuda when present)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out after its last finished epoch")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    quiet_transformers(args.verbose)
    handlers = {"build-index": _build_index, "search": _search, "terms": _terms, "encode-dense": _encode_dense,
                "train": _train}
    try:
        return handlers[args.command](args)
    except MlsrError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def quiet_transformers(verbose: bool) -> None:
    """Keep transformers' per-load progress bars and notices out of the command's output."""
    from transformers.utils import logging as transformers_logging

    if not verbose:
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()


def load_encoder(args: argparse.Namespace):
    """The Encoder named by the model arguments."""
    from mlsr.encoder import Encoder

    return Encoder.from_pretrained(args.backbone, args.head, args.tokenizer, device=args.device,
                                   batch_size=args.batch_size)


def _build_index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mlsr.build import build_index, find_images, read_captions

    captions = read_captions(args.captions) if args.captions else None
    total = len(find_images(args.images))
    encoder = load_encoder(args)
    with tqdm(total=total, unit="img", desc="encoding images") as bar:
        index, report = build_index(encoder, args.images, out=args.out, captions=captions, documents=args.doc,
                                    dense=args.dense, strict=args.strict, progress=bar.update)
    if report.resumed:
        print(f"resumed an interrupted build: {report.resumed} batches were already encoded")
    print(f"indexed {report.indexed} images into {args.out} in {report.seconds:.1f} s"
          f" ({args.doc} documents, {index.nnz / max(len(index), 1):.0f} terms per document on average)")
    if report.skipped:
        print(f"skipped {len(report.skipped)} unreadable images:", file=sys.stderr)
        for name, reason in report.skipped[:20]:
            print(f"  {name}: {reason}", file=sys.stderr)
    return 0


def _search(args: argparse.Namespace) -> int:
    from mlsr.index import SparseIndex
    from mlsr.retrieval import search_texts

    index = SparseIndex.load(args.index)  # before the models: a missing index fails fast
    encoder = load_encoder(args)
    index.check_models(encoder.models())
    args.queries = [_stdin_if_dash(query) for query in args.queries]
    results, queries = search_texts(encoder, index, args.queries, k=args.k, mode=args.mode)
    for q, text in enumerate(args.queries):
        hits = []
        for rank, (score, row) in enumerate(zip(results.scores[q], results.indices[q]), 1):
            item = index.items[row]
            matched = index.explain(queries[q], row, top_n=args.terms)
            hits.append({"rank": rank, "score": round(float(score), 4), "id": item["id"], "image": item.get("image"),
                         "terms": [[m.term, round(m.contribution, 4)] for m in matched]})
        if args.json:
            print(json.dumps({"query": text, "mode": args.mode, "results": hits}, ensure_ascii=False))
            continue
        print(f"query: {text}")
        for hit in hits:
            terms = ", ".join(f"{term} {value:.3f}" for term, value in hit["terms"]) or "(no shared terms)"
            print(f"{hit['rank']:>3}. {hit['score']:8.4f}  {hit['id']}  {hit['image']}\n       {terms}")
    return 0


def _terms(args: argparse.Namespace) -> int:
    encoder = load_encoder(args)
    if args.text is not None:
        vectors = encoder.encode_text([_stdin_if_dash(args.text)], mode=args.mode)
    else:
        vectors = encoder.encode_images([args.image])
    terms = encoder.decode(vectors[0], top_k=args.top_k)
    active = vectors[0].nnz
    if args.json:
        print(json.dumps({"active_terms": active, "terms": [[t, round(w, 4)] for t, w in terms]}, ensure_ascii=False))
    else:
        print(f"{active} active terms; top {len(terms)}:")
        for term, weight in terms:
            print(f"  {term:<20} {weight:.4f}")
    return 0


def _encode_dense(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from mlsr.backbone import load_backbone
    from mlsr.build import find_images, read_captions
    from mlsr.dense_data import encode_dense

    captions = read_captions(args.captions)
    total = len(find_images(args.images)) + sum(len(group) for group in captions.values())
    backbone = load_backbone(args.backbone, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with tqdm(total=total, unit="item", desc="embedding images and captions") as bar:
        report = encode_dense(backbone, args.images, args.captions, args.out, val_fraction=args.val_fraction,
                              test_fraction=args.test_fraction, seed=args.seed, batch_size=args.batch_size,
                              strict=args.strict, progress=bar.update)
    splits = ", ".join(f"{split} {count}" for split, count in sorted(report.splits.items()))
    print(f"wrote {report.images} images and {report.captions} captions ({backbone.dense_size}-d, {splits}) to"
          f" {args.out} in {report.seconds:.1f} s" + (f"; reused {report.reused_chunks} finished chunks" if report.reused_chunks else ""))
    for what, names in (("unreadable images skipped", [n for n, _ in report.skipped]),
                        ("images without a caption left out", report.uncaptioned),
                        ("captions naming no image under --images", report.unmatched)):
        if names:
            print(f"{len(names)} {what}: {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}", file=sys.stderr)
    return 0


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from mlsr.training import TrainConfig, train

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, q_reg=args.q_reg, d_reg=args.d_reg,
        temperature=args.temperature, lr=args.lr, proj_lr=args.proj_lr, warmup=args.warmup,
        mask_ratio=args.mask_ratio, hidden_size=args.hidden_size,
        train_splits=tuple(split.strip() for split in args.train_splits.split(",") if split.strip()),
        val_split=args.val_split, seed=args.seed, amp=args.amp, eval_batch_size=args.eval_batch_size,
    )
    logging.getLogger("mlsr.training").setLevel(logging.INFO)  # epoch lines reach the console
    bar = None

    def progress(step: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, initial=step - 1, unit="batch", desc="training")
        bar.update(1)

    try:
        with logging_redirect_tqdm():
            result = train(args.data, args.out, config, tokenizer=args.tokenizer, mlm=args.mlm, device=args.device,
                           resume=args.resume, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    best = result.best
    print(f"best epoch {result.best_epoch}: R@1 {best['r1']:.4f}, R@5 {best['r5']:.4f}, R@10 {best['r10']:.4f},"
          f" MRR@10 {best['mrr10']:.4f}, {best['query_terms']:.0f} caption / {best['image_terms']:.0f} image terms;"
          f" head saved to {result.out} (log: {result.out / 'train_log.jsonl'})")
    return 0


def _stdin_if_dash(text: str) -> str:
    """`-` stands for standard input: article text is often longer than a command line allows."""
    return sys.stdin.read() if text == "-" else text
