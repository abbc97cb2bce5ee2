"""What the demo does, without any UI: suggest images for text, explain hits, image -> terms, sparse vs dense.

The Gradio app (mlsr/app/ui.py) and its named API endpoints both call this; results are small dataclasses
with a `to_json()` for the API. Every step is timed so the UI can show where the time goes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import numpy as np
import scipy.sparse as sp

from mlsr.articles.cutoff import below_minimum
from mlsr.articles.markdown import credit_line
from mlsr.articles.sections import join_sections, split_article
from mlsr.articles.suggestions import ArticleSuggestion, SectionSuggestion, assign, keep_good_matches
from mlsr.backends import SearchBackend, open_backend
from mlsr.backends.local import LocalBackend
from mlsr.checks import check_k, check_mode, check_top_k
from mlsr.errors import InputError
from mlsr.images import ImageInput
from mlsr.index.modes import rank
from mlsr.index.sparse import Results, SparseIndex, TermMatch
from mlsr.models.encoder import Encoder
from mlsr.retrieval import rank_allowed
from mlsr.serving.pictures import Pictures, picture_url
from mlsr.serving.results import Comparison, Hit, ImageTerms, Suggestion
from mlsr.serving.terms import control_part, expansion_terms, highlight_text, term_table, vector_from_terms
from mlsr.settings import (ARTICLE_K, MAX_K, MAX_SECTION_K, MAX_TOP_K, NEAR_DUPLICATE_COSINE, SERVICE_ENCODE_BATCH,
                           QueryMode)
from mlsr.vocab import Terms

logger = logging.getLogger(__name__)

Stage = Callable[[float, str], None]  # progress: (fraction done, what is happening)
_T = TypeVar("_T")


@dataclass(init=False)
class Service:
    """Models and an index loaded once, and the operations the demo offers on them."""

    encoder: Encoder
    index: SparseIndex
    index_dir: Path | None  # the index's folder (None: an index built in memory): item images are relative to it
    backend: SearchBackend  # where searches run; given None: the index itself (scipy, FAISS)

    def __init__(self, encoder: Encoder, index: SparseIndex, index_dir: Path | None,
                 backend: SearchBackend | None = None) -> None:
        self.encoder, self.index, self.index_dir = encoder, index, index_dir
        self.backend = LocalBackend(index) if backend is None else backend

    @classmethod
    def load(cls, index_dir: str | Path | SparseIndex, *, backbone: str, head: str, tokenizer: str,
             device: str | None = None, backend: str = "scipy", milvus_uri: str | None = None,
             collection: str | None = None, text_int8: bool = False) -> Service:
        """Load the index first (cheap, and a missing index is the likeliest mistake), then the backend and models.

        `index_dir` is a folder, or a Hub dataset id `owner/name[@revision]` (a str; see `SparseIndex.load`), or an
        index loaded already.
        """
        started = time.perf_counter()
        index = index_dir if isinstance(index_dir, SparseIndex) else SparseIndex.load(index_dir)
        searcher = open_backend(index, backend, milvus_uri, collection)
        encoder = Encoder.from_pretrained(backbone, head, tokenizer, device=device, batch_size=SERVICE_ENCODE_BATCH,
                                       text_int8=text_int8)
        index.check_models(encoder.models())
        logger.info("loaded the models and %d indexed items from %s in %.1f s", len(index), index.source,
                    time.perf_counter() - started)
        return cls(encoder, index, index.path, searcher)  # the folder read (for a Hub id, its cached copy)

    # -- suggest ----------------------------------------------------------------------------------

    def suggest(self, text: str, k: int = 12, mode: str = "expand", stage: Stage | None = None,
                licences: frozenset[str] | None = None, min_score: float = 0.0) -> Suggestion:
        """Rank the index for article text (only images under `licences`, when given; none when the best scores
        below `min_score`, see `mlsr.articles.cutoff`); also the text shaded by term weight and the expansion terms."""
        k = check_k(k, MAX_K)
        mode = cast(QueryMode, check_mode(mode))  # check_mode passes only the QUERY_MODES
        _stage(stage, 0.1, "encoding the text")
        queries, encode_ms = _timed(lambda: self.encoder.encode_text_views([text]))
        _stage(stage, 0.7, "searching")
        results, search_ms = _timed(lambda: _matched(rank_allowed(self.backend, queries, mode, k, self.index.items,
                                                                  licences)))
        timings = {"encode": encode_ms, "search": search_ms}
        query = queries.scoring(mode)
        hits, no_match = below_minimum(self.hits(results), min_score, lambda hit: self.index.explain(query[0], hit.row))
        tokenizer, vocab = self.encoder.tokenizer, self.encoder.vocab
        return Suggestion(
            text=text, mode=mode, hits=hits, query=query, highlights=highlight_text(text, query[0], tokenizer, vocab),
            expansion=expansion_terms(text, query[0], tokenizer, vocab),
            table=term_table(query[0], vocab), timings=timings, no_match=no_match,
        )

    def search_terms(self, rows: list[list], k: int = 12, keep_from: sp.csr_matrix | None = None
                     ) -> tuple[list[Hit], sp.csr_matrix, dict[str, float]]:
        """Search with a query rebuilt from an edited [term, weight] table.

        Control tokens ([CLS], [unused0], ...) are not terms, so a table cannot name them; with
        `keep_from` (the query the table was made from) their weights are kept from that query, so
        an unedited table searches with exactly it.
        """
        k = check_k(k, MAX_K)
        query = vector_from_terms(rows, self.encoder.vocab, self.encoder.tokenizer)
        if keep_from is not None:
            query = (query + control_part(keep_from, self.encoder.vocab)).tocsr()
        results, search_ms = _timed(lambda: _matched(self.backend.search(query, k)))
        return self.hits(results), query, {"search": search_ms}

    def explain(self, query: sp.csr_matrix, row: int, top_k: int = 30) -> tuple[Terms, list[TermMatch]]:
        """An indexed image's own top terms, and every term it shares with the query (largest contribution first)."""
        return self.encoder.decode(self.index.document(row), top_k=top_k), self.index.explain(query[0], row)

    def more_like_this(self, row: int, k: int = 12) -> tuple[list[Hit], sp.csr_matrix, dict[str, float]]:
        """Indexed images like indexed image `row`: its own document vector is the query; it is left out."""
        k = check_k(k)
        query = self.index.document(row)
        started = time.perf_counter()
        results = self.backend.search(query, k + 1)
        others = results.indices[0] != int(row)
        results = _matched(Results(results.scores[:, others][:, :k], results.indices[:, others][:, :k]))
        return self.hits(results), query, {"search": _ms(started)}

    # -- articles ---------------------------------------------------------------------------------

    def suggest_article(self, text: str, k: int = ARTICLE_K, *, title: str | None = None, split: str = "auto",
                        joined: Sequence[int] = (), mode: str = "expand", unique: bool = True,
                        collapse: bool = True, min_score: float = 0.0, stage: Stage | None = None) -> ArticleSuggestion:
        """k images for each section of an article (see `mlsr.articles.suggestions`), all sections encoded as one batch.

        `unique`: no image is given to two sections (the one that scores it highest keeps it); `collapse`:
        near-duplicate images (sparse cosine above NEAR_DUPLICATE_COSINE) count once within a section's list;
        a section whose best image scores below `min_score` gets none, and says so (`keep_good_matches`).
        """
        k = check_k(k, MAX_SECTION_K)
        mode = cast(QueryMode, check_mode(mode))  # check_mode passes only the QUERY_MODES
        article = join_sections(split_article(text, split, title), joined)
        queries_text = article.queries()
        _stage(stage, 0.1, f"encoding {len(queries_text)} sections")
        queries, encode_ms = _timed(lambda: self.encoder.encode_text_views(queries_text))
        _stage(stage, 0.7, "searching")
        started = time.perf_counter()
        # deep enough that every section can still get k images after the others took theirs
        results = rank(self.backend, queries, mode, min(len(self.index), k * len(queries_text)))
        kept = assign(results.scores, results.indices, k, unique=unique,
                      document=self.index.document if collapse else None,
                      near_duplicate=NEAR_DUPLICATE_COSINE if collapse else None)
        search_ms = _ms(started)
        started = time.perf_counter()
        scoring, sections = queries.scoring(mode), []
        for number, (section, query, positions) in enumerate(zip(article.sections, queries_text, kept)):
            row = slice(number, number + 1)
            chosen = Results(results.scores[row, positions], results.indices[row, positions])
            hits = self.hits(chosen)
            terms = [[(m.term, m.contribution) for m in self.index.explain(scoring[number], hit.row)] for hit in hits]
            credits = [credit_line(self.index.items[hit.row]) for hit in hits]
            candidates = int((results.scores[number] > 0).sum())
            sections.append(keep_good_matches(SectionSuggestion(section, query, hits, terms, credits, candidates),
                                              float(min_score)))
        timings = {"encode": encode_ms, "search": search_ms, "explain": _ms(started)}
        return ArticleSuggestion(article, sections, timings, link=self.markdown_link)

    # -- images -----------------------------------------------------------------------------------

    def image_terms(self, image: ImageInput, top_k: int = 20, k: int = 8, stage: Stage | None = None) -> ImageTerms:
        """An uploaded image's top terms, its number of active terms, and 'more like this' from the index."""
        k = check_k(k, MAX_K)
        shown = check_top_k(top_k, MAX_TOP_K)  # None (every term) only when given None
        _stage(stage, 0.1, "encoding the image")
        vector, encode_ms = _timed(lambda: self.encoder.encode_images([image]))
        _stage(stage, 0.9, "finding similar images")
        results, search_ms = _timed(lambda: _matched(self.backend.search(vector, k)))
        return ImageTerms(
            terms=self.encoder.decode(vector[0], top_k=shown),
            active_terms=int(vector.nnz), similar=self.hits(results),
            timings={"encode": encode_ms, "search": search_ms}, query=vector,
        )

    # -- sparse vs dense --------------------------------------------------------------------------

    @property
    def has_dense(self) -> bool:
        return self.index.dense is not None

    def compare(self, text: str, k: int = 10, mode: str = "expand") -> Comparison:
        """Rank the same text with the sparse index and with FAISS over the dense vectors of the same items. One
        backbone pass gives both queries: its time is `sparse_encode`, and `dense_encode` (kept for the API) is 0."""
        k = check_k(k, MAX_K)
        mode = cast(QueryMode, check_mode(mode))  # check_mode passes only the QUERY_MODES
        if not self.has_dense:
            raise InputError("this index has no dense vectors; rebuild it with dense vectors (dense=True) to compare.")
        queries, encode_ms = _timed(lambda: self.encoder.encode_text_views([text]))
        sparse_results, sparse_search_ms = _timed(lambda: _matched(rank(self.backend, queries, mode, k)))
        dense = queries.dense
        if dense is None:  # the encoder always gives it; evaluation's dense run says so too
            raise InputError("the queries have no vectors for the dense run.")
        dense_results, dense_search_ms = _timed(lambda: self.backend.dense_search(dense, k))
        shared = set(sparse_results.indices[0].tolist()) & set(dense_results.indices[0].tolist())
        return Comparison(
            sparse=self.hits(sparse_results), dense=self.hits(dense_results),
            overlap=len(shared) / max(dense_results.indices.shape[1], 1),
            active_terms=int(queries.scoring(mode).nnz),
            timings={"sparse_encode": encode_ms, "sparse_search": sparse_search_ms, "dense_encode": 0.0,
                     "dense_search": dense_search_ms},
        )

    # -- about ------------------------------------------------------------------------------------

    def about(self, top_k: int = 25) -> dict:
        """Facts about the loaded index and models, and its most frequent terms (by document frequency)."""
        frequency = self.index.document_frequency().astype(np.float32)
        recorded = self.index.models
        roles = ("backbone", "head", "tokenizer")
        return {
            "index": self.index.public_name,
            "items": len(self.index),
            "documents": self.index.info.get("documents", "image"),
            "avg_active_terms": round(self.index.nnz / max(len(self.index), 1), 1),
            "vocab_size": self.index.vocab_size,
            "dense": self.has_dense,
            "dense_size": self.encoder.dense_size,
            "backend": self.backend.name,
            "models": {role: public_name(source) for role, source in self.loaded_sources().items()},
            "built_with": {role: public_name(getattr(recorded, role).id) if recorded else None for role in roles},
            "top_terms": self.encoder.decode(frequency, top_k=top_k),
            "verification": self.verification(),
        }

    def loaded_sources(self) -> dict[str, str | None]:
        """The names the backbone, head and tokenizer were loaded by (Hub ids or folders), for `about`."""
        backbone = self.encoder.backbone.source if self.encoder.backbone is not None else None
        return {"backbone": backbone, "head": self.encoder.head.source, "tokenizer": self.encoder.tokenizer_source}

    def verification(self) -> dict | None:
        """The last saved `python -m mlsr verify` verdict (beside the index folder), or None if there is none."""
        from mlsr.evaluation.verify import load_verdict, verdict_path, verdict_summary

        verdict = None if (where := self.index.hub_id or self.index_dir) is None else load_verdict(verdict_path(where))
        return None if verdict is None else verdict_summary(verdict, self.loaded_sources())

    # -- helpers ----------------------------------------------------------------------------------

    @cached_property
    def pictures(self) -> Pictures:
        """Each row's picture, as the app serves it (`mlsr.serving.pictures`)."""
        return Pictures(self.index)

    def hits(self, results: Results, query_row: int = 0) -> list[Hit]:
        """Ranked rows of one query as Hits with their image URL (if any) and a display caption."""
        hits = []
        for position, (score, row) in enumerate(zip(results.scores[query_row], results.indices[query_row]), 1):
            item = self.index.items[int(row)]
            captions = item.get("captions") or []
            image = item.get("image")
            source = next((url for url in (item.get("source"), image)
                           if isinstance(url, str) and url.startswith(("http://", "https://"))), None)
            shown = picture_url(item["id"]) if self.pictures.has_source(int(row)) else None
            hits.append(Hit(position, int(row), str(item["id"]), round(float(score), 4), shown,
                            captions[0] if captions else "", source, credit_line(item), str(item.get("author") or ""),
                            str(item.get("license") or ""), str(item.get("license_url") or "")))
        return hits

    def markdown_link(self, hit: Hit) -> str | None:
        """What an illustrated Markdown download points at: the original's URL, or for a local photo its id (its
        name inside the gallery's folder: a link that works beside the photos, and no server path)."""
        image = self.index.items[hit.row].get("image")  # a picture's URL (a wiki's thumbnail), never its page
        image = image if isinstance(image, str) and image.startswith(("http://", "https://")) else None
        return image or hit.source or (hit.id if self.local_image(hit) is not None else None)

    def local_image(self, hit: Hit) -> Path | None:
        """The local file of a hit's image (None for a URL or a missing file), for links beside the photos.

        Only the command line reads it; no answer of the service or the API contains it.
        """
        image = self.index.items[hit.row].get("image")
        if hit.source is not None or not isinstance(image, str) or not image or self.index_dir is None:
            return None
        path = (self.index_dir / image).resolve()
        return path if path.is_file() else None




def public_name(model: str | None) -> str | None:
    """A model's name fit to show a visitor: a Hub id as is, a local folder by its last part only."""
    if model is None:
        return None
    path = Path(model)
    local = path.is_absolute() or model.startswith(("~", ".")) or model.count("/") > 1 or "\\" in model or path.exists()
    return f"{path.name} (local folder)" if local else model


def _matched(results: Results) -> Results:
    """One query's results without the images it shares no term with (score 0): no ranking of non-matches."""
    keep = results.scores[0] > 0
    return Results(results.scores[:, keep], results.indices[:, keep])


def _stage(stage: Stage | None, fraction: float, message: str) -> None:
    if stage is not None:
        stage(fraction, message)


def _ms(started: float) -> float:
    return round(1000 * (time.perf_counter() - started), 2)


def _timed(work: Callable[[], _T]) -> tuple[_T, float]:
    """`work()` and the milliseconds it took (a step of an answer's `timings`)."""
    started = time.perf_counter()
    return work(), _ms(started)
