"""What every screen of the app shares: its handlers' error rule, their progress bar, and the gallery's items.

A library error becomes a message (the API's error, or a placeholder where the results were), never a
traceback; pictures are the app's own files (`mlsr.app.pictures`), so the browser asks no other host.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import gradio as gr
from gradio.utils import get_upload_folder

from mlsr.app.pictures import picture_file
from mlsr.app.service import Hit
from mlsr.app.uploads import refuse
from mlsr.app.views import score_text
from mlsr.errors import MlsrError

MODELS = "models"  # one concurrency group for every event that runs model code: the queue's limit is global
Show = Callable[[list[Hit]], list[tuple]]  # hits -> a Gallery's (picture, caption) items


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
