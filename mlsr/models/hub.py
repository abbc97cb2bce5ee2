"""Resolve a Hugging Face Hub id or a local folder to a local folder, the same way for every model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    GatedRepoError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from mlsr.errors import ModelLoadError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Source:
    """Where a model or dataset was read from: the name the user gave, its local folder and Hub commit."""

    name: str
    folder: Path
    revision: str | None  # the Hub commit hash; None for a local folder


def resolve(
    name_or_path: str | Path,
    patterns: Sequence[str],
    *,
    revision: str | None = None,
    repo_type: str = "model",
    what: str = "model",
) -> Source:
    """Return the local folder for `name_or_path`: an existing folder as is, otherwise a Hub repo id.

    Hub files matching `patterns` are downloaded into (or read from) the Hugging Face cache, so an
    offline machine works once the files are cached. Errors say whether the name was neither a
    folder nor a reachable repo, and how to fix it.
    """
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return Source(name=name, folder=path.resolve(), revision=None)
    if path.exists():
        raise ModelLoadError(f"{what} {name!r} is a file; give a folder or a Hugging Face Hub repo id.")
    return download(name, patterns, revision=revision, repo_type=repo_type, what=what)


def download(
    repo_id: str,
    patterns: Sequence[str],
    *,
    revision: str | None = None,
    repo_type: str = "model",
    what: str = "model",
) -> Source:
    """The cached snapshot of Hub repo `repo_id` holding the files that match `patterns` (downloaded when missing).

    Never looks for a local folder of that name (`resolve` does): for names that are known to be repo ids.
    Offline, the cached copy is used; the errors are one line each and say what to do.
    """
    try:
        folder = snapshot_download(
            repo_id=repo_id, revision=revision, repo_type=repo_type, allow_patterns=list(patterns)
        )
    except HFValidationError:
        raise ModelLoadError(
            f"{what} {repo_id!r}: no such folder, and not a valid Hub repo id (expected 'owner/name')."
        ) from None
    except (RepositoryNotFoundError, GatedRepoError) as error:
        raise ModelLoadError(
            f"{what} {repo_id!r}: no such folder, and the Hub has no accessible {repo_type} repo by that"
            f" name ({type(error).__name__}). Check the id, or log in with `hf auth login` if it is gated."
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(f"{what} {repo_id!r} has no revision {revision!r} on the Hub.") from None
    except LocalEntryNotFoundError:
        raise ModelLoadError(
            f"{what} {repo_id!r} is not a local folder, the Hugging Face Hub could not be reached to"
            " download it, and it is not in the local cache. Connect to the network once (the files"
            " are cached afterwards), or pass a local folder that holds the files."
        ) from None
    folder_path = Path(folder)
    # snapshot_download returns .../snapshots/<commit>; that commit pins exactly what was loaded.
    commit = folder_path.name if folder_path.parent.name == "snapshots" else revision
    logger.info("%s %s resolved to %s (revision %s)", what, repo_id, folder_path, commit)
    return Source(name=repo_id, folder=folder_path, revision=commit)


_SMALL_FILES = ["*.json", "*.txt", "*.model"]


def resolve_with_weights(name_or_path: str, *, revision: str | None = None, what: str = "model") -> Source:
    """Resolve a transformers model folder (config, tokenizer, weights): safetensors, or a .bin when that is all."""
    source = resolve(name_or_path, [*_SMALL_FILES, "*.safetensors"], revision=revision, what=what)
    if any(source.folder.glob("*.safetensors")) or any(source.folder.glob("*.bin")):
        return source
    if source.revision is None:
        raise ModelLoadError(f"{what} folder {source.folder} holds no weights (*.safetensors or *.bin).")
    return resolve(name_or_path, [*_SMALL_FILES, "*.bin"], revision=revision, what=what)


@contextmanager
def pushing(what: str, after_offline: str = "") -> Iterator[None]:
    """A push to the Hub whose failures become one ModelLoadError naming `what` ("model owner/name"): a refusal
    (with a login hint for 401 / 403) or no connection (`after_offline` is added to its advice)."""
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        hint = " Log in with `hf auth login` (a token with write access)." if status in (401, 403) else ""
        raise ModelLoadError(f"push to {what} failed: {str(error).splitlines()[0]}{hint}") from None
    except Exception as error:  # no connection: httpx's errors, whose package depends on huggingface_hub's version
        if not isinstance(error, (ConnectionError, TimeoutError)) and type(error).__module__.split(".")[0] not in (
                "httpx", "httpx2"):
            raise
        raise ModelLoadError(f"push to {what} failed: the Hugging Face Hub could not be reached"
                             f" ({type(error).__name__}). Nothing was published; run it again once"
                             f" online{after_offline}.") from None
