"""An article split into sections: Markdown `#` headings, Wikipedia `== Section ==` headings, or blank-line
paragraphs when it has no headings; the user may join a section with the one above. Each section's query is
built as the seed paper built AToMiC's: page title + section title + section text (`atomic_query`).

Plain Python: no numpy, no torch, no Gradio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import NamedTuple
from collections.abc import Iterable

from mlsr.data.atomic_trec import atomic_query
from mlsr.errors import InputError
from mlsr.settings import MAX_SECTIONS
from mlsr.text import MAX_TEXT_CHARS

MAX_ARTICLE_CHARS = 200_000  # ten long sections; more is refused, not truncated
SPLITS: tuple[str, ...] = ("auto", "headings", "paragraphs", "none")  # auto: headings when it has any
TITLE_WORDS = 12  # a first paragraph of one line and at most this many words, with no full stop, is a title
_MARKDOWN_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_WIKI_HEADING = re.compile(r"^(={1,6})[ \t]*([^=].*?)[ \t]*\1[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


@dataclass(frozen=True)
class Section:
    """One section: its heading (`title`, '' for a lead or a paragraph), its text, and where it sits.

    `start` is where the section begins in the article and `body` where its text begins (after the heading
    line; equal to `start` for a section without a heading): the illustrated Markdown puts the image there.
    """

    title: str
    text: str
    start: int
    body: int
    end: int
    level: int = 0  # heading level, 1-6; 0 for a section without a heading


@dataclass(frozen=True)
class Article:
    """An article split into sections: `title` is the page title ('' when it has none)."""

    text: str
    title: str
    sections: tuple[Section, ...]
    split: str  # how it was split: "headings", "paragraphs" or "none"

    def queries(self) -> list[str]:
        """Each section's query, the AToMiC recipe: page title + section title + section text."""
        queries = []
        for number, section in enumerate(self.sections, 1):
            query = atomic_query(self.title, section.title, section.text)
            if len(query) > MAX_TEXT_CHARS:
                raise InputError(
                    f"section {number} ({section.title or 'untitled'}) is {len(query):,} characters long with its"
                    f" titles; the limit per section is {MAX_TEXT_CHARS:,}. Split it with a heading or a blank line."
                )
            queries.append(query)
        return queries


def split_article(text: str, split: str = "auto", title: str | None = None) -> Article:
    """Split an article into sections (see the module's docstring); `title` overrides the detected page title.

    `split`: "auto" (at headings when there are any, else at blank lines), "headings", "paragraphs" (every
    blank-line paragraph, titled by the heading above it) or "none" (one section). The page title is a first
    level-1 heading (`# Title`, `= Title =`) with no text above it and no other level-1 heading after it, or,
    without headings, a short first line standing alone. Sections with no letters or digits are left out.
    """
    if not isinstance(text, str):
        raise InputError(f"expected the article as text (str), got {type(text).__name__}.")
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    if len(text) > MAX_ARTICLE_CHARS:
        raise InputError(f"the article is {len(text):,} characters long; the limit is {MAX_ARTICLE_CHARS:,}.")
    headings, paragraphs = _blocks(text)
    page_title, headings = _page_title(text, headings, paragraphs)
    if split == "auto":
        split = "headings" if headings else "paragraphs"
    if not headings and page_title is None and split != "headings" and paragraphs:
        page_title, paragraphs = _title_line(text, paragraphs)
    if split == "headings":
        sections = _by_headings(text, headings, paragraphs, page_title)
    elif split == "paragraphs":
        sections = _by_paragraphs(text, headings, paragraphs)
    else:
        sections = [_whole(text, page_title, headings, paragraphs)] if paragraphs else []
    sections = [s for s in sections if _has_words(s.text)]
    if not sections:
        raise InputError("the article is empty: it has no text with letters or digits.")
    if len(sections) > MAX_SECTIONS:
        raise InputError(f"the article splits into {len(sections)} sections; at most {MAX_SECTIONS} are allowed."
                         " Join some, or split it by headings rather than paragraphs.")
    found = page_title[1] if page_title else ""
    return Article(text, found if title is None else title.strip(), tuple(sections), split)


def join_sections(article: Article, joined: Iterable[int]) -> Article:
    """The article with each section numbered in `joined` (0-based, >= 1) made part of the section above it.

    A joined section's heading becomes a line of the text above it, so its words still count in the query;
    the image of the group goes where the first section's would.
    """
    joined = {int(i) for i in joined}
    if any(not 1 <= i < len(article.sections) for i in joined):
        raise InputError(f"only sections 2 to {len(article.sections)} can join the section above them.")
    groups: list[Section] = []
    for number, section in enumerate(article.sections):
        if number in joined and groups:
            above = groups[-1]
            text = "\n\n".join(part for part in (above.text, section.title, section.text) if part)
            groups[-1] = replace(above, text=text, end=section.end)
        else:
            groups.append(section)
    return replace(article, sections=tuple(groups))


def section_label(article: Article, number: int) -> str:
    """A section's heading, or what stands in for it, in the UI and the API alike: 'Introduction' for the lead of
    an article split at its headings, 'Paragraph 3' for an untitled paragraph."""
    section = article.sections[number]
    if section.title:
        return section.title
    return "Introduction" if article.split == "headings" and number == 0 else f"Paragraph {number + 1}"


# -- splitting --------------------------------------------------------------------------------------------


class _Heading(NamedTuple):
    level: int
    title: str
    start: int
    end: int  # just after the heading line's newline


class _Paragraph(NamedTuple):
    start: int
    end: int  # just after its last line (without the newline)


def _blocks(text: str) -> tuple[list[_Heading], list[_Paragraph]]:
    """Heading lines and blank-line paragraphs with their offsets (lines in fenced code are never headings)."""
    headings: list[_Heading] = []
    paragraphs: list[_Paragraph] = []
    fenced, paragraph_start, offset = False, None, 0
    for line in text.splitlines(keepends=True):
        start, offset = offset, offset + len(line)
        bare = line.rstrip("\r\n")
        if _FENCE.match(bare):
            fenced = not fenced
        match = None if fenced else (_MARKDOWN_HEADING.match(bare) or _WIKI_HEADING.match(bare))
        if match or not bare.strip():
            if paragraph_start is not None:
                paragraphs.append(_Paragraph(paragraph_start, start - _newline_length(text, start)))
                paragraph_start = None
            if match:
                headings.append(_Heading(len(match.group(1)), match.group(2).strip(), start, offset))
        elif paragraph_start is None:
            paragraph_start = start
    if paragraph_start is not None:
        paragraphs.append(_Paragraph(paragraph_start, len(text.rstrip("\r\n"))))
    return headings, paragraphs


def _newline_length(text: str, at: int) -> int:
    if text[max(at - 2, 0) : at] == "\r\n":
        return 2
    return 1 if at > 0 and text[at - 1] in "\r\n" else 0


def _page_title(text: str, headings: list[_Heading], paragraphs: list[_Paragraph]
                ) -> tuple[tuple[int, str] | None, list[_Heading]]:
    """A first level-1 heading is the page title when no other level-1 heading follows it and no text stands above
    it (text above a title would belong to no section: that heading is then a section's)."""
    above = headings and any(p.start < headings[0].start and _has_words(text[p.start : p.end]) for p in paragraphs)
    if headings and not above and headings[0].level == 1 and all(h.level > 1 for h in headings[1:]):
        return (headings[0].end, headings[0].title), headings[1:]
    return None, headings


def _title_line(text: str, paragraphs: list[_Paragraph]) -> tuple[tuple[int, str] | None, list[_Paragraph]]:
    """Without headings, a short first line standing alone (no full stop) is the page title."""
    first = text[paragraphs[0].start : paragraphs[0].end].strip()
    words = first.split()
    if len(paragraphs) > 1 and "\n" not in first and len(words) <= TITLE_WORDS and first[-1] not in ".!?:;,":
        return (paragraphs[0].end, first), paragraphs[1:]
    return None, paragraphs


def _body(text: str, paragraphs: list[_Paragraph], start: int, end: int) -> str:
    return "\n\n".join(text[p.start : p.end].strip() for p in paragraphs if start <= p.start < end)


def _by_headings(text: str, headings: list[_Heading], paragraphs: list[_Paragraph],
                 page_title: tuple[int, str] | None) -> list[Section]:
    lead_start = page_title[0] if page_title else 0
    bounds = [h.start for h in headings] + [len(text)]
    sections = []
    lead_end = bounds[0]
    if _body(text, paragraphs, lead_start, lead_end):
        first = next(p.start for p in paragraphs if lead_start <= p.start)
        sections.append(Section("", _body(text, paragraphs, lead_start, lead_end), first, first, lead_end))
    for heading, end in zip(headings, bounds[1:]):
        sections.append(Section(heading.title, _body(text, paragraphs, heading.end, end), heading.start,
                                heading.end, end, heading.level))
    return sections


def _by_paragraphs(text: str, headings: list[_Heading], paragraphs: list[_Paragraph]) -> list[Section]:
    sections = []
    for paragraph in paragraphs:
        above = [h for h in headings if h.start < paragraph.start]
        title = above[-1].title if above else ""
        sections.append(Section(title, text[paragraph.start : paragraph.end].strip(), paragraph.start,
                                paragraph.start, paragraph.end, above[-1].level if above else 0))
    return sections


def _whole(text: str, page_title: tuple[int, str] | None, headings: list[_Heading],
           paragraphs: list[_Paragraph]) -> Section:
    """One section of everything after the page title; the headings inside become lines of its text."""
    start = page_title[0] if page_title else min([h.start for h in headings] + [p.start for p in paragraphs])
    parts = sorted([(h.start, h.title) for h in headings]
                   + [(p.start, text[p.start : p.end].strip()) for p in paragraphs])
    return Section("", "\n\n".join(part for at, part in parts if at >= start), start, start, len(text))


def _has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)
