"""ArticleSuggestion's choices and links reach every export, and the minimum score at its boundaries (found by
mutation testing: exports were only ever checked with each section's first image and the default link)."""

from __future__ import annotations

import pytest

from mlsr.articles.sections import split_article
from mlsr.articles.suggestions import ArticleSuggestion, SectionSuggestion, keep_good_matches
from mlsr.errors import InputError
from mlsr.serving.results import Hit

ARTICLE = "# Trams\n\n## Depots\n\nWhere trams sleep.\n\n## Lines\n\nWhere trams run.\n"


def hit(row: int, score: float, *, licensed: bool, source: str | None) -> Hit:
    return Hit(1, row, f"File:Tram {row}.jpg", score, f"thumbnails/{row}", f"caption {row}", source,
               f"credit {row}", f"author {row}", "CC BY 4.0" if licensed else "",
               "https://creativecommons.org/licenses/by/4.0" if licensed else "")


def suggestion() -> ArticleSuggestion:
    """Two sections, two images each: the first licensed with a source page, the second neither."""
    article = split_article(ARTICLE)
    sections = []
    for number, section in enumerate(article.sections):
        hits = [hit(10 * number, 2.0, licensed=True, source=f"https://wiki.example/{number}"),
                hit(10 * number + 1, 1.0, licensed=False, source=None)]
        sections.append(SectionSuggestion(section, f"q{number}", hits, [[("tram", 2.0)], [("tram", 1.0)]],
                                          [h.credit for h in hits]))
    return ArticleSuggestion(article, sections, link=lambda h: f"https://default.example/{h.row}.jpg")


def other_link(h: Hit) -> str:
    return f"https://other.example/{h.row}.jpg"


def test_figures_follow_the_choices_and_the_given_link():
    first, second = suggestion().figures([1, None], link=other_link)
    assert second is None
    assert first.image == "https://other.example/1.jpg" and first.caption == "caption 1"
    assert first.id == "File:Tram 1.jpg" and first.author == "author 1"
    assert first.title == "" and first.source == ""  # no licence: no credit title; no source page: ""
    assert first.credit == "credit 1"
    licensed = suggestion().figures([0, 0])[1]
    assert licensed.title == "File:Tram 10.jpg" and licensed.source == "https://wiki.example/1"
    assert licensed.image == "https://default.example/10.jpg" and licensed.license == "CC BY 4.0"


@pytest.mark.parametrize("form", ["markdown", "wikitext", "html"])
def test_every_export_follows_the_choices_and_the_given_link(form):
    chosen = suggestion().export(form, [1, 0], link=other_link)
    assert "https://other.example/1.jpg" in chosen or form == "wikitext"  # wikitext names files, not URLs
    assert "caption 1" in chosen and "caption 10" in chosen
    assert "caption 0" not in chosen and "caption 11" not in chosen
    assert "default.example" not in chosen
    nothing = suggestion().export(form, [None, None], link=other_link)
    assert "caption" not in nothing and "other.example" not in nothing


def test_an_unknown_export_format_names_the_ones_there_are():
    with pytest.raises(InputError, match="format must be one of markdown, wikitext, html, got 'pdf'"):
        suggestion().export("pdf")


def section_with(scores: list[float]) -> SectionSuggestion:
    hits = [hit(row, score, licensed=False, source=None) for row, score in enumerate(scores)]
    return SectionSuggestion(split_article(ARTICLE).sections[0], "q", hits, [[("tram", s)] for s in scores],
                             [h.credit for h in hits])


@pytest.mark.parametrize("scores, min_score, kept", [
    ([0.5, 0.2], 0.5, True),     # the best exactly at the minimum is good enough
    ([0.49, 0.2], 0.5, False),   # a minimum between 0 and 1 applies
    ([0.5], 0.0, True),          # 0: every match counts
    ([], 0.0, True),             # 0 on a section without images: nothing to say
])
def test_the_minimum_score_at_its_boundaries(scores, min_score, kept):
    section = section_with(scores)
    result = keep_good_matches(section, min_score)
    if kept:
        assert result == section and result.no_match == ""
    else:
        assert result.hits == [] and result.terms == [] and result.credits == []
        assert "0.49" in result.no_match and "tram" in result.no_match


def test_a_section_without_images_under_a_minimum_says_so():
    result = keep_good_matches(section_with([]), 0.5)
    assert result.hits == [] and result.terms == [] and result.credits == []
    assert result.no_match.startswith("no image in this gallery matches this section well")
