"""The screens' pieces for editors: wikitext and HTML download buttons, the minimum-score control, the "no good
match" note, the licence filter. Kept apart from `mlsr.app.ui` and `mlsr.app.article_ui` so those stay one job."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import gradio as gr

from mlsr.articles.suggestions import ArticleSuggestion
from mlsr.app.views import timing_markdown
from mlsr.articles.markdown import literal
from mlsr.settings import DEFAULT_MIN_SCORE

DOWNLOADS = Path(tempfile.gettempdir()) / "mlsr-articles"  # exported files, kept for an hour
_SUFFIXES = {"wikitext": ".wiki", "html": ".html"}


def export_buttons() -> tuple[gr.DownloadButton, gr.DownloadButton]:
    """'Download as wikitext' and 'Download as HTML', hidden until there is something to download."""
    return (gr.DownloadButton("Download as wikitext", visible=False, elem_id="article-download-wikitext"),
            gr.DownloadButton("Download as HTML", visible=False, elem_id="article-download-html"))


def min_score_input(elem_id: str) -> gr.Number:
    """The minimum score, in the units of the score shown on each result: below it no image is offered."""
    return gr.Number(DEFAULT_MIN_SCORE, minimum=0, step=0.1, label="Minimum score", elem_id=elem_id,
                     info="below this best score (the score shown on each result) no image is offered, and that is"
                          " said (0: off)")


def suggest_filters(choices: list[str]) -> tuple[gr.CheckboxGroup, gr.Number]:
    """The Suggest screen's filters: only images under the ticked licence families among `choices` (none ticked:
    every image; items without a recorded licence are left out once one is ticked; no filter shown when the
    gallery records no licence), and a minimum score."""
    with gr.Row():
        licences = gr.CheckboxGroup(choices, value=[], label="Only these licences", elem_id="licence-filter",
                                    info="none ticked: every image", scale=3, visible=bool(choices))
        least = min_score_input("suggest-min-score")
    return licences, least


def filter_options(licences: list | None, least: float | None) -> dict:
    """`Service.suggest`'s keyword arguments from the filters' values."""
    return {"licences": frozenset(licences) if licences else None, "min_score": float(least or 0)}


def suggest_summary(suggestion) -> str:
    """The line above the Suggest results: "No good match" and why, or the count and the timings."""
    if suggestion.no_match:
        return no_match_markdown(suggestion.no_match)
    return timing_markdown(suggestion.timings, suggestion.active_terms, len(suggestion.hits))


def no_match_markdown(message: str) -> str:
    return f"**No good match:** {literal(message)}"


def write_exports(result: ArticleSuggestion, chosen: list) -> list[str]:
    """The illustrated article as a wikitext file and an HTML file to download (older files are removed)."""
    DOWNLOADS.mkdir(exist_ok=True)
    for old in [*DOWNLOADS.glob("*/*.wiki"), *DOWNLOADS.glob("*/*.html")]:
        if time.time() - old.stat().st_mtime > 3600:
            old.unlink(missing_ok=True)
    name = re.sub(r"[^a-z0-9]+", "-", result.article.title.lower()).strip("-")[:60] or "article"
    folder = Path(tempfile.mkdtemp(dir=DOWNLOADS))
    paths = []
    for form, suffix in _SUFFIXES.items():
        path = folder / f"{name}-illustrated{suffix}"
        path.write_text(result.export(form, chosen), encoding="utf-8")
        paths.append(str(path))
    return paths
