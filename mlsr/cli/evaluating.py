"""Evaluation commands: `evaluate` (an index against a split's captions or text queries), `atomic`, and `verify`
(does this machine reproduce the published vectors and numbers)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mlsr.cli.args import (INDEX_HELP, add_backend_arguments, add_model_arguments, encoder_from_args, env,
                           head_encoder_from_args, models_from_index)
from mlsr.progress import progress_bar
from mlsr.data.atomic_trec import IMAGES, QRELS, TEXTS
from mlsr.evaluation.recipes import RECIPES
from mlsr.evaluation.runs import DEFAULT_MEASURES, DEFAULT_RUNS
from mlsr.settings import DEFAULT_DATASET, DEFAULT_INDEX, DEFAULT_SPLIT, DOCUMENTS, HYBRID_DEPTH, REFERENCE_HYBRID_DEPTH

logger = logging.getLogger("mlsr")


def add_commands(commands) -> None:
    ev = commands.add_parser(
        "evaluate", help="text-to-image R@k, MRR@10, NDCG@k, MAP@k of an index (sparse and dense runs)",
        description="Evaluate an index with the queries of a dense dataset's split (published vectors; qrels ="
                    " each caption's image) or with text queries and TREC qrels. Writes TREC run files.")
    ev.add_argument("--recipe", choices=sorted(RECIPES),
                    help="mscoco-test: the 25k test captions against the 5k test images of lsr42/mscoco-blip-dense"
                         " (indexed in float32 from their published vectors); prints the published numbers")
    ev.add_argument("--index", help=f"{INDEX_HELP}; default with --dataset: the split's images, indexed in float32"
                                    " from their published vectors, in memory")
    ev.add_argument("--dataset", help="dense dataset (Hub id or folder) whose split's captions are the queries")
    ev.add_argument("--split", default=DEFAULT_SPLIT, help="split of --dataset (default %(default)s)")
    ev.add_argument("--queries", type=Path, help="text queries: 'qid<TAB>text' lines (or one text per line);"
                                                  " needs the backbone")
    ev.add_argument("--qrels", type=Path, help="TREC qrels file (qid 0 docid rel); docid = the index's item id")
    ev.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                    help="comma-separated runs (default %(default)s); hybrid@N re-scores N no_expand candidates,"
                         f" hybrid --hybrid-depth; hybrid@{REFERENCE_HYBRID_DEPTH} is the reference code's")
    ev.add_argument("--hybrid-depth", type=int, default=HYBRID_DEPTH,
                    help="no_expand candidates the hybrid run re-scores (default %(default)s)")
    ev.add_argument("--measures", default=",".join(DEFAULT_MEASURES), help="comma-separated (default %(default)s)")
    ev.add_argument("--runs-dir", type=Path, help="where the TREC run files, qrels.trec and metrics.json go"
                                                  " (default runs/<recipe, index folder name, or dataset-split>)")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON instead of the table")
    add_model_arguments(ev, from_index=True)
    add_backend_arguments(ev)
    ev.set_defaults(run=_evaluate_command)

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
    at.set_defaults(run=_atomic_command)

    ve = commands.add_parser(
        "verify", help="check that the models reproduce the published vectors and R@1 (needs the Hub, or folders)",
        description="Four checks, one line each with its number and PASS/FAIL: 1 text agreement (live caption vectors"
                    " vs the dataset's text_embs), 2 image agreement (the COCO photos in assets/images vs img_embs),"
                    " 3 the published example (image id 2 decodes to animals, boy, buffalo, ...), 4 retrieval R@1 on"
                    " the test split. Exit 0 only if all pass. The verdict is saved beside the app's index folder.")
    ve.add_argument("--dataset", default=env("DATASET", DEFAULT_DATASET),
                    help="published dense dataset, Hub id or folder (env MLSR_DATASET; default %(default)s)")
    ve.add_argument("--captions", type=int, default=200, help="test captions for the text check (default %(default)s)")
    ve.add_argument("--only", help="comma-separated subset of text,image,example,retrieval (default: all four), or"
                                   " int8 (the 8-bit text path's agreement with float32; run only when named)")
    ve.add_argument("--expect-r1", type=float,
                    help="the R@1 (%%) the retrieval check expects, +- 1.0 (default: the head's published figure,"
                         " 55.9 for the default head)")
    ve.add_argument("--json", action="store_true", help="print the verdict as JSON")
    add_model_arguments(ve)
    ve.set_defaults(run=_verify_command)


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _apply_recipe(args: argparse.Namespace) -> dict:
    """Fill in a recipe's dataset and split; return its published rows ({} without a recipe)."""
    if args.recipe is None:
        return {}
    recipe = RECIPES[args.recipe]
    args.dataset = args.dataset or env("DATASET", recipe.dataset)
    args.split = recipe.split
    return recipe.published


def _evaluate_command(args: argparse.Namespace) -> int:
    from mlsr.backends import open_backend
    from mlsr.data.trec import read_qrels
    from mlsr.errors import InputError
    from mlsr.evaluation.queries import dataset_queries, text_queries
    from mlsr.evaluation.runs import evaluate_index, parse_run
    from mlsr.evaluation.tables import format_evaluation
    from mlsr.index.hub import parse_hub_id
    from mlsr.index.sparse import SparseIndex

    published = _apply_recipe(args)
    if (args.dataset is None) == (args.queries is None):
        raise InputError("give the queries either as --dataset ID_OR_DIR (with --split) or as --queries FILE.")
    if args.queries is not None and (args.qrels is None or args.index is None):
        raise InputError("--queries needs --qrels FILE (TREC format) and --index DIR.")
    runs, measures = _comma_list(args.runs), _comma_list(args.measures)
    kinds = {parse_run(run, args.hybrid_depth)[0] for run in runs}  # a bad run name fails before any loading
    index = SparseIndex.load(args.index) if args.index is not None else None
    models_from_index(args, index.models if index is not None else None, str(args.index))  # flags win
    if args.dataset is not None:
        encoder = head_encoder_from_args(args)
        if index is None:
            index = _dataset_index(encoder, args)
        index.check_models(encoder.models())
        bar, set_total = progress_bar("sparsifying query vectors")
        with bar:
            queries, qrels = dataset_queries(encoder, args.dataset, args.split, no_expand=bool(
                kinds & {"no_expand", "hybrid"}), progress=bar.update)
    else:
        encoder = encoder_from_args(args)
        if index is None:  # --queries comes with --index (checked above)
            raise InputError("--queries needs --qrels FILE (TREC format) and --index DIR.")
        index.check_models(encoder.models())
        queries, qrels = text_queries(encoder, args.queries), None
    if index.precision != "float32":
        print(f"note: {args.index} stores {index.precision} weights; the metrics are exact over those rounded"
              " weights (build it with --precision float32, or leave --index out, for the head's own)", file=sys.stderr)
    if args.qrels is not None:
        qrels = read_qrels(args.qrels)
    if qrels is None:  # --queries comes with --qrels (checked above)
        raise InputError("--queries needs --qrels FILE (TREC format) and --index DIR.")
    hub = parse_hub_id(args.index) if args.index is not None else None
    name = args.recipe or (hub.repo_id.split("/")[1] if hub else Path(args.index).name if args.index is not None
                           else f"{Path(args.dataset).name}-{args.split}")
    runs_dir = args.runs_dir or Path("runs") / name
    backend = open_backend(index, args.backend, args.milvus_uri, args.collection)
    try:
        evaluation = evaluate_index(index, queries, qrels, backend=backend, runs=runs, measures=measures,
                                    runs_dir=runs_dir, published=published, hybrid_depth=args.hybrid_depth,
                                    progress=lambda run: logger.info("run %s", run))
    finally:
        backend.close()
    if args.json:
        print(json.dumps(evaluation.to_json(), indent=2))
    else:
        print(format_evaluation(evaluation))
        print(f"run files, qrels.trec and metrics.json in {runs_dir}")
    return 0


def _dataset_index(encoder, args: argparse.Namespace):
    """The float32 index of the images of `--dataset`'s `--split`, built in memory from their published vectors."""
    from mlsr.ingest.published import split_index

    bar, set_total = progress_bar(f"indexing the {args.split} images in float32")
    with bar:
        index, _ = split_index(encoder, args.dataset, split=args.split, precision="float32", progress=bar.update,
                               total=set_total)
    return index


def _atomic_command(args: argparse.Namespace) -> int:
    from mlsr.data.atomic_trec import load_collection
    from mlsr.evaluation.atomic_task import format_tables, run_atomic

    def say(message: str) -> None:
        print(message, file=sys.stderr)

    collection = load_collection(texts=args.texts, images=args.images, qrels=args.qrels, split=args.split,
                                 limit=args.limit, distractors=args.distractors, seed=args.seed,
                                 distractor_rate=args.distractor_rate,
                                 max_image_shards=args.max_image_shards, progress=say)
    encoder = encoder_from_args(args)
    report = run_atomic(encoder, collection, modes=_comma_list(args.modes), documents=_comma_list(args.doc),
                        runs_dir=args.runs_dir, progress=say)
    if args.json:
        print(json.dumps({doc: e.to_json() for doc, e in report.evaluations.items()}, indent=2))
    else:
        print(format_tables(report))
        print(f"run files and qrels.trec in {args.runs_dir}")
    return 0


def _verify_command(args: argparse.Namespace) -> int:
    from mlsr.progress import quiet_transformers
    from mlsr.evaluation.verify import format_verdict, parse_checks, save_verdict, verdict_path, verify

    quiet_transformers(args.verbose)
    verdict = verify(backbone=args.backbone, head=args.head, tokenizer=args.tokenizer, dataset=args.dataset,
                     captions=args.captions, only=parse_checks(args.only), expect_r1=args.expect_r1,
                     device=args.device, batch_size=args.batch_size,
                     progress=lambda message: logger.info("%s", message))
    saved = save_verdict(verdict, verdict_path(env("INDEX", DEFAULT_INDEX)))
    if args.json:
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        print(format_verdict(verdict))
        print(f"saved to {saved} (the app's About screen shows it)")
    return 0 if verdict.passed else 1
