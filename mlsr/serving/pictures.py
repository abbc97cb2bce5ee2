"""The pictures the app serves itself: every result's thumbnail at `thumbnails/<id>`, on the app's own origin.

A browser on the app's page asks no other host for a result (on an HTTPS page, such as every Space, an
`http://` image of a third party is upgraded to https, and the COCO host has none), and an API or MCP
client gets a URL it can fetch for every hit of every gallery, local or published. The picture is the
index's own thumbnail (`mlsr.index.thumbnails`); for an index made before indexes kept them, the app makes
it on first display from the item's file or its URL on a dataset's image host (fetched by the server under
the rules of `mlsr.ingest.pictures`, never handed to the browser) and keeps the last few in memory.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path
from urllib.parse import quote

from mlsr.errors import InputError
from mlsr.index.sparse import SparseIndex
from mlsr.index.thumbnails import media_type
from mlsr.ingest.pictures import fetch_picture, picture_source

logger = logging.getLogger(__name__)

THUMBNAIL_ROUTE = "thumbnails"  # the app serves item `id`'s picture at <app>/thumbnails/<id, URL-quoted>
_FILLED_KEPT = 512  # pictures made on first display kept in memory (~17 MB of WebP thumbnails)


def picture_url(item_id: str) -> str:
    """Where the app serves an item's picture, relative to the app's root (no leading slash: a root path applies)."""
    return f"{THUMBNAIL_ROUTE}/{quote(str(item_id), safe='')}"


class Pictures:
    """Each row's picture: the index's thumbnail, or one made on first display (kept in a small memory cache)."""

    def __init__(self, index: SparseIndex) -> None:
        self.index = index
        self._rows = {str(item["id"]): row for row, item in enumerate(index.items)}
        self._filled: OrderedDict[int, bytes | None] = OrderedDict()
        self._lock = threading.Lock()

    def row(self, item_id: str) -> int | None:
        """The row of an item id, or None when the index holds no such item."""
        return self._rows.get(item_id)

    def has_source(self, row: int) -> bool:
        """True when row `row` has a picture or somewhere to make one from (else its hits carry no image URL)."""
        thumbnails = self.index.thumbnails
        return (thumbnails is not None and thumbnails.has(row)) or self._source(row) is not None

    def picture(self, row: int) -> bytes | None:
        """Row `row`'s encoded picture, or None when none can be had (the UI shows a placeholder, the route a 404)."""
        stored = self.index.picture(row)
        if stored is not None:
            return stored
        with self._lock:
            if row in self._filled:
                self._filled.move_to_end(row)
                return self._filled[row]
        source = self._source(row)
        try:
            picture = fetch_picture(source) if source is not None else None
        except InputError as error:
            logger.warning("no picture for %s: %s", self.index.items[row]["id"], error)
            picture = None
        with self._lock:
            self._filled[row] = picture
            while len(self._filled) > _FILLED_KEPT:
                self._filled.popitem(last=False)
        return picture

    def _source(self, row: int) -> str | Path | None:
        return picture_source(self.index.items[row].get("image"), self.index.path)


def picture_file(picture: bytes, folder: Path) -> Path:
    """`picture` as a file named by its hash in `folder` (written once), for a Gradio gallery to serve."""
    suffix = {"image/webp": ".webp", "image/jpeg": ".jpg", "image/png": ".png"}.get(media_type(picture), ".bin")
    file = folder / (hashlib.sha256(picture).hexdigest()[:32] + suffix)
    if not file.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        partial = file.with_name(f".{file.name}.{threading.get_ident()}.tmp")
        partial.write_bytes(picture)
        partial.replace(file)
    return file


def picture_route(pictures: Pictures):
    """The HTTP route `GET /thumbnails/{id}` that serves an item's picture (404 for an unknown id or no picture)."""
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def serve(request) -> Response:
        from starlette.concurrency import run_in_threadpool

        row = pictures.row(request.path_params["item_id"])
        picture = await run_in_threadpool(pictures.picture, row) if row is not None else None
        if picture is None:
            what = "no such item" if row is None else "this item has no picture"
            return JSONResponse({"error": what}, status_code=404)
        return Response(picture, media_type=media_type(picture),
                        headers={"Cache-Control": "public, max-age=86400",
                                 "ETag": '"' + hashlib.sha256(picture).hexdigest()[:32] + '"'})

    return Route(f"/{THUMBNAIL_ROUTE}/{{item_id:path}}", serve, methods=["GET", "HEAD"])
