"""The Gradio interface over mlsr.serving.service: it converts values for Gradio and turns library errors into
messages; it computes nothing itself. Named API endpoints (/suggest, /suggest_article, /image_terms, /similar,
/compare, /search_terms) return plain JSON for `gradio_client`; with `launch(mcp_server=True)` they are also
the app's MCP tools, described by their docstrings and type hints."""

from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr
import pandas as pd

from mlsr.app.api import add_api
from mlsr.app.article_ui import article_screen
from mlsr.app.handlers import MODELS, Show, shown_in
from mlsr.app.image_ui import image_screen
from mlsr.app.mcp import structure_answers
from mlsr.serving.pictures import picture_route
from mlsr.serving.service import Service
from mlsr.app.suggest_ui import suggest_screen
from mlsr.app.uploads import UploadsOnly
from mlsr.app.views import WORD_PIECES, plural
from mlsr.articles.markdown import literal

logger = logging.getLogger(__name__)

_PAPERS = (
    "[Multimodal Learned Sparse Retrieval with Probabilistic Expansion Control](https://arxiv.org/abs/2402.17535)"
    " (Nguyen, Hendriksen, Yates, de Rijke, ECIR 2024; code: [thongnt99/lsr-multimodal]"
    "(https://github.com/thongnt99/lsr-multimodal)), which follows *Multimodal Learned Sparse Retrieval for"
    " Image Suggestion* (Nguyen, Hendriksen, Yates, TREC 2023)"
)
_COMPARE_EXAMPLES = ("a woman cutting a cake", "a man riding a motorbike on a dirt road",
                    "a boy leading water buffalo through a market")
# The theme, chosen: Gradio's default layout with its fonts served by the app itself (LocalFont: no font host to
# reach, as a Space's page must work where no other host answers), orange for the one primary action per screen,
# and slate neutrals, against which the red shading of term weights keeps its contrast.
THEME = gr.themes.Default(primary_hue="orange", secondary_hue="blue", neutral_hue="slate")
CSS = """
#query-highlight .textspan, #image-chips .textspan {font-size: 0.95rem;}
.mlsr-timing {color: var(--body-text-color-subdued); font-size: 0.85rem;}
/* galleries: as many columns as the width holds (two on a phone), not a fixed count */
.mlsr-gallery .grid-container {grid-template-columns: repeat(auto-fill, minmax(min(150px, 40%), 1fr)) !important;}
/* ... and as tall as their images: Gradio's "auto" height is a 320-450 px box that hides rows without a cue */
.mlsr-gallery .grid-wrap.fixed-height {min-height: 0 !important; max-height: none !important;}
/* a long text's shaded copy scrolls in its own box instead of burying the results */
#query-highlight .container, #query-highlight > div:last-child {max-height: 320px; overflow-y: auto;}
/* a gallery's label and its captions sit above and under the pictures, never over them */
.mlsr-gallery > label[data-testid="block-label"] {position: static; margin-bottom: var(--spacing-lg);}
.mlsr-gallery .grid-container.pt-6 {padding-top: 0;}
.mlsr-gallery .top-panel {position: static; width: fit-content; margin: 0 0 var(--spacing-lg) auto;}
.mlsr-gallery .thumbnail-item {aspect-ratio: auto; height: auto; display: flex; flex-direction: column;}
.mlsr-gallery .thumbnail-lg > img {aspect-ratio: 1; height: auto;}
.mlsr-gallery .caption-label {position: static; max-width: none; border: none; border-radius: 0;
  padding-block: 0; margin-block: var(--size-1); white-space: normal;
  display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical;}
/* a phone: the five tabs on one row; table headers never break inside a word */
@media (max-width: 480px) { .tab-container button {padding: 0 var(--size-2);} }
#matched-terms th, #matched-terms th * {white-space: nowrap; word-break: keep-all;}
"""


def build_ui(service: Service, *, examples_dir: Path, images_dir: Path, placeholder: Path) -> gr.Blocks:
    """The five screens (suggest, article, image -> terms, sparse vs dense, about) and the named API endpoints."""
    show = Show(placeholder, service.pictures.picture)
    # delete_cache: uploads and rendered thumbnails older than an hour are removed every 30 minutes.
    # UploadsOnly: requests carry uploaded files only, never a URL the server would fetch (mlsr.app.uploads).
    with _AppBlocks(title="mlsr: multimodal learned sparse retrieval", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            "# mlsr: image suggestions you can read\n"
            "Text and images become weighted bags of vocabulary terms; an image ranks high when it lights up"
            " the terms your text does. Every score is the sum of the shared terms' products."
        )
        with gr.Tabs(overflow_behavior="wrap"):  # on a phone the tabs wrap onto rows, none hides in a menu
            suggest_screen(service, show, sorted(examples_dir.glob("*.txt")))
            article_screen(service, show, sorted(examples_dir.glob("*.md")))
            image_screen(service, show, sorted(images_dir.glob("*.jpg")))
            _compare_screen(service, show)
            _about_screen(service.about())
        add_api(service)
    demo.routes = [picture_route(service.pictures)]
    return demo


class _AppBlocks(UploadsOnly):
    """The app's Blocks: launched, they also serve `routes` (the pictures, `mlsr.serving.pictures`) on the same origin,
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


def _compare_screen(service: Service, show: Show) -> None:
    """The same text ranked by the sparse index and by FAISS over the dense vectors of the same items."""
    about = service.about()
    with gr.Tab("Compare", id="compare"):
        gr.Markdown("**Sparse vs dense**: one query ranked by the sparse index (learned terms) and by FAISS over"
                    " the dense vectors of the same images.")
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
            example_list = gr.Examples([[query] for query in _COMPARE_EXAMPLES], inputs=[compare_text],
                                       label="Example queries")
            compare_summary = gr.Markdown(elem_id="compare-summary")
            with gr.Row():
                sparse_gallery = gr.Gallery(label="Sparse (learned terms)", columns=4, height="auto",
                                            object_fit="cover", allow_preview=False, elem_id="sparse-gallery",
                                            elem_classes="mlsr-gallery")
                dense_gallery = gr.Gallery(label=f"Dense (FAISS, {_dense_label(about)})", columns=4, height="auto",
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


def _about_screen(about: dict) -> None:
    """Facts about the index and models, how the method works, and the most frequent terms."""
    with gr.Tab("About", id="about"):
        gr.Markdown(_about_markdown(about), elem_id="about-text")
        gr.BarPlot(pd.DataFrame({"term": [t for t, _ in about["top_terms"]],
                                 "documents": [int(w) for _, w in about["top_terms"]]}),
                   x="term", y="documents", sort="-y", height=300, x_label_angle=-45, y_lim=[0, None],
                   label="Most frequent terms (documents holding them)")


def _dense_label(about: dict) -> str:
    """'<backbone>, 256-d': the dense model of the comparison, as the index records it."""
    backbone = about["built_with"].get("backbone") or about["models"].get("backbone") or "dense model"
    return f"{backbone}, {about['dense_size']}-d" if about.get("dense_size") else backbone


def _about_markdown(about: dict) -> str:
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
        " explained exactly by the shared terms. In `no_expand` mode the query keeps only its own words."
        f" {WORD_PIECES}\n\n"
        f"Papers: {_PAPERS}. Photos in the examples: MS-COCO (Flickr, licenses per image; annotations CC BY 4.0)."
        + _verification_markdown(about.get("verification"))
    )


def _verification_markdown(verdict: dict | None) -> str:
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
