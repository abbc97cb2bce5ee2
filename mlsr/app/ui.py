"""The Gradio interface over mlsr.app.service: it converts values for Gradio and turns library errors into
messages; it computes nothing itself. Named API endpoints (/suggest, /suggest_article, /image_terms, /similar,
/compare, /search_terms) return plain JSON for `gradio_client`; with `launch(mcp_server=True)` they are also
the app's MCP tools, described by their docstrings and type hints."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import gradio as gr
import pandas as pd
from gradio.utils import get_upload_folder

from mlsr.app.mcp import structure_answers
from mlsr.app.pictures import picture_file, picture_route
from mlsr.app.exports_ui import filter_options, suggest_filters, suggest_summary
from mlsr.app.service import Hit, Service
from mlsr.app.terms import term_table
from mlsr.app.uploads import UploadsOnly, refuse
from mlsr.app.views import (
    chips, credit_markdown, expansion_markdown, literal, plural, score_text, shaded, timing_markdown, timing_text,
    why_markdown,
)
from mlsr.errors import MlsrError
from mlsr.settings import MAX_K, QUERY_MODES

logger = logging.getLogger(__name__)

PAPERS = (
    "[Multimodal Learned Sparse Retrieval with Probabilistic Expansion Control](https://arxiv.org/abs/2402.17535)"
    " (Nguyen, Hendriksen, Yates, de Rijke, ECIR 2024; code: [thongnt99/lsr-multimodal]"
    "(https://github.com/thongnt99/lsr-multimodal)), which follows *Multimodal Learned Sparse Retrieval for"
    " Image Suggestion* (Nguyen, Hendriksen, Yates, TREC 2023)"
)
COMPARE_EXAMPLES = ("a woman cutting a cake", "a man riding a motorbike on a dirt road",
                    "a boy leading water buffalo through a market")
MODELS = "models"  # one concurrency group for every event that runs model code: the queue's limit is global
PLOTTED_TERMS = 15  # bars in a chart: more and their labels collide
SHOWN_TERMS = 100  # an image's terms the screen keeps: its slider shows 5 to this many without encoding again
MATCHED_COLUMNS = ("term", "query", "image", "contribution")  # short headers: four columns fit a phone
# On a narrow screen the results start ~1,000 px below the button: bring them into view once they are there.
SHOW_RESULTS_ON_A_PHONE = ("() => { if (window.innerWidth < 700) document.querySelector('#results-gallery')"
                           "?.scrollIntoView({block: 'start'}); }")
CSS = """
#query-highlight .textspan, #image-chips .textspan {font-size: 0.95rem;}
.mlsr-timing {color: var(--body-text-color-subdued); font-size: 0.85rem;}
/* galleries: as many columns as the width holds (two on a phone), not a fixed count */
.mlsr-gallery .grid-container {grid-template-columns: repeat(auto-fill, minmax(min(150px, 40%), 1fr)) !important;}
/* ... and as tall as their images: Gradio's "auto" height is a 320-450 px box that hides rows without a cue */
.mlsr-gallery .grid-wrap.fixed-height {min-height: 0 !important; max-height: none !important;}
/* a long text's shaded copy scrolls in its own box instead of burying the results */
#query-highlight .container, #query-highlight > div:last-child {max-height: 320px; overflow-y: auto;}
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


def shown_in(fn: Callable, blank: Callable[[str], tuple]) -> Callable:
    """A screen's handler whose user errors replace its outputs with `blank(message)`: a placeholder and the
    message where the summary was, so no "Error" overlay hides stale results and no old summary stays."""
    checked = user_errors(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return checked(*args, **kwargs)
        except gr.Error as error:
            return blank(str(error.message))

    return wrapper


def build_ui(service: Service, *, examples_dir: Path, images_dir: Path, placeholder: Path) -> gr.Blocks:
    """The five screens (suggest, article, image -> terms, sparse vs dense, about) and the named API endpoints."""
    # the screens and the API in their own modules build on this module's helpers, so they are imported here
    from mlsr.app.api import add_api
    from mlsr.app.article_ui import article_screen
    from mlsr.app.image_ui import image_screen

    show = functools.partial(gallery_items, placeholder=placeholder, picture=service.pictures.picture)
    # delete_cache: uploads and rendered thumbnails older than an hour are removed every 30 minutes.
    # UploadsOnly: requests carry uploaded files only, never a URL the server would fetch (mlsr.app.uploads).
    with AppBlocks(title="mlsr: multimodal learned sparse retrieval", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            "# mlsr: image suggestions you can read\n"
            "Text and images become weighted bags of vocabulary terms; an image ranks high when it lights up"
            " the terms your text does. Every score is the sum of the shared terms' products."
        )
        with gr.Tabs(overflow_behavior="wrap"):  # on a phone the tabs wrap onto rows, none hides in a menu
            suggest_screen(service, show, sorted(examples_dir.glob("*.txt")))
            article_screen(service, show, sorted(examples_dir.glob("*.md")))
            image_screen(service, show, sorted(images_dir.glob("*.jpg")))
            compare_screen(service, show)
            about_screen(service.about())
        add_api(service)
    demo.routes = [picture_route(service.pictures)]
    return demo


class AppBlocks(UploadsOnly):
    """The app's Blocks: launched, they also serve `routes` (the pictures, `mlsr.app.pictures`) on the same origin,
    and their MCP tools answer JSON with output schemas (`mlsr.app.mcp`)."""

    routes: list = []

    def launch(self, *args, **kwargs):  # gradio's; adds the routes to the app it creates, then adjusts its MCP server
        app_kwargs = dict(kwargs.pop("app_kwargs", None) or {})
        app_kwargs["routes"] = [*app_kwargs.get("routes", []), *self.routes]
        block = not kwargs.pop("prevent_thread_lock", False)
        launched = super().launch(*args, app_kwargs=app_kwargs, prevent_thread_lock=True, **kwargs)
        structure_answers(self)
        if block:
            self.block_thread()
        return launched


Show = Callable[[list[Hit]], list[tuple]]


def suggest_screen(service: Service, show: Show, examples: list[Path]) -> None:
    """Article text -> ranked images, the text shaded by term weight, why a selected image ranked, editable terms."""
    c = suggest_components(examples)
    query_state, hits_state, selected_state = c.query_state, c.hits_state, c.selected_state
    text, k, mode, results, why_row, table, more = c.text, c.k, c.mode, c.results, c.why_row, c.table, c.more
    example_list = c.example_list

    def on_suggest(text_value: str, k_value: int, mode_value: str, licences: list, least, progress=gr.Progress()):
        suggestion = service.suggest(text_value, int(k_value), mode_value, stage=progress_stage(progress),
                                     **filter_options(licences, least))
        return (
            show(suggestion.hits),
            shaded(suggestion.highlights),
            expansion_markdown(suggestion.expansion),
            suggest_summary(suggestion),
            pd.DataFrame(suggestion.table, columns=["term", "weight"]),
            suggestion.query, suggestion.hits, gr.update(visible=False),
        )

    def blank(message: str):
        return [], None, "", f"**{literal(message)}**", gr.update(), None, [], gr.update(visible=False)

    suggest_outputs = [results, c.highlighted, c.expansion, c.timing, table, query_state, hits_state, why_row]
    triggers = [c.suggest_button.click, text.submit] + ([example_list.load_input_event.then] if example_list else [])
    for trigger in triggers:  # an example runs at once: no earlier query's results stay beside it
        trigger(shown_in(on_suggest, blank), [text, k, mode, *c.filters], suggest_outputs, api_visibility="private",
                concurrency_id=MODELS).then(None, js=SHOW_RESULTS_ON_A_PHONE)

    def on_search_edited(rows: pd.DataFrame, k_value: int, query):
        # the table leaves out control tokens: their weights come from the query it was made from
        hits, query, timings = service.search_terms(rows.values.tolist(), int(k_value), keep_from=query)
        return (show(hits), timing_markdown(timings, query.nnz, len(hits)), query, hits, gr.update(visible=False),
                "")

    def edited_blank(message: str):  # said beside the table the user is editing; the last results stay
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), f"**{literal(message)}**"

    c.search_edited.click(shown_in(on_search_edited, edited_blank), [table, k, query_state],
                          [results, c.timing, query_state, hits_state, why_row, c.edit_status],
                          api_visibility="private", concurrency_id=MODELS)

    @user_errors
    def on_select(query, hits: list[Hit], event: gr.SelectData):
        if query is None or not hits or event.index is None:
            return gr.update(visible=False), "", None, None, None, None
        hit = hits[event.index if isinstance(event.index, int) else event.index[0]]
        return (gr.update(visible=True), *explanation(service, query, hit), hit)

    results.select(on_select, [query_state, hits_state],
                   [why_row, c.why_title, c.matched, c.contribution_plot, c.hit_terms, selected_state],
                   api_visibility="private", concurrency_id=MODELS)

    def on_more(hit: Hit | None, k_value: int):
        if hit is None:
            return tuple(gr.update() for _ in suggest_outputs)
        hits, query, timings = service.more_like_this(hit.row, int(k_value))
        line = f"like #{hit.rank} {literal(hit.caption or hit.id)}, its own terms as the query"
        summary = f"{plural(len(hits), 'image')} {line} ({plural(query.nnz, 'active term')}) · {timing_text(timings)}"
        return (show(hits), None, "", summary, pd.DataFrame(term_table(query[0], service.encoder.vocab),
                                                             columns=["term", "weight"]),
                query, hits, gr.update(visible=False))

    more.click(shown_in(on_more, blank), [selected_state, k], suggest_outputs, api_visibility="private",
               concurrency_id=MODELS)


def suggest_components(examples: list[Path]) -> SimpleNamespace:
    """The Suggest screen's components (its events are wired by `suggest_screen`)."""
    example_list = None
    with gr.Tab("Suggest images", id="suggest"):
        query_state = gr.State(None)  # the scipy (1, vocab) query vector behind the current results
        hits_state = gr.State([])
        selected_state = gr.State(None)  # the Hit whose explanation is shown: "more like this" starts from it
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(label="Article text", lines=8, max_lines=20, elem_id="article-text",
                                  placeholder="Paste a paragraph or a section of an article...")
                with gr.Row():
                    k = gr.Slider(1, MAX_K, value=12, step=1, label="Images (k)", elem_id="k-slider")
                    mode = gr.Radio(list(QUERY_MODES), value="expand", label="Query mode",
                                    info="expand: any term; no_expand: only the text's own words;"
                                         " hybrid: shared-word candidates re-ranked by the expanded query")
                filters = suggest_filters()  # only some licences (a wiki gallery's items record theirs); a minimum
                suggest_button = gr.Button("Suggest images", variant="primary", elem_id="suggest-button")
                if examples:
                    example_list = gr.Examples([[path.read_text(encoding="utf-8").strip()] for path in examples],
                                               inputs=[text], label="Example passages",
                                               example_labels=[path.stem.replace("-", " ") for path in examples])
            with gr.Column(scale=2):
                highlighted = gr.HighlightedText(label="Your text, each word shaded by its weight in the query",
                                                 elem_id="query-highlight", show_legend=False)
                expansion = gr.Markdown(elem_id="expansion-terms")
                timing = gr.Markdown(elem_classes="mlsr-timing", elem_id="suggest-timing")
        results = gr.Gallery(label="Suggested images (select one to see why it ranked)", columns=6, height="auto",
                             object_fit="cover", elem_id="results-gallery", allow_preview=False,
                             elem_classes="mlsr-gallery")
        with gr.Row(visible=False, elem_id="why-row") as why_row:
            with gr.Column(scale=3):
                why_title = gr.Markdown()
                more = gr.Button("More like this", size="sm", elem_id="more-like-this")
                matched = gr.Dataframe(headers=list(MATCHED_COLUMNS), datatype=["str", "number", "number", "number"],
                                       interactive=False, elem_id="matched-terms", label="Matched terms (weights)",
                                       column_widths=["31%", "23%", "23%", "23%"], wrap=True)
            with gr.Column(scale=2):
                contribution_plot = gr.BarPlot(x="term", y="contribution", sort="-y", height=280, x_label_angle=-45,
                                               y_lim=[0, None], label=f"Largest contributions (top {PLOTTED_TERMS})",
                                               elem_id="contribution-plot")
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
            edit_status = gr.Markdown(elem_id="term-table-status")  # a refused table is said here, where the eye is
    return SimpleNamespace(
        query_state=query_state, hits_state=hits_state, selected_state=selected_state, text=text, k=k, mode=mode,
        suggest_button=suggest_button, example_list=example_list, highlighted=highlighted, expansion=expansion,
        timing=timing, results=results, why_row=why_row, why_title=why_title, more=more, matched=matched,
        contribution_plot=contribution_plot, hit_terms=hit_terms, table=table, search_edited=search_edited,
        edit_status=edit_status, filters=filters)


def explanation(service: Service, query, hit: Hit) -> tuple:
    """Why `hit` ranked for `query`: a title line, the matched-terms table, the contributions chart, its own terms."""
    image_terms, matches = service.explain(query, hit.row)
    rows = [[m.term, round(m.query_weight, 4), round(m.doc_weight, 4), round(m.contribution, 4)] for m in matches]
    top = rows[:PLOTTED_TERMS]
    lowest = min([0.0] + [r[3] for r in top])  # bars start at 0; negative weights (edited terms) go below it
    plot = gr.BarPlot(pd.DataFrame({"term": [r[0] for r in top], "contribution": [r[3] for r in top]}),
                      y_lim=[lowest, None])
    return (why_markdown(hit.rank, hit.id, hit.score, hit.caption, len(matches), credit_markdown(hit)),
            pd.DataFrame(rows, columns=list(MATCHED_COLUMNS)), plot, chips(image_terms))


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
                compare_text = gr.Textbox(label="Query (Enter compares)", lines=1, scale=4, elem_id="compare-text",
                                          placeholder="e.g. a woman cutting a cake")
                compare_k = gr.Slider(1, 50, value=10, step=1, label="k", scale=1)
                compare_button = gr.Button("Compare", variant="primary", scale=1, elem_id="compare-button")
            example_list = gr.Examples([[query] for query in COMPARE_EXAMPLES], inputs=[compare_text],
                                       label="Example queries")
            compare_summary = gr.Markdown(elem_id="compare-summary")
            with gr.Row():
                sparse_gallery = gr.Gallery(label="Sparse (learned terms)", columns=4, height="auto",
                                            object_fit="cover", allow_preview=False, elem_id="sparse-gallery",
                                            elem_classes="mlsr-gallery")
                dense_gallery = gr.Gallery(label=f"Dense (FAISS, {dense_label(about)})", columns=4, height="auto",
                                           object_fit="cover", allow_preview=False, elem_id="dense-gallery",
                                           elem_classes="mlsr-gallery")

    def on_compare(text_value: str, k_value: int):
        comparison = service.compare(text_value, int(k_value))
        t = comparison.timings
        summary = (
            f"**overlap@{int(k_value)}: {comparison.overlap:.0%}** · sparse query:"
            f" {plural(comparison.active_terms, 'active term')} · one encoder pass for both:"
            f" {t['sparse_encode']:.0f} ms · search: sparse"
            f" {t['sparse_search']:.2f} ms, dense {t['dense_search']:.2f} ms"
        )
        return summary, show(comparison.sparse), show(comparison.dense)

    for trigger in (compare_button.click, compare_text.submit, example_list.load_input_event.then):
        trigger(shown_in(on_compare, lambda message: (f"**{literal(message)}**", [], [])), [compare_text, compare_k],
                [compare_summary, sparse_gallery, dense_gallery], api_visibility="private", concurrency_id=MODELS)


def about_screen(about: dict) -> None:
    """Facts about the index and models, how the method works, and the most frequent terms."""
    with gr.Tab("About this index", id="about"):
        gr.Markdown(about_markdown(about), elem_id="about-text")
        gr.BarPlot(pd.DataFrame({"term": [t for t, _ in about["top_terms"]],
                                 "documents": [int(w) for _, w in about["top_terms"]]}),
                   x="term", y="documents", sort="-y", height=300, x_label_angle=-45, y_lim=[0, None],
                   label="Most frequent terms (documents holding them)")


def gallery_items(hits: list[Hit], placeholder: Path, picture: Callable[[int], bytes | None] = lambda row: None
                  ) -> list[tuple]:
    """(image, caption) pairs for a Gallery: '#rank · score · caption or id'. The image is the row's picture as a
    file in Gradio's cache folder, which the app itself serves (the browser asks no other host), or the placeholder."""
    folder = Path(get_upload_folder()) / "mlsr-pictures"
    shown = []
    for hit in hits:
        found = picture(hit.row)
        shown.append((str(picture_file(found, folder) if found is not None else placeholder),
                      f"#{hit.rank} · {score_text(hit.score)} · {hit.caption or hit.id}"
                      + (f" · {hit.license}" if hit.license else "")))
    return shown


def progress_stage(progress: gr.Progress) -> Callable[[float, str], None]:
    """A service `stage` callback that moves Gradio's progress bar."""
    return lambda fraction, message: progress(fraction, desc=message)


def dense_label(about: dict) -> str:
    """'<backbone>, 256-d': the dense model of the comparison, as the index records it."""
    backbone = about["built_with"].get("backbone") or about["models"].get("backbone") or "dense model"
    return f"{backbone}, {about['dense_size']}-d" if about.get("dense_size") else backbone


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


def error_page(message: str, guide: str = "") -> gr.Blocks:
    """What the app serves when it cannot start (models or index missing): the reason, and a guide to what it
    needs and the commands that get it; its one API endpoint, `/status`, says the same to API clients."""
    with gr.Blocks(title="mlsr: cannot start") as page:
        gr.Markdown(f"# mlsr could not start\n\n{message}", elem_id="startup-error")
        gr.Markdown(guide, elem_id="startup-guide")

        def status() -> dict:
            """Why the app is not serving images, and what to do about it.

            Returns:
                {"ready": false, "reason": the error, "guide": Markdown with the commands that fix it}.
            """
            return {"ready": False, "reason": message, "guide": guide}

        gr.api(status, api_name="status")
    return page
