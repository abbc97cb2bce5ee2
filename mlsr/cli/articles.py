"""`suggest-article`: images for every section of an article file, as text, JSON or an illustrated Markdown file."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mlsr.articles.sections import SPLITS
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
    output.add_argument("--wikitext", metavar="OUT", type=Path,
                        help="write the article as wikitext, [[File:...|thumb|caption — credit]] under each heading")
    output.add_argument("--html", metavar="OUT", type=Path,
                        help="write the article as HTML, a <figure> with caption and credit in each section")
    parser.add_argument("--min-score", type=float, default=0.0,
                        help="a section whose best image scores below this (the score shown on each result) gets"
                             " no image, and says so (default %(default)s: every match counts)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT file")
    parser.add_argument("--title", help="the page title (default: the article's # heading, if any)")
    parser.add_argument("--split", choices=SPLITS, default="auto",
                        help="where sections begin (default %(default)s: headings, else blank lines)")
    parser.add_argument("--mode", choices=QUERY_MODES, default="expand", help="query encoding (default %(default)s)")
    parser.add_argument("--allow-repeats", action="store_true",
                        help="let an image be suggested for several sections, and keep near-duplicates")
    add_model_arguments(parser, from_index=True)
    add_backend_arguments(parser)
    parser.set_defaults(run=_suggest_article_command)


def _suggest_article_command(args: argparse.Namespace) -> int:
    from mlsr._files import atomic_write_bytes
    from mlsr.serving.service import Service
    from mlsr.index.sparse import SparseIndex
    from mlsr.progress import quiet_transformers

    check_k(args.k, MAX_SECTION_K)  # the library's rule, before anything loads
    text = _read_article(args.file)
    quiet_transformers(getattr(args, "verbose", False))
    index = SparseIndex.load(args.index)  # before the models: a missing index fails fast
    models_from_index(args, index.models, str(args.index))  # the index's own models, unless flags say others
    service = Service.load(index, backbone=args.backbone, head=args.head, tokenizer=args.tokenizer,
                           device=args.device, backend=args.backend, milvus_uri=args.milvus_uri,
                           collection=args.collection)
    try:
        result = service.suggest_article(text, args.k, title=args.title, split=args.split, mode=args.mode,
                                         unique=not args.allow_repeats, collapse=not args.allow_repeats,
                                         min_score=args.min_score)
    finally:
        if service.backend is not None:  # Service sets it on construction
            service.backend.close()
    if args.json:
        print(json.dumps(result.to_json(), ensure_ascii=False))
    elif args.markdown or args.wikitext or args.html:
        form, out = next((form, path) for form, path in (("markdown", args.markdown), ("wikitext", args.wikitext),
                                                         ("html", args.html)) if path)
        folder = Path(out).resolve().parent

        def link(hit):  # the picture's URL (a wiki's thumbnail, not its page), or a local photo relative to OUT
            file = service.local_image(hit)
            url = service.index.items[hit.row].get("image")
            url = url if isinstance(url, str) and url.startswith(("http://", "https://")) else hit.source
            return url or (os.path.relpath(file, folder) if file is not None else None)

        if Path(out).exists() and not args.overwrite:
            raise InputError(f"{out} exists; nothing was written. Say --overwrite to replace it.")
        atomic_write_bytes(out, result.export(form, link=link).encode("utf-8"))
        shown = sum(1 for section in result.sections if section.hits)
        print(f"wrote {out}: {len(result.sections)} sections, {shown} with an image", file=sys.stderr)
    else:
        for number, section in enumerate(result.sections, 1):
            print(f"{number}. {section.section.title or '(untitled)'}\n   query: {section.query[:100]}")
            if not section.hits:
                print(f"   ({section.no_match or 'no image'})")
            for hit, terms in zip(section.hits, section.terms):
                shared = ", ".join(f"{term} {value:.3f}" for term, value in terms[:5]) or "(no shared terms)"
                print(f"   {hit.rank:>2}. {hit.score:8.4f}  {hit.id}  {hit.source or ''}\n       {shared}")
                if hit.credit:
                    print(f"       credit: {hit.credit}")
    return 0


def _read_article(file: str) -> str:
    """The article's text: a UTF-8 file, or standard input for `-`."""
    if file == "-":
        return sys.stdin.read()
    path = existing_file(file, "the article")
    try:
        return readable_bytes(path, "the article").decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{file} is not UTF-8 text; save the article as UTF-8.") from None
