"""Text preparation: validation, BLIP's caption normalisation, and splitting long text into windows."""

from __future__ import annotations

import re
from typing import NamedTuple
from collections.abc import Callable, Sequence

from mlsr.errors import InputError

MAX_TEXT_CHARS = 20_000  # about 3,000 words: a long article section; more is refused, not truncated
# BLIP's own caption cleaning (pre_caption in the BLIP repository) replaces exactly these with spaces.
_BLIP_PUNCTUATION = re.compile(r'[.!"()*#:;~]')
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"\s+")
_SENTENCE_BREAK = re.compile(r"(?<=[.!?;])\s+|\s*\n\s*")
# A word of the cleaned text, found in the raw text: a run of what `clean_caption` neither drops nor splits on.
_RAW_WORD = re.compile(r'[^\s.!"()*#:;~\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]+')


class Window(NamedTuple):
    """A caption-sized piece of a text: `text` cleaned for the dense model, `raw` its span of the original.

    The raw spans of a text's windows cut it into consecutive pieces (together they are the whole text),
    so the no_expand mask of a window, made of the word pieces of its raw span, keeps the punctuation
    the reference keeps (`tokenizer.tokenize(raw)`), which cleaning removes.
    """

    text: str
    raw: str


def as_texts(texts: object, what: str = "texts") -> list:
    """One text or a sequence of texts as a list (each is checked where it is encoded); InputError for anything
    else (None, a number, bytes), instead of whatever `list()` would raise."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray, dict)) or not hasattr(texts, "__iter__"):
        raise InputError(f"{what} must be a text (str) or a sequence of texts, got {type(texts).__name__}.")
    return list(texts)


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


def text_windows(
    text: str, count_tokens: Callable[[Sequence[str]], list[int]], max_tokens: int
) -> list[Window]:
    """Split text into caption-sized windows of at most `max_tokens` word pieces, each with its raw span.

    BLIP's text encoder was trained on short captions (35 tokens), so a long article is read as a
    sequence of caption-like windows: whole sentences are packed into a window while they fit; a
    sentence longer than a window is cut between words. `count_tokens` maps words to their number
    of word pieces. Short text gives exactly one window: its cleaned self, and the whole text as raw.
    """
    words: list[str] = []  # the cleaned words, in order
    starts: list[int] = []  # where each one starts in `text`
    sentence_of: list[int] = []
    for number, (start, part) in enumerate(_sentences(text)):
        cleaned = clean_caption(part).split()
        found = [start + match.start() for match in _RAW_WORD.finditer(part)]
        if len(found) != len(cleaned):  # cannot happen (lower-casing never makes or removes a separator): be safe
            found = [start] * len(cleaned)
        words += cleaned
        starts += found
        sentence_of += [number] * len(cleaned)
    sizes = count_tokens(words) if words else []
    first_words: list[int] = []  # the index of the first word of each window
    current_tokens = 0
    for i, size in enumerate(sizes):
        if not first_words:
            first_words.append(i)
        elif (sentence_of[i] != sentence_of[i - 1]
              and current_tokens + _sentence_tokens(sizes, sentence_of, i) > max_tokens) \
                or current_tokens + size > max_tokens:  # a sentence that does not fit, or a word
            first_words.append(i)
            current_tokens = 0
        current_tokens += size
    bounds = [0, *(starts[i] for i in first_words[1:]), len(text)]
    ends = [*first_words[1:], len(words)]
    return [Window(" ".join(words[first:end]), text[bounds[w] : bounds[w + 1]])
            for w, (first, end) in enumerate(zip(first_words, ends))]


def _sentences(text: str) -> list[tuple[int, str]]:
    """(offset, sentence) pieces of `text`, cut at sentence breaks (the breaks themselves left out)."""
    pieces, start = [], 0
    for match in _SENTENCE_BREAK.finditer(text):
        pieces.append((start, text[start : match.start()]))
        start = match.end()
    pieces.append((start, text[start:]))
    return pieces


def _sentence_tokens(sizes: list[int], sentence_of: list[int], first: int) -> int:
    """Word pieces of the sentence that starts at word `first`."""
    total, i = 0, first
    while i < len(sizes) and sentence_of[i] == sentence_of[first]:
        total += sizes[i]
        i += 1
    return total
