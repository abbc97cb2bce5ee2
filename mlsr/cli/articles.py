"""`suggest-article`: images for every section of an article file, as text, JSON or an illustrated Markdown file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mlsr.cli.args import INDEX_HELP, add_backend_arguments, add_model_arguments, models_from_index
from mlsr.checks import check_k, existing_file, readable_bytes
from mlsr.errors import InputError
from mlsr.settings import ARTICLE_K, MAX_SECTION_K, QUERY_MODES


def add_commands(commands) -> None:
    parser = commands.add_parser(
        "suggest-article", help="suggest images for each section of an article",
        description="Split an article (Markdown or Wikipedia headings, or blank-line paragraphs) into sections and"
                    " suggest k images for each; each section's query is page title + section title + section"
                    " text, the AToMiC recipe. By default no image is given to two sections and near-duplicate"
                    " images count once.")
    parser.add_argument("file", metavar="FILE", help="the article, UTF-8 text or Markdown (- reads standard input)")
    parser.add_argument("--index", required=True, help=INDEX_HELP)
    parser.add_argument("-k", type=int, default=ARTICLE_K,
                        help=f"images per section, 1 to {MAX_SECTION_K} (default %(default)s)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print the suggestions as one JSON object")
    output.add_argument("--markdown", metavar="OUT", type=Path,
                        help="write the article with each section's first image under its heading to OUT")
    parser.add_argument("--title", help="the page title (default: the article's # heading, if any)")
    parser.add_argument("--split", choices=("auto", "headings", "paragraphs", "none"), default="auto",
                        help="where sections begin (default %(default)s: headings, else blank lines)")
    parser.add_argument("--mode", choices=QUERY_MODES, default="expand", help="query encoding (default %(default)s)")
    parser.add_argument("--allow-repeats", action="store_true",
                        help="let an image be suggested for several sections, and keep near-duplicates")
    add_model_arguments(parser, from_index=True)
    add_backend_arguments(parser)
    parser.set_defaults(run=suggest_article_command)


def suggest_article_command(args: argparse.Namespace) -> int:
    from mlsr._files import atomic_write_bytes
    from mlsr.app.service import Service
    from mlsr.index.sparse import SparseIndex
    from mlsr.progress import quiet_transformers

    check_k(args.k, MAX_SECTION_K)  # the library's rule, before anything loads
    text = read_article(args.file)
    quiet_transformers(getattr(args, "verbose", False))
    index = SparseIndex.load(args.index)  # before the models: a missing index fails fast
    models_from_index(args, index.models, str(args.index))  # the index's own models, unless flags say others
    service = Service.load(index, backbone=args.backbone, head=args.head, tokenizer=args.tokenizer,
                           device=args.device, backend=args.backend, milvus_uri=args.milvus_uri,
                           collection=args.collection)
    try:
        result = service.suggest_article(text, args.k, title=args.title, split=args.split, mode=args.mode,
                                         unique=not args.allow_repeats, collapse=not args.allow_repeats)
    finally:
        service.backend.close()
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    elif args.markdown:
        folder = Path(args.markdown).resolve().parent

        def link(hit):  # a URL, or a local photo linked relative to the Markdown file
            file = service.local_image(hit)
            return hit.source or (os.path.relpath(file, folder) if file is not None else None)

        atomic_write_bytes(args.markdown, result.markdown(link=link).encode("utf-8"))
        shown = sum(1 for section in result.sections if section.hits)
        print(f"wrote {args.markdown}: {len(result.sections)} sections, {shown} with an image", file=sys.stderr)
    else:
        for number, section in enumerate(result.sections, 1):
            print(f"{number}. {section.section.title or '(untitled)'}\n   query: {section.query[:100]}")
            if not section.hits:
                print("   (no image)")
            for hit, terms in zip(section.hits, section.terms):
                shared = ", ".join(f"{term} {value:.3f}" for term, value in terms[:5]) or "(no shared terms)"
                print(f"   {hit.rank:>2}. {hit.score:8.4f}  {hit.id}  {hit.source or ''}\n       {shared}")
    return 0


def read_article(file: str) -> str:
    """The article's text: a UTF-8 file, or standard input for `-`."""
    if file == "-":
        return sys.stdin.read()
    path = existing_file(file, "the article")
    try:
        return readable_bytes(path, "the article").decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{file} is not UTF-8 text; save the article as UTF-8.") from None
