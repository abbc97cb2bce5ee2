"""The illustrated Markdown of an article: each chosen image under its section's heading, the article otherwise as
written; captions and ids as literal text (never markup), the credit a photo needs, its licence page linked."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple
from collections.abc import Sequence

from mlsr.errors import InputError
from mlsr.items import Item

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.articles.sections import Article

_URL_IN_TEXT = re.compile(r"https?://[^\s()<>]+")
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]<>|~!:@])")  # what could make a caption markup (: and @: autolinks)


class Illustration(NamedTuple):
    """What the illustrated Markdown shows under a section heading: the image, its caption, a credit line."""

    image: str | None  # a URL or a path; None when the file is gone
    caption: str
    credit: str = ""
    id: str = ""


def render_markdown(article: Article, illustrations: Sequence[Illustration | None]) -> str:
    """The article as written, with each section's illustration inserted under its heading (or above it).

    Nothing of the article is changed or dropped: only the image blocks are added. `illustrations` has one
    entry per section; None leaves a section without an image.
    """
    if len(illustrations) != len(article.sections):
        raise InputError(f"{len(illustrations)} illustrations for {len(article.sections)} sections.")
    text, out, cursor = article.text, [], 0
    for section, illustration in zip(article.sections, illustrations):
        if illustration is None:
            continue
        out.append(text[cursor : section.body])
        lead = "" if section.body == 0 or text[section.body - 1] == "\n" else "\n"
        after = "\n" if text.startswith(("\n", "\r\n"), section.body) else "\n\n"
        out.append(lead + "\n" + _image_block(illustration) + after)
        cursor = section.body
    out.append(text[cursor:])
    return "".join(out)


def _image_block(illustration: Illustration) -> str:
    """`![caption](image)` and a line with the caption and the credit, the caption as literal text."""
    caption = literal(illustration.caption or illustration.id)
    line = " · ".join(part for part in (f"*{caption}*" if caption else "", linked(illustration.credit)) if part)
    if illustration.image is None:
        return f"*(image {literal(illustration.id)} has no file to show)*" + (f"  \n{line}" if line else "")
    return f"![{caption}]({_link(illustration.image)})" + (f"  \n{line}" if line else "")


def credit_line(item: Item) -> str:
    """The credit an indexed image needs under it: MS-COCO photos come from Flickr with a license each."""
    if isinstance(item.get("credit"), str) and item["credit"]:
        return item["credit"]  # a wiki's file: title, author, licence and source (mlsr.ingest.licences)
    names = " ".join(str(item.get(key) or "") for key in ("image", "filename", "id"))
    if "cocoid" in item or "COCO_" in names or "cocodataset.org" in names:
        number = item.get("cocoid", item.get("id", ""))
        return (f"MS-COCO image {number}: a Flickr photo under its own license"
                " (https://cocodataset.org/#termsofuse)")
    return ""


def linked(text: str) -> str:
    """`literal(text)`, but its http(s) URLs kept as Markdown autolinks (`<https://...>`), so a credit's licence
    and source pages link."""
    def piece(part: str) -> str:  # literal, keeping a space at either end
        shown = literal(part)
        return (" " if part[:1].isspace() else "") + shown + (" " if part[-1:].isspace() and shown else "")

    text, out, cursor = text or "", [], 0
    for found in _URL_IN_TEXT.finditer(text):
        out += [piece(text[cursor:found.start()]), f"<{found.group(0)}>"]
        cursor = found.end()
    out.append(piece(text[cursor:]))
    return "".join(out).strip()


def literal(text: str) -> str:
    """Text that Markdown (and the HTML inside it) shows exactly as written: a caption or an id, never markup."""
    text = " ".join(str(text).split())
    text = text.replace("&", "&amp;")
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _link(target: str) -> str:
    """A link target Markdown reads whole, even with spaces or parentheses in it."""
    if any(ch in target for ch in " ()<>"):
        return "<" + target.replace("<", "%3C").replace(">", "%3E") + ">"
    return target
