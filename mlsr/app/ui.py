"""The Gradio interface over mlsr.app.service: it converts values for Gradio and turns library errors into
messages; it computes nothing itself. Named API endpoints (/suggest, /image_terms, /similar, /compare,
/search_terms) return plain JSON for `gradio_client`."""

from __future__ import annotations

import functools
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

import gradio as gr
import pandas as pd
from gradio.data_classes import FileData
from PIL import Image

from mlsr.app.service import Hit, Service
from mlsr.app.uploads import UploadsOnly, refuse, uploaded_image
from mlsr.errors import MlsrError
from mlsr.images import load_image
from mlsr.settings import MAX_K, QUERY_MODES
from mlsr.vocab import Terms

logger = logging.getLogger(__name__)

PAPERS = (
    "[Multimodal Learned Sparse Retrieval with Probabilistic Expansion Control](https://arxiv.org/abs/2402.17535)"
    " (Nguyen, Hendriksen, Yates, de Rijke, ECIR 2024; code: [thongnt99/lsr-multimodal]"
    "(https://github.com/thongnt99/lsr-multimodal)), which follows *Multimodal Learned Sparse Retrieval for"
    " Image Suggestion* (Nguyen, Hendriksen, Yates, TREC 2023)"
)
MODELS = "models"  # one concurrency group for every event that runs model code: the queue's limit is global
THUMBNAIL_SIDE = 384
PLOTTED_TERMS = 15  # bars in a chart: more and their labels collide
MATCHED_COLUMNS = ("term", "query weight", "image weight", "contribution")
CSS = """
#query-highlight .textspan, #image-chips .textspan {font-size: 0.95rem;}
.mlsr-timing {color: var(--body-text-color-subdued); font-size: 0.85rem;}
"""


def user_errors(fn: Callable) -> Callable:
    """Show mlsr's specific errors as a message in the UI (or the API's error), never as a traceback;
    each refusal is one line in the log."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MlsrError as error:
            refuse(fn.__name__, str(error))

    return wrapper


def build_ui(service: Service, *, examples_dir: Path, images_dir: Path, placeholder: Path) -> gr.Blocks:
    """The four screens (suggest, image -> terms, sparse vs dense, about) and the named API endpoints."""
    show = functools.partial(gallery_items, placeholder=placeholder, local=service.local_image)
    # delete_cache: uploads and rendered thumbnails older than an hour are removed every 30 minutes.
    # UploadsOnly: requests carry uploaded files only, never a URL the server would fetch (mlsr.app.uploads).
    with UploadsOnly(title="mlsr: multimodal learned sparse retrieval", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            "# mlsr: image suggestions you can read\n"
            "Text and images become weighted bags of vocabulary terms; an image ranks high when it lights up"
            " the terms your text does. Every score is the sum of the shared terms' products."
        )
        suggest_screen(service, show, sorted(examples_dir.glob("*.txt")))
        image_screen(service, show, sorted(images_dir.glob("*.jpg")))
        compare_screen(service, show)
        about_screen(service.about())
        add_api(service)
    return demo


Show = Callable[[list[Hit]], list[tuple]]


def suggest_screen(service: Service, show: Show, examples: list[Path]) -> None:
    """Article text -> ranked images, the text shaded by term weight, why a selected image ranked, editable terms."""
    query_state = gr.State(None)  # the scipy (1, vocab) query vector behind the current results
    hits_state = gr.State([])
    with gr.Tab("Suggest images", id="suggest"):
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(label="Article text", lines=8, max_lines=20, elem_id="article-text",
                                  placeholder="Paste a paragraph or a section of an article...")
                with gr.Row():
                    k = gr.Slider(1, MAX_K, value=12, step=1, label="Images (k)", elem_id="k-slider")
                    mode = gr.Radio(list(QUERY_MODES), value="expand", label="Query mode",
                                    info="expand: any term; no_expand: only the text's own words;"
                                         " hybrid: shared-word candidates re-ranked by the expanded query")
                suggest_button = gr.Button("Suggest images", variant="primary", elem_id="suggest-button")
                if examples:
                    gr.Examples([[path.read_text(encoding="utf-8").strip()] for path in examples], inputs=[text],
                                example_labels=[path.stem.replace("-", " ") for path in examples],
                                label="Example passages")
            with gr.Column(scale=2):
                highlighted = gr.HighlightedText(label="Your text, each word shaded by its weight in the query",
                                                 elem_id="query-highlight", show_legend=False)
                expansion = gr.Markdown(elem_id="expansion-terms")
                timing = gr.Markdown(elem_classes="mlsr-timing", elem_id="suggest-timing")
        results = gr.Gallery(label="Suggested images (select one to see why it ranked)", columns=6, height="auto",
                             object_fit="cover", elem_id="results-gallery", allow_preview=False)
        with gr.Row(visible=False, elem_id="why-row") as why_row:
            with gr.Column(scale=3):
                why_title = gr.Markdown()
                matched = gr.Dataframe(headers=list(MATCHED_COLUMNS), datatype=["str", "number", "number", "number"],
                                       interactive=False, elem_id="matched-terms", label="Matched terms")
            with gr.Column(scale=2):
                contribution_plot = gr.BarPlot(x="term", y="contribution", sort="-y", height=280, x_label_angle=-45,
                                               label=f"Largest contributions (top {PLOTTED_TERMS})")
                hit_terms = gr.HighlightedText(label="This image's top terms", elem_id="hit-terms")
        with gr.Accordion("Edit the query's terms and search again", open=False, elem_id="edit-terms"):
            gr.Markdown(
                "This table *is* the query. Delete a row to drop a term, change a weight, add a row with any"
                " word, or give a term a **negative** weight to push images that have it down. Then search"
                " again with exactly this vector."
            )
            table = gr.Dataframe(headers=["term", "weight"], datatype=["str", "number"], interactive=True,
                                 column_count=2, row_count=1, elem_id="term-table", max_height=360)
            search_edited = gr.Button("Search with these terms", elem_id="search-edited")

    @user_errors
    def on_suggest(text_value: str, k_value: int, mode_value: str, progress=gr.Progress()):
        suggestion = service.suggest(text_value, int(k_value), mode_value, stage=progress_stage(progress))
        return (
            show(suggestion.hits),
            shaded(suggestion.highlights),
            expansion_markdown(suggestion.expansion),
            timing_markdown(suggestion.timings, suggestion.active_terms, len(suggestion.hits)),
            pd.DataFrame(suggestion.table, columns=["term", "weight"]),
            suggestion.query, suggestion.hits, gr.update(visible=False),
        )

    suggest_outputs = [results, highlighted, expansion, timing, table, query_state, hits_state, why_row]
    for trigger in (suggest_button.click, text.submit):
        trigger(on_suggest, [text, k, mode], suggest_outputs, api_visibility="private", concurrency_id=MODELS)

    @user_errors
    def on_search_edited(rows: pd.DataFrame, k_value: int, query):
        # the table leaves out control tokens: their weights come from the query it was made from
        hits, query, timings = service.search_terms(rows.values.tolist(), int(k_value), keep_from=query)
        return show(hits), timing_markdown(timings, query.nnz, len(hits)), query, hits, gr.update(visible=False)

    search_edited.click(on_search_edited, [table, k, query_state], [results, timing, query_state, hits_state, why_row],
                        api_visibility="private", concurrency_id=MODELS)

    @user_errors
    def on_select(query, hits: list[Hit], event: gr.SelectData):
        if query is None or not hits or event.index is None:
            return gr.update(visible=False), "", None, None, None
        hit = hits[event.index if isinstance(event.index, int) else event.index[0]]
        image_terms, matches = service.explain(query, hit.row)
        rows = [[m.term, round(m.query_weight, 4), round(m.doc_weight, 4), round(m.contribution, 4)] for m in matches]
        title = (f"**#{hit.rank} {hit.id}**: score {hit.score:.3f} = the sum of the contributions of the"
                 f" {len(matches)} terms it shares with the query" + (f"  \n*{hit.caption}*" if hit.caption else ""))
        top = rows[:PLOTTED_TERMS]
        return (gr.update(visible=True), title, pd.DataFrame(rows, columns=list(MATCHED_COLUMNS)),
                pd.DataFrame({"term": [r[0] for r in top], "contribution": [r[3] for r in top]}),
                chips(image_terms))

    results.select(on_select, [query_state, hits_state], [why_row, why_title, matched, contribution_plot, hit_terms],
                   api_visibility="private", concurrency_id=MODELS)


def image_screen(service: Service, show: Show, examples: list[Path]) -> None:
    """An uploaded image -> its top terms as chips and a chart, and the nearest indexed images."""
    with gr.Tab("Image → terms", id="image"):
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image",
                                 elem_id="image-input", height=320)
                image_top_k = gr.Slider(5, 100, value=20, step=1, label="Terms to show")
                if examples:
                    gr.Examples([[str(path)] for path in examples], inputs=[image], label="Example photos")
            with gr.Column(scale=3):
                image_summary = gr.Markdown(elem_id="image-summary")
                image_chips = gr.HighlightedText(label="Top terms", elem_id="image-chips")
                image_plot = gr.BarPlot(x="term", y="weight", sort="-y", height=300, x_label_angle=-45,
                                        y_lim=[0, None], label=f"Term weights (top {PLOTTED_TERMS})")
        similar_gallery = gr.Gallery(label="More like this: nearest indexed images by sparse dot product",
                                     columns=8, height="auto", object_fit="cover", elem_id="similar-gallery",
                                     allow_preview=False)

    @user_errors
    def on_image(payload: dict | None, top_k: int, progress=gr.Progress()):
        if not payload:
            return "", None, None, None
        found = service.image_terms(uploaded_image(payload), int(top_k), k=8, stage=progress_stage(progress))
        summary = (f"**{found.active_terms} active terms** of {service.encoder.vocab_size:,}. "
                   + timing_text(found.timings))
        top = found.terms[:PLOTTED_TERMS]
        plot = pd.DataFrame({"term": [t for t, _ in top], "weight": [w for _, w in top]})
        return summary, chips(found.terms), plot, show(found.similar)

    image_outputs = [image_summary, image_chips, image_plot, similar_gallery]
    # preprocess=False: our own loader reads the upload, so a bad file gets mlsr's specific message.
    for trigger in (image.change, image_top_k.release):
        trigger(on_image, [image, image_top_k], image_outputs, preprocess=False, api_visibility="private",
                concurrency_id=MODELS)


def compare_screen(service: Service, show: Show) -> None:
    """The same text ranked by the sparse index and by FAISS over the dense vectors of the same items."""
    about = service.about()
    with gr.Tab("Sparse vs dense", id="compare"):
        if not service.has_dense:
            gr.Markdown("This index has no dense vectors, so there is nothing to compare against. Rebuild it"
                        " with `python -m mlsr build-index ... --dense` to enable this screen.",
                        elem_id="no-dense-note")
        with gr.Column(visible=service.has_dense):
            with gr.Row():
                compare_text = gr.Textbox(label="Query", lines=2, scale=4, elem_id="compare-text")
                compare_k = gr.Slider(1, 50, value=10, step=1, label="k", scale=1)
                compare_button = gr.Button("Compare", variant="primary", scale=1, elem_id="compare-button")
            compare_summary = gr.Markdown(elem_id="compare-summary")
            with gr.Row():
                sparse_gallery = gr.Gallery(label="Sparse (learned terms)", columns=4, height="auto",
                                            object_fit="cover", allow_preview=False, elem_id="sparse-gallery")
                dense_gallery = gr.Gallery(label=f"Dense (FAISS, {dense_label(about)})", columns=4, height="auto",
                                           object_fit="cover", allow_preview=False, elem_id="dense-gallery")

    @user_errors
    def on_compare(text_value: str, k_value: int):
        comparison = service.compare(text_value, int(k_value))
        t = comparison.timings
        summary = (
            f"**overlap@{int(k_value)}: {comparison.overlap:.0%}** · sparse query: {comparison.active_terms}"
            f" active terms · one encoder pass for both: {t['sparse_encode']:.0f} ms · search: sparse"
            f" {t['sparse_search']:.2f} ms, dense {t['dense_search']:.2f} ms"
        )
        return summary, show(comparison.sparse), show(comparison.dense)

    compare_button.click(on_compare, [compare_text, compare_k], [compare_summary, sparse_gallery, dense_gallery],
                         api_visibility="private", concurrency_id=MODELS)


def about_screen(about: dict) -> None:
    """Facts about the index and models, how the method works, and the most frequent terms."""
    with gr.Tab("About this index", id="about"):
        gr.Markdown(about_markdown(about), elem_id="about-text")
        gr.BarPlot(pd.DataFrame({"term": [t for t, _ in about["top_terms"]],
                                 "documents": [int(w) for _, w in about["top_terms"]]}),
                   x="term", y="documents", sort="-y", height=300, x_label_angle=-45, y_lim=[0, None],
                   label="Most frequent terms (documents holding them)")


def add_api(service: Service) -> None:
    """Named endpoints returning JSON, for `gradio_client` (see docs/app.md)."""

    @user_errors
    def suggest(text: str, k: int = 10, mode: str = "expand") -> dict:
        """Ranked images for a text, with the query's terms, its expansion terms and timings."""
        return service.suggest(text, k, mode).to_json()

    @user_errors
    def search_terms(terms: list[list], k: int = 10) -> dict:
        """Ranked images for an edited query given as [[term, weight], ...]."""
        hits, query, timings = service.search_terms(terms, k)
        return {"results": [asdict(hit) for hit in hits], "active_terms": int(query.nnz), "timings_ms": timings}

    @user_errors
    def image_terms(image: FileData, top_k: int = 20) -> dict:
        """An image's top terms and number of active terms."""
        found = service.image_terms(uploaded_image(image), top_k, k=1)
        return {"active_terms": found.active_terms, "terms": [list(t) for t in found.terms], "timings_ms": found.timings}

    @user_errors
    def similar(image: FileData, k: int = 10) -> dict:
        """The indexed images nearest to an image by sparse dot product."""
        return service.image_terms(uploaded_image(image), 20, k=k).to_json()

    @user_errors
    def compare(text: str, k: int = 10) -> dict:
        """The sparse and the dense (FAISS) rankings of the same text, their overlap@k and timings."""
        return service.compare(text, k).to_json()

    for fn in (suggest, search_terms, image_terms, similar, compare):
        gr.api(fn, api_name=fn.__name__, concurrency_id=MODELS)


def gallery_items(hits: list[Hit], placeholder: Path, local: Callable[[Hit], Path | None]) -> list[tuple]:
    """(image, caption) pairs for a Gallery: '#rank · score · caption or id'; `local` finds a hit's local file."""
    return [(displayable(hit.image or local(hit), placeholder), f"#{hit.rank} · {hit.score:.2f} · {hit.caption or hit.id}")
            for hit in hits]


def progress_stage(progress: gr.Progress) -> Callable[[float, str], None]:
    """A service `stage` callback that moves Gradio's progress bar."""
    return lambda fraction, message: progress(fraction, desc=message)


def dense_label(about: dict) -> str:
    """'<backbone>, 256-d': the dense model of the comparison, as the index records it."""
    backbone = about["built_with"].get("backbone") or about["models"].get("backbone") or "dense model"
    return f"{backbone}, {about['dense_size']}-d" if about.get("dense_size") else backbone


def displayable(image: str | Path | None, placeholder: Path) -> str | Image.Image:
    """What a gallery shows for an item: a URL as is (the browser fetches it, never the server), a local
    file as a small thumbnail made here, so the app never has to expose the folders that hold the originals.
    A file that is gone, damaged or refused by the operating system shows the placeholder."""
    if image is None:
        return str(placeholder)
    if isinstance(image, str) and image.startswith(("http://", "https://")):
        # Gradio fetches an .svg URL on the server to inline it; only raster URLs go to the browser.
        return str(placeholder) if urlparse(image).path.lower().endswith(".svg") else image
    try:
        return _thumbnail(str(image))
    except (MlsrError, OSError):
        return str(placeholder)


@functools.lru_cache(maxsize=96)  # ~30 MB of 384 px thumbnails: the images of the last few result pages
def _thumbnail(path: str) -> Image.Image:
    return load_image(path, max_side=THUMBNAIL_SIDE)


def shaded(spans: list[tuple[str, float | None]]) -> list[tuple[str, float | None]]:
    """Spans for HighlightedText, which shades by a score in [-1, 1]: weights scaled by the largest magnitude.

    Line breaks become spaces: HighlightedText misplaces them when they sit inside unshaded spans.
    """
    top = max((abs(w) for _, w in spans if w), default=0.0) or 1.0
    return [(" ".join(span.split("\n")), None if weight is None else round(weight / top, 3)) for span, weight in spans]


def chips(terms: Terms) -> list[tuple[str, float | None]]:
    """Terms as shaded chips, 'term 1.23', separated by spaces."""
    spans: list[tuple[str, float | None]] = []
    for term, weight in terms:
        spans += [(f"{term} {weight:.2f}", weight), (" ", None)]
    return shaded(spans[:-1])


def expansion_markdown(terms: Terms) -> str:
    if not terms:
        return "**Expansion terms:** none: the query uses only the words of your text."
    return "**Expansion terms** (not in your text): " + ", ".join(f"{t} *{w:.2f}*" for t, w in terms)


def timing_text(timings: dict[str, float]) -> str:
    return " · ".join(f"{stage.replace('_', ' ')} {ms:.1f} ms" for stage, ms in timings.items())


def timing_markdown(timings: dict[str, float], active_terms: int, shown: int) -> str:
    return f"{shown} images · query of {active_terms} active terms · {timing_text(timings)}"


def about_markdown(about: dict) -> str:
    models = about["models"]
    built = about["built_with"]
    return (
        f"### Index `{about['index']}`\n"
        f"- **{about['items']:,} images**, documents = `{about['documents']}`, on average"
        f" **{about['avg_active_terms']} active terms** per document"
        f" (of {about['vocab_size']:,}); dense vectors for comparison: {'yes' if about['dense'] else 'no'}\n"
        f"- backbone `{models['backbone']}`, sparse head `{models['head']}`, tokenizer `{models['tokenizer']}`"
        f" (index built with `{built['backbone']}` / `{built['head']}`)\n\n"
        "### How it works\n"
        f"A frozen dense image-text model (`{models['backbone']}`) turns an image, or a caption-sized window of"
        f" your text, into a {about.get('dense_size') or 'dense'}-d vector. A small dense-to-sparse head maps that"
        f" vector onto the {about['vocab_size']:,} word pieces of the tokenizer's vocabulary:"
        " `w = log1p(ReLU(W₂·LayerNorm(W₁·x)))`. Most weights are zero; the rest are terms you can"
        " read. An image's score for a query is the dot product of the two term vectors, so the ranking is"
        " explained exactly by the shared terms. In `no_expand` mode the query keeps only its own words.\n\n"
        f"Papers: {PAPERS}. Photos in the examples: MS-COCO (Flickr, licenses per image; annotations CC BY 4.0)."
        + verification_markdown(about.get("verification"))
    )


def verification_markdown(verdict: dict | None) -> str:
    """A line on the last `python -m mlsr verify` verdict, if one was saved beside the index."""
    if not verdict:
        return ""
    checks = ", ".join(f"{c['number']} {c['name']} {'PASS' if c['passed'] else 'FAIL'}"
                       + (f" ({c['value']:g})" if c["value"] is not None else "") for c in verdict["checks"])
    models = "" if verdict["same_models"] else " (run with other models than the ones loaded here)"
    return (f"\n\n### Reproduction check\nLast `python -m mlsr verify` (live vectors and R@1 against the published"
            f" ones), {verdict['finished']}:"
            f" **{'PASS' if verdict['passed'] else 'FAIL'}**{models}: {checks}.")


def error_page(message: str) -> gr.Blocks:
    """What the app serves when it cannot start (models or index missing): the reason and what to do."""
    with gr.Blocks(title="mlsr: cannot start") as page:
        gr.Markdown(f"# mlsr could not start\n\n{message}\n\nSee the README for the commands that build an index"
                    " and for running with local model folders (`--backbone`, `--head`, `--tokenizer`).",
                    elem_id="startup-error")
    return page
