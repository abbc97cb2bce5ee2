"""What every screen of the app shares: its handlers' error rule, their progress bar, and the gallery's items.

A library error becomes a message (the API's error, or a placeholder where the results were), never a
traceback; pictures are the app's own files (`mlsr.serving.pictures`), so the browser asks no other host.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable

import gradio as gr
from gradio.utils import get_upload_folder

from mlsr.serving.pictures import picture_file
from mlsr.serving.results import Hit
from mlsr.app.uploads import refuse
from mlsr.app.views import score_text
from mlsr.errors import MlsrError

MODELS = "models"  # one concurrency group for every event that runs model code: the queue's limit is global


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


def progress_stage(progress: gr.Progress) -> Callable[[float, str], None]:
    """A service `stage` callback that moves Gradio's progress bar."""
    return lambda fraction, message: progress(fraction, desc=message)


def _gallery_items(hits: list[Hit], placeholder: Path, picture: Callable[[int], bytes | None] = lambda row: None
                  ) -> list[tuple]:
    """(image, caption) pairs for a Gallery: '#rank · score · caption or id'. The image is the row's picture as a
    file in Gradio's cache folder, which the app itself serves (the browser asks no other host), or the placeholder."""
    return [(_picture_path(hit, placeholder, picture),
             f"#{hit.rank} · {score_text(hit.score)} · {hit.caption or hit.id}"
             + (f" · {hit.license}" if hit.license else "")) for hit in hits]


def _picture_path(hit: Hit, placeholder: Path, picture: Callable[[int], bytes | None]) -> str:
    """The file the app serves for a hit's picture (in Gradio's cache folder), or the placeholder's."""
    found = picture(hit.row)
    return str(picture_file(found, Path(get_upload_folder()) / "mlsr-pictures") if found is not None else placeholder)


@dataclass(frozen=True)
class Show:
    """What the screens show of hits: `show(hits)` a Gallery's items, `show.picture_of(hit)` one hit's picture
    as a file (for a full-size view with a download button)."""

    placeholder: Path
    picture: Callable[[int], bytes | None]

    def __call__(self, hits: list[Hit]) -> list[tuple]:
        return _gallery_items(hits, self.placeholder, self.picture)

    def picture_of(self, hit: Hit) -> str:
        return _picture_path(hit, self.placeholder, self.picture)
