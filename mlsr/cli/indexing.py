"""Commands that make or move index folders: `build-index`, `import-dense`, `prepare`, `export`, `push-index`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mlsr.cli.args import (INDEX_HELP, add_milvus_arguments, add_model_arguments, add_overwrite_argument,
                           encoder_from_args, env,
                           head_encoder_from_args)
from mlsr.cli.wiki import add_wiki_arguments
from mlsr.progress import print_pictures, print_skipped, progress_bar
from mlsr.settings import PRECISIONS
from mlsr.settings import DEFAULT_DATASET, DEFAULT_INDEX, DEFAULT_SPLIT, DOCUMENTS


def add_commands(commands) -> None:
    build = commands.add_parser("build-index", help="encode a folder of images (and captions) into an index",
                                description="Encode a folder of images, optionally with captions, or a wiki's files"
                                            " (a Wikimedia Commons category or a list of File: titles, with their"
                                            " credits and licences), into an index folder.")
    sources = build.add_mutually_exclusive_group(required=True)
    sources.add_argument("--images", type=Path,
                         help="folder of images (searched recursively; links to files inside it are followed, links"
                              " leaving it or to folders are skipped and listed)")
    add_wiki_arguments(build, sources)
    build.add_argument("--captions", type=Path, help="CSV (columns file,caption) or JSONL ({file, caption}) file")
    build.add_argument("--doc", choices=DOCUMENTS, default="image",
                       help="document representation (the seed paper's three runs; image+caption sums both vectors)")
    build.add_argument("--dense", action="store_true", help="also keep the dense image vectors for FAISS comparison")
    build.add_argument("--strict", action="store_true",
                       help="stop at the first image it cannot take (unreadable, or a link not followed) instead of"
                            " skipping it")
    build.add_argument("--out", required=True, type=Path,
                       help="index folder to write (written atomically; an interrupted build resumes on re-run)")
    add_overwrite_argument(build, "an index")
    _add_precision_argument(build)
    add_model_arguments(build)
    build.set_defaults(run=_build_index_command)

    dataset_default = env("DATASET", DEFAULT_DATASET)
    imp = commands.add_parser(
        "import-dense", help="index a split of a published dense dataset (no image encoder needed)",
        description="Apply the sparse head to the published image vectors of one Karpathy split"
                    " (e.g. lsr42/mscoco-blip-dense, lsr42/flickr30k-blip-dense) and write an index folder.")
    imp.add_argument("--dataset", default=dataset_default,
                     help="dense dataset: Hub id or folder (env MLSR_DATASET; default %(default)s)")
    imp.add_argument("--split", default=DEFAULT_SPLIT, help="Karpathy split: train, val, test, restval (default"
                                                            " %(default)s)")
    imp.add_argument("--out", required=True, type=Path, help="index folder to write")
    add_overwrite_argument(imp, "an index")
    imp.add_argument("--image-root", type=Path,
                     help="folder holding the images (e.g. Flickr30k's flickr30k-images/): items point at its files;"
                          " default: COCO URLs for COCO, none (a placeholder in the app) otherwise")
    _add_precision_argument(imp)
    add_model_arguments(imp, backbone=False)
    imp.set_defaults(run=_import_dense_command)

    prep = commands.add_parser(
        "prepare", help="build the app's default gallery from published vectors (once)",
        description="Build the app's index from a published dense dataset unless the folder exists already.")
    prep.add_argument("--index", type=Path, default=Path(env("INDEX", DEFAULT_INDEX)),
                      help="index folder (env MLSR_INDEX; default %(default)s)")
    prep.add_argument("--dataset", default=dataset_default, help="env MLSR_DATASET; default %(default)s")
    prep.add_argument("--split", default=DEFAULT_SPLIT, help="default %(default)s")
    _add_precision_argument(prep)
    add_model_arguments(prep, backbone=False)
    prep.set_defaults(run=prepare_command)

    from mlsr.backends.milvus import DEFAULT_COLLECTION, EXPORT_BATCH, SPARSE_INDEX_TYPES

    export = commands.add_parser(
        "export", help="load an index folder into Milvus (a Milvus Lite .db file or a cluster)",
        description="Bulk-load an index folder's items, sparse and dense vectors into a Milvus collection, in"
                    " batches. Re-running resumes an interrupted export and never duplicates rows; after `add` or"
                    " `remove`, it sends only the rows that changed and deletes the removed ones.")
    export.add_argument("--index", required=True, help=INDEX_HELP)
    add_milvus_arguments(export, DEFAULT_COLLECTION)
    export.add_argument("--batch-size", type=int, default=EXPORT_BATCH, help="rows per request (default %(default)s)")
    export.add_argument("--sparse-index", choices=SPARSE_INDEX_TYPES, default=SPARSE_INDEX_TYPES[0],
                        help="Milvus index of the sparse field (Milvus Lite has only %(default)s)")
    export.add_argument("--replace", action="store_true", help="drop the collection first if it holds another index")
    export.set_defaults(run=_export_command)

    push = commands.add_parser(
        "push-index", help="publish an index folder as a dataset repo on the Hugging Face Hub",
        description="Upload an index folder (verified first) with a generated dataset card to a Hub dataset repo, in"
                    " one commit; re-running after an interruption sends only what the Hub lacks. Then any --index"
                    " (search, evaluate, export, the app) takes REPO_ID.")
    push.add_argument("folder", type=Path, metavar="DIR", help="index folder")
    push.add_argument("repo_id", metavar="REPO_ID", help="dataset repo OWNER/NAME (created when missing)")
    push.add_argument("--private", action="store_true", help="make the repo private (also an existing one)")
    push.set_defaults(run=_push_index_command)


def _add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """--precision: how document weights are stored (the keys of mlsr.settings.PRECISIONS)."""
    parser.add_argument("--precision", choices=list(PRECISIONS), default="float16",
                        help="how document weights are stored (index format 3; bytes per posting before dense"
                             " columns and offsets): float16 (default) 4; uint8 ~3.1 (8-bit impacts with a scale per"
                             " 32 postings; opt-in; needs weights >= 0); float32 6 (the head's weights exactly, as"
                             " evaluation does). Search is exact over the stored weights")


def _build_index_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mlsr.data.captions import read_captions, scan_images
    from mlsr.errors import InputError
    from mlsr.index.folder import check_new_target
    from mlsr.ingest.images import build_index

    from mlsr.cli.wiki import build_wiki_command, wiki_selection

    selection = wiki_selection(args)
    if selection is not None:
        if args.captions or args.strict:
            raise InputError("--captions and --strict are for --images; a wiki's files bring their descriptions.")
        return build_wiki_command(args, selection)
    check_new_target(args.out, args.overwrite, "--overwrite")
    captions = read_captions(args.captions) if args.captions else None
    total = len(scan_images(args.images, strict=args.strict).paths)  # its refusals come before the models load
    encoder = encoder_from_args(args)
    with tqdm(total=total, unit="img", desc="encoding images") as bar:
        index, report = build_index(encoder, args.images, out=args.out, captions=captions, documents=args.doc,
                                    dense=args.dense, strict=args.strict, precision=args.precision,
                                    progress=bar.update, overwrite=args.overwrite)
    if report.resumed:
        print(f"resumed an interrupted build: {report.resumed} batches were already encoded")
    print(f"indexed {report.indexed} images into {args.out} in {report.seconds:.1f} s"
          f" ({args.doc} documents, {index.nnz / max(len(index), 1):.0f} terms per document on average)")
    print_skipped(report.skipped)
    return 0


def _import_dense_command(args: argparse.Namespace) -> int:
    from mlsr.index.folder import check_new_target
    from mlsr.ingest.published import import_dense

    check_new_target(args.out, args.overwrite, "--overwrite")  # before the models load
    encoder = head_encoder_from_args(args)
    bar, set_total = progress_bar("sparsifying image vectors")
    pictures, set_pictures = progress_bar("thumbnails", unit="img")
    with bar, pictures:
        index, report = import_dense(encoder, args.dataset, args.out, split=args.split, image_root=args.image_root,
                                     precision=args.precision, progress=bar.update, total=set_total,
                                     picture_progress=pictures.update, picture_total=set_pictures,
                                     overwrite=args.overwrite)
    print(f"indexed {report.images} {report.split} images of {args.dataset} into {args.out} in {report.seconds:.1f} s"
          f" ({index.nnz / max(len(index), 1):.0f} terms per image on average; images: {report.image_source})")
    if report.missing_images:
        print(f"{len(report.missing_images)} images not found under --image-root (shown as a placeholder):"
              f" {', '.join(report.missing_images[:10])}", file=sys.stderr)
    print_pictures(report.pictures_made, report.no_picture, report.fetch_seconds)
    return 0


def prepare_command(args: argparse.Namespace) -> int:
    from mlsr.ingest.published import ensure_index

    bar, set_total = progress_bar(f"building {args.index}")
    pictures, set_pictures = progress_bar("thumbnails", unit="img")
    with bar, pictures:
        report = ensure_index(args.index, dataset=args.dataset, split=args.split, head=args.head,
                             tokenizer=args.tokenizer, device=args.device, precision=args.precision,
                             progress=bar.update, total=set_total, picture_progress=pictures.update,
                             picture_total=set_pictures)
    if report is None:
        print(f"{args.index} exists; reusing it (delete the folder to rebuild)")
        return 0
    print(f"built {args.index} from {args.dataset} ({args.split}) in {report.seconds:.1f} s")
    print_pictures(report.pictures_made, report.no_picture, report.fetch_seconds)
    return 0


def _export_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mlsr.backends.milvus import connect
    from mlsr.backends.milvus_export import export_index
    from mlsr.errors import InputError
    from mlsr.index.sparse import SparseIndex

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
    deleted = f", {report.deleted} deleted (removed from the index)" if report.deleted else ""
    print(f"exported {report.count} rows of {args.index} to collection {report.collection!r} at {args.milvus_uri}"
          f" in {report.seconds:.1f} s: {report.written} written{resumed}{deleted}")
    return 0


def _push_index_command(args: argparse.Namespace) -> int:
    from mlsr.index.publish import push_index

    report = push_index(args.folder, args.repo_id, private=args.private)
    pin = f", or --index {report.repo_id}@{report.commit} for exactly this version" if report.commit else ""
    print(f"pushed {args.folder} ({report.files} files, {report.bytes / 1e6:,.1f} MB) to {report.url};"
          f" use it with --index {report.repo_id}{pin}")
    if report.local_images:
        print(f"note: {report.local_images:,} items point at image files on this machine and have no thumbnail in the"
              " index; the app shows a placeholder for them (`python -m mlsr thumbnails --index DIR` adds them)",
              file=sys.stderr)
    if report.local_models:
        print(f"note: the index names a local folder as its {' and '.join(report.local_models)}; publish that model"
              " too, or nobody else can search this index", file=sys.stderr)
    return 0
