"""`build-index --commons` / `--commons-files` and `add` the same: galleries from a wiki's files (Wikimedia Commons
by default), through its Action API, with the credit each licence requires."""

from __future__ import annotations

import argparse
import sys

from mlsr.cli.args import env


def add_wiki_arguments(parser: argparse.ArgumentParser, sources) -> None:
    """--commons/--commons-files (into the `sources` group, beside --images) and the wiki options."""
    sources.add_argument("--commons", action="append", metavar="CATEGORY",
                         help="a wiki category, e.g. \"Category:Water buffalo\" (repeat for several): its files,"
                              " through the wiki's API")
    sources.add_argument("--commons-files", metavar="FILE",
                         help="text file with one File:Name.jpg title a line: those files, through the wiki's API")
    group = parser.add_argument_group("wiki galleries (--commons, --commons-files)")
    group.add_argument("--depth", type=int, default=0, help="subcategory levels to follow (default %(default)s)")
    group.add_argument("--limit", type=int, help="at most this many files (default: all)")
    group.add_argument("--licenses", default="free",
                       help="free (default: CC0, PD, CC-BY, CC-BY-SA, GFDL, FAL), any (non-free files too), or a"
                            " comma list such as CC0,CC-BY")
    group.add_argument("--commons-api", default=None,
                       help="the wiki's api.php URL (env MLSR_COMMONS_API; default Wikimedia Commons')")
    group.add_argument("--contact", default=env("COMMONS_CONTACT"),
                       help="your e-mail or web page, sent in the User-Agent as the wiki's etiquette asks"
                            " (env MLSR_COMMONS_CONTACT)")


def wiki_selection(args: argparse.Namespace):
    """The WikiSelection the arguments name, or None when they name no wiki source."""
    from mlsr.ingest.commons import WikiSelection, read_titles_file
    from mlsr.ingest.licences import parse_licences

    if not getattr(args, "commons", None) and not getattr(args, "commons_files", None):
        return None
    files = tuple(read_titles_file(args.commons_files)) if args.commons_files else ()
    return WikiSelection(categories=tuple(args.commons or ()), files=files, depth=args.depth, limit=args.limit,
                         licences=parse_licences(args.licenses))


def _stage_bars():
    """A tqdm bar per step (listing, information, thumbnails, encoding), and a function closing them."""
    from tqdm import tqdm

    bars = []

    def stage(desc: str, total: int):
        bars.append(tqdm(total=total or None, desc=desc, unit="file"))
        return bars[-1].update

    def close() -> None:
        for bar in bars:
            bar.close()

    return stage, close


def build_wiki_command(args: argparse.Namespace, selection) -> int:
    from mlsr.cli.args import encoder_from_args
    from mlsr.index.folder import check_new_target
    from mlsr.ingest.commons import build_wiki_index, wiki_api

    check_new_target(args.out, args.overwrite, "--overwrite")
    api = wiki_api(args.commons_api, args.contact)
    _contact_note(args)
    encoder = encoder_from_args(args)
    stage, close = _stage_bars()
    try:
        index, report = build_wiki_index(encoder, selection, out=args.out, api=api, documents=args.doc,
                                         dense=args.dense, precision=args.precision, stages=stage,
                                         overwrite=args.overwrite)
    finally:
        close()
    print(f"indexed {report.indexed} of {report.listed} files from {api.url} into {args.out}"
          f" ({args.doc} documents; {report.requests} API requests, {report.waited:.1f} s waited as asked;"
          f" steps: {_steps(report.seconds)})")
    _print_wiki_skipped(report)
    return 0


def add_wiki_command(args: argparse.Namespace, index, selection) -> int:
    from mlsr.cli.args import encoder_from_args, models_from_index
    from mlsr.ingest.commons import add_wiki_files, wiki_api

    api = wiki_api(args.commons_api, args.contact)
    _contact_note(args)
    models_from_index(args, index.models, str(args.index))
    encoder = encoder_from_args(args)
    index.check_models(encoder.models())
    stage, close = _stage_bars()
    try:
        changed, report = add_wiki_files(encoder, index, selection, api=api, replace=args.replace, stages=stage)
    finally:
        close()
    print(f"added {report.indexed} of {report.listed} files from {api.url} to {args.index}: {len(changed)} items"
          f" now ({report.requests} API requests; steps: {_steps(report.seconds)})")
    _print_wiki_skipped(report)
    return 0


def _print_wiki_skipped(report, shown: int = 30) -> None:
    """The files not taken and why, on standard error."""
    if report.resumed or report.pictures_resumed:
        print(f"resumed an interrupted run: {report.resumed} API answers and {report.pictures_resumed} thumbnails"
              " were kept", file=sys.stderr)
    if not report.skipped:
        return
    print(f"skipped {len(report.skipped)} files:", file=sys.stderr)
    for title, reason in report.skipped[:shown]:
        print(f"  {title}: {reason}", file=sys.stderr)
    if len(report.skipped) > shown:
        print(f"  ... and {len(report.skipped) - shown} more", file=sys.stderr)


def _contact_note(args: argparse.Namespace) -> None:
    if not args.contact:
        print("note: no --contact (env MLSR_COMMONS_CONTACT): Wikimedia asks every client for an e-mail or page in"
              " its User-Agent, and may refuse clients without one", file=sys.stderr)


def _steps(seconds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
