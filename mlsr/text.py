"""Text preparation: validation, BLIP's caption normalisation, and splitting long text into windows."""

from __future__ import annotations

import re
from typing import Callable, Sequence

from mlsr.errors import InputError

MAX_TEXT_CHARS = 20_000  # about 3,000 words: a long article section; more is refused, not truncated
# BLIP's own caption cleaning (pre_caption in the BLIP repository) replaces exactly these with spaces.
_BLIP_PUNCTUATION = re.compile(r'[.!"()*#:;~]')
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"\s+")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?;])\s+|\s*\n\s*")


def check_text(text: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Return `text` if it is a usable query or caption, else raise InputError saying why."""
    if not isinstance(text, str):
        raise InputError(f"expected text (str), got {type(text).__name__}.")
    if len(text) > max_chars:
        raise InputError(
            f"text is {len(text):,} characters long; the limit is {max_chars:,}. Split it into sections"
            " and search each one."
        )
    if not any(ch.isalnum() for ch in clean_caption(text)):
        raise InputError("text is empty: it has no letters or digits once whitespace and punctuation are removed.")
    return text


def clean_caption(text: str) -> str:
    """Normalise text as BLIP did for its captions: lower-case, drop . ! \" ( ) * # : ; ~, collapse spaces.

    Control characters and zero-width marks are dropped too, so that pasted text cannot smuggle
    invisible tokens in. Matching BLIP keeps our dense vectors close to the published ones.
    """
    text = _CONTROL.sub(" ", text.lower())
    return _SPACES.sub(" ", _BLIP_PUNCTUATION.sub(" ", text)).strip()


def split_windows(
    text: str, count_tokens: Callable[[Sequence[str]], list[int]], max_tokens: int
) -> list[str]:
    """Split text into cleaned, caption-sized windows of at most `max_tokens` word pieces.

    BLIP's text encoder was trained on short captions (35 tokens), so a long article is read as a
    sequence of caption-like windows: whole sentences are packed into a window while they fit; a
    sentence longer than a window is cut between words. `count_tokens` maps words to their number
    of word pieces. Short text gives exactly one window: its cleaned self.
    """
    windows: list[str] = []
    current: list[str] = []
    current_tokens = 0
    sentences = [words for part in _SENTENCE_BREAK.split(text) if (words := clean_caption(part).split())]
    counts = iter(count_tokens([word for words in sentences for word in words]))
    for words in sentences:
        sizes = [next(counts) for _ in words]
        if current_tokens + sum(sizes) > max_tokens and current:
            windows.append(" ".join(current))
            current, current_tokens = [], 0
        for word, size in zip(words, sizes):
            if current_tokens + size > max_tokens and current:
                windows.append(" ".join(current))
                current, current_tokens = [], 0
            current.append(word)
            current_tokens += size
    if current:
        windows.append(" ".join(current))
    return windows
