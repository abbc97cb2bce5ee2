"""What editors paste: an illustrated article as wikitext (`[[File:Name.jpg|thumb|caption]]` under each section
heading) or as HTML (`<figure>` with a `<figcaption>` holding caption and credit), besides Markdown
(`mlsr.articles.markdown`). Every format carries the credit the licence requires (title, author, source, licence);
user text is always escaped, never markup. Plain Python: no torch, no Gradio.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, NamedTuple
from collections.abc import Sequence

from mlsr.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.articles.sections import Article

FORMATS = ("markdown", "wikitext", "html")
_WIKI_SPECIAL = {ord(ch): f"&#{ord(ch)};" for ch in "&<>[]{}|'~=*#:;_"}  # what could make a caption wiki markup


class Figure(NamedTuple):
    """One section's chosen image with everything its credit needs."""

    id: str  # File:Name.jpg for a wiki's file
    image: str | None  # where the HTML <img> points (a URL or a path); None: no file to show
    caption: str
    title: str = ""  # the credit's parts (empty for an image without a recorded licence)
    author: str = ""
    source: str = ""
    license: str = ""
    license_url: str = ""
    credit: str = ""  # the whole credit as one line of text (any image that has one)


def render_wikitext(article: Article, figures: Sequence[Figure | None], weak: Sequence[str] = ()) -> str:
    """The article's sections under wikitext headings, each chosen wiki file as `[[File:...|thumb|caption]]`
    (caption and credit escaped); an image that is not a wiki file, or a section without one, as a comment."""
    _check(article, figures)
    out = [f"<!-- {_comment(article.title)} -->"] if article.title else []
    for number, (section, figure) in enumerate(zip(article.sections, figures)):
        if section.title:
            marks = "=" * max(2, min(section.level or 2, 6))
            out.append(f"{marks} {_wiki(section.title)} {marks}")
        if figure is not None and figure.id.startswith("File:"):
            credit = _wiki_credit(figure)
            text = " ".join(part for part in (_wiki(figure.caption), credit) if part)
            out.append(f"[[{_wiki_title(figure.id)}|thumb|{text}]]")
        elif figure is not None:
            out.append(f"<!-- mlsr suggests {_comment(figure.id)} (not a file of the wiki): {_comment(figure.credit)}"
                       f" -->")
        elif number < len(weak) and weak[number]:
            out.append(f"<!-- {_comment(weak[number])} -->")
        out.append(section.text.strip())
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def render_html(article: Article, figures: Sequence[Figure | None], weak: Sequence[str] = ()) -> str:
    """The article as one HTML `<article>`: headings, each section's `<figure>` (image, caption and credit with
    its links) and paragraphs; all user text escaped."""
    _check(article, figures)
    esc = html.escape
    out = ["<article>"]
    if article.title:
        out.append(f"<h1>{esc(article.title)}</h1>")
    for number, (section, figure) in enumerate(zip(article.sections, figures)):
        out.append("<section>")
        if section.title:
            level = max(2, min(section.level or 2, 6))
            out.append(f"<h{level}>{esc(section.title)}</h{level}>")
        if figure is not None:
            out.append(_figure(figure))
        elif number < len(weak) and weak[number]:
            out.append(f'<p class="no-match">{esc(weak[number])}</p>')
        for paragraph in section.text.split("\n\n"):
            if paragraph.strip():
                out.append(f"<p>{esc(' '.join(paragraph.split()))}</p>")
        out.append("</section>")
    out.append("</article>")
    return "\n".join(out) + "\n"


def _figure(figure: Figure) -> str:
    esc = html.escape
    image = (f'<img src="{esc(figure.image)}" alt="{esc(figure.caption or figure.id)}" loading="lazy">'
             if figure.image and _safe_link(figure.image) else f"<p>{esc(figure.id)} (no file to show)</p>")
    if figure.license:
        title = _a(figure.source, figure.title or figure.id)
        licence = _a(figure.license_url, figure.license, 'rel="license"')
        credit = f"{title} by {esc(figure.author)}, {licence}"
    else:
        credit = esc(figure.credit)
    caption = f"{esc(figure.caption)}<br>" if figure.caption else ""
    small = f'<small class="credit">{credit}</small>' if credit else ""
    return f"<figure>{image}<figcaption>{caption}{small}</figcaption></figure>"


def _a(url: str, text: str, extra: str = "") -> str:
    """A link when `url` is http(s), else the text alone; both escaped."""
    if url.startswith(("http://", "https://")):
        return f'<a href="{html.escape(url)}"{" " + extra if extra else ""}>{html.escape(text)}</a>'
    return html.escape(text)


def _safe_link(target: str) -> bool:
    """A URL the browser may load as an image: http(s), or a relative path (never javascript: or data:)."""
    return target.startswith(("http://", "https://")) or ":" not in target.split("/", 1)[0]


def _wiki_credit(figure: Figure) -> str:
    """The credit in wikitext: author, the licence linked to its deed, the source page linked."""
    if not figure.license:
        return _wiki(figure.credit)
    licence = (f"[{_url(figure.license_url)} {_wiki(figure.license)}]" if figure.license_url.startswith("http")
               else _wiki(figure.license))
    source = f" ([{_url(figure.source)} source])" if figure.source.startswith("http") else ""
    return f"— {_wiki(figure.author)}, {licence}{source}"


def _wiki(text: str) -> str:
    """Text a wiki shows as written: its markup characters as character references, whitespace collapsed."""
    return " ".join(str(text).split()).translate(_WIKI_SPECIAL)


def _wiki_title(title: str) -> str:
    """A file title inside [[...]]: characters no title may hold are dropped."""
    return "".join(ch for ch in title if ch not in "[]{}|<>#\n")


def _url(url: str) -> str:
    """A URL inside [url text]: spaces and brackets percent-encoded so the link stays one piece."""
    return url.replace(" ", "%20").replace("[", "%5B").replace("]", "%5D")


def _comment(text: str) -> str:
    return " ".join(str(text).split()).replace("--", "- -").replace(">", "&gt;")


def _check(article: Article, figures: Sequence) -> None:
    if len(figures) != len(article.sections):
        raise InputError(f"{len(figures)} figures for {len(article.sections)} sections.")
