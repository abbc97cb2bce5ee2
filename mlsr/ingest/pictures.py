"""The pictures of items known by URL or by a file (the published galleries), made into thumbnails once, at build time.

The server fetches each picture itself, so that no visitor's browser ever asks a third-party host (on an
HTTPS page an `http://` image is upgraded to https, which the COCO host does not serve). Only http(s) URLs
on the datasets' own image hosts are fetched, never one a user typed; a redirect to any other host is
refused. Fetches run a few at a time, with timeouts and retries (honouring `Retry-After` on 429 and 503),
a size cap and the same checks as an upload (a real image, no decompression bomb). The standard proxy
variables (`HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY`) apply. Each finished thumbnail is kept in
`.<index>.pictures/` beside the index until the index is saved, so an interrupted build resumes where it
stopped. A picture that cannot be had is listed with the reason and the item shows a placeholder: a build
never fails for it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

from mlsr import __version__
from mlsr._files import atomic_write_bytes, kill_point
from mlsr.errors import InputError
from mlsr.index.sparse import SparseIndex
from mlsr.index.thumbnails import Thumbnails, thumbnail_of
from mlsr.ingest.retries import failed
from mlsr.settings import Progress

logger = logging.getLogger(__name__)

_IMAGE_HOSTS = frozenset({"images.cocodataset.org"})  # the published datasets' own image hosts
FETCH_WORKERS = 8  # pictures fetched at once: enough to hide latency, few enough to be a polite client
FETCH_TIMEOUT = 20.0  # seconds to connect, and between two reads
_FETCH_DEADLINE = 60.0  # seconds for one whole picture
_FETCH_ATTEMPTS = 4  # tries per picture (a refusal other than 429 / 5xx is not tried again)
_MAX_RETRY_WAIT = 30.0  # the longest Retry-After honoured, in seconds
MAX_PICTURE_BYTES = 20_000_000  # a dataset photo is far smaller; anything larger is not fetched
_USER_AGENT = f"mlsr/{__version__} (image gallery builder; fetches each picture once)"


@dataclass
class PictureReport:
    """What `collect_pictures` did: pictures made now, taken from an interrupted run, and failed (id, reason)."""

    made: int = 0
    resumed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0


def collect_pictures(ids: Sequence[str], sources: Sequence[str | Path | None], index_dir: Path, *,
                     progress: Progress | None = None, workers: int = FETCH_WORKERS,
                     allowed: frozenset[str] = frozenset(), user_agent: str = _USER_AGENT
                     ) -> tuple[Thumbnails, PictureReport]:
    """One thumbnail per item from its source (an http(s) URL on `_IMAGE_HOSTS` or one of the exact URLs in
    `allowed`, a local file, or None: no picture, listed among the failures as "no image recorded").

    `allowed` holds the picture URLs a wiki's API answered for its files (`mlsr.ingest.commons`): those, and
    redirects to those, are the only other URLs fetched; `user_agent` is sent with each request.

    Finished thumbnails are kept in `.<index_dir name>.pictures/` beside `index_dir` (see `discard_pictures`),
    so a re-run after an interruption fetches only what is still missing.
    """
    started = time.perf_counter()
    store = _store(index_dir)
    store.mkdir(parents=True, exist_ok=True)
    pictures: list[bytes | None] = [None] * len(ids)
    report = PictureReport()
    todo: list[tuple[int, str | Path]] = []  # (row, source) of the pictures still to make
    for row, source in enumerate(sources):
        kept = store / _key(source) if source is not None else None
        if kept is not None and kept.is_file():
            pictures[row] = kept.read_bytes()
            report.resumed += 1
        elif source is not None:
            todo.append((row, source))
    if progress and report.resumed:
        progress(report.resumed)
    opener = _opener(allowed)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_thumbnail, source, opener, allowed, user_agent): (row, source) for row, source in todo}
        for future in as_completed(futures):
            row, source = futures[future]
            picture, reason = future.result()
            if picture is not None:
                atomic_write_bytes(store / _key(source), picture)
                kill_point("picture-saved")
                pictures[row] = picture
                report.made += 1
            else:
                report.failed.append((ids[row], reason))
            if progress:
                progress(1)
    for name, reason in report.failed:
        logger.warning("no picture for %s: %s", name, reason)
    report.failed.sort()
    report.failed += [(ids[row], "no image recorded") for row, source in enumerate(sources) if source is None]
    report.seconds = time.perf_counter() - started
    return Thumbnails.from_pictures(pictures), report


def picture_source(image: object, index_dir: str | Path | None) -> str | Path | None:
    """Where an item's picture comes from: its `image` URL, or its file (recorded relative to the index), or None."""
    if not isinstance(image, str) or not image:
        return None
    if "://" in image:
        return image
    # `..` taken away here, not by the system: the index folder itself may not exist yet (import-dense, first build)
    return Path(os.path.normpath(Path(index_dir or ".").resolve() / image))


def fill_thumbnails(index_dir: str | Path, *, progress: Progress | None = None,
                    total: Callable[[int], None] | None = None) -> tuple[SparseIndex, PictureReport]:
    """Give every item of an index folder that has no thumbnail one, from its recorded image (a file, or a URL on
    `_IMAGE_HOSTS`), and save the folder atomically; for indexes made before they kept pictures, or to retry."""
    index = SparseIndex.load(Path(index_dir))  # a Path: a folder, never a (read-only) Hub copy
    folder = index.path
    if folder is None:  # never: load records the folder it read
        raise InputError("the index has no folder to save its pictures in.")
    thumbnails = index.thumbnails or Thumbnails.none(len(index))
    rows = [int(row) for row in thumbnails.missing()]
    sources = [picture_source(index.items[row].get("image"), folder) for row in rows]
    if total:
        total(sum(source is not None for source in sources))
    found, report = collect_pictures([str(index.items[row]["id"]) for row in rows], sources, folder,
                                     progress=progress)
    index.thumbnails = thumbnails.filled({row: found.picture(i) for i, row in enumerate(rows) if found.has(i)})
    index.save(folder)
    discard_pictures(folder)
    return index, report


def discard_pictures(index_dir: Path) -> None:
    """Remove the thumbnails kept for a resumed run, once the index that holds them is saved."""
    shutil.rmtree(_store(index_dir), ignore_errors=True)


def fetch_picture(source: str | Path) -> bytes:
    """One thumbnail from a URL on `_IMAGE_HOSTS` or a local file; InputError saying why it cannot be had."""
    picture, reason = _thumbnail(source, _opener())
    if picture is None:
        raise InputError(reason)
    return picture


def _fetchable(url: str, allowed: frozenset[str] = frozenset()) -> bool:
    """True for an http(s) URL on one of the datasets' image hosts, or one of the exact URLs in `allowed` (those a
    wiki's API answered for its files): the only URLs the server fetches."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and ((parts.hostname or "") in _IMAGE_HOSTS or url in allowed)


def _thumbnail(source: str | Path, opener: urllib.request.OpenerDirector,
               allowed: frozenset[str] = frozenset(), user_agent: str = _USER_AGENT) -> tuple[bytes | None, str]:
    """(thumbnail, "") or (None, why not), for a worker thread."""
    try:
        if isinstance(source, str) and "://" in source:
            if not _fetchable(source, allowed):
                return None, f"not fetched: {urlsplit(source).hostname or source!r} is not a dataset image host"
            return thumbnail_of(_download(source, opener, user_agent)), ""
        return thumbnail_of(Path(source)), ""
    except InputError as error:
        return None, str(error)


def _download(url: str, opener: urllib.request.OpenerDirector, user_agent: str = _USER_AGENT) -> bytes:
    """The bytes at `url`, retried with back-off on time-outs, 429 and 5xx; InputError when they cannot be had."""
    request = urllib.request.Request(url, headers={"User-Agent": user_agent, "Accept": "image/*"})
    reason = ""
    for attempt in range(_FETCH_ATTEMPTS):
        wait = min(2.0 ** attempt * 0.5, _MAX_RETRY_WAIT)
        try:
            with opener.open(request, timeout=FETCH_TIMEOUT) as answer:
                declared = int(answer.headers.get("Content-Length") or 0)
                if declared > MAX_PICTURE_BYTES:
                    raise InputError(f"{url}: {declared:,} bytes, more than the {MAX_PICTURE_BYTES:,} allowed")
                body = _read_within(answer, url)
            if len(body) > MAX_PICTURE_BYTES:
                raise InputError(f"{url}: more than the {MAX_PICTURE_BYTES:,} bytes allowed")
            return body
        except OSError as error:  # URLError, HTTPError, time-outs, refused connections
            reason, again = failed(error, wait, _MAX_RETRY_WAIT)
            if again is None:
                break
            wait = again
        if attempt + 1 < _FETCH_ATTEMPTS:
            time.sleep(wait)
    raise InputError(f"{url} could not be fetched ({reason})")


def _read_within(answer, url: str) -> bytes:
    """The body, up to one byte past the cap, read in chunks within _FETCH_DEADLINE seconds (a host that sends a
    trickle of bytes cannot hold a worker for long)."""
    deadline = time.monotonic() + _FETCH_DEADLINE
    chunks, size = [], 0
    while size <= MAX_PICTURE_BYTES:
        chunk = answer.read(min(1 << 16, MAX_PICTURE_BYTES + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if time.monotonic() > deadline:
            raise InputError(f"{url}: not received within {_FETCH_DEADLINE:.0f} s")
    return b"".join(chunks)


class _SameHosts(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to another URL the server may fetch."""

    def __init__(self, allowed: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.allowed = allowed

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if not _fetchable(newurl, self.allowed):
            raise InputError(f"{req.full_url} redirects to {urlsplit(newurl).hostname!r}, not a dataset image host")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _opener(allowed: frozenset[str] = frozenset()) -> urllib.request.OpenerDirector:
    """An opener that honours the proxy variables and refuses redirects leaving the image hosts (and `allowed`)."""
    return urllib.request.build_opener(urllib.request.ProxyHandler(), _SameHosts(allowed))


def _store(index_dir: Path) -> Path:
    index_dir = Path(index_dir)
    return index_dir.parent / f".{index_dir.name}.pictures"


def _key(source: str | Path) -> str:
    """The kept thumbnail's name: the URL's hash, or the file's path, size and time of change (a changed file is
    made again on resume)."""
    name = str(source)
    if not (isinstance(source, str) and "://" in source):
        try:
            stat = Path(source).stat()
            name += f"\0{stat.st_size}\0{stat.st_mtime_ns}"
        except OSError:
            pass
    return hashlib.sha256(name.encode()).hexdigest()[:40] + ".webp"
