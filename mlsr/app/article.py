"""Article mode without any UI: a whole article in, images for each of its sections out.

An article is split into sections (Markdown `#` headings, Wikipedia `== Section ==` headings, or blank-line
paragraphs when it has no headings); the user may join a section with the one above. Each section's query is
built as the seed paper built AToMiC's: page title + section title + section text (`atomic_query`). Images are
given to sections by descending score across all sections, so that no image is offered twice and the section
that wants an image most gets it; near-duplicates (sparse cosine above a threshold) collapse within a list.
The result renders as the article in Markdown with the chosen image under each section heading.

Plain Python, numpy and scipy: no torch, no Gradio.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NamedTuple
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.app.cutoff import check_min_score, no_match_message
from mlsr.app.markdown import Illustration, render_markdown
from mlsr.data.atomic_trec import atomic_query
from mlsr.errors import InputError
from mlsr.settings import MAX_SECTIONS
from mlsr.text import MAX_TEXT_CHARS

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.app.exports import Figure
    from mlsr.app.service import Hit

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


@dataclass
class SectionSuggestion:
    """One section's images: `terms[i]` are the (term, contribution) pairs behind `hits[i]`, summing to its score."""

    section: Section
    query: str
    hits: list[Hit]
    terms: list[list[tuple[str, float]]]
    credits: list[str]
    candidates: int = 0  # images sharing a term with the query: more than `hits` when others took some
    no_match: str = ""  # why no image is offered: its best scored below the minimum ("" when one is)


@dataclass
class ArticleSuggestion:
    """Images for each section of an article, and the illustrated Markdown of a choice among them."""

    article: Article
    sections: list[SectionSuggestion]
    timings: dict[str, float] = field(default_factory=dict)
    link: Callable = lambda hit: hit.source  # a hit -> what its Markdown image points at (None: no file to show)

    def to_json(self) -> dict:
        return {"sections": [
            {"title": section_label(self.article, number), "query": s.query, "no_good_match": s.no_match, "results": [
                {"rank": hit.rank, "id": hit.id, "score": hit.score, "image": hit.image, "source": hit.source,
                 "caption": hit.caption, "credit": hit.credit, "license": hit.license, "license_url": hit.license_url,
                 "terms": [[term, round(contribution, 4)] for term, contribution in terms]}
                for hit, terms in zip(s.hits, s.terms)]}
            for number, s in enumerate(self.sections)]}

    def figures(self, chosen: Sequence[int | None] | None = None, link: Callable | None = None) -> list[Figure | None]:
        """Each section's chosen image with its credit's parts (`mlsr.app.exports.Figure`), or None."""
        from mlsr.app.exports import Figure

        link = link or self.link
        return [None if hit is None else
                Figure(hit.id, link(hit), hit.caption, hit.id if hit.license else "", hit.author, hit.source or "",
                       hit.license, hit.license_url, credit) for hit, credit in self._picked(chosen)]

    def export(self, form: str, chosen: Sequence[int | None] | None = None, link: Callable | None = None) -> str:
        """The illustrated article as `form`: markdown, wikitext or html (`mlsr.app.exports`), credits included."""
        from mlsr.app.exports import FORMATS, render_html, render_wikitext

        if form not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}, got {form!r}.")
        if form == "markdown":
            return self.markdown(chosen, link)
        weak = [section.no_match for section in self.sections]
        render = render_wikitext if form == "wikitext" else render_html
        return render(self.article, self.figures(chosen, link), weak)

    def _picked(self, chosen: Sequence[int | None] | None) -> list[tuple[Hit | None, str]]:
        """Each section's chosen hit and its credit: (None, "") for no image, or a choice past its last hit."""
        chosen = [0] * len(self.sections) if chosen is None else list(chosen)
        if len(chosen) != len(self.sections):
            raise InputError(f"{len(chosen)} choices for {len(self.sections)} sections.")
        return [(section.hits[choice], section.credits[choice])
                if choice is not None and 0 <= choice < len(section.hits) else (None, "")
                for section, choice in zip(self.sections, chosen)]

    def markdown(self, chosen: Sequence[int | None] | None = None, link: Callable | None = None) -> str:
        """The article with, under each section heading, its chosen image (`chosen[i]`: a position in section
        i's hits, None for no image; by default each section's first); `link` overrides `self.link`."""
        link = link or self.link
        shown = [None if hit is None else Illustration(link(hit), hit.caption, credit, hit.id)
                 for hit, credit in self._picked(chosen)]
        return render_markdown(self.article, shown)


def keep_good_matches(section: SectionSuggestion, min_score: float) -> SectionSuggestion:
    """The section without images when its best scores below `min_score` (the score shown on each result), saying
    so and naming the terms the best one shared: an honest "no good match" rather than a forced picture."""
    min_score = check_min_score(min_score)
    if min_score <= 0 or (section.hits and section.hits[0].score >= min_score):
        return section
    shared = [term for term, _ in (section.terms[0] if section.terms else [])]
    return replace(section, hits=[], terms=[], credits=[],
                   no_match=no_match_message(section.hits[0].score if section.hits else None, min_score, shared))


def split_article(text: str, split: str = "auto", title: str | None = None) -> Article:
    """Split an article into sections (see the module's docstring); `title` overrides the detected page title.

    `split`: "auto" (at headings when there are any, else at blank lines), "headings", "paragraphs" (every
    blank-line paragraph, titled by the heading above it) or "none" (one section). The page title is a first
    level-1 heading (`# Title`, `= Title =`) when no other level-1 heading follows, or, without headings, a
    short first line standing alone. Sections with no letters or digits are left out.
    """
    if not isinstance(text, str):
        raise InputError(f"expected the article as text (str), got {type(text).__name__}.")
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}.")
    if len(text) > MAX_ARTICLE_CHARS:
        raise InputError(f"the article is {len(text):,} characters long; the limit is {MAX_ARTICLE_CHARS:,}.")
    headings, paragraphs = _blocks(text)
    page_title, headings = _page_title(headings)
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


# -- assignment -------------------------------------------------------------------------------------------


def assign(scores: np.ndarray, rows: np.ndarray, k: int, *, unique: bool = True,
           document: Callable[[int], sp.csr_matrix] | None = None,
           near_duplicate: float | None = None) -> list[list[int]]:
    """Which candidates each section keeps: for each section, positions into its row of `rows`, best first.

    `scores` and `rows` are (sections, depth) candidate lists, best first. Candidates are taken in descending
    score over all sections (ties: earlier section, then better rank) while a section has fewer than k; with
    `unique`, a row taken by one section is not offered to another, so the section that scores it highest
    gets it. With `document` (row -> that document's (1, vocab) CSR vector, e.g. `SparseIndex.document`: only
    candidates are read, never the whole document matrix) and `near_duplicate`, a candidate whose sparse cosine
    with one already kept in the same list exceeds that threshold is dropped. A score of 0 or less means the
    query shares no term with the image: such candidates are never kept. With depth >= k * sections every
    section that has k matching candidates gets k.
    """
    scores, rows = np.asarray(scores), np.asarray(rows)
    if scores.shape != rows.shape or scores.ndim != 2:
        raise InputError(f"scores {scores.shape} and rows {rows.shape} must be (sections, depth) arrays alike.")
    section, position = np.nonzero(scores > 0)
    order = np.lexsort((position, section, -scores[section, position]))
    kept: list[list[int]] = [[] for _ in range(len(scores))]
    taken: set[int] = set()
    vectors: dict[int, tuple[sp.csr_matrix, float]] = {}  # row -> (vector, norm), read once each
    for s, j in zip(section[order].tolist(), position[order].tolist()):
        row = int(rows[s, j])
        if len(kept[s]) >= k or (unique and row in taken):
            continue
        mine = [int(rows[s, i]) for i in kept[s]]
        if row in mine:
            continue
        if (document is not None and near_duplicate is not None and mine
                and _cosines(document, row, mine, vectors).max() > near_duplicate):
            continue
        kept[s].append(j)
        taken.add(row)
    return kept


def _cosines(document: Callable[[int], sp.csr_matrix], row: int, others: list[int],
             vectors: dict[int, tuple[sp.csr_matrix, float]]) -> np.ndarray:
    """Sparse cosine of document `row` with each of `others` (vectors and norms memoised in `vectors`)."""
    for r in (row, *others):
        if r not in vectors:
            vector = sp.csr_matrix(document(r), dtype=np.float64)
            vectors[r] = vector, float(np.sqrt(vector.multiply(vector).sum())) or 1.0
    mine, norm = vectors[row]
    dots = np.array([float(mine.multiply(vectors[r][0]).sum()) for r in others])
    return dots / (norm * np.array([vectors[r][1] for r in others]))


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


def _page_title(headings: list[_Heading]) -> tuple[tuple[int, str] | None, list[_Heading]]:
    """A first level-1 heading is the page title when no other level-1 heading follows it."""
    if headings and headings[0].level == 1 and all(h.level > 1 for h in headings[1:]):
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
