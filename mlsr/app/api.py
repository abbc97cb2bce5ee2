"""The app's named API endpoints, which are also its MCP tools (`launch(mcp_server=True)`).

Each returns plain JSON for `gradio_client`; Gradio's MCP server describes each tool by the function's
docstring (the summary, `Args:` and `Returns:`) and its type hints, so those are written for an agent.
Built by `mlsr.app.ui.build_ui`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal
from collections.abc import Callable

import gradio as gr
from gradio.data_classes import FileData

from mlsr.app.handlers import MODELS, user_errors
from mlsr.serving.results import rounded
from mlsr.serving.service import Service
from mlsr.app.uploads import uploaded_image
from mlsr.ingest.licences import parse_licences
from mlsr.settings import ARTICLE_K


def add_api(service: Service) -> None:
    """Named endpoints returning JSON, for `gradio_client` and as MCP tools (see docs/app.md): the docstrings and
    type hints are what an agent reads about each tool. Gradio reads one line per argument and per return value."""
    for fn in (*_text_endpoints(service), *_image_endpoints(service)):
        gr.api(fn, api_name=fn.__name__, concurrency_id=MODELS)


def _text_endpoints(service: Service) -> list[Callable]:
    """/suggest, /suggest_article, /search_terms and /compare."""

    @user_errors
    def suggest(text: str, k: int = 10, mode: Literal["expand", "no_expand", "hybrid"] = "expand",
                licenses: str = "", min_score: float = 0.0) -> dict:
        """Suggest indexed images for a passage of text (a paragraph or a section), best first.

        Args:
            text: the passage, up to 20,000 characters.
            k: how many images to return, 1 to 100 (fewer when fewer images share a term with the text).
            mode: "expand": every term the model reads in the text; "no_expand": only its own words; "hybrid": both.
            licenses: "" for every image, or only those under these licences: "free" or a list such as "CC0,CC-BY".
            min_score: when the best image scores below this, none is returned and "no_good_match" says why.

        Returns:
            {"results": [{"rank", "row", "id", "score", "image", "caption", "source", "credit", "license",
            "license_url"}], "query_terms", "active_terms", ...}
        """
        return service.suggest(text, k, mode, licences=parse_licences(licenses) if licenses else None,
                               min_score=float(min_score)).to_json()

    @user_errors
    def suggest_article(article: str, k: int = ARTICLE_K, dedupe: bool = True, min_score: float = 0.0,
                        export: Literal["none", "markdown", "wikitext", "html"] = "none") -> dict:
        """Suggest images for every section of a whole article (Markdown, Wikipedia-style or plain paragraphs).

        The article is split at its headings (`# Title`, `## Section`, `== Section ==`), or at blank lines when
        it has none; each section's query is page title + section title + section text (the AToMiC recipe).
        All sections are searched together.

        Args:
            article: the whole article as text (at most 200,000 characters and 50 sections).
            k: images per section, 1 to 10.
            dedupe: true: no image for two sections (the best-scoring section keeps it), near-duplicates count once.
            min_score: a section whose best image scores below this gets none and says why in "no_good_match".
            export: also return the illustrated article ("document") as markdown, wikitext or html, with credits.

        Returns:
            {"sections": [{"title", "query", "no_good_match", "results": [{"rank", "id", "score", "image",
            "caption", "credit", "license", "license_url", "terms"}]}], "document" (with export)}
        """
        result = service.suggest_article(article, k, unique=bool(dedupe), collapse=bool(dedupe),
                                         min_score=float(min_score))
        answer = result.to_json()
        if export != "none":
            answer["document"] = result.export(export)
        return answer

    @user_errors
    def search_terms(terms: list[list], k: int = 10) -> dict:
        """Search with an explicit weighted query, [[term, weight], ...] (e.g. suggest's query_terms, edited).

        Args:
            terms: up to 2,000 rows of [term, weight], weights -100 to 100 (a negative one pushes images down).
            k: how many images to return, 1 to 100.

        Returns:
            {"results": [{"rank", "row", "id", "score", "image", "caption"}], "active_terms", "timings_ms"}
        """
        hits, query, timings = service.search_terms(terms, k)
        return {"results": [asdict(hit) for hit in hits], "active_terms": int(query.nnz), "timings_ms": timings}

    @user_errors
    def compare(text: str, k: int = 10) -> dict:
        """Rank the same text with the sparse index and with dense (FAISS) vectors of the same images.

        Args:
            text: the query text, up to 20,000 characters.
            k: how many images each ranking returns, 1 to 100.

        Returns:
            {"sparse": [hits], "dense": [hits], "overlap_at_k": the share of the dense top k in the sparse one, ...}
        """
        return service.compare(text, k).to_json()

    return [suggest, suggest_article, search_terms, compare]


def _image_endpoints(service: Service) -> list[Callable]:
    """/image_terms and /similar: the image is an upload, never a URL the server would fetch."""

    @user_errors
    def image_terms(image: FileData, top_k: int = 20) -> dict:
        """The weighted vocabulary terms the model reads in an image: what the image is 'about', as words.

        Args:
            image: the image (JPEG, PNG, WebP, ...) itself: an upload or a data: URI; URLs and server paths are refused.
            top_k: how many terms to return, heaviest first, 1 to 200.

        Returns:
            {"active_terms": the number of non-zero terms, "terms": [[term, weight], ...], "timings_ms"}
        """
        found = service.image_terms(uploaded_image(image), top_k, k=1)
        return {"active_terms": found.active_terms, "terms": rounded(found.terms),
                "timings_ms": found.timings}

    @user_errors
    def similar(image: FileData, k: int = 10) -> dict:
        """Indexed images like a given image (nearest by sparse dot product), with the image's top 20 terms.

        Args:
            image: the image itself: an upload, or a data: URI; URLs and server paths are refused.
            k: how many similar images to return, 1 to 100.

        Returns:
            {"similar": [{"rank", "row", "id", "score", "image", "caption"}], "terms", "active_terms", ...}
        """
        return service.image_terms(uploaded_image(image), 20, k=k).to_json()

    return [image_terms, similar]
