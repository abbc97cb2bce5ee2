"""A polite client of a MediaWiki Action API (Wikimedia Commons' by default): the files of categories and their
image information, as https://www.mediawiki.org/wiki/API:Etiquette asks.

One request at a time (a lock, whatever the threads), a descriptive User-Agent with a contact, `maxlag` (a
lagged wiki answers "maxlag" and is asked again after its Retry-After), retries with back-off that honour
`Retry-After` on 429 and 503, JSON only (`formatversion=2`), continuation followed exactly as answered.
Plain Python: no torch.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator, Sequence
from urllib.parse import urlencode, urlsplit

from mlsr import __version__
from mlsr.errors import InputError
from mlsr.ingest.retries import failed, retry_after

DEFAULT_API = "https://commons.wikimedia.org/w/api.php"
API_ENV = "MLSR_COMMONS_API"  # another wiki's api.php, or a loopback one in tests
CONTACT_ENV = "MLSR_COMMONS_CONTACT"  # an e-mail address or a web page where the wiki's operators reach you
_MAXLAG = 5  # seconds of replication lag above which the wiki asks bots to wait (the etiquette's value)
_ATTEMPTS = 6  # tries per request (a refusal other than 429 / 5xx / maxlag is not tried again)
_MAX_WAIT = 120.0  # the longest Retry-After honoured, in seconds
_TIMEOUT = 30.0
_MAX_ANSWER_BYTES = 50_000_000
TITLES_PER_REQUEST = 50  # the API's limit for titles= without bot rights
LIST_LIMIT = 500  # category members per request (the API's limit without bot rights)


def user_agent(contact: str | None) -> str:
    """The User-Agent the Wikimedia policy asks for: client/version (purpose; contact) library."""
    reach = f"; {contact.strip()}" if contact and contact.strip() else "; no contact given"
    return f"mlsr/{__version__} (image gallery builder for Wikipedia editors{reach}) python-urllib"


@dataclass
class MediaWikiApi:
    """One wiki's api.php, asked one request at a time; `requests` counts the requests sent (retries included)."""

    url: str = DEFAULT_API
    contact: str | None = None
    maxlag: int = _MAXLAG
    attempts: int = _ATTEMPTS
    sleep: Callable[[float], None] = time.sleep
    requests: int = 0
    waited: float = 0.0  # seconds spent waiting as the wiki asked (Retry-After, maxlag, back-off)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"the wiki's API address must be an http(s) URL ending in api.php, got {self.url!r}.")
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler())

    @property
    def user_agent(self) -> str:
        return user_agent(self.contact)

    def get(self, params: dict[str, str]) -> dict:
        """The API's JSON answer to `params` (action=query ...); InputError when the wiki refuses or never answers."""
        query = {**params, "format": "json", "formatversion": "2", "maxlag": str(self.maxlag)}
        request = urllib.request.Request(f"{self.url}?{urlencode(query)}",
                                         headers={"User-Agent": self.user_agent, "Accept": "application/json"})
        reason = ""
        with self._lock:  # one request at a time, from every thread
            for attempt in range(self.attempts):
                wait = min(2.0 ** attempt, _MAX_WAIT)
                self.requests += 1
                try:
                    with self._opener.open(request, timeout=_TIMEOUT) as answer:
                        body = _json(answer.read(_MAX_ANSWER_BYTES + 1), self.url)
                        retry_header = answer.headers.get("Retry-After")
                    error = body.get("error") if isinstance(body, dict) else None
                    if not isinstance(error, dict):
                        return body
                    if error.get("code") != "maxlag":
                        raise InputError(f"the wiki's API refused the request: {error.get('code')}:"
                                         f" {str(error.get('info', ''))[:200]}")
                    reason, wait = "the wiki is lagged (maxlag)", retry_after(retry_header, 5.0, _MAX_WAIT)
                except OSError as error:  # URLError, HTTPError, time-outs, refused connections
                    reason, again = failed(error, wait, _MAX_WAIT)
                    if again is None:
                        break
                    wait = again
                if attempt + 1 < self.attempts:
                    self.waited += wait
                    self.sleep(wait)
        raise InputError(f"the wiki's API at {self.url} could not be used ({reason}).")

    def pages(self, params: dict[str, str]) -> Iterator[dict]:
        """Every answer to a query, following `continue` as the API gives it (one request after the other)."""
        extra: dict[str, str] = {}
        while True:
            body = self.get({**params, **extra})
            yield body
            following = body.get("continue")
            if not isinstance(following, dict) or not following:
                return
            extra = {str(key): str(value) for key, value in following.items()}


def category_files(api: MediaWikiApi, categories: Sequence[str], *, depth: int = 0, limit: int | None = None,
                   progress: Callable[[int], None] | None = None) -> list[str]:
    """The `File:` titles in `categories` and, down to `depth` levels, their subcategories (each category once),
    in the API's order, without repeats, at most `limit`."""
    titles: list[str] = []
    seen_titles: set[str] = set()
    queue = [(_category_title(name), 0) for name in categories]
    seen = {name for name, _ in queue}
    while queue:
        category, level = queue.pop(0)
        params = {"action": "query", "list": "categorymembers", "cmtitle": category, "cmlimit": str(LIST_LIMIT),
                  "cmtype": "file|subcat" if level < depth else "file", "cmprop": "title|type"}
        for body in api.pages(params):
            for member in (body.get("query") or {}).get("categorymembers") or []:
                title, kind = str(member.get("title", "")), member.get("type")
                if kind == "subcat" or (kind is None and title.startswith("Category:")):
                    if level < depth and title not in seen:
                        seen.add(title)
                        queue.append((title, level + 1))
                elif title and title not in seen_titles:
                    seen_titles.add(title)
                    titles.append(title)
                    if progress:
                        progress(1)
                    if limit is not None and len(titles) >= limit:
                        return titles
    return titles


def image_info(api: MediaWikiApi, titles: Sequence[str], width: int) -> list[dict]:
    """The pages of up to TITLES_PER_REQUEST files with their image information (URL, description page, size,
    media type, extended metadata, a thumbnail `width` pixels wide), continuation followed and merged."""
    params = {"action": "query", "titles": "|".join(titles), "prop": "imageinfo",
              "iiprop": "url|size|mime|extmetadata", "iiurlwidth": str(width), "iiextmetadatalanguage": "en"}
    pages: dict[str, dict] = {}
    for body in api.pages(params):
        for page in (body.get("query") or {}).get("pages") or []:
            if isinstance(page, dict) and page.get("title"):
                held = pages.setdefault(str(page["title"]), {})
                info = (held.get("imageinfo") or []) + (page.get("imageinfo") or [])
                held.update(page)
                if info:
                    held["imageinfo"] = info
    return list(pages.values())


def _category_title(name: str) -> str:
    """`Water buffalo` or `Category:Water buffalo` as the API's title, `Category:Water buffalo`."""
    name = " ".join(str(name).replace("_", " ").split())
    if not name:
        raise InputError("a category name is empty.")
    return name if name.lower().startswith("category:") else f"Category:{name}"


def file_title(name: str) -> str:
    """`File:X.jpg` (or `Image:X.jpg`, or `X.jpg`) as the API's title, `File:X.jpg`."""
    name = " ".join(str(name).replace("_", " ").split())
    for prefix in ("file:", "image:"):
        if name.lower().startswith(prefix):
            name = name[len(prefix):].strip()
    if not name or "|" in name:
        raise InputError(f"{name!r} is not a file title (File:Name.jpg).")
    return f"File:{name[0].upper()}{name[1:]}"


def _json(raw: bytes, url: str) -> dict:
    if len(raw) > _MAX_ANSWER_BYTES:
        raise InputError(f"the wiki's API at {url} answered more than {_MAX_ANSWER_BYTES:,} bytes.")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"the wiki's API at {url} did not answer JSON (is it an api.php address?).") from None
    if not isinstance(body, dict):
        raise InputError(f"the wiki's API at {url} answered JSON that is not an object.")
    return body


