"""What editors paste: a two-section article as wikitext, HTML and Markdown, each with its credits (goldens); the HTML
parsed back and user text escaped; the honest "no good match" for a section whose best image scores too low."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from mlsr.articles.sections import split_article
from mlsr.articles.suggestions import ArticleSuggestion, SectionSuggestion, keep_good_matches
from mlsr.serving.results import Hit
from mlsr.errors import InputError

ARTICLE = """# Water buffalo

== Habitat ==
Buffaloes wallow in <rivers> & mud.

== Farming ==
They plough | paddy fields.
"""
SOURCE = "https://commons.wikimedia.org/wiki/File:Buffalo_A.jpg"
LICENCE = "https://creativecommons.org/licenses/by-sa/4.0"
CREDIT_A = f"File:Buffalo A.jpg by Jane <Doe>, CC BY-SA 4.0 ({LICENCE}), via Wikimedia Commons ({SOURCE})"


def suggestion() -> ArticleSuggestion:
    article = split_article(ARTICLE)
    wiki = Hit(1, 0, "File:Buffalo A.jpg", 2.5, "thumbnails/a", "Buffalo <b>bathing</b> [[x]]", SOURCE, CREDIT_A,
               "Jane <Doe>", "CC BY-SA 4.0", LICENCE)
    coco = Hit(1, 1, "COCO_val2014_1.jpg", 1.5, "thumbnails/b", "A field", "http://images.cocodataset.org/1.jpg",
               "MS-COCO image 1: a Flickr photo under its own license (https://cocodataset.org/#termsofuse)")
    sections = [SectionSuggestion(article.sections[0], "q1", [wiki], [[("buffalo", 2.0), ("river", 0.5)]],
                                  [wiki.credit]),
                SectionSuggestion(article.sections[1], "q2", [coco], [[("field", 1.5)]], [coco.credit])]
    return ArticleSuggestion(article, sections, link=lambda hit: f"https://pictures.example/{hit.row}.jpg")


WIKITEXT = f"""<!-- Water buffalo -->
== Habitat ==
[[File:Buffalo A.jpg|thumb|Buffalo &#60;b&#62;bathing&#60;/b&#62; &#91;&#91;x&#93;&#93; — Jane &#60;Doe&#62;, [{LICENCE} CC BY-SA 4.0] ([{SOURCE} source])]]
Buffaloes wallow in <rivers> & mud.

== Farming ==
<!-- mlsr suggests COCO_val2014_1.jpg (not a file of the wiki): MS-COCO image 1: a Flickr photo under its own license (https://cocodataset.org/#termsofuse) -->
They plough | paddy fields.
"""

HTML = f"""<article>
<h1>Water buffalo</h1>
<section>
<h2>Habitat</h2>
<figure><img src="https://pictures.example/0.jpg" alt="Buffalo &lt;b&gt;bathing&lt;/b&gt; [[x]]" loading="lazy"><figcaption>Buffalo &lt;b&gt;bathing&lt;/b&gt; [[x]]<br><small class="credit"><a href="{SOURCE}">File:Buffalo A.jpg</a> by Jane &lt;Doe&gt;, <a href="{LICENCE}" rel="license">CC BY-SA 4.0</a></small></figcaption></figure>
<p>Buffaloes wallow in &lt;rivers&gt; &amp; mud.</p>
</section>
<section>
<h2>Farming</h2>
<figure><img src="https://pictures.example/1.jpg" alt="A field" loading="lazy"><figcaption>A field<br><small class="credit">MS-COCO image 1: a Flickr photo under its own license (https://cocodataset.org/#termsofuse)</small></figcaption></figure>
<p>They plough | paddy fields.</p>
</section>
</article>
"""

MARKDOWN = f"""# Water buffalo

== Habitat ==

![Buffalo \\<b\\>bathing\\</b\\> \\[\\[x\\]\\]](https://pictures.example/0.jpg)  
*Buffalo \\<b\\>bathing\\</b\\> \\[\\[x\\]\\]* · File\\:Buffalo A.jpg by Jane \\<Doe\\>, CC BY-SA 4.0 (<{LICENCE}>), via Wikimedia Commons (<{SOURCE}>)

Buffaloes wallow in <rivers> & mud.

== Farming ==

![A field](https://pictures.example/1.jpg)  
*A field* · MS-COCO image 1\\: a Flickr photo under its own license (<https://cocodataset.org/#termsofuse>)

They plough | paddy fields.
"""


def test_export_goldens():
    result = suggestion()
    assert result.export("wikitext") == WIKITEXT
    assert result.export("html") == HTML
    assert result.export("markdown") == MARKDOWN
    with pytest.raises(InputError, match="format must be one of"):
        result.export("pdf")


class Tree(HTMLParser):
    """Every start and end tag, checked to nest; the text and the links found."""

    VOID = {"img", "br"}

    def __init__(self) -> None:
        super().__init__()
        self.open, self.tags, self.text, self.links = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "a":
            self.links.append(dict(attrs)["href"])
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open.pop() == tag

    def handle_data(self, data):
        self.text.append(data)


def test_the_html_parses_back_with_user_text_as_text():
    tree = Tree()
    tree.feed(suggestion().export("html"))
    tree.close()
    assert tree.open == [] and tree.tags.count("figure") == 2 and tree.tags.count("figcaption") == 2
    assert "b" not in tree.tags and "rivers" not in tree.tags  # the caption's and the article's "tags" stayed text
    text = "".join(tree.text)
    assert "Buffalo <b>bathing</b> [[x]]" in text and "Buffaloes wallow in <rivers> & mud." in text
    assert "Jane <Doe>" in text and tree.links == [SOURCE, LICENCE]


def test_a_section_below_the_minimum_says_so_instead_of_forcing_a_picture():
    result = suggestion()
    weak = keep_good_matches(result.sections[1], 2.0)
    assert weak.hits == [] and weak.no_match == ("no image in this gallery matches this section well (best score"
                                                 " 1.5, below 2); strongest shared terms: field")
    assert keep_good_matches(result.sections[0], 2.0) is result.sections[0]
    result.sections[1] = weak
    assert '<p class="no-match">no image in this gallery matches' in result.export("html")
    assert "<!-- no image in this gallery matches this section well" in result.export("wikitext")
    assert result.to_json()["sections"][1]["no_good_match"] == weak.no_match
    with pytest.raises(InputError, match="minimum score"):
        keep_good_matches(result.sections[0], -1)


def test_below_minimum_for_a_ranking():
    from types import SimpleNamespace

    from mlsr.articles.cutoff import below_minimum

    hits = [SimpleNamespace(score=1.5), SimpleNamespace(score=1.0)]
    terms = [SimpleNamespace(term=t) for t in ("buffalo", "river", "mud", "water", "calf", "field")]
    assert below_minimum(hits, 0, lambda hit: terms) == (hits, "")
    assert below_minimum(hits, 1.5, lambda hit: terms) == (hits, "")
    assert below_minimum(hits, 2, lambda hit: terms) == ([], "no image in this gallery matches this text well (best"
                                                            " score 1.5, below 2); strongest shared terms: buffalo,"
                                                            " river, mud, water, calf")
    assert below_minimum([], 2, lambda hit: terms)[1].endswith("strongest shared terms: none")
    for bad in (-1, float("nan"), "2", True):
        with pytest.raises(InputError, match="minimum score"):
            below_minimum(hits, bad, lambda hit: terms)


def test_the_licence_filter_offers_the_families_the_gallery_records():
    from mlsr.ingest.licences import licence_choices

    coco = [{"id": "COCO_1.jpg", "captions": ["a cake"]}, {"id": "COCO_2.jpg", "captions": []}]
    wiki = [{"id": "File:A.jpg", "license": "CC BY-SA 4.0"}, {"id": "File:B.jpg", "license": "CC0"},
            {"id": "File:C.jpg", "license": "CC BY-SA 3.0"}, {"id": "COCO_3.jpg"}]
    assert licence_choices(coco) == []
    assert licence_choices(wiki) == ["CC0", "CC-BY-SA"]
