"""Tokenizers: loading the head's vocabulary tokenizer, and sharing one tokenizer between threads.

A Hugging Face fast tokenizer keeps its padding and truncation settings on the shared Rust object and
changes them on every call, so two threads tokenizing at once can pad one batch with the other's
settings ("expected sequence of length 27 at dim 1 (got 28)"). Calls go through one lock per tokenizer.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

from mlsr.errors import ModelLoadError
from mlsr.models.hub import resolve


class LockedTokenizer:
    """Wraps a tokenizer: every method call (and `__call__`) holds the tokenizer's own lock."""

    def __init__(self, tokenizer: object) -> None:
        self._tokenizer: Any = tokenizer  # a Hugging Face tokenizer: callable, sized, with methods of its own
        self._lock = threading.RLock()

    @property
    def wrapped(self) -> object:
        """The tokenizer itself (for code that needs its exact type)."""
        return self._tokenizer

    def __call__(self, *args, **kwargs):
        with self._lock:
            return self._tokenizer(*args, **kwargs)

    def __len__(self) -> int:
        return len(self._tokenizer)

    def __getattr__(self, name: str):
        value = getattr(self._tokenizer, name)
        if not callable(value):
            return value

        @functools.wraps(value)
        def locked(*args, **kwargs):
            with self._lock:
                return value(*args, **kwargs)

        return locked


def locked(tokenizer: object) -> LockedTokenizer:
    """`tokenizer` made safe to share between threads (a wrapped one is returned as it is)."""
    return tokenizer if isinstance(tokenizer, LockedTokenizer) else LockedTokenizer(tokenizer)


def load_tokenizer(name_or_path: str) -> tuple[LockedTokenizer, str]:
    """The tokenizer of a head's vocabulary (term ids for masking and decoding) and the name it was given.

    It is wrapped so that threads can share it.
    """
    from transformers import AutoTokenizer

    source = resolve(name_or_path, ["*.json", "*.txt", "*.model"], what="tokenizer")
    try:
        return locked(AutoTokenizer.from_pretrained(source.folder)), source.name
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"tokenizer {name_or_path!r}: cannot load it ({error}).") from None
