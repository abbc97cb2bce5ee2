"""Images for each section of an article: given to sections by descending score across all sections, so that
no image is offered twice and the section that wants an image most gets it; near-duplicates (sparse cosine above a
threshold) collapse within a list. The result renders as the illustrated article (`mlsr.articles.markdown`,
`mlsr.articles.exports`). Plain Python, numpy and scipy: no torch, no Gradio.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.articles.cutoff import check_min_score, no_match_message
from mlsr.articles.exports import FORMATS, Figure, render_html, render_wikitext
from mlsr.articles.markdown import Illustration, render_markdown
from mlsr.articles.sections import Article, Section, section_label
from mlsr.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.serving.results import Hit


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
        """Each section's chosen image with its credit's parts (`mlsr.articles.exports.Figure`), or None."""
        link = link or self.link
        return [None if hit is None else
                Figure(hit.id, link(hit), hit.caption, hit.id if hit.license else "", hit.author, hit.source or "",
                       hit.license, hit.license_url, credit) for hit, credit in self._picked(chosen)]

    def export(self, form: str, chosen: Sequence[int | None] | None = None, link: Callable | None = None) -> str:
        """The illustrated article as `form`: markdown, wikitext or html (`mlsr.articles.exports`), credits included."""
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
