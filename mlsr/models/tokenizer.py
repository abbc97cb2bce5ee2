"""A tokenizer that can be shared by the app's worker threads.

A Hugging Face fast tokenizer keeps its padding and truncation settings on the shared Rust object and
changes them on every call, so two threads tokenizing at once can pad one batch with the other's
settings ("expected sequence of length 27 at dim 1 (got 28)"). Calls go through one lock per tokenizer.
"""

from __future__ import annotations

import functools
import threading


class LockedTokenizer:
    """Wraps a tokenizer: every method call (and `__call__`) holds the tokenizer's own lock."""

    def __init__(self, tokenizer: object) -> None:
        self._tokenizer = tokenizer
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
