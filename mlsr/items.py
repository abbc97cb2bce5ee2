"""What an index says about each of its rows: one `Item` per image, one line of `items.jsonl`.

Only `id` is required; builders record what they know (docs/index-format.md). Items come from files and from
callers, so readers still check a field's type where a wrong one would matter (a URL must be a str).
"""

from __future__ import annotations

from typing import TypedDict


class _Identified(TypedDict):
    id: str  # unique within the index


class Item(_Identified, total=False):
    """One indexed image: `image` is a path relative to the index folder or a URL; the credit fields come from a
    wiki's file page (`mlsr.ingest.licences`); `filename` and `cocoid` from imported COCO."""

    image: str | None  # None: no picture was found for it
    captions: list[str]
    source: str  # the page the picture comes from (a wiki's file page)
    credit: str  # title, author, licence and source, as the licence asks them shown
    author: str
    license: str
    license_url: str
    attribution: str
    filename: str | None
    cocoid: int
