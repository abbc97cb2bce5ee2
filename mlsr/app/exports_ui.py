"""The screens' pieces for editors: wikitext and HTML download buttons, the minimum-score control, the "no good
match" note, the licence filter. Kept apart from `mlsr.app.ui` and `mlsr.app.article_ui` so those stay one job."""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path

import gradio as gr

from mlsr.app.article import ArticleSuggestion
from mlsr.app.licence_filter import licence_choices
from mlsr.app.views import literal
from mlsr.settings import DEFAULT_MIN_SCORE

DOWNLOADS = Path(tempfile.gettempdir()) / "mlsr-articles"  # exported files, kept for an hour
SUFFIXES = {"wikitext": ".wiki", "html": ".html"}


def export_buttons() -> tuple[gr.DownloadButton, gr.DownloadButton]:
    """'Download as wikitext' and 'Download as HTML', hidden until there is something to download."""
    return (gr.DownloadButton("Download as wikitext", visible=False, elem_id="article-download-wikitext"),
            gr.DownloadButton("Download as HTML", visible=False, elem_id="article-download-html"))


def min_score_input(elem_id: str) -> gr.Number:
    """The minimum score, in the units of the score shown on each result: below it a section gets no image."""
    return gr.Number(DEFAULT_MIN_SCORE, minimum=0, step=0.1, label="Minimum score", elem_id=elem_id,
                     info="a section whose best image scores below this gets none, and says so (0: off)")


def licence_filter_input() -> gr.CheckboxGroup:
    """Only images under the ticked licence families (none ticked: every image; items without a recorded licence,
    e.g. COCO photos, are left out once one is ticked)."""
    return gr.CheckboxGroup(licence_choices(), value=[], label="Only these licences", elem_id="licence-filter",
                            info="none ticked: every image; a wiki gallery's items record their licence")


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
    for form, suffix in SUFFIXES.items():
        path = folder / f"{name}-illustrated{suffix}"
        path.write_text(result.export(form, chosen), encoding="utf-8")
        paths.append(str(path))
    return paths
