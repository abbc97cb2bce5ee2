"""Commands that change an index folder in place: `add` (encode new images and append them), `remove`, and
`thumbnails` (give items without a picture one)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mlsr.cli.args import add_model_arguments
from mlsr.cli.wiki import add_wiki_arguments
from mlsr.progress import print_skipped
from mlsr.settings import DOCUMENTS

def add_commands(commands) -> None:
    add = commands.add_parser(
        "add", help="encode new images and append them to an index folder",
        description="Encode only the images of a folder (with the index's own models and document kind) and append"
                    " them to an index folder, which is replaced atomically. Ids are the images' paths under"
                    " --images; an id already in the index is refused unless --replace.")
    add.add_argument("--index", required=True, type=Path, help="index folder to change")
    sources = add.add_mutually_exclusive_group(required=True)
    sources.add_argument("--images", type=Path, help="folder of new images (searched recursively)")
    add_wiki_arguments(add, sources)
    add.add_argument("--captions", type=Path, help="CSV (file,caption) or JSONL file: needed for caption documents")
    add.add_argument("--doc", choices=DOCUMENTS,
                     help="document representation: must be the index's own (default: the index's)")
    add.add_argument("--replace", action="store_true", help="update images whose ids the index holds already")
    add.add_argument("--strict", action="store_true", help="stop at the first image it cannot take")
    add_model_arguments(add, from_index=True)
    add.set_defaults(run=_add_command)

    remove = commands.add_parser(
        "remove", help="remove items from an index folder by id",
        description="Remove items by id from an index folder, which is replaced atomically. An id the index does not"
                    " hold is refused and nothing is removed.")
    remove.add_argument("--index", required=True, type=Path, help="index folder to change")
    which = remove.add_mutually_exclusive_group(required=True)
    which.add_argument("--ids", nargs="+", metavar="ID", help="ids to remove")
    which.add_argument("--ids-file", type=Path, help="text file with one id per line (blank lines ignored)")
    remove.set_defaults(run=_remove_command)

    thumbs = commands.add_parser(
        "thumbnails", help="give every item of an index folder without a thumbnail one",
        description="Make the thumbnail of every item that has none (an index built before indexes kept their"
                    " pictures, or pictures that could not be fetched before) from its image file or its URL on a"
                    " dataset's image host, fetched by this machine (HTTP_PROXY / HTTPS_PROXY apply). The folder"
                    " is replaced atomically; an interrupted run resumes.")
    thumbs.add_argument("--index", required=True, type=Path, help="index folder to change")
    thumbs.set_defaults(run=_thumbnails_command)


def _add_command(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mlsr.cli.args import encoder_from_args, models_from_index
    from mlsr.data.captions import read_captions
    from mlsr.errors import InputError
    from mlsr.index.sparse import SparseIndex
    from mlsr.ingest.images import add_images, plan_add

    index = SparseIndex.load(_local_folder(args.index))  # refusals before the models load
    documents = index.info.get("documents", "image")
    if args.doc and args.doc != documents:
        raise InputError(f"{args.index} holds {documents!r} documents; --doc {args.doc} would mix two kinds in one"
                         " index (leave --doc out, or build another index).")
    from mlsr.cli.wiki import add_wiki_command, wiki_selection

    selection = wiki_selection(args)
    if selection is not None:
        if args.captions or args.strict:
            raise InputError("--captions and --strict are for --images; a wiki's files bring their descriptions.")
        return add_wiki_command(args, index, selection)
    captions = read_captions(args.captions) if args.captions else None
    plan = plan_add(index, args.images, strict=args.strict, replace=args.replace)
    models_from_index(args, index.models, str(args.index))  # a flag, else the index's own model, else MLSR_*/default
    encoder = encoder_from_args(args)
    index.check_models(encoder.models())  # a mismatch is named before any encoding
    with tqdm(total=plan.images, unit="img", desc="encoding new images") as bar:
        changed, report = add_images(encoder, index, args.images, captions=captions, strict=args.strict,
                                     replace=args.replace, progress=bar.update, plan=plan)
    updated = f" ({len(plan.taken)} replaced)" if plan.taken else ""
    print(f"added {report.indexed} images to {args.index}{updated}: {len(changed)} items now,"
          f" in {report.seconds:.1f} s")
    print_skipped(report.skipped)
    return 0


def _remove_command(args: argparse.Namespace) -> int:
    from mlsr.checks import read_text_lines
    from mlsr.index.sparse import SparseIndex

    ids = args.ids if args.ids is not None else read_text_lines(args.ids_file, "--ids-file")
    index = SparseIndex.load(_local_folder(args.index))
    changed = index.remove(ids)
    changed.save(args.index)
    print(f"removed {len(index) - len(changed)} items from {args.index}: {len(changed)} items now")
    return 0


def _local_folder(index: Path) -> Path:
    """`index` unless it names a Hub index (which cannot be changed in place): then one line saying what to do."""
    from mlsr.errors import InputError
    from mlsr.index.hub import is_hub_index

    if not index.exists() and is_hub_index(str(index)):
        raise InputError(f"{index} is not a folder here; add and remove change a local index folder. For a Hub"
                         f" index: `huggingface-cli download --repo-type dataset {index} --local-dir DIR`, change"
                         f" DIR, then `python -m mlsr push-index DIR {index}`.")
    return index


def _thumbnails_command(args: argparse.Namespace) -> int:
    from mlsr.progress import print_pictures, progress_bar
    from mlsr.ingest.pictures import fill_thumbnails

    bar, set_total = progress_bar("thumbnails", unit="img")
    with bar:
        index, report = fill_thumbnails(_local_folder(args.index), progress=bar.update, total=set_total)
    have = index.thumbnails.count if index.thumbnails is not None else 0
    print(f"{args.index}: {have} of {len(index)} items have a thumbnail")
    print_pictures(report.made, report.failed, report.seconds)
    return 0
