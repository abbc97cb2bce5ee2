"""Article mode's library: splitting, the AToMiC query recipe, assignment across sections, the illustrated Markdown."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from mlsr.articles.sections import SPLITS, join_sections, split_article
from mlsr.articles.suggestions import assign
from mlsr.articles.markdown import Illustration, credit_line, literal, render_markdown
from mlsr.errors import InputError
from mlsr.settings import MAX_SECTIONS

MARKDOWN = """# Water buffalo

The water buffalo is a large bovid kept in rice fields.

## Domestication

It was domesticated in India
about five thousand years ago.

## At the market

Children lead the buffalo to the market.

```
# a comment in code, not a heading
```
"""
WIKI = ("= Tram =\n\nTrams run on rails.\n\n== History ==\nHorse trams came first.\n\n"
        "== Today ==\nMany cities use them.\n")


def titles(article) -> list[str]:
    return [section.title for section in article.sections]


def test_markdown_headings_split_with_the_page_title_and_a_lead():
    article = split_article(MARKDOWN)
    assert article.title == "Water buffalo" and article.split == "headings"
    assert titles(article) == ["", "Domestication", "At the market"]
    assert article.sections[1].text == "It was domesticated in India\nabout five thousand years ago."
    assert "# a comment in code" in article.sections[2].text  # a fenced line is never a heading
    assert MARKDOWN[article.sections[1].start : article.sections[1].body] == "## Domestication\n"


def test_wikipedia_headings_and_plain_paragraphs():
    article = split_article(WIKI)
    assert article.title == "Tram" and titles(article) == ["", "History", "Today"]
    plain = split_article("City trams\n\nTrams run on rails in many cities.\n\nHorse trams came first.\n")
    assert plain.split == "paragraphs" and plain.title == "City trams"  # a short first line standing alone
    assert [s.text for s in plain.sections] == ["Trams run on rails in many cities.", "Horse trams came first."]
    sentence_first = split_article("Trams run on rails.\n\nHorse trams came first.")
    assert sentence_first.title == "" and len(sentence_first.sections) == 2


def test_the_other_splits_and_an_explicit_title():
    assert len(split_article(MARKDOWN, "none").sections) == 1
    assert "Domestication" in split_article(MARKDOWN, "none").sections[0].text  # headings become lines
    by_paragraph = split_article(MARKDOWN, "paragraphs")
    assert titles(by_paragraph) == ["", "Domestication", "At the market", "At the market"]
    assert split_article(MARKDOWN, title="  Bubalus bubalis ").title == "Bubalus bubalis"


def test_queries_follow_the_atomic_recipe():
    article = split_article(MARKDOWN)
    assert article.queries()[1] == ("Water buffalo Domestication It was domesticated in India\n"
                                    "about five thousand years ago.")
    assert article.queries()[0].startswith("Water buffalo The water buffalo")  # the lead has no section title


def test_joining_sections_and_undoing_it():
    article = split_article(MARKDOWN)
    joined = join_sections(article, [2])
    assert titles(joined) == ["", "Domestication"]
    assert "At the market\n\nChildren lead" in joined.sections[1].text  # the joined heading stays in the query
    assert joined.sections[1].end == article.sections[2].end
    assert join_sections(article, []) == article  # re-splitting is joining nothing
    with pytest.raises(InputError, match="sections 2 to 3"):
        join_sections(article, [0])


@pytest.mark.parametrize("text, message", [
    ("", "empty"), ("## Only a heading\n\n## Another\n", "empty"), ("x" * 200_001, "limit"), (42, "text"),
    ("\n\n".join(f"Paragraph {i} ends here." for i in range(MAX_SECTIONS + 1)), f"at most {MAX_SECTIONS}"),
])
def test_bad_articles_get_a_clear_message(text, message):
    with pytest.raises(InputError, match=message):
        split_article(text)


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("text", ["", "  \n\n \t\n", "# Title\n\n", "## A\n\n## B\n"])
def test_an_article_without_words_is_empty_in_every_split(text, split):
    with pytest.raises(InputError, match="empty"):
        split_article(text, split)


def test_a_section_too_long_for_a_query_is_named():
    with pytest.raises(InputError, match=r"section 2 \(Long\)"):
        split_article("# T\n\nshort lead\n\n## Long\n\n" + "word " * 4100).queries()


def test_the_illustrated_markdown_adds_images_under_headings_and_changes_nothing_else():
    article = split_article(MARKDOWN)
    shown = [Illustration("https://x.org/a.jpg", "a lead", "", "1"), None,
             Illustration("photos/b c.jpg", "<img src=x> *b*", "MS-COCO image 7", "2")]
    rendered = render_markdown(article, shown)
    assert "![a lead](https://x.org/a.jpg)" in rendered
    assert "![\\<img src=x\\> \\*b\\*](<photos/b c.jpg>)" in rendered
    assert "*\\<img src=x\\> \\*b\\** · MS-COCO image 7" in rendered
    assert rendered.index("## At the market") < rendered.index("photos/b c.jpg") < rendered.index("Children")
    assert rendered.count("![") == 2
    kept = [line for line in rendered.splitlines() if line.strip() and not line.startswith(("![", "*"))]
    assert kept == [line for line in MARKDOWN.splitlines() if line.strip()]
    with pytest.raises(InputError, match="3 sections"):
        render_markdown(article, shown[:2])


def split_or_none(text: str, split: str):
    """The article, or None where it is refused (empty, too many sections): property tests skip those."""
    try:
        return split_article(text, split)
    except InputError:
        return None


headings = st.sampled_from(["# Title", "## Part", "== Wiki ==", "### Deep", "plain line", "", "```", "- item"])


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(headings, st.text(alphabet="ab .\n#=", max_size=12)), min_size=1, max_size=25),
       st.sampled_from(SPLITS))
def test_rendering_only_inserts(lines, split):
    text = "\n".join(lines)
    article = split_or_none(text, split)
    if article is None:
        return
    marker = Illustration("IMG", "cap", "", "id")
    rendered = render_markdown(article, [marker] * len(article.sections))
    block = "![cap](IMG)  \n*cap*"
    assert rendered.count(block) == len(article.sections)
    assert "".join(rendered.split(block)).replace("\n", "") == text.replace("\n", "")
    for section in article.sections:
        assert section.start <= section.body <= section.end <= len(text)
        assert any(ch.isalnum() for ch in section.text)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["# Title", "## Part", "= Wiki =", "== Wiki ==", "", "words here"]),
                          st.from_regex(r"[a-z]{1,6}( [a-z]{1,6}){0,3}", fullmatch=True)), min_size=1, max_size=15),
       st.sampled_from(SPLITS))
def test_every_word_of_the_article_is_in_a_section_or_the_page_title(lines, split):
    """Text is never dropped (a heading over no text may be: a section needs words)."""
    text = "\n".join(lines)
    article = split_or_none(text, split)
    if article is None:
        return
    kept = " ".join([article.title, *(f"{section.title} {section.text}" for section in article.sections)]).split()
    for word in " ".join(line for line in lines if not line.startswith(("#", "="))).split():
        assert word in kept


def test_a_rule_above_the_page_title_is_not_text():
    article = split_article("***\n\n# Trams\n\nLead.\n\n## Depots\n\nWhere trams sleep.")
    assert article.title == "Trams"
    assert [(section.title, section.text) for section in article.sections] == [("", "Lead."),
                                                                                ("Depots", "Where trams sleep.")]
    assert article.sections[0].start == article.text.index("Lead.")


@pytest.mark.parametrize("split", SPLITS)
def test_text_above_a_level_1_heading_is_kept_and_the_heading_is_a_section(split):
    article = split_article("Words above.\n\n# Trams\n\nLead.", split)
    assert article.title == ""
    assert "Words above." in article.sections[0].text
    assert "Lead." in article.sections[-1].text


def test_literal_text_never_becomes_markup():
    assert literal("a <img src=x> & [l](u) *b* `c`") == "a \\<img src=x\\> &amp; \\[l\\](u) \\*b\\* \\`c\\`"
    assert literal("see http://x.org or me@x.org") == "see http\\://x.org or me\\@x.org"
    assert literal("two\nlines") == "two lines"


def test_credit_lines_for_coco_photos_only():
    coco = {"id": "2", "cocoid": 184613, "image": "http://images.cocodataset.org/x.jpg"}
    assert "MS-COCO image 184613" in credit_line(coco)
    assert "Flickr" in credit_line({"id": "x", "image": "photos/COCO_val2014_000000184613.jpg"})
    assert credit_line({"id": "bus", "image": "photos/bus.jpg"}) == ""


# -- assignment -------------------------------------------------------------------------------------------


def test_no_image_twice_and_the_section_that_wants_it_most_gets_it():
    scores = np.array([[0.9, 0.8, 0.1], [0.95, 0.5, 0.4]])
    rows = np.array([[7, 3, 5], [7, 4, 3]])
    kept = assign(scores, rows, 2)
    assert [[int(rows[s, j]) for j in kept[s]] for s in range(2)] == [[3, 5], [7, 4]]
    both = assign(scores, rows, 2, unique=False)
    assert [[int(rows[s, j]) for j in both[s]] for s in range(2)] == [[7, 3], [7, 4]]


def test_candidates_that_match_nothing_are_never_kept():
    assert assign(np.array([[2.0, 0.0, 0.0]]), np.array([[1, 2, 3]]), 3) == [[0]]


def test_near_duplicates_collapse_within_a_list():
    documents = sp.csr_matrix(np.array([[1.0, 1.0, 0], [1.0, 0.99, 0], [0, 1.0, 1.0]], dtype=np.float32))
    scores, rows = np.array([[3.0, 2.9, 1.0]]), np.array([[0, 1, 2]])
    assert assign(scores, rows, 2, document=lambda row: documents[row], near_duplicate=0.95) == [[0, 2]]
    assert assign(scores, rows, 2) == [[0, 1]]  # collapsing off


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_assignment_properties(sections, k, seed):
    rng = np.random.default_rng(seed)
    n = 12
    depth = min(n, k * sections)
    rows = np.stack([rng.permutation(n)[:depth] for _ in range(sections)])
    scores = -np.sort(-rng.integers(0, 5, size=(sections, depth)).astype(float), axis=1)
    kept = assign(scores, rows, k)
    chosen = [[int(rows[s, j]) for j in kept[s]] for s in range(sections)]
    flat = [row for section in chosen for row in section]
    assert len(flat) == len(set(flat))  # no image twice
    for s in range(sections):
        assert len(chosen[s]) <= k and all(scores[s, j] > 0 for j in kept[s])
        assert kept[s] == sorted(kept[s])  # best first
        matching = int((scores[s] > 0).sum())
        others = sum(len(chosen[o]) for o in range(sections) if o != s)
        assert len(chosen[s]) >= min(k, matching - others)  # nothing left unassigned that it could have had
