"""What a request to the app may carry: files uploaded to it, never a URL or a path on the server.

Gradio (6.31) prepares a request's file inputs before any handler runs: a file whose `path` is an
http(s) URL is downloaded by the server, and one whose path lies outside the upload folder is refused
with an error that names the path, logs a traceback and reaches the client as `{"error": null}`.
`UploadsOnly` checks the inputs first: a URL is refused without any connection, and every refusal is
one log line and a message to the client. `uploaded_image` reads an upload, only from the upload folder.
"""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.utils import get_upload_folder, is_in_or_equal

from mlsr.checks import reason
from mlsr.errors import InputError

logger = logging.getLogger(__name__)

_URL_REFUSED = "image URLs are not fetched by this app: upload the image file instead."
_NOT_UPLOADED = "the file was not uploaded to this app: upload it instead."
_URL = re.compile(r"^([a-z][a-z0-9+.-]*:)?//|^data:", re.IGNORECASE)  # scheme://, //host, data:


def refuse(where: str, message: str) -> None:
    """Log one line (no traceback) and send `message` to the client as the request's error."""
    logger.warning("refused %s: %s", where, " ".join(str(message).split()))
    raise gr.Error(message, print_exception=False)


class UploadsOnly(gr.Blocks):
    """Blocks whose requests may carry uploaded files only (see the module docstring)."""

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):  # gradio's hook
        where = block_fn.api_name or getattr(block_fn, "name", None) or "a request"  # as user_errors names it
        inputs = [*inputs, *_trailing_defaults(block_fn.fn, len(block_fn.inputs) - len(inputs))]
        if any(_is_url(value) for value in _file_references(inputs)):
            refuse(where, _URL_REFUSED)
        try:
            return await super().preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.exceptions.InvalidPathError:  # a path outside the upload folder (its message names the path)
            refuse(where, _NOT_UPLOADED)
        except (ValueError, TypeError, KeyError) as error:  # a payload of the wrong shape for the endpoint
            refuse(where, f"the request does not fit this endpoint's inputs ({type(error).__name__}).")


def uploaded_image(payload: Any) -> bytes:
    """The bytes of an uploaded image, read only from Gradio's upload folder.

    A payload may name any path (`{"path": "/etc/passwd"}` without Gradio's file marker reaches the
    handler unchecked), so the folder is checked here. Bytes rather than the path, so that messages
    about a bad file never show server paths.
    """
    path = payload.get("path") if isinstance(payload, dict) else getattr(payload, "path", None)
    url = payload.get("url") if isinstance(payload, dict) else getattr(payload, "url", None)
    if not isinstance(path, str) or not path:
        raise InputError(_URL_REFUSED if isinstance(url, str) and url else "no image was received: upload an image"
                                                                          " file.")
    if _is_url(path):
        raise InputError(_URL_REFUSED)
    if not is_in_or_equal(path, get_upload_folder()):
        raise InputError(_NOT_UPLOADED)
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"the uploaded image cannot be read ({reason(error)}); upload it again.") from None


def _trailing_defaults(fn, missing: int) -> list:
    """The defaults of `fn`'s last `missing` parameters, when each has one: a caller of the HTTP API who leaves out
    trailing optional arguments (as an endpoint gains new ones) gets their defaults, as gradio_client does."""
    if missing <= 0 or fn is None:
        return []
    try:
        parameters = list(inspect.signature(fn).parameters.values())[-missing:]
    except (TypeError, ValueError):
        return []
    empty = inspect.Parameter.empty
    if len(parameters) < missing or any(p.default is empty for p in parameters):
        return []
    return [p.default for p in parameters]


def _file_references(value: Any):
    """Every `path` (and a `url` given without a path) in a request's inputs, at any depth."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            yield value["path"]
        elif isinstance(value.get("url"), str):
            yield value["url"]
        for item in value.values():
            yield from _file_references(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _file_references(item)


def _is_url(value: str) -> bool:
    return bool(_URL.match(value.strip()))
