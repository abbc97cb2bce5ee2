"""The Image -> terms screen: an uploaded image's weighted terms, and the indexed images most like it.

The image is encoded once: the "Terms to show" slider re-slices the terms already on screen. A similar image
can be selected to see what it shares with the image, and searched from ("more like this"). Built by
`mlsr.app.ui.build_ui`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gradio as gr
import pandas as pd

from mlsr.app.handlers import MODELS, Show, progress_stage, shown_in, user_errors
from mlsr.serving.results import Hit
from mlsr.serving.service import Service
from mlsr.app.suggest_ui import PLOTTED_TERMS, explanation
from mlsr.app.uploads import uploaded_image
from mlsr.app.views import chips, plural, timing_text
from mlsr.articles.markdown import literal
from mlsr.vocab import Terms

_INTRO = "**Image → terms**: the weighted words the model reads in an image, and the indexed images most like it."
SHOWN_TERMS = 100  # an image's terms the screen keeps: its slider shows 5 to this many without encoding again


def image_screen(service: Service, show: Show, examples: list[Path]) -> None:
    """An uploaded image -> its top terms as chips and a chart, and the nearest indexed images (select one to
    see what it shares with the image, and search from it: "more like this")."""
    with gr.Tab("Image", id="image"):
        found_state = gr.State(None)  # the ImageTerms on screen: the slider re-slices them, the encoder runs once
        query_state = gr.State(None)  # the vector behind the similar images: the image's, or an indexed image's
        hits_state, selected_state = gr.State([]), gr.State(None)
        with gr.Row():
            with gr.Column(scale=2):
                image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image",
                                 elem_id="image-input", height=320)
                image_top_k = gr.Slider(5, SHOWN_TERMS, value=20, step=1, label="Terms to show", elem_id="image-top-k")
                if examples:
                    example_list = gr.Examples([[str(path)] for path in examples], inputs=[image],
                                               label="Example photos")
            with gr.Column(scale=3):
                image_summary = gr.Markdown(_INTRO, elem_id="image-summary")  # until an image comes
                image_chips = gr.HighlightedText(label="Top terms", elem_id="image-chips")
                image_plot = gr.BarPlot(x="term", y="weight", sort="-y", height=300, x_label_angle=-45,
                                        y_lim=[0, None], label=f"Term weights (top {PLOTTED_TERMS})")
        similar_gallery = gr.Gallery(label="More like this: nearest indexed images by sparse dot product (select"
                                     " one to see why)", columns=8, height="auto", object_fit="cover",
                                     elem_id="similar-gallery", allow_preview=False, elem_classes="mlsr-gallery")
        with gr.Row(visible=False, elem_id="similar-why") as why_row:
            with gr.Column(scale=3):
                why_title = gr.Markdown()
                more = gr.Button("More like this", size="sm", elem_id="similar-more")
            with gr.Column(scale=2):
                shared = gr.HighlightedText(label="Shared terms (products)", show_legend=False,
                                            elem_id="similar-shared")

    def on_image(payload: dict | None, found, top_k: int, progress=gr.Progress()):
        data = uploaded_image(payload)
        digest = hashlib.sha256(data).hexdigest()
        if found is None or found[0] != digest:  # the same image again (a repeated event): no second encoding
            found = (digest, service.image_terms(data, SHOWN_TERMS, k=8, stage=progress_stage(progress)))
        terms = found[1]
        summary = (f"**{plural(terms.active_terms, 'active term')}** of {service.encoder.vocab_size:,}. "
                   + timing_text(terms.timings))
        return (found, summary, *_term_views(terms.terms, top_k), show(terms.similar), terms.query, terms.similar,
                gr.update(visible=False))

    def blank(message: str):
        return None, f"**{literal(message)}**", None, None, [], None, [], gr.update(visible=False)

    image_outputs = [found_state, image_summary, image_chips, image_plot, similar_gallery, query_state, hits_state,
                     why_row]
    # preprocess=False: our own loader reads the upload, so a bad file gets mlsr's specific message. One event
    # per new image (an upload, a paste or an example), never `change`, which also fires when it is cleared.
    triggers = [image.upload] + ([example_list.load_input_event.then] if examples else [])
    for trigger in triggers:
        trigger(shown_in(on_image, blank), [image, found_state, image_top_k], image_outputs, preprocess=False,
                api_visibility="private", concurrency_id=MODELS)
    image.clear(lambda: blank(""), None, image_outputs, api_visibility="private", queue=False)
    image_top_k.release(lambda found, top_k: _term_views(found[1].terms, top_k) if found else (None, None),
                        [found_state, image_top_k], [image_chips, image_plot], api_visibility="private", queue=False)

    @user_errors
    def on_select(query, hits: list[Hit], event: gr.SelectData):
        if query is None or not hits or event.index is None:
            return gr.update(visible=False), "", None, None
        hit = hits[event.index if isinstance(event.index, int) else event.index[0]]
        title, table, _, _ = explanation(service, query, hit)
        pairs = [(row[0], row[3]) for row in table.values.tolist()[:30]]
        return gr.update(visible=True), title, chips(pairs), hit

    similar_gallery.select(on_select, [query_state, hits_state], [why_row, why_title, shared, selected_state],
                           api_visibility="private", concurrency_id=MODELS)

    def on_more(hit: Hit | None):
        if hit is None:  # nothing selected (as on the Suggest screen): everything stays as it is
            return tuple(gr.update() for _ in range(5))
        hits, query, timings = service.more_like_this(hit.row, 8)
        summary = (f"Images like #{hit.rank} {literal(hit.caption or hit.id)}, its own"
                   f" {plural(query.nnz, 'term')} as the query · {timing_text(timings)}")
        return summary, show(hits), query, hits, gr.update(visible=False)

    more.click(shown_in(on_more, lambda m: (f"**{literal(m)}**", [], None, [], gr.update(visible=False))),
               [selected_state], [image_summary, similar_gallery, query_state, hits_state, why_row],
               api_visibility="private", concurrency_id=MODELS)


def _term_views(terms: Terms, top_k: int) -> tuple:
    """An image's top `top_k` terms as chips, and the chart of the first PLOTTED_TERMS of them."""
    shown = terms[: max(1, int(top_k))]
    top = shown[:PLOTTED_TERMS]
    return chips(shown), pd.DataFrame({"term": [t for t, _ in top], "weight": [w for _, w in top]})
