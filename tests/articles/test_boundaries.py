"""Article splitting and image assignment at their boundaries: lengths exactly at the limits, a title line of exactly
TITLE_WORDS words, heading syntax at its edges (indent, level 6 and 7, closing marks, CRLF), ties across sections,
k = 1, a cosine exactly at the near-duplicate threshold, section labels, joins at the first and last section."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mlsr.articles.sections import MAX_ARTICLE_CHARS, TITLE_WORDS, join_sections, section_label, split_article
from mlsr.articles.suggestions import assign
from mlsr.errors import InputError
from mlsr.settings import MAX_SECTIONS
from mlsr.text import MAX_TEXT_CHARS


def test_the_published_limits():
    assert (MAX_ARTICLE_CHARS, TITLE_WORDS, MAX_SECTIONS, MAX_TEXT_CHARS) == (200_000, 12, 50, 20_000)


@pytest.mark.parametrize("size, refused", [(MAX_ARTICLE_CHARS - 1, False), (MAX_ARTICLE_CHARS, False),
                                           (MAX_ARTICLE_CHARS + 1, True)])
def test_article_length_at_the_limit(size, refused):
    text = ("word " * size)[:size]
    if refused:
        with pytest.raises(InputError) as caught:
            split_article(text, "none")
        assert str(caught.value) == f"the article is {size:,} characters long; the limit is 200,000."
    else:
        assert split_article(text, "none").sections[0].text == text.strip()


@pytest.mark.parametrize("count, refused", [(MAX_SECTIONS - 1, False), (MAX_SECTIONS, False), (MAX_SECTIONS + 1, True)])
def test_section_count_at_the_limit(count, refused):
    text = "\n\n".join(f"Paragraph number {i} has words." for i in range(count))
    if refused:
        with pytest.raises(InputError) as caught:
            split_article(text)
        assert str(caught.value).startswith(f"the article splits into {count} sections; at most 50 are allowed.")
    else:
        assert len(split_article(text).sections) == count


@pytest.mark.parametrize("extra, refused", [(0, False), (1, True)])
def test_a_section_query_at_the_limit_with_its_titles(extra, refused):
    body = "x" * (MAX_TEXT_CHARS - len("T S ") + extra)
    article = split_article(f"# T\n\n## S\n\n{body}\n")
    if refused:
        with pytest.raises(InputError, match=r"^section 1 \(S\) is 20,001 characters long with its titles; "
                                             r"the limit per section is 20,000\."):
            article.queries()
    else:
        assert len(article.queries()[0]) == MAX_TEXT_CHARS


@pytest.mark.parametrize("words, is_title", [(TITLE_WORDS - 1, True), (TITLE_WORDS, True), (TITLE_WORDS + 1, False)])
def test_a_first_line_of_up_to_twelve_words_is_the_title(words, is_title):
    first = " ".join(["tram"] * words)
    article = split_article(f"{first}\n\nTrams run on rails.\n\nHorse trams came first.")
    assert article.title == (first if is_title else "")
    assert len(article.sections) == (2 if is_title else 3)


@pytest.mark.parametrize("mark", [".", "!", "?", ":", ";", ","])
def test_a_first_line_ending_in_punctuation_is_text(mark):
    assert split_article(f"Trams{mark}\n\nTrams run on rails.").title == ""


def test_a_single_paragraph_is_never_its_own_title():
    article = split_article("City trams")
    assert article.title == "" and [s.text for s in article.sections] == ["City trams"]


@pytest.mark.parametrize("line, heading", [
    ("## Two", ("Two", 2)), ("   ## Three spaces", ("Three spaces", 2)), ("    # Four spaces", None),
    ("###### Six", ("Six", 6)), ("####### Seven", None), ("#NoSpace", None), ("## Closed ##", ("Closed", 2)),
    ("== Wiki ==", ("Wiki", 2)), ("====== Deep ======", ("Deep", 6)), ("== Unbalanced =", None),
    ("##\tTabbed\t", ("Tabbed", 2)),
])
def test_heading_syntax_at_its_edges(line, heading):
    article = split_article(f"Lead text here.\n\n{line}\n\nBody text here.\n", "headings")
    found = [(s.title, s.level) for s in article.sections if s.title]
    assert found == ([heading] if heading else [])


def test_crlf_offsets_point_at_the_heading_and_the_body():
    text = "Lead text.\r\n\r\n## Part\r\nBody text.\r\n"
    article = split_article(text)
    lead, part = article.sections
    assert (lead.start, lead.body, lead.end) == (0, 0, text.index("## Part"))
    assert text[part.start:part.body] == "## Part\r\n" and part.text == "Body text." and part.end == len(text)


def test_paragraph_sections_take_the_heading_above_and_its_level():
    article = split_article("Intro line one.\n\n### Deep\n\nFirst.\n\nSecond.\n", "paragraphs")
    assert [(s.title, s.level, s.text) for s in article.sections] == [("", 0, "Intro line one."),
                                                                      ("Deep", 3, "First."), ("Deep", 3, "Second.")]
    assert [section_label(article, i) for i in range(3)] == ["Paragraph 1", "Deep", "Deep"]


def test_section_labels_of_a_split_at_headings():
    article = split_article("Lead words.\n\n## Next\n\nMore words.\n")
    assert [section_label(article, 0), section_label(article, 1)] == ["Introduction", "Next"]
    untitled = split_article("Words.\n\nMore words.\n")
    assert [section_label(untitled, 0), section_label(untitled, 1)] == ["Paragraph 1", "Paragraph 2"]


def test_the_whole_article_as_one_section_starts_after_the_title():
    text = "# Title\n\n## A\n\nAlpha.\n\n## B\n\nBeta.\n"
    section = split_article(text, "none").sections[0]
    assert section.text == "A\n\nAlpha.\n\nB\n\nBeta." and section.start == len("# Title\n")
    assert section.end == len(text)
    plain = split_article("\n\nAlpha beta.\n\nGamma.", "none").sections[0]
    assert plain.start == 2 and plain.text == "Alpha beta.\n\nGamma."


@pytest.mark.parametrize("joined, message", [([0], "only sections 2 to 3 can join the section above them."),
                                             ([3], "only sections 2 to 3 can join the section above them.")])
def test_joins_outside_the_sections_are_refused(joined, message):
    article = split_article("One.\n\n## Two\n\nTwo.\n\n## Three\n\nThree.\n")
    with pytest.raises(InputError) as caught:
        join_sections(article, joined)
    assert str(caught.value) == message


def test_joining_the_last_two_and_every_section():
    article = split_article("One.\n\n## Two\n\nTwo.\n\n## Three\n\nThree.\n")
    assert [s.text for s in join_sections(article, [1, 2]).sections] == ["One.\n\nTwo\n\nTwo.\n\nThree\n\nThree."]
    assert join_sections(article, []).sections == article.sections


def test_ties_across_sections_go_to_the_earlier_section_then_the_better_rank():
    scores = np.array([[2.0, 1.0], [2.0, 2.0]])
    rows = np.array([[7, 8], [7, 9]])
    # row 7 ties at 2.0 in both sections: section 0 takes it; section 1 gets 9 (its rank 2) at k = 1
    assert assign(scores, rows, 1) == [[0], [1]]
    assert assign(scores[::-1], rows[::-1], 1) == [[0], [1]]  # the other way round: section 0 again wins 7


def test_k_one_and_k_at_the_depth():
    scores, rows = np.array([[3.0, 2.0, 1.0]]), np.array([[5, 6, 7]])
    assert assign(scores, rows, 1) == [[0]] and assign(scores, rows, 3) == [[0, 1, 2]]
    assert assign(scores, rows, 4) == [[0, 1, 2]]


def test_a_row_twice_in_one_list_is_kept_once_even_without_uniqueness():
    assert assign(np.array([[3.0, 2.0, 1.0]]), np.array([[5, 5, 6]]), 3, unique=False) == [[0, 2]]


def test_negative_scores_are_never_kept():
    assert assign(np.array([[1.0, -1.0]]), np.array([[1, 2]]), 2) == [[0]]


@pytest.mark.parametrize("threshold, kept", [(0.79, [[0, 2]]), (0.8, [[0, 1, 2]]), (0.99, [[0, 1, 2]])])
def test_near_duplicates_at_the_threshold(threshold, kept):
    # cosines by hand: documents 0 and 1, 20 / (5 * 5) = 0.8; 0 and 2, 0; 1 and 2, 21 / (5 * 7) = 0.6
    vectors = {0: [5.0, 0.0], 1: [4.0, 3.0], 2: [0.0, 7.0]}  # lengths differ: the cosine, not the dot, counts
    documents = {row: sp.csr_matrix(np.array([values])) for row, values in vectors.items()}
    scores, rows = np.array([[3.0, 2.0, 1.0]]), np.array([[0, 1, 2]])
    assert assign(scores, rows, 3, document=lambda row: documents[row], near_duplicate=threshold) == kept


def test_an_empty_document_never_counts_as_a_near_duplicate():
    documents = {0: sp.csr_matrix((1, 2)), 1: sp.csr_matrix(np.array([[1.0, 0.0]]))}
    assert assign(np.array([[2.0, 1.0]]), np.array([[0, 1]]), 2, document=lambda row: documents[row],
                  near_duplicate=0.1) == [[0, 1]]


def test_scores_and_rows_of_other_shapes_are_refused():
    with pytest.raises(InputError, match=r"^scores \(1, 2\) and rows \(1, 3\) must be"):
        assign(np.zeros((1, 2)), np.zeros((1, 3), dtype=int), 1)
    with pytest.raises(InputError, match=r"^scores \(2,\) and rows \(2,\) must be"):
        assign(np.zeros(2), np.zeros(2, dtype=int), 1)


def _suggestion():
    from mlsr.articles.suggestions import ArticleSuggestion, SectionSuggestion
    from mlsr.serving.results import Hit

    article = split_article("# Trams\n\nLead words.\n\n## History\n\nHorse trams.\n")
    hits = [[Hit(1, 4, "a.jpg", 2.5, "thumbnails/a.jpg", "a tram", "https://x/a.jpg"),
             Hit(2, 5, "b.jpg", 1.5, "thumbnails/b.jpg", "a bus", None)],
            [Hit(1, 6, "c.jpg", 0.5, None, "a horse", "https://x/c.jpg")]]
    terms = [[[("tram", 1.23456), ("rail", 1.26544)], [("bus", 1.5)]], [[("horse", 0.5)]]]
    sections = [SectionSuggestion(section, query, section_hits, section_terms, [f"credit {i}" for i in range(2)])
                for section, query, section_hits, section_terms in zip(article.sections, article.queries(), hits,
                                                                       terms)]
    return article, ArticleSuggestion(article, sections)


def test_the_json_answer_by_hand():
    _, suggestion = _suggestion()
    none = {"credit": "", "license": "", "license_url": ""}  # these items record no credit or licence
    assert suggestion.to_json() == {"sections": [
        {"title": "Introduction", "query": "Trams Lead words.", "no_good_match": "", "results": [
            {"rank": 1, "id": "a.jpg", "score": 2.5, "image": "thumbnails/a.jpg", "source": "https://x/a.jpg",
             "caption": "a tram", **none, "terms": [["tram", 1.2346], ["rail", 1.2654]]},
            {"rank": 2, "id": "b.jpg", "score": 1.5, "image": "thumbnails/b.jpg", "source": None, "caption": "a bus",
             **none, "terms": [["bus", 1.5]]}]},
        {"title": "History", "query": "Trams History Horse trams.", "no_good_match": "", "results": [
            {"rank": 1, "id": "c.jpg", "score": 0.5, "image": None, "source": "https://x/c.jpg", "caption": "a horse",
             **none, "terms": [["horse", 0.5]]}]}]}


@pytest.mark.parametrize("chosen, shown", [
    (None, [("https://x/a.jpg", "a tram", "credit 0", "a.jpg"), ("https://x/c.jpg", "a horse", "credit 0", "c.jpg")]),
    ([1, None], [("thumbnails/b.jpg", "a bus", "credit 1", "b.jpg"), None]),
    ([2, 0], [None, ("https://x/c.jpg", "a horse", "credit 0", "c.jpg")]),  # past the last hit: no image
    ([-1, 1], [None, None]),
])
def test_the_markdown_shows_each_sections_choice(chosen, shown):
    from mlsr.articles.markdown import Illustration, render_markdown

    article, suggestion = _suggestion()
    link = (lambda hit: hit.source or hit.image)
    expected = render_markdown(article, [None if s is None else Illustration(*s) for s in shown])
    assert suggestion.markdown(chosen, link=link) == expected


def test_the_markdown_uses_the_suggestions_own_link_by_default_and_refuses_a_wrong_count():
    from mlsr.articles.markdown import Illustration, render_markdown

    article, suggestion = _suggestion()
    assert suggestion.markdown([1, 0]) == render_markdown(  # by default the original's URL, None without one
        article, [Illustration(None, "a bus", "credit 1", "b.jpg"),
                  Illustration("https://x/c.jpg", "a horse", "credit 0", "c.jpg")])
    suggestion.link = lambda hit: f"files/{hit.id}"
    assert suggestion.markdown([0, None]) == render_markdown(
        article, [Illustration("files/a.jpg", "a tram", "credit 0", "a.jpg"), None])
    with pytest.raises(InputError) as caught:
        suggestion.markdown([0])
    assert str(caught.value) == "1 choices for 2 sections."


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["lf", "crlf", "cr"])
def test_paragraph_offsets_by_hand(newline):
    text = f"One two.{newline}{newline}Three four.{newline}"
    article = split_article(text, "paragraphs")
    gap = 2 * len(newline)
    assert [(s.start, s.body, s.end) for s in article.sections] == [(0, 0, 8), (8 + gap, 8 + gap, 19 + gap)]
    assert [text[s.start:s.end] for s in article.sections] == ["One two.", "Three four."]


def test_paragraphs_under_one_heading_are_joined_by_a_blank_line():
    article = split_article("## Part\n\nFirst.\nStill first.\n\nSecond.\n")
    assert [s.text for s in article.sections] == ["First.\nStill first.\n\nSecond."]


def test_a_heading_title_keeps_a_final_capital_x():
    article = split_article("Lead text here.\n\n## Malcolm X\n\nBody text here.\n")
    assert [s.title for s in article.sections] == ["", "Malcolm X"]


def test_two_level_one_headings_mean_no_page_title():
    article = split_article("# Alpha\n\nFirst text.\n\n# Beta\n\nSecond text.\n")
    assert article.title == "" and [(s.title, s.level) for s in article.sections] == [("Alpha", 1), ("Beta", 1)]
    nested = split_article("# Alpha\n\nFirst.\n\n## Inner\n\nMore.\n\n# Beta\n\nSecond.\n")
    assert nested.title == "" and [s.title for s in nested.sections] == ["Alpha", "Inner", "Beta"]


@pytest.mark.parametrize("text, title", [
    ("City trams\n\nTrams run on rails.", "City trams"),  # exactly two paragraphs
    ("City\ntrams\n\nTrams run on rails.\n\nMore.", ""),  # a first paragraph of two lines
    ("Malcolm X\n\nHe spoke.\n\nMore.", "Malcolm X"),
])
def test_title_line_edges(text, title):
    assert split_article(text).title == title


def test_one_section_after_a_title_line_starts_where_the_title_line_ends():
    text = "City trams\n\nAlpha.\n\nBeta."
    article = split_article(text, "none")
    (section,) = article.sections
    assert article.title == "City trams" and section.title == "" and section.level == 0
    assert (section.start, section.body, section.end, section.text) == (10, 10, len(text), "Alpha.\n\nBeta.")


def test_split_at_headings_without_any_keeps_a_title_line_as_text():
    article = split_article("City trams\n\nAlpha.\n\nBeta.", "headings")
    assert article.title == "" and [s.text for s in article.sections] == ["City trams\n\nAlpha.\n\nBeta."]


@pytest.mark.parametrize("call, message", [
    (lambda: split_article(b"bytes"), "expected the article as text (str), got bytes."),
    (lambda: split_article("Text.", "lines"), "split must be one of auto, headings, paragraphs, none, got 'lines'."),
    (lambda: split_article(" \n\n--- \n\n..."), "the article is empty: it has no text with letters or digits."),
    (lambda: split_article("\n\n".join(["Words here."] * 51)),
     "the article splits into 51 sections; at most 50 are allowed. Join some, or split it by headings rather than"
     " paragraphs."),
    (lambda: split_article("x" * 20_001, "none").queries(),
     "section 1 (untitled) is 20,001 characters long with its titles; the limit per section is 20,000. Split it"
     " with a heading or a blank line."),
])
def test_refusals_word_for_word(call, message):
    with pytest.raises(InputError) as caught:
        call()
    assert str(caught.value) == message


def test_crlf_headings_of_both_syntaxes_with_closing_marks():
    article = split_article("Lead words.\r\n\r\n## Closed ##\r\n\r\nBody.\r\n\r\n== Wiki ==\r\n\r\nMore.\r\n")
    assert [(s.title, s.level) for s in article.sections] == [("", 0), ("Closed", 2), ("Wiki", 2)]
