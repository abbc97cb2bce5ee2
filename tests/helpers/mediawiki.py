"""A loopback MediaWiki Action API and media host, serving JSON answers a test has recorded in the API's documented
format (https://www.mediawiki.org/wiki/API:Categorymembers, API:Imageinfo, formatversion=2).

`record_wiki` writes the answers into a folder: one file per category-members request (continuation in pages of
`page_size`) and one page object per file (imageinfo answers are assembled from them for the titles asked).
`{HOST}` in a recorded answer stands for the server's own http://127.0.0.1:PORT. `mediawiki` serves the folder,
records every request (its query and User-Agent), counts API requests in flight at once, and answers the
scripted failures (429 with Retry-After, 503, maxlag) at given request numbers.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Iterator

from tests.helpers.loopback import threaded_server

IGNORED = ("format", "formatversion", "maxlag")  # parameters every request carries, left out of the answer's key


def answer_key(params: dict[str, str]) -> str:
    """The file name of the recorded answer to a query (its parameters, sorted, without IGNORED)."""
    kept = sorted((key, value) for key, value in params.items() if key not in IGNORED)
    return hashlib.sha256(urllib.parse.urlencode(kept).encode()).hexdigest()[:24] + ".json"


def file_page(title: str, *, mime: str = "image/jpeg", width: int = 640, height: int = 480, picture: str | None = None,
              meta: dict[str, str] | None = None) -> dict:
    """A page of an imageinfo answer (iiprop=url|size|mime|extmetadata, iiurlwidth=500) with `meta` as extmetadata."""
    name = title.split(":", 1)[1].replace(" ", "_")
    thumb = picture if picture is not None else f"{{HOST}}/images/thumb/{urllib.parse.quote(name)}/500px-{name}"
    info = {"size": width * height // 4, "width": width, "height": height, "thumburl": thumb, "thumbwidth": 500,
            "thumbheight": round(500 * height / width), "url": f"{{HOST}}/images/{urllib.parse.quote(name)}",
            "descriptionurl": f"{{HOST}}/wiki/{urllib.parse.quote(title.replace(' ', '_'), safe=':/')}",
            "descriptionshorturl": "{HOST}/w/index.php?curid=1", "mime": mime,
            "extmetadata": {key: {"value": value, "source": "commons-desc-page"} for key, value in (meta or {}).items()}}
    return {"pageid": int(hashlib.sha256(title.encode()).hexdigest()[:6], 16), "ns": 6, "title": title,
            "imagerepository": "local", "imageinfo": [info]}


def record_wiki(folder: Path, categories: dict[str, list[str]], pages: list[dict], page_size: int = 2) -> Path:
    """Write the answers of a wiki with these categories ({title: member titles, subcategories included}) and file
    pages into `folder`; category members come `page_size` per answer, with `continue` to the next."""
    (folder / "answers").mkdir(parents=True, exist_ok=True)
    (folder / "files").mkdir(exist_ok=True)
    for category, members in categories.items():
        for cmtype in ("file|subcat", "file"):
            shown = [m for m in members if cmtype == "file|subcat" or not m.startswith("Category:")]
            chunks = [shown[i:i + page_size] for i in range(0, len(shown), page_size)] or [[]]
            for number, chunk in enumerate(chunks):
                params = {"action": "query", "list": "categorymembers", "cmtitle": category, "cmlimit": "500",
                          "cmtype": cmtype, "cmprop": "title|type"}
                if number:
                    params.update({"cmcontinue": f"page|{number}", "continue": "-||"})
                body: dict = {"batchcomplete": True, "query": {"categorymembers": [
                    {"ns": 14 if m.startswith("Category:") else 6, "title": m,
                     "type": "subcat" if m.startswith("Category:") else "file"} for m in chunk]}}
                if number + 1 < len(chunks):
                    body["continue"] = {"cmcontinue": f"page|{number + 1}", "continue": "-||"}
                (folder / "answers" / answer_key(params)).write_text(json.dumps(body))
    for page in pages:
        (folder / "files" / (hashlib.sha256(page["title"].encode()).hexdigest()[:24] + ".json")).write_text(
            json.dumps(page))
    return folder


@dataclass
class WikiHandle:
    """A running loopback wiki: its api.php URL and what it was asked."""

    url: str
    host: str
    api_requests: list[dict] = field(default_factory=list)  # each API request's parameters
    agents: list[str] = field(default_factory=list)  # the User-Agent of every request (API and media)
    media_requests: list[str] = field(default_factory=list)
    most_in_flight: int = 0
    in_flight: int = 0
    answered_at: list[float] = field(default_factory=list)  # when each API request came
    lock: threading.Lock = field(default_factory=threading.Lock)

    def imageinfo_requests(self) -> list[dict]:
        with self.lock:
            return [params for params in self.api_requests if params.get("prop") == "imageinfo"]


def _handler(folder: Path, images: dict[str, bytes | str], handle: WikiHandle, failures: dict[int, tuple[int, dict, bytes]],
             delay: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            with handle.lock:
                handle.agents.append(self.headers.get("User-Agent", ""))
            if url.path == "/w/api.php":
                return self.api(dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True)))
            with handle.lock:
                handle.media_requests.append(urllib.parse.unquote(url.path))
            picture = images.get(urllib.parse.unquote(url.path))
            if picture is None:
                return self.answer(404, b"no such file")
            if isinstance(picture, str):  # a redirect to this URL
                return self.answer(302, b"", {"Location": picture.replace("{HOST}", handle.host)})
            self.answer(200, picture, {"Content-Type": "image/png"})

        def api(self, params: dict[str, str]) -> None:
            with handle.lock:
                handle.api_requests.append(params)
                handle.answered_at.append(time.monotonic())
                number = len(handle.api_requests)
                handle.in_flight += 1
                handle.most_in_flight = max(handle.most_in_flight, handle.in_flight)
            try:
                time.sleep(delay)
                if number in failures:
                    status, headers, body = failures[number]
                else:
                    status, headers = 200, {"Content-Type": "application/json; charset=utf-8"}
                    body = self.recorded(params)
            finally:
                # the request ends before its answer is written: the client can only send its next request after
                # reading this answer, so a count taken after writing would catch this thread's own tail under load
                with handle.lock:
                    handle.in_flight -= 1
            self.answer(status, body, headers)

        def recorded(self, params: dict[str, str]) -> bytes:
            if params.get("prop") == "imageinfo":
                pages = []
                for title in params.get("titles", "").split("|"):
                    kept = folder / "files" / (hashlib.sha256(title.encode()).hexdigest()[:24] + ".json")
                    pages.append(json.loads(kept.read_text()) if kept.is_file()
                                 else {"ns": 6, "title": title, "missing": True})
                body = json.dumps({"batchcomplete": True, "query": {"pages": pages}})
            else:
                kept = folder / "answers" / answer_key(params)
                body = kept.read_text() if kept.is_file() else json.dumps(
                    {"error": {"code": "badvalue", "info": "not recorded"}})
            return body.replace("{HOST}", handle.host).encode()

    return Handler


@contextmanager
def mediawiki(folder: Path, images: dict[str, bytes | str], *, failures: dict[int, tuple[int, dict, bytes]] | None = None,
              delay: float = 0.0) -> Iterator[WikiHandle]:
    """Serve the recorded wiki in `folder` at http://127.0.0.1:PORT/w/api.php and `images` ({path: bytes}) beside
    it (a str value: a redirect there); `failures` {n: (status, headers, body)} answers the n-th API request (from
    1) so instead."""
    with threaded_server() as server:
        host = f"http://127.0.0.1:{server.server_address[1]}"
        handle = WikiHandle(f"{host}/w/api.php", host)
        server.RequestHandlerClass = _handler(folder, images, handle, failures or {}, delay)
        yield handle
