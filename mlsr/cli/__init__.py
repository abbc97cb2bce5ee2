"""The command line: `python -m mlsr build-index | search | terms | encode-dense | train | import-dense | prepare
| evaluate | atomic | export`.

Errors print one line, never a traceback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from mlsr.models.backbone import DEFAULT_BACKBONE
from mlsr.backends.local import add_backend_arguments
from mlsr.models.encoder import DEFAULT_TOKENIZER
from mlsr.errors import MlsrError
from mlsr.models.head import DEFAULT_HEAD

logger = logging.getLogger("mlsr")


def add_model_arguments(parser: argparse.ArgumentParser, backbone: bool = True) -> None:
    """--backbone/--head/--tokenizer/--device (and --batch-size), each model a Hub id or a folder; defaults
    come from MLSR_* variables. `backbone=False` leaves out what only encoding images or text needs."""
    group = parser.add_argument_group("models (Hub repo id or local folder)")
    if backbone:
        group.add_argument("--backbone", default=os.environ.get("MLSR_BACKBONE", DEFAULT_BACKBONE),
                           help="BLIP retrieval or CLIP model (env MLSR_BACKBONE; default %(default)s)")
    group.add_argument("--head", default=os.environ.get("MLSR_HEAD", DEFAULT_HEAD),
                       help="D2S sparse head (env MLSR_HEAD; default %(default)s)")
    group.add_argument("--tokenizer", default=os.environ.get("MLSR_TOKENIZER", DEFAULT_TOKENIZER),
                       help="tokenizer of the head's vocabulary (env MLSR_TOKENIZER; default %(default)s)")
    group.add_argument("--device", default=os.environ.get("MLSR_DEVICE"),
                       help="torch device, e.g. cpu or cuda (env MLSR_DEVICE; default: cuda when present)")
    if not backbone:
        return
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
    add_backend_arguments(search)

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
    add_evaluation_commands(commands)
    add_export_command(commands)
    return parser


def add_export_command(commands) -> None:
    """`export`: an index folder's items and vectors into a Milvus collection (Milvus Lite file or cluster)."""
    from mlsr.backends.milvus import DEFAULT_COLLECTION, EXPORT_BATCH, SPARSE_INDEX_TYPES

    export = commands.add_parser(
        "export", help="load an index folder into Milvus (a Milvus Lite .db file or a cluster)",
        description="Bulk-load an index folder's items, sparse and dense vectors into a Milvus collection, in"
                    " batches. Re-running resumes an interrupted export and never duplicates rows.")
    export.add_argument("--index", required=True, type=Path, help="index folder")
    export.add_argument("--milvus-uri", default=os.environ.get("MLSR_MILVUS_URI"),
                        help="path ending in .db (Milvus Lite) or http://host:19530 (env MLSR_MILVUS_URI)")
    export.add_argument("--collection", default=os.environ.get("MLSR_MILVUS_COLLECTION", DEFAULT_COLLECTION),
                        help="collection name (env MLSR_MILVUS_COLLECTION; default %(default)s)")
    export.add_argument("--batch-size", type=int, default=EXPORT_BATCH, help="rows per request (default %(default)s)")
    export.add_argument("--sparse-index", choices=SPARSE_INDEX_TYPES, default=SPARSE_INDEX_TYPES[0],
                        help="Milvus index of the sparse field (Milvus Lite has only %(default)s)")
    export.add_argument("--replace", action="store_true", help="drop the collection first if it holds another index")


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

    from mlsr.training.loop import AMP_MODES, TrainConfig

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
                "train": _train, "export": _export, **EVALUATION_HANDLERS}
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
    from mlsr.models.encoder import Encoder

    return Encoder.from_pretrained(args.backbone, args.head, args.tokenizer, device=args.device,
                                   batch_size=args.batch_size)


def _build_index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mlsr.ingest.images import build_index, find_images, read_captions

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
    from mlsr.backends.local import open_backend
    from mlsr.index.sparse import SparseIndex
    from mlsr.retrieval import search_texts

    index = SparseIndex.load(args.index)  # before the models: a missing index fails fast
    backend = open_backend(index, args.backend, args.milvus_uri, args.collection)
    encoder = load_encoder(args)
    index.check_models(encoder.models())
    args.queries = [_stdin_if_dash(query) for query in args.queries]
    results, queries = search_texts(encoder, backend, args.queries, k=args.k, mode=args.mode)
    backend.close()
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

    from mlsr.models.backbone import load_backbone
    from mlsr.ingest.images import find_images, read_captions
    from mlsr.data.lsr42 import encode_dense

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

    from mlsr.training.loop import TrainConfig, train

    config = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, q_reg=args.q_reg, d_reg=args.d_reg,
        temperature=args.temperature, lr=args.lr, proj_lr=args.proj_lr, warmup=args.warmup,
        mask_ratio=args.mask_ratio, hidden_size=args.hidden_size,
        train_splits=tuple(split.strip() for split in args.train_splits.split(",") if split.strip()),
        val_split=args.val_split, seed=args.seed, amp=args.amp, eval_batch_size=args.eval_batch_size,
    )
    logging.getLogger("mlsr.training.loop").setLevel(logging.INFO)  # epoch lines reach the console
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


def _export(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mlsr.errors import InputError
    from mlsr.index.sparse import SparseIndex
    from mlsr.backends.milvus import connect, export_index

    if not args.milvus_uri:
        raise InputError("export needs --milvus-uri (a path ending in .db for Milvus Lite, or http://host:19530).")
    index = SparseIndex.load(args.index)
    client = connect(args.milvus_uri)  # before the progress bar: an unreachable address fails on one line
    try:
        with tqdm(total=len(index), unit="row", desc=f"exporting to {args.collection}") as bar:
            report = export_index(index, args.milvus_uri, args.collection, batch_size=args.batch_size,
                                  replace=args.replace, sparse_index=args.sparse_index, progress=bar.update,
                                  client=client)
    finally:
        client.close()
    resumed = f" ({report.already} were already there)" if report.already else ""
    print(f"exported {report.count} rows of {args.index} to collection {report.collection!r} at {args.milvus_uri}"
          f" in {report.seconds:.1f} s: {report.written} written{resumed}")
    return 0


def _stdin_if_dash(text: str) -> str:
    """`-` stands for standard input: article text is often longer than a command line allows."""
    return sys.stdin.read() if text == "-" else text


# == Published galleries and evaluation: import-dense, prepare, evaluate, atomic ============================


def add_evaluation_commands(commands) -> None:
    """`import-dense`, `prepare`, `evaluate` and `atomic`."""
    from mlsr.evaluation.atomic import DOCUMENTS as ATOMIC_DOCUMENTS
    from mlsr.evaluation.atomic import IMAGES, QRELS, TEXTS
    from mlsr.evaluation.runs import DEFAULT_MEASURES, RUNS
    from mlsr.ingest.published import DEFAULT_DATASET, DEFAULT_INDEX, DEFAULT_SPLIT

    dataset_default = os.environ.get("MLSR_DATASET", DEFAULT_DATASET)
    imp = commands.add_parser(
        "import-dense", help="index a split of a published dense dataset (no image encoder needed)",
        description="Apply the sparse head to the published image vectors of one Karpathy split"
                    " (e.g. lsr42/mscoco-blip-dense, lsr42/flickr30k-blip-dense) and write an index folder.")
    imp.add_argument("--dataset", default=dataset_default,
                     help="dense dataset: Hub id or folder (env MLSR_DATASET; default %(default)s)")
    imp.add_argument("--split", default=DEFAULT_SPLIT, help="Karpathy split: train, val, test, restval (default %(default)s)")
    imp.add_argument("--out", required=True, type=Path, help="index folder to write")
    imp.add_argument("--image-root", type=Path,
                     help="folder holding the images (e.g. Flickr30k's flickr30k-images/): items point at its files;"
                          " default: COCO URLs for COCO, none (a placeholder in the app) otherwise")
    add_model_arguments(imp, backbone=False)

    prep = commands.add_parser(
        "prepare", help="build the app's default gallery from published vectors (once)",
        description="Build the app's index from a published dense dataset unless the folder exists already.")
    prep.add_argument("--index", type=Path, default=Path(os.environ.get("MLSR_INDEX", DEFAULT_INDEX)),
                      help="index folder (env MLSR_INDEX; default %(default)s)")
    prep.add_argument("--dataset", default=dataset_default, help="env MLSR_DATASET; default %(default)s")
    prep.add_argument("--split", default=DEFAULT_SPLIT, help="default %(default)s")
    add_model_arguments(prep, backbone=False)

    ev = commands.add_parser(
        "evaluate", help="text-to-image R@k, MRR@10, NDCG@k, MAP@k of an index (sparse and dense runs)",
        description="Evaluate an index with the queries of a dense dataset's split (published vectors; qrels ="
                    " each caption's image) or with text queries and TREC qrels. Writes TREC run files.")
    ev.add_argument("--recipe", choices=("mscoco-test",),
                    help="mscoco-test: the 25k test captions against the 5k test images of lsr42/mscoco-blip-dense"
                         " (--index defaults to index/mscoco-test, built when missing); prints the published numbers")
    ev.add_argument("--index", type=Path, help="index folder")
    ev.add_argument("--dataset", help="dense dataset (Hub id or folder) whose split's captions are the queries")
    ev.add_argument("--split", default=DEFAULT_SPLIT, help="split of --dataset (default %(default)s)")
    ev.add_argument("--queries", type=Path, help="text queries: 'qid<TAB>text' lines (or one text per line);"
                                                  " needs the backbone")
    ev.add_argument("--qrels", type=Path, help="TREC qrels file (qid 0 docid rel); docid = the index's item id")
    ev.add_argument("--runs", default=",".join(RUNS), help="comma-separated runs (default %(default)s)")
    ev.add_argument("--measures", default=",".join(DEFAULT_MEASURES), help="comma-separated (default %(default)s)")
    ev.add_argument("--runs-dir", type=Path, help="where the TREC run files, qrels.trec and metrics.json go"
                                                  " (default runs/<index folder name>)")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON instead of the table")
    add_model_arguments(ev)
    add_backend_arguments(ev)

    at = commands.add_parser(
        "atomic", help="the seed paper's AToMiC image suggestion task on a subset (--limit queries)",
        description="Image suggestion on AToMiC: validation queries (page title + section title + section text)"
                    " against their relevant images plus sampled distractors, documents as image, caption or"
                    " image+caption; prints tables like the seed paper's Tables 2-4.")
    at.add_argument("--texts", default=TEXTS, help="default %(default)s")
    at.add_argument("--images", default=IMAGES, help="default %(default)s")
    at.add_argument("--qrels", default=QRELS, help="default %(default)s")
    at.add_argument("--split", default="validation", help="query split (default %(default)s)")
    at.add_argument("--limit", type=int, default=100, help="queries (default %(default)s)")
    at.add_argument("--distractors", type=int, help="non-relevant images sampled in (default 10 per query)")
    at.add_argument("--distractor-rate", type=float, default=0.5,
                    help="probability of taking each streamed non-relevant image until enough (default %(default)s)")
    at.add_argument("--max-image-shards", type=int, help="stop reading image shards after this many")
    at.add_argument("--seed", type=int, default=0, help="distractor sampling (default %(default)s)")
    at.add_argument("--doc", default=",".join(ATOMIC_DOCUMENTS), help="comma-separated (default %(default)s)")
    at.add_argument("--modes", default="no_expand,expand",
                    help="query modes (default %(default)s; no_expand is the seed's MLP query)")
    at.add_argument("--runs-dir", type=Path, default=Path("runs/atomic"), help="default %(default)s")
    at.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_model_arguments(at)


class _LazyBar:
    """A tqdm bar that appears once its total is known (so an early error prints one clean line)."""

    def __init__(self, desc: str) -> None:
        self.desc, self.bar = desc, None

    def total(self, total: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, unit="vec", desc=self.desc)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def __enter__(self) -> "_LazyBar":
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_bar(desc: str) -> tuple[_LazyBar, Callable[[int], None]]:
    """A progress bar and the function that sets its total (and shows it)."""
    bar = _LazyBar(desc)
    return bar, bar.total


def _import_dense(args: argparse.Namespace) -> int:
    from mlsr.models.encoder import Encoder
    from mlsr.ingest.published import import_dense

    encoder = Encoder.head_only(args.head, args.tokenizer, device=args.device)
    bar, set_total = progress_bar("sparsifying image vectors")
    with bar:
        index, report = import_dense(encoder, args.dataset, args.out, split=args.split, image_root=args.image_root,
                                     progress=bar.update, total=set_total)
    print(f"indexed {report.images} {report.split} images of {args.dataset} into {args.out} in {report.seconds:.1f} s"
          f" ({index.vectors.nnz / max(len(index), 1):.0f} terms per image on average; images: {report.image_source})")
    if report.missing_images:
        print(f"{len(report.missing_images)} images not found under --image-root (shown as a placeholder):"
              f" {', '.join(report.missing_images[:10])}", file=sys.stderr)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from mlsr.ingest.published import ensure_index

    bar, set_total = progress_bar(f"building {args.index}")
    with bar:
        built = ensure_index(args.index, dataset=args.dataset, split=args.split, head=args.head,
                             tokenizer=args.tokenizer, device=args.device, progress=bar.update, total=set_total)
    print(f"built {args.index} from {args.dataset} ({args.split})" if built
          else f"{args.index} exists; reusing it (delete the folder to rebuild)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from mlsr.models.encoder import Encoder
    from mlsr.errors import InputError
    from mlsr.backends.local import open_backend
    from mlsr.evaluation.runs import dataset_queries, evaluate, format_table, text_queries
    from mlsr.index.sparse import SparseIndex
    from mlsr.evaluation.metrics import read_qrels
    from mlsr.ingest.published import DEFAULT_DATASET, DEFAULT_INDEX, ensure_index

    if args.recipe == "mscoco-test":
        args.dataset = args.dataset or os.environ.get("MLSR_DATASET", DEFAULT_DATASET)
        args.split = "test"
        args.index = args.index or Path(DEFAULT_INDEX)
        if not args.index.exists():
            bar, set_total = progress_bar(f"building {args.index}")
            with bar:
                ensure_index(args.index, dataset=args.dataset, split="test", head=args.head, tokenizer=args.tokenizer,
                             device=args.device, progress=bar.update, total=set_total)
    if args.index is None:
        raise InputError("give --index DIR (or --recipe mscoco-test).")
    if (args.dataset is None) == (args.queries is None):
        raise InputError("give the queries either as --dataset ID_OR_DIR (with --split) or as --queries FILE.")
    if args.queries is not None and args.qrels is None:
        raise InputError("--queries needs --qrels FILE (TREC format).")
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    measures = [m.strip() for m in args.measures.split(",") if m.strip()]
    index = SparseIndex.load(args.index)
    backend = open_backend(index, args.backend, args.milvus_uri, args.collection)
    if args.dataset is not None:
        encoder = Encoder.head_only(args.head, args.tokenizer, device=args.device)
        index.check_models(encoder.models())
        bar, set_total = progress_bar("sparsifying query vectors")
        with bar:
            queries, qrels = dataset_queries(encoder, args.dataset, args.split, no_expand=any(
                r in ("no_expand", "hybrid") for r in runs), progress=bar.update)
    else:
        encoder = load_encoder(args)
        index.check_models(encoder.models())
        queries, qrels = text_queries(encoder, args.queries, dense="dense" in runs), None
    if args.qrels is not None:
        qrels = read_qrels(args.qrels)
    runs_dir = args.runs_dir or Path("runs") / args.index.name
    try:
        evaluation = evaluate(index, queries, qrels, runs=runs, measures=measures, runs_dir=runs_dir,
                              progress=lambda run: logger.info("run %s", run), recipe=args.recipe, backend=backend)
    finally:
        backend.close()
    if args.json:
        print(json.dumps(evaluation.to_json(), indent=2))
    else:
        print(format_table(evaluation))
        print(f"run files, qrels.trec and metrics.json in {runs_dir}")
    return 0


def _atomic(args: argparse.Namespace) -> int:
    from mlsr.evaluation.atomic import format_tables, load_collection, run_atomic

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    collection = load_collection(texts=args.texts, images=args.images, qrels=args.qrels, split=args.split,
                                 limit=args.limit, distractors=args.distractors, seed=args.seed,
                                 distractor_rate=args.distractor_rate,
                                 max_image_shards=args.max_image_shards, progress=say)
    encoder = load_encoder(args)
    report = run_atomic(encoder, collection, modes=[m.strip() for m in args.modes.split(",") if m.strip()],
                        documents=[d.strip() for d in args.doc.split(",") if d.strip()], runs_dir=args.runs_dir,
                        progress=say)
    if args.json:
        print(json.dumps({doc: e.to_json() for doc, e in report.evaluations.items()}, indent=2))
    else:
        print(format_tables(report))
        print(f"run files and qrels.trec in {args.runs_dir}")
    return 0


EVALUATION_HANDLERS = {"import-dense": _import_dense, "prepare": _prepare, "evaluate": _evaluate, "atomic": _atomic}
