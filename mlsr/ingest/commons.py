"""Galleries from a wiki's files (Wikimedia Commons by default): categories or a list of `File:` titles in, an
index out whose items carry the credit their licences require.

Steps, each resumable after an interruption: list the files (categories down to a depth, continuation
followed), ask their image information 50 at a time (each answer kept in `.<index>.commons/` beside the
index), fetch one thumbnail per file from the URL the API gave (`mlsr.ingest.pictures`, kept in
`.<index>.pictures/`), and encode those thumbnails (`mlsr.ingest.images.encode_folder`, batches kept in
`.<index>.partial/`). Files that are not images, not free (by default), too large or whose picture cannot be
had are skipped and listed with the reason. The thumbnail is both the index's own picture and the encoder's
input; the item's id is the file title, its source the description page, its caption the description.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable, Sequence

from mlsr import __version__
from mlsr._files import atomic_write_bytes, atomic_write_json, kill_point
from mlsr.checks import check_precision
from mlsr.errors import InputError
from mlsr.index.folder import check_new_target
from mlsr.index.sparse import SparseIndex
from mlsr.index.thumbnails import Thumbnails
from mlsr.ingest.images import EncodedFolder, encode_folder
from mlsr.ingest.licences import FREE_FAMILIES, WikiFile, read_file
from mlsr.ingest.mediawiki import TITLES_PER_REQUEST, MediaWikiApi, category_files, file_title, image_info
from mlsr.ingest.pictures import collect_pictures, discard_pictures
from mlsr.settings import Documents, Progress

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.models.encoder import Encoder

_THUMB_WIDTH = 500  # one of the standard thumbnail widths the wiki keeps cached; the index keeps at most 512 px
PICTURE_WORKERS = 2  # pictures fetched at once from the wiki's media host: a polite few
Stages = Callable[[str, int], Progress]  # (what is happening, how many steps) -> the function told of each step


@dataclass(frozen=True)
class WikiSelection:
    """Which files to take: categories (with their subcategories down to `depth`) and/or `File:` titles."""

    categories: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    depth: int = 0
    limit: int | None = None
    licences: frozenset[str] | None = frozenset(FREE_FAMILIES)  # None: any licence, non-free too
    width: int = _THUMB_WIDTH

    def __post_init__(self) -> None:
        if not self.categories and not self.files:
            raise InputError("name a category or give a list of file titles to build a gallery from the wiki.")
        if not 0 <= int(self.depth) <= 10:
            raise InputError(f"depth must be 0 to 10, got {self.depth}.")
        if self.limit is not None and int(self.limit) < 1:
            raise InputError(f"limit must be at least 1, got {self.limit}.")
        if not 20 <= int(self.width) <= 2000:
            raise InputError(f"the thumbnail width must be 20 to 2000 pixels, got {self.width}.")


@dataclass
class WikiReport:
    """What a wiki build did: files listed and indexed, those skipped (title, reason), requests and waits."""

    listed: int = 0
    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    requests: int = 0
    waited: float = 0.0  # seconds waited as the wiki asked
    resumed: int = 0  # image-information answers taken from an interrupted run
    pictures_resumed: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # per step: list, info, pictures, encode


def read_titles_file(path: str | Path) -> list[str]:
    """`File:` titles, one a line (blank lines and `#` comments ignored), as the API spells them."""
    from mlsr.checks import existing_file, readable_bytes

    file = existing_file(path, "the file list")
    try:
        lines = readable_bytes(file, "the file list").decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text.") from None
    titles = [file_title(line) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not titles:
        raise InputError(f"{path} names no file (one File:Name.jpg a line).")
    return titles


def gather_files(api: MediaWikiApi, selection: WikiSelection, out: Path, report: WikiReport,
                 stages: Stages | None = None) -> list[WikiFile]:
    """The files to index, in the wiki's order, with the skipped ones added to `report`; each image-information
    answer is kept in `.<out>.commons/` so that a re-run asks only what is still missing."""
    journal = _journal(out, selection, api.url)
    started = time.perf_counter()
    titles_file = journal / "titles.json"
    if titles_file.is_file():
        titles = json.loads(titles_file.read_text(encoding="utf-8"))
    else:
        titles = [file_title(name) for name in selection.files]
        if selection.categories:
            titles += category_files(api, selection.categories, depth=selection.depth, limit=selection.limit,
                                     progress=stages("listing files", 0) if stages else None)
        titles = list(dict.fromkeys(titles))[: selection.limit]
        atomic_write_json(titles_file, titles)
    report.listed = len(titles)
    report.seconds["list"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    told = stages("file information", len(titles)) if stages else None
    files: list[WikiFile] = []
    for start in range(0, len(titles), TITLES_PER_REQUEST):
        batch = titles[start:start + TITLES_PER_REQUEST]
        kept = journal / f"info-{start:07d}.json"
        pages = _kept_answer(kept, batch)
        if pages is None:
            pages = image_info(api, batch, selection.width)
            atomic_write_json(kept, {"titles": batch, "pages": pages})
            kill_point("wiki-answer-saved")
        else:
            report.resumed += 1
        by_title = {_normal(str(page.get("title", ""))): page for page in pages}
        for title in batch:
            found = read_file(by_title.get(_normal(title), {"missing": True}), selection.licences)
            if isinstance(found, WikiFile):
                files.append(found)
            else:
                report.skipped.append((title, found))
        if told:
            told(len(batch))
    report.seconds["info"] = round(time.perf_counter() - started, 3)
    return files


def fetch_files(files: list[WikiFile], out: Path, api: MediaWikiApi, report: WikiReport,
                stages: Stages | None = None) -> tuple[list[WikiFile], list[bytes]]:
    """The files whose thumbnail could be had, and those thumbnails; the others are skipped with the reason."""
    started = time.perf_counter()
    urls = [wiki_file.picture for wiki_file in files]
    thumbnails, pictures = collect_pictures([f.title for f in files], urls, out,
                                            progress=stages("thumbnails", len(files)) if stages else None,
                                            workers=PICTURE_WORKERS, allowed=frozenset(urls),
                                            user_agent=api.user_agent)
    report.pictures_resumed = pictures.resumed
    report.skipped += [(title, f"its picture could not be had: {reason}") for title, reason in pictures.failed]
    report.seconds["pictures"] = round(time.perf_counter() - started, 3)
    kept = [(row, picture) for row in range(len(files)) if (picture := thumbnails.picture(row)) is not None]
    return [files[row] for row, _ in kept], [picture for _, picture in kept]


def _encode_files(encoder: Encoder, files: list[WikiFile], pictures: list[bytes], out: Path, *,
                 documents: Documents, dense: bool, report: WikiReport,
                 stages: Stages | None = None) -> EncodedFolder:
    """The files' thumbnails encoded as `documents` rows, their items carrying the credit fields."""
    started = time.perf_counter()
    staging = out.parent / f".{out.name}.commons" / "pictures"
    staging.mkdir(parents=True, exist_ok=True)
    names = {}
    for number, (wiki_file, picture) in enumerate(zip(files, pictures)):
        name = f"{number:07d}-{hashlib.sha256(wiki_file.title.encode()).hexdigest()[:16]}.webp"
        names[name] = wiki_file
        if not (staging / name).is_file():  # kept as written: the encoded batches of a resumed run still match
            atomic_write_bytes(staging / name, picture)
    captions = {name: wiki_file.item()["captions"] for name, wiki_file in names.items()}
    folder = encode_folder(encoder, staging, out, captions=captions, documents=documents, dense=dense,
                           strict=False, progress=stages("encoding", len(names)) if stages else None)
    kept_names = [item["id"] for item in folder.items]
    folder.items = [names[name].item() for name in kept_names]
    by_name = dict(zip(names, pictures))
    folder.thumbnails = Thumbnails.from_pictures([by_name[name] for name in kept_names])  # the wiki's, not redone
    report.skipped += [(names[name].title if name in names else name, why) for name, why in folder.report.skipped]
    report.indexed = len(folder.items)
    report.seconds["encode"] = round(time.perf_counter() - started, 3)
    return folder


def build_wiki_index(encoder: Encoder, selection: WikiSelection, *, out: str | Path, api: MediaWikiApi | None = None,
                     documents: Documents = "image", dense: bool = False, precision: str = "float16",
                     stages: Stages | None = None, overwrite: bool = False) -> tuple[SparseIndex, WikiReport]:
    """An index at `out` of the wiki's files named by `selection` (see the module's docstring)."""
    check_precision(precision)
    out = check_new_target(Path(out).resolve(), overwrite)
    api = api or MediaWikiApi()
    report = WikiReport()
    files, pictures = fetch_files(gather_files(api, selection, out, report, stages), out, api, report, stages)
    if not files:
        raise InputError(f"none of the {report.listed} files listed could be indexed"
                         f" ({_reasons(report.skipped)}); nothing was written.")
    folder = _encode_files(encoder, files, pictures, out, documents=documents, dense=dense, report=report,
                          stages=stages)
    info = {"documents": documents, "models": encoder.models().to_json(),
            "build": {"mlsr_version": __version__, "wiki": _provenance(api, selection),
                      "skipped": len(report.skipped), "seconds": round(sum(report.seconds.values()), 3)}}
    index = SparseIndex.build(folder.vectors, folder.items, vocab=encoder.vocab, dense=folder.dense, info=info,
                              precision=precision, thumbnails=folder.thumbnails)
    index.save(out)
    _finish(out, folder, report, api)
    return index, report


def add_wiki_files(encoder: Encoder, index: SparseIndex, selection: WikiSelection, *,
                   api: MediaWikiApi | None = None, replace: bool = False,
                   stages: Stages | None = None) -> tuple[SparseIndex, WikiReport]:
    """Append the wiki's files named by `selection` to an index folder (its own models and document kind); a file
    the index holds already is refused unless `replace`. The folder is replaced atomically."""
    if index.path is None:
        raise InputError("adding a wiki's files changes an index folder: give its path.")
    index.check_models(encoder.models())
    out = index.path.resolve()
    api = api or MediaWikiApi()
    report = WikiReport()
    files = gather_files(api, selection, out, report, stages)
    held = {str(item["id"]) for item in index.items}
    taken = [wiki_file.title for wiki_file in files if wiki_file.title in held]
    if taken and not replace:
        raise InputError(f"{len(taken)} of these files are in the index already (e.g. {taken[0]!r});"
                         " replace=True updates them, or remove them first.")
    files, pictures = fetch_files(files, out, api, report, stages)
    if not files:
        raise InputError(f"none of the {report.listed} files listed could be added ({_reasons(report.skipped)});"
                         " the index is unchanged.")
    folder = _encode_files(encoder, files, pictures, out, documents=index.info.get("documents", "image"),
                          dense=index.dense is not None, report=report, stages=stages)
    taken = [item["id"] for item in folder.items if item["id"] in held]
    changed = (index.remove(taken) if taken else index).add(folder.vectors, folder.items, dense=folder.dense,
                                                             thumbnails=folder.thumbnails)
    changed.save(out)
    _finish(out, folder, report, api)
    return changed, report


def _finish(out: Path, folder: EncodedFolder, report: WikiReport, api: MediaWikiApi) -> None:
    """Once the index is saved: the kept answers, pictures and batches go."""
    shutil.rmtree(out.parent / f".{out.name}.commons", ignore_errors=True)
    folder.store.remove()
    discard_pictures(out)
    report.requests, report.waited = api.requests, round(api.waited, 3)
    report.skipped.sort()


def _journal(out: Path, selection: WikiSelection, api_url: str) -> Path:
    """`.<out>.commons/`, wiped when it was made for another selection or wiki."""
    journal = out.parent / f".{out.name}.commons"
    plan = {"api": api_url, "categories": list(selection.categories), "files": list(selection.files),
            "depth": selection.depth, "limit": selection.limit, "width": selection.width, "mlsr": __version__}
    fingerprint = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()
    marker = journal / "plan.json"
    try:
        same = json.loads(marker.read_text(encoding="utf-8")).get("fingerprint") == fingerprint
    except (OSError, ValueError, AttributeError):
        same = False
    if journal.is_dir() and not same:
        shutil.rmtree(journal)
    journal.mkdir(parents=True, exist_ok=True)
    if not same:
        atomic_write_json(marker, {"fingerprint": fingerprint})
    return journal


def _kept_answer(path: Path, titles: list[str]) -> list[dict] | None:
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(kept, dict) or kept.get("titles") != titles or not isinstance(kept.get("pages"), list):
        return None
    return kept["pages"]


def _normal(title: str) -> str:
    return " ".join(title.replace("_", " ").split())


def _provenance(api: MediaWikiApi, selection: WikiSelection) -> dict:
    """What the manifest records of the build's source (no path of this machine)."""
    return {"api": api.url, "categories": list(selection.categories), "files": len(selection.files),
            "depth": selection.depth, "limit": selection.limit,
            "licences": sorted(selection.licences) if selection.licences is not None else "any"}


def _reasons(skipped: Sequence[tuple[str, str]]) -> str:
    counts: dict[str, int] = {}
    for _, reason in skipped:
        counts[reason.split(" (")[0]] = counts.get(reason.split(" (")[0], 0) + 1
    return "; ".join(f"{reason}: {n}" for reason, n in sorted(counts.items())) or "no files listed"


def wiki_api(url: str | None = None, contact: str | None = None) -> MediaWikiApi:
    """The API at `url`, else $MLSR_COMMONS_API, else Wikimedia Commons'; `contact` else $MLSR_COMMONS_CONTACT."""
    from mlsr.ingest.mediawiki import API_ENV, CONTACT_ENV, DEFAULT_API

    return MediaWikiApi(url or os.environ.get(API_ENV) or DEFAULT_API, contact or os.environ.get(CONTACT_ENV))
