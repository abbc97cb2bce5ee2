"""Service operations of article mode and of searching from a result, on the app's gallery index in-process."""

from __future__ import annotations

import numpy as np
import pytest

from mlsr.serving.service import Service
from mlsr.errors import InputError
from mlsr.index.sparse import SparseIndex
from mlsr.settings import MAX_SECTION_K

ARTICLE = """# A day in the village

## Water buffalo in the fields

Children lead the water buffalo through the rice fields to the market.

## On the road to town

A man on a small motorbike rides along the dirt road.

## A wedding in the evening

A woman cuts a large white sheet cake with a knife.
"""


@pytest.fixture(scope="module")
def service(app_encoder, app_index) -> Service:
    return Service(app_encoder, SparseIndex.load(app_index), app_index)


def test_all_sections_encode_as_one_batch(service, monkeypatch):
    calls = []
    original = service.encoder.encode_text_views
    monkeypatch.setattr(service.encoder, "encode_text_views", lambda texts, **kw: calls.append(list(texts))
                        or original(texts, **kw))
    result = service.suggest_article(ARTICLE, 2)
    assert len(calls) == 1 and len(calls[0]) == 3  # one call, three queries
    assert calls[0][1] == ("A day in the village On the road to town A man on a small motorbike rides along the"
                           " dirt road.")
    assert [s.section.title for s in result.sections] == ["Water buffalo in the fields", "On the road to town",
                                                          "A wedding in the evening"]


def test_sections_rank_like_the_library_when_repeats_are_allowed(service):
    result = service.suggest_article(ARTICLE, 3, unique=False, collapse=False)
    queries = service.encoder.encode_text(result.article.queries())
    expected = service.index.search(queries, 3)
    for number, section in enumerate(result.sections):
        assert [hit.row for hit in section.hits] == expected.indices[number].tolist()
        np.testing.assert_allclose([hit.score for hit in section.hits], expected.scores[number], atol=1e-3)
        for hit, terms in zip(section.hits, section.terms):
            assert sum(value for _, value in terms) == pytest.approx(hit.score, abs=1e-3)


def test_no_image_twice_and_near_duplicates_collapse(service):
    repeated = service.suggest_article(ARTICLE, 3, unique=False, collapse=False)
    rows = [hit.row for s in repeated.sections for hit in s.hits]
    assert len(rows) > len(set(rows))  # this gallery's best images suit every section
    unique = service.suggest_article(ARTICLE, 3, unique=True, collapse=False)
    rows = [hit.row for s in unique.sections for hit in s.hits]
    assert len(rows) == len(set(rows)) == 9
    collapsed = service.suggest_article(ARTICLE, 3, unique=False, collapse=True)
    documents = service.index.vectors
    for section in collapsed.sections:  # the generated photos have (near) identical vectors: one per list
        kept = documents[[hit.row for hit in section.hits]].toarray()
        unit = kept / np.linalg.norm(kept, axis=1, keepdims=True)
        cosine = unit @ unit.T
        assert (cosine[~np.eye(len(kept), dtype=bool)] <= 0.95).all()


def test_the_illustrated_markdown_uses_each_choice(service):
    result = service.suggest_article(ARTICLE, 2, unique=True, collapse=False)
    chosen = [1, None, 0]
    markdown = result.markdown(chosen)
    images = [line for line in markdown.splitlines() if line.startswith("![")]
    assert len(images) == 2
    link = service.markdown_link  # a URL, or a local photo's name in the gallery: never a server path
    assert f"]({link(result.sections[0].hits[1])})" in images[0] and not link(result.sections[0].hits[1]).startswith("/")
    assert f"]({link(result.sections[2].hits[0])})" in images[1]
    coco = [i for i, hit in enumerate(result.sections[2].hits) if "COCO_" in hit.id]
    if coco:
        assert "Flickr" in result.markdown([0, 0, coco[0]])
    with pytest.raises(InputError, match="2 choices for 3 sections"):
        result.markdown([0, 0])


@pytest.mark.parametrize("k", [0, MAX_SECTION_K + 1, "many"])
def test_bad_k_per_section(service, k):
    with pytest.raises(InputError, match="k must be"):
        service.suggest_article(ARTICLE, k)


def test_more_like_this_leaves_the_image_out_and_ranks_by_its_own_vector(service):
    row = 0
    hits, query, _ = service.more_like_this(row, 4)
    assert row not in [hit.row for hit in hits] and len(hits) == 4
    expected = service.index.search(service.index.document(row), 5)
    assert [hit.row for hit in hits] == [r for r in expected.indices[0].tolist() if r != row][:4]
    assert query.nnz == service.index.document(row).nnz
    with pytest.raises(InputError, match="outside the index"):
        service.more_like_this(len(service.index), 4)


def test_a_query_that_matches_nothing_returns_no_ranking(service):
    vocab, frequency = service.encoder.vocab, service.index.document_frequency()
    unmatched = [term for term in ("violin", "glacier", "telescope", "volcano", "saxophone", "penguin")
                 if frequency[vocab.ids[term]] == 0]
    assert unmatched, "the gallery holds every candidate word; pick others"
    hits, query, _ = service.search_terms([[term, 1.0] for term in unmatched], 5)
    assert hits == [] and query.nnz == len(unmatched)
    suggestion = service.suggest(" ".join(unmatched), 5, "no_expand")
    assert all(hit.score > 0 for hit in suggestion.hits)  # only images that share a term, never a 0.00 fill
