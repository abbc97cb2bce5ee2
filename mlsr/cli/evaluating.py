"""Evaluation commands: `evaluate` (an index against a split's captions or text queries) and `atomic`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mlsr.cli.args import (INDEX_HELP, add_backend_arguments, add_model_arguments, encoder_from_args, env,
                           head_encoder_from_args)
from mlsr.cli.progress import progress_bar
from mlsr.data.atomic_trec import IMAGES, QRELS, TEXTS
from mlsr.evaluation.recipes import RECIPES
from mlsr.evaluation.runs import DEFAULT_MEASURES, RUNS
from mlsr.settings import DEFAULT_SPLIT, DOCUMENTS

logger = logging.getLogger("mlsr")


def add_commands(commands) -> None:
    ev = commands.add_parser(
        "evaluate", help="text-to-image R@k, MRR@10, NDCG@k, MAP@k of an index (sparse and dense runs)",
        description="Evaluate an index with the queries of a dense dataset's split (published vectors; qrels ="
                    " each caption's image) or with text queries and TREC qrels. Writes TREC run files.")
    ev.add_argument("--recipe", choices=sorted(RECIPES),
                    help="mscoco-test: the 25k test captions against the 5k test images of lsr42/mscoco-blip-dense"
                         " (--index defaults to index/mscoco-test, built when missing); prints the published numbers")
    ev.add_argument("--index", help=INDEX_HELP)
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
    ev.set_defaults(run=evaluate_command)

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
    at.add_argument("--doc", default=",".join(DOCUMENTS), help="comma-separated (default %(default)s)")
    at.add_argument("--modes", default="no_expand,expand",
                    help="query modes (default %(default)s; no_expand is the seed's MLP query)")
    at.add_argument("--runs-dir", type=Path, default=Path("runs/atomic"), help="default %(default)s")
    at.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_model_arguments(at)
    at.set_defaults(run=atomic_command)


def comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def apply_recipe(args: argparse.Namespace) -> dict:
    """Fill in a recipe's dataset, split and index (a missing recipe index is built first); its published rows."""
    if args.recipe is None:
        return {}
    recipe = RECIPES[args.recipe]
    args.dataset = args.dataset or env("DATASET", recipe.dataset)
    args.split = recipe.split
    from mlsr.index.hub import is_hub_index

    args.index = args.index or Path(recipe.index)  # a Path: the recipe's index is a folder, never a Hub id
    if not Path(args.index).exists() and not is_hub_index(args.index):
        from mlsr.ingest.published import ensure_index

        bar, set_total = progress_bar(f"building {args.index}")
        with bar:
            ensure_index(args.index, dataset=args.dataset, split=recipe.split, head=args.head,
                         tokenizer=args.tokenizer, device=args.device, progress=bar.update, total=set_total)
    return recipe.published


def evaluate_command(args: argparse.Namespace) -> int:
    from mlsr.backends import open_backend
    from mlsr.data.trec import read_qrels
    from mlsr.errors import InputError
    from mlsr.evaluation.queries import dataset_queries, text_queries
    from mlsr.evaluation.runs import evaluate_index
    from mlsr.evaluation.tables import format_evaluation
    from mlsr.index.hub import parse_hub_id
    from mlsr.index.sparse import SparseIndex

    published = apply_recipe(args)
    if args.index is None:
        raise InputError("give --index DIR (or --recipe mscoco-test).")
    if (args.dataset is None) == (args.queries is None):
        raise InputError("give the queries either as --dataset ID_OR_DIR (with --split) or as --queries FILE.")
    if args.queries is not None and args.qrels is None:
        raise InputError("--queries needs --qrels FILE (TREC format).")
    runs, measures = comma_list(args.runs), comma_list(args.measures)
    index = SparseIndex.load(args.index)
    backend = open_backend(index, args.backend, args.milvus_uri, args.collection)
    if args.dataset is not None:
        encoder = head_encoder_from_args(args)
        index.check_models(encoder.models())
        bar, set_total = progress_bar("sparsifying query vectors")
        with bar:
            queries, qrels = dataset_queries(encoder, args.dataset, args.split, no_expand=any(
                r in ("no_expand", "hybrid") for r in runs), progress=bar.update)
    else:
        encoder = encoder_from_args(args)
        index.check_models(encoder.models())
        queries, qrels = text_queries(encoder, args.queries), None
    if args.qrels is not None:
        qrels = read_qrels(args.qrels)
    hub = parse_hub_id(args.index)
    runs_dir = args.runs_dir or Path("runs") / (hub.repo_id.split("/")[1] if hub else Path(args.index).name)
    try:
        evaluation = evaluate_index(index, queries, qrels, backend=backend, runs=runs, measures=measures,
                                    runs_dir=runs_dir, published=published,
                                    progress=lambda run: logger.info("run %s", run))
    finally:
        backend.close()
    if args.json:
        print(json.dumps(evaluation.to_json(), indent=2))
    else:
        print(format_evaluation(evaluation))
        print(f"run files, qrels.trec and metrics.json in {runs_dir}")
    return 0


def atomic_command(args: argparse.Namespace) -> int:
    from mlsr.data.atomic_trec import load_collection
    from mlsr.evaluation.atomic_task import format_tables, run_atomic

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    collection = load_collection(texts=args.texts, images=args.images, qrels=args.qrels, split=args.split,
                                 limit=args.limit, distractors=args.distractors, seed=args.seed,
                                 distractor_rate=args.distractor_rate,
                                 max_image_shards=args.max_image_shards, progress=say)
    encoder = encoder_from_args(args)
    report = run_atomic(encoder, collection, modes=comma_list(args.modes), documents=comma_list(args.doc),
                        runs_dir=args.runs_dir, progress=say)
    if args.json:
        print(json.dumps({doc: e.to_json() for doc, e in report.evaluations.items()}, indent=2))
    else:
        print(format_tables(report))
        print(f"run files and qrels.trec in {args.runs_dir}")
    return 0
