"""The Article screen: a whole article in, images for each section out, and the illustrated Markdown to download.

Built by `mlsr.app.ui.build_ui`. The split is shown
as it is made and can be changed (split at headings or paragraphs, join a section with the one above); each
section shows its images, why the selected one ranked, and a "choose this one" button. The `/suggest_article`
endpoint (also an MCP tool) returns the same suggestions as JSON.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from mlsr.articles.sections import SPLITS, Article, join_sections, section_label, split_article
from mlsr.articles.suggestions import ArticleSuggestion
from mlsr.app.handlers import MODELS, Show, progress_stage, shown_in
from mlsr.serving.service import Service
from mlsr.app.exports_ui import export_buttons, min_score_input, no_match_markdown, write_exports
from mlsr.app.views import chips, credit_markdown, nothing_matched, plural, timing_text, why_markdown
from mlsr.articles.markdown import literal
from mlsr.errors import InputError, MlsrError
from mlsr.settings import ARTICLE_K, MAX_SECTION_K, NEAR_DUPLICATE_COSINE

DOWNLOADS = Path(tempfile.gettempdir()) / "mlsr-articles"  # illustrated Markdown files, kept for an hour
_SHOWN_SHARED = 12  # shared terms shown as chips under a section's selected image (the largest contributions)
_RECIPE = ("Each section's query is **page title + section title + section text**, the recipe of AToMiC (the"
          " seed paper's image-suggestion task).")


def article_screen(service: Service, show: Show, examples: list[Path]) -> None:
    """Paste or upload an article; see and change its split; get k images per section; download the Markdown."""
    with gr.Tab("Article", id="article"):
        result_state = gr.State(None)  # the ArticleSuggestion on screen
        chosen_state = gr.State([])  # per section: the position of its chosen image, or None
        c = _article_inputs(examples)
        text, upload, title, k, unique, collapse, min_score = c.text, c.upload, c.title, c.k, c.unique, c.collapse, \
            c.min_score
        button, split, plan, joined = c.button, c.split, c.plan, c.joined
        summary = gr.Markdown(elem_id="article-summary")

        @gr.render(inputs=[result_state])
        def sections(result: ArticleSuggestion | None):
            if result is not None:
                for number in range(len(result.sections)):
                    _section_view(result, number, show, chosen_state, preview, downloads)

        with gr.Row():
            download = gr.DownloadButton("Download the illustrated Markdown", visible=False,
                                         elem_id="article-download", variant="primary")
            wikitext_download, html_download = export_buttons()
        downloads = [download, wikitext_download, html_download]
        with gr.Accordion("The illustrated Markdown", open=False, elem_id="article-preview"):
            preview = gr.Code(language="markdown", interactive=False, elem_id="article-markdown", wrap_lines=True)

    def on_plan(text_value: str, split_value: str, title_value: str, joined_value: list):
        """The split as it would be searched; the join choices are sections 2.. of the split before joining."""
        if not (text_value or "").strip():
            return _RECIPE, gr.update(choices=[], value=[])
        try:
            article = split_article(text_value, split_value, title_value.strip() or None)
        except MlsrError as error:
            return f"{_RECIPE}\n\n**{literal(str(error))}**", gr.update(choices=[], value=[])
        choices = [(f"{n + 1} · {section_label(article, n)}", n) for n in range(1, len(article.sections))]
        joined_value = [n for n in joined_value or [] if 0 < n < len(article.sections)]
        return _plan_markdown(join_sections(article, joined_value)), gr.update(choices=choices, value=joined_value)

    plan_inputs = [text, split, title, joined]
    for trigger in (text.change, split.change, title.change, joined.input):
        trigger(on_plan, plan_inputs, [plan, joined], api_visibility="private", queue=False, show_progress="hidden")
    def on_upload(file):  # a refused file is said in the plan, under the article; the article's text stays
        try:
            return _read_upload(file), gr.update()
        except InputError as error:
            return gr.update(), f"**{literal(str(error))}**"

    upload.upload(on_upload, [upload], [text, plan], api_visibility="private", queue=False)

    def on_suggest(text_value, title_value, k_value, split_value, joined_value, unique_value, collapse_value,
                   min_score_value, progress=gr.Progress()):
        result = service.suggest_article(text_value, int(k_value), title=title_value.strip() or None,
                                         split=split_value, joined=joined_value, unique=unique_value,
                                         collapse=collapse_value, min_score=float(min_score_value or 0),
                                         stage=progress_stage(progress))
        chosen = [0 if s.hits else None for s in result.sections]
        shown = sum(len(s.hits) for s in result.sections)
        line = (f"**{plural(shown, 'image')} for {plural(len(result.sections), 'section')}**"
                f" (one encoder batch for all sections) · {timing_text(result.timings)}. The first image of each"
                " section is chosen until you choose another.")
        files = [_write_markdown(result, chosen), *write_exports(result, chosen)]
        return result, chosen, line, result.markdown(chosen), *[gr.update(value=f, visible=True) for f in files]

    def blank(message: str):
        return None, [], f"**{literal(message)}**", "", *[gr.update(visible=False)] * 3

    button.click(shown_in(on_suggest, blank), [text, title, k, split, joined, unique, collapse, min_score],
                 [result_state, chosen_state, summary, preview, *downloads], api_visibility="private",
                 concurrency_id=MODELS)


def _article_inputs(examples: list[Path]) -> SimpleNamespace:
    """The Article screen's inputs: the text (or a file), the page title, k, the two switches, and the split."""
    with gr.Row():
        with gr.Column(scale=3):
            text = gr.Textbox(label="Article", lines=10, max_lines=24, elem_id="article-input",
                              placeholder="Paste a whole article: Markdown headings (# Title, ## Section),"
                                          " Wikipedia headings (== Section ==), or paragraphs separated by"
                                          " blank lines.")
            upload = gr.UploadButton("Upload a .txt or .md file", file_types=[".txt", ".md"], size="sm",
                                     elem_id="article-upload")
            with gr.Row():
                title = gr.Textbox(label="Page title", placeholder="detected from a # heading", scale=2,
                                   elem_id="article-title")
                k = gr.Slider(1, MAX_SECTION_K, value=ARTICLE_K, step=1, label="Images per section", scale=2,
                              elem_id="article-k")
            with gr.Row():
                unique = gr.Checkbox(True, label="No image twice", elem_id="article-unique",
                                     info="each image goes to the section that scores it highest")
                collapse = gr.Checkbox(True, label="Collapse near-duplicates", elem_id="article-collapse",
                                       info=f"images with sparse cosine above {NEAR_DUPLICATE_COSINE} count once")
            min_score = min_score_input("article-min-score")
            button = gr.Button("Suggest images for each section", variant="primary", elem_id="article-button")
            if examples:
                gr.Examples([[path.read_text(encoding="utf-8")] for path in examples], inputs=[text],
                            example_labels=[path.stem.replace("-", " ") for path in examples],
                            label="Example articles")
        with gr.Column(scale=2):
            split = gr.Radio(list(SPLITS), value="auto", label="Split at", elem_id="article-split",
                             info="auto: headings when the article has them, else blank lines")
            plan = gr.Markdown(_RECIPE, elem_id="article-plan")
            joined = gr.CheckboxGroup([], label="Join with the section above", elem_id="article-join")
    return SimpleNamespace(text=text, upload=upload, title=title, k=k, unique=unique, collapse=collapse,
                           button=button, split=split, plan=plan, joined=joined, min_score=min_score)


def _section_view(result: ArticleSuggestion, number: int, show: Show, chosen_state, preview, downloads) -> None:
    """One section: its heading and query, its images, why the selected one ranked, and 'choose this one'
    (which updates the shared `chosen_state`, the Markdown `preview` and the `download`)."""
    found = result.sections[number]
    selected = gr.State(0 if found.hits else None)
    with gr.Column(variant="panel", elem_classes="mlsr-section"):
        gr.Markdown(f"### {number + 1}. {literal(section_label(result.article, number))}\n"
                    f"**Query:** {literal(_clip(found.query, 200))}", elem_id=f"article-section-{number}")
        if not found.hits:
            gr.Gallery([], visible=False)  # where a gallery was before a re-run: Gradio's page breaks on a new type
            gr.Markdown(no_match_markdown(found.no_match) if found.no_match else _taken_markdown()
                        if found.candidates else nothing_matched(1), elem_id=f"article-nomatch-{number}")
            return
        gallery = gr.Gallery(show(found.hits), columns=4, height="auto", object_fit="cover", allow_preview=False,
                             label="Select an image to see why it ranked", elem_classes="mlsr-gallery",
                             elem_id=f"article-gallery-{number}")
        why = gr.Markdown(_section_why(found, 0), elem_id=f"article-why-{number}")
        # Gradio's hint wants a list of (str, str | float | None): a list of (str, float | None) is one, but lists are
        # invariant to mypy
        terms = gr.HighlightedText(chips(found.terms[0][:_SHOWN_SHARED]),  # type: ignore[arg-type]
                                   show_legend=False, label="Shared terms",
                                   elem_id=f"article-terms-{number}")
        with gr.Row():
            choose = gr.Button("Choose this one", size="sm", elem_id=f"article-choose-{number}")
            none = gr.Button("No image here", size="sm", elem_id=f"article-none-{number}")
            chosen_line = gr.Markdown(_chosen_markdown(found, 0), elem_id=f"article-chosen-{number}")

    def on_select(event: gr.SelectData):
        position = event.index if isinstance(event.index, int) else event.index[0]
        return position, _section_why(found, position), chips(found.terms[position][:_SHOWN_SHARED])

    def on_choose(chosen: list, position: int | None):
        chosen = list(chosen)
        chosen[number] = position
        paths = [_write_markdown(result, chosen), *write_exports(result, chosen)]
        return chosen, _chosen_markdown(found, position), result.markdown(chosen), *[gr.update(value=p) for p in paths]

    gallery.select(on_select, None, [selected, why, terms], api_visibility="private", queue=False)
    choose.click(on_choose, [chosen_state, selected], [chosen_state, chosen_line, preview, *downloads],
                 api_visibility="private", queue=False)
    none.click(lambda chosen: on_choose(chosen, None), [chosen_state], [chosen_state, chosen_line, preview,
               *downloads], api_visibility="private", queue=False)


def _plan_markdown(article: Article) -> str:
    """The split as it will be searched: the page title, then each section with its size and its query."""
    head = (f"{_RECIPE}\n\n**{plural(len(article.sections), 'section')}**, split at {article.split}"
            + (f" · page title: *{literal(article.title)}*" if article.title else " · no page title"))
    try:
        queries = article.queries()
    except MlsrError as error:
        return f"{head}\n\n**{literal(str(error))}**"
    lines = [f"{n + 1}. **{literal(section_label(article, n))}** · {plural(len(s.text.split()), 'word')} ·"
             f" *{literal(_clip(query, 90))}*" for n, (s, query) in enumerate(zip(article.sections, queries))]
    return head + "\n\n" + "\n".join(lines)


def _taken_markdown() -> str:
    return ("**No image left for this section:** the images that match it went to sections that score them"
            " higher. Untick *No image twice* to see them here too.")


def _section_why(found, position: int) -> str:
    hit = found.hits[position]
    return why_markdown(hit.rank, hit.id, hit.score, hit.caption, len(found.terms[position]), credit_markdown(hit))


def _chosen_markdown(found, position: int | None) -> str:
    if position is None:
        return "**Chosen:** no image for this section"
    hit = found.hits[position]
    return f"**Chosen:** #{hit.rank} {literal(hit.caption or hit.id)}"


def _write_markdown(result: ArticleSuggestion, chosen: list) -> str:
    """The illustrated Markdown as a file to download, named after the page title; older files are removed."""
    DOWNLOADS.mkdir(exist_ok=True)
    for old in DOWNLOADS.glob("*/*.md"):
        if time.time() - old.stat().st_mtime > 3600:
            old.unlink(missing_ok=True)
    name = re.sub(r"[^a-z0-9]+", "-", result.article.title.lower()).strip("-")[:60] or "article"
    path = Path(tempfile.mkdtemp(dir=DOWNLOADS)) / f"{name}-illustrated.md"
    path.write_text(result.markdown(chosen), encoding="utf-8")
    return str(path)


def _read_upload(file) -> str:
    """The text of an uploaded .txt or .md file (UTF-8; other encodings are refused with an InputError)."""
    path = Path(file if isinstance(file, str) else getattr(file, "name", ""))
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise InputError("The file could not be read as UTF-8 text: save it as UTF-8, or upload another .txt or"
                         " .md file.") from None


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
