"""The command line: `python -m mlsr build-index | search | terms`. Errors print one line, never a traceback."""

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
                       help="BLIP retrieval model (env MLSR_BACKBONE; default %(default)s)")
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    quiet_transformers(args.verbose)
    handlers = {"build-index": _build_index, "search": _search, "terms": _terms}
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
          f" ({args.doc} documents, {index.vectors.nnz / max(len(index), 1):.0f} terms per document on average)")
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


def _stdin_if_dash(text: str) -> str:
    """`-` stands for standard input: article text is often longer than a command line allows."""
    return sys.stdin.read() if text == "-" else text
