"""`search` (rank an index for text queries) and `terms` (the weighted terms of an image or a text)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mlsr.checks import check_depth, check_k, check_top_k
from mlsr.cli.args import (INDEX_HELP, add_backend_arguments, add_model_arguments, add_terms_argument,
                           encoder_from_args, models_from_index)
from mlsr.settings import ENCODE_MODES, HYBRID_DEPTH, QUERY_MODES, REFERENCE_HYBRID_DEPTH


def add_commands(commands) -> None:
    search = commands.add_parser("search", help="rank the index for one or more text queries",
                                 description="Rank an index for text queries and show the matched terms.")
    search.add_argument("queries", nargs="+", metavar="QUERY",
                        help="query text (several queries run as a batch; - reads one query from standard input)")
    search.add_argument("--index", required=True, help=INDEX_HELP)
    search.add_argument("--mode", choices=QUERY_MODES, default="expand", help="query encoding")
    search.add_argument("--hybrid-depth", type=int, default=HYBRID_DEPTH,
                        help="--mode hybrid: no_expand candidates re-scored by the expanded query (default %(default)s;"
                             f" the reference code re-scores {REFERENCE_HYBRID_DEPTH})")
    search.add_argument("-k", type=int, default=10, help="results per query (default %(default)s)")
    add_terms_argument(search, 5, "matched terms shown per result")
    search.add_argument("--json", action="store_true", help="print one JSON object per query")
    search.add_argument("--licenses", metavar="LIST",
                        help="only images under these licences: free, or a comma list such as CC0,CC-BY (items of a"
                             " wiki gallery record theirs; other items have none and are left out)")
    add_model_arguments(search, from_index=True)
    add_backend_arguments(search)
    search.set_defaults(run=_search_command)

    terms = commands.add_parser("terms", help="show the weighted terms of an image or a text",
                                description="Print the top weighted vocabulary terms of an image or a text.")
    source = terms.add_mutually_exclusive_group(required=True)
    source.add_argument("image", nargs="?", type=Path, help="image file")
    source.add_argument("--text", help="text to encode instead of an image (- reads it from standard input)")
    terms.add_argument("--mode", choices=ENCODE_MODES, default="expand", help="text encoding")
    add_terms_argument(terms, 20, "terms to print")
    terms.add_argument("--json", action="store_true", help="print JSON")
    add_model_arguments(terms)
    terms.set_defaults(run=_terms_command)


def _search_command(args: argparse.Namespace) -> int:
    from mlsr.backends import open_backend
    from mlsr.index.modes import NO_HIT
    from mlsr.index.sparse import SparseIndex
    from mlsr.ingest.licences import parse_licences
    from mlsr.retrieval import search_texts
    from mlsr.text import check_text

    check_k(args.k)  # the library's rules, checked before anything loads
    check_top_k(args.top_k)
    check_depth(args.hybrid_depth)
    licences = parse_licences(args.licenses) if args.licenses else None
    texts = [check_text(_stdin_if_dash(query)) for query in args.queries]  # an empty text fails in a second, too
    index = SparseIndex.load(args.index)  # before the models: a missing index fails fast
    models_from_index(args, index.models, str(args.index))  # the index's own models, unless flags say others
    backend = open_backend(index, args.backend, args.milvus_uri, args.collection)
    encoder = encoder_from_args(args)  # search_texts refuses other models than the index's, before encoding
    try:
        results, queries = search_texts(encoder, backend, texts, k=args.k, mode=args.mode, depth=args.hybrid_depth,
                                        licences=licences)
    finally:
        backend.close()
    for q, text in enumerate(texts):
        hits = []
        for rank, (score, row) in enumerate(zip(results.scores[q], results.indices[q]), 1):
            if row == NO_HIT:  # fewer images than k share a term with this query
                break
            item = index.items[row]
            matched = index.explain(queries[q], row, top_k=args.top_k)
            hits.append({"rank": rank, "score": round(float(score), 4), "id": item["id"],
                         "image": _image_here(item.get("image"), index.path),
                         "terms": [[m.term, round(m.contribution, 4)] for m in matched]})
            if item.get("credit"):
                hits[-1].update({key: item.get(key) for key in ("credit", "license", "license_url", "source")})
        if args.json:
            print(json.dumps({"query": text, "mode": args.mode, "results": hits}, ensure_ascii=False))
            continue
        print(f"query: {text}")
        if not hits:
            print("   (no indexed image shares a term with this query; try --mode expand)")
        for hit in hits:
            terms = ", ".join(f"{term} {value:.3f}" for term, value in hit["terms"]) or "(no shared terms)"
            print(f"{hit['rank']:>3}. {hit['score']:8.4f}  {hit['id']}  {hit['image']}\n       {terms}")
            if hit.get("credit"):
                print(f"       credit: {hit['credit']}")
    return 0


def _image_here(image: object, index_dir) -> object:
    """An item's image as a user would paste it here: a URL as is, a file relative to the current folder (items
    record files relative to the index folder)."""
    if not isinstance(image, str) or "://" in image or index_dir is None:
        return image
    return os.path.relpath(os.path.normpath(os.path.join(os.path.abspath(index_dir), image)))


def _terms_command(args: argparse.Namespace) -> int:
    from mlsr.checks import existing_file

    check_top_k(args.top_k)
    if args.text is None:
        existing_file(args.image, "image")  # before the models load
    encoder = encoder_from_args(args)
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
