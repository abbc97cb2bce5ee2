"""The Suggest screen: article text in, ranked images out, the text shaded by term weight, why a selected image
ranked, "more like this", and the query's terms to edit (`mlsr.app.terms_ui`)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from mlsr.app.exports_ui import filter_options, suggest_filters, suggest_summary
from mlsr.app.handlers import MODELS, Show, progress_stage, shown_in, user_errors
from mlsr.ingest.licences import licence_choices
from mlsr.serving.results import Hit
from mlsr.serving.service import Service
from mlsr.serving.terms import term_table
from mlsr.app.terms_ui import STATUS_INTO_VIEW, TABLE_COLUMNS, term_editor, wire_add_term
from mlsr.app.views import (chips, credit_markdown, expansion_markdown, plural, shaded, timing_markdown, timing_text,
                            why_markdown)
from mlsr.articles.markdown import literal
from mlsr.settings import MAX_K, QUERY_MODES

PLOTTED_TERMS = 15  # bars in a chart: more and their labels collide
_MATCHED_COLUMNS = ("term", "query", "image", "product")  # short headers: four columns fit a phone
_TEXT_LABEL = "Article text"
_HIGHLIGHT_LABEL = "Your text, each word shaded by its weight in the query"
# On a narrow screen the results start ~1,000 px below the button: bring them into view once they are there.
_SHOW_RESULTS_ON_A_PHONE = ("() => { if (window.innerWidth < 700) document.querySelector('#results-gallery')"
                           "?.scrollIntoView({block: 'start'}); }")


def suggest_screen(service: Service, show: Show, examples: list[Path]) -> None:
    """Article text -> ranked images, the text shaded by term weight, why a selected image ranked, editable terms."""
    c = _suggest_components(examples, licence_choices(service.index.items))
    query_state, hits_state, selected_state = c.query_state, c.hits_state, c.selected_state
    text, k, mode, results, why_row, table, more = c.text, c.k, c.mode, c.results, c.why_row, c.editor.table, c.more

    def on_suggest(text_value: str, k_value: int, mode_value: str, licences: list, least, progress=gr.Progress()):
        suggestion = service.suggest(text_value, int(k_value), mode_value, stage=progress_stage(progress),
                                     **filter_options(licences, least))
        return (
            show(suggestion.hits), gr.update(label=_TEXT_LABEL),
            gr.update(value=shaded(suggestion.highlights), label=_HIGHLIGHT_LABEL),
            expansion_markdown(suggestion.expansion), suggest_summary(suggestion),
            pd.DataFrame(suggestion.table, columns=TABLE_COLUMNS),
            suggestion.query, suggestion.hits, gr.update(visible=False),
        )

    def blank(message: str):
        return ([], gr.update(label=_TEXT_LABEL), gr.update(value=None, label=_HIGHLIGHT_LABEL), "",
                f"**{literal(message)}**", gr.update(), None, [], gr.update(visible=False))

    suggest_outputs = [results, text, c.highlighted, c.expansion, c.timing, table, query_state, hits_state, why_row]
    triggers = [c.suggest_button.click, text.submit]
    triggers += [c.example_list.load_input_event.then] if c.example_list else []
    for trigger in triggers:  # an example runs at once: no earlier query's results stay beside it
        trigger(shown_in(on_suggest, blank), [text, k, mode, *c.filters], suggest_outputs, api_visibility="private",
                concurrency_id=MODELS).then(None, js=_SHOW_RESULTS_ON_A_PHONE)

    def on_search_edited(rows: pd.DataFrame, k_value: int, query):
        # the table leaves out control tokens: their weights come from the query it was made from
        hits, query, timings = service.search_terms(rows.values.tolist(), int(k_value), keep_from=query)
        return (show(hits), timing_markdown(timings, query.nnz, len(hits)), query, hits, gr.update(visible=False),
                "")

    def edited_blank(message: str):  # said beside the table the user is editing; the last results stay
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), f"**{literal(message)}**"

    c.editor.search.click(shown_in(on_search_edited, edited_blank), [table, k, query_state],
                          [results, c.timing, query_state, hits_state, why_row, c.editor.status],
                          api_visibility="private", concurrency_id=MODELS).then(None, js=STATUS_INTO_VIEW)
    wire_add_term(service, c.editor)

    @user_errors
    def on_select(query, hits: list[Hit], event: gr.SelectData):
        if query is None or not hits or event.index is None:
            return gr.update(visible=False), "", None, None, None, None, None
        hit = hits[event.index if isinstance(event.index, int) else event.index[0]]
        return (gr.update(visible=True), *explanation(service, query, hit), show.picture_of(hit), hit)

    results.select(on_select, [query_state, hits_state],
                   [why_row, c.why_title, c.matched, c.contribution_plot, c.hit_terms, c.picture, selected_state],
                   api_visibility="private", concurrency_id=MODELS)

    def on_more(hit: Hit | None, k_value: int):
        if hit is None:
            return tuple(gr.update() for _ in suggest_outputs)
        hits, query, timings = service.more_like_this(hit.row, int(k_value))
        line = f"like #{hit.rank} {literal(hit.caption or hit.id)}, its own terms as the query"
        summary = f"{plural(len(hits), 'image')} {line} ({plural(query.nnz, 'active term')}) · {timing_text(timings)}"
        # the text stays (it is the user's), but its label and the panel beside it say what the query is now
        return (show(hits), gr.update(label=f"{_TEXT_LABEL} (the results are like #{hit.rank}, not this text:"
                                            " Suggest searches with the text again)"),
                gr.update(value=chips(service.encoder.decode(query, top_k=30)),
                          label=f"The query: image #{hit.rank}'s own terms (the heaviest 30)"),
                "", summary, pd.DataFrame(term_table(query[0], service.encoder.vocab), columns=TABLE_COLUMNS),
                query, hits, gr.update(visible=False))

    more.click(shown_in(on_more, blank), [selected_state, k], suggest_outputs, api_visibility="private",
               concurrency_id=MODELS)


def _suggest_components(examples: list[Path], licences: list[str]) -> SimpleNamespace:
    """The Suggest screen's components (its events are wired by `suggest_screen`); `licences`: the filter's
    choices, the licence families the gallery records."""
    example_list = None
    with gr.Tab("Suggest", id="suggest"):
        query_state = gr.State(None)  # the scipy (1, vocab) query vector behind the current results
        hits_state = gr.State([])
        selected_state = gr.State(None)  # the Hit whose explanation is shown: "more like this" starts from it
        with gr.Row():
            with gr.Column(scale=3):
                text = gr.Textbox(label=_TEXT_LABEL, lines=8, max_lines=20, elem_id="article-text",
                                  placeholder="Paste a paragraph or a section of an article...")
                with gr.Row():
                    k = gr.Slider(1, MAX_K, value=12, step=1, label="Images (k)", elem_id="k-slider")
                    mode = gr.Radio(list(QUERY_MODES), value="expand", label="Query mode",
                                    info="expand: any term; no_expand: only the text's own words;"
                                         " hybrid: shared-word candidates re-ranked by the expanded query")
                filters = suggest_filters(licences)  # only some licences; a minimum score
                suggest_button = gr.Button("Suggest images", variant="primary", elem_id="suggest-button")
                if examples:
                    example_list = gr.Examples([[path.read_text(encoding="utf-8").strip()] for path in examples],
                                               inputs=[text], label="Example passages",
                                               example_labels=[path.stem.replace("-", " ") for path in examples])
            with gr.Column(scale=2):
                highlighted = gr.HighlightedText(label=_HIGHLIGHT_LABEL, elem_id="query-highlight", show_legend=False)
                expansion = gr.Markdown(elem_id="expansion-terms")
                timing = gr.Markdown(elem_classes="mlsr-timing", elem_id="suggest-timing")
        results = gr.Gallery(label="Suggested images (select one to see why it ranked)", columns=6, height="auto",
                             object_fit="cover", elem_id="results-gallery", allow_preview=False,
                             elem_classes="mlsr-gallery")
        with gr.Row(visible=False, elem_id="why-row") as why_row:
            with gr.Column(scale=3):
                why_title = gr.Markdown()
                more = gr.Button("More like this", size="sm", elem_id="more-like-this")
                matched = gr.Dataframe(headers=list(_MATCHED_COLUMNS), datatype=["str", "number", "number", "number"],
                                       interactive=False, elem_id="matched-terms", wrap=True,
                                       label="Matched terms: query weight × image weight = product",
                                       column_widths=["28%", "23%", "23%", "26%"])
            with gr.Column(scale=2):
                picture = gr.Image(label="This image (full screen and download: the buttons above it)", height=300,
                                   interactive=False, buttons=["download", "fullscreen"], elem_id="why-picture")
                contribution_plot = gr.BarPlot(x="term", y="product", sort="-y", height=280, x_label_angle=-45,
                                               y_lim=[0, None], label=f"Largest products (top {PLOTTED_TERMS})",
                                               elem_id="contribution-plot")
                hit_terms = gr.HighlightedText(label="This image's top terms", elem_id="hit-terms")
        editor = term_editor()
    return SimpleNamespace(
        query_state=query_state, hits_state=hits_state, selected_state=selected_state, text=text, k=k, mode=mode,
        suggest_button=suggest_button, example_list=example_list, highlighted=highlighted, expansion=expansion,
        timing=timing, results=results, why_row=why_row, why_title=why_title, more=more, matched=matched,
        contribution_plot=contribution_plot, hit_terms=hit_terms, picture=picture, editor=editor, filters=filters)


def explanation(service: Service, query, hit: Hit) -> tuple:
    """Why `hit` ranked for `query`: a title line, the matched-terms table, the products chart, its own terms."""
    image_terms, matches = service.explain(query, hit.row)
    rows = [[m.term, round(m.query_weight, 4), round(m.doc_weight, 4), round(m.contribution, 4)] for m in matches]
    top = rows[:PLOTTED_TERMS]
    # bars start at 0; negative weights (edited terms) go below it
    lowest = min([0.0] + [round(m.contribution, 4) for m in matches[:PLOTTED_TERMS]])
    plot = gr.BarPlot(pd.DataFrame({"term": [r[0] for r in top], "product": [r[3] for r in top]}),
                      y_lim=[lowest, None])
    return (why_markdown(hit.rank, hit.id, hit.score, hit.caption, len(matches), credit_markdown(hit)),
            pd.DataFrame(rows, columns=list(_MATCHED_COLUMNS)), plot, chips(image_terms))
