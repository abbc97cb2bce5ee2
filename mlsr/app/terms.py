"""Term-level views of a query vector: highlighted text, expansion terms, and an editable term table."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.errors import InputError
from mlsr.vocab import Terms, Vocabulary, nonzero_terms

MAX_EDITED_TERMS = 2_000
MAX_PIECES_PER_TERM = 3  # "motorbike" -> motor ##bike is a word; "zzqxvwkj" spelled letter by letter is not
MAX_ABS_WEIGHT = 100.0  # the published heads give weights of about 0-3; far larger ones swamp every other term


def highlight_text(text: str, vector, tokenizer, vocab: Vocabulary) -> list[tuple[str, float | None]]:
    """Split `text` into (span, weight) pieces covering it exactly: each word carries the largest weight
    of its word pieces in `vector` (None when zero); the text between words carries None."""
    weights = _dense_row(vector, len(vocab))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    words: list[list] = []  # [start, end, weight]
    for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        if end <= start:
            continue
        weight = float(weights[token_id])
        # A piece joins the previous word when it continues it ("##" touching it) or overlaps it: a Hangul
        # syllable is decomposed into jamo pieces that all point at the same character.
        continues = vocab.terms[token_id].startswith("##") and words and words[-1][1] == start
        if words and (continues or start < words[-1][1]):
            words[-1][1] = max(words[-1][1], end)
            words[-1][2] = max(words[-1][2], weight, key=abs)
        else:
            words.append([start, end, weight])
    spans: list[tuple[str, float | None]] = []
    cursor = 0
    for start, end, weight in words:
        if start > cursor:
            spans.append((text[cursor:start], None))
        spans.append((text[start:end], weight or None))
        cursor = end
    if cursor < len(text):
        spans.append((text[cursor:], None))
    return spans


def text_token_ids(text: str, tokenizer) -> set[int]:
    """The term ids a text's own word pieces map to (no special tokens)."""
    return set(tokenizer(text, add_special_tokens=False)["input_ids"])


def expansion_terms(text: str, vector, tokenizer, vocab: Vocabulary, top_k: int = 30) -> Terms:
    """The weighted terms of `vector` that do not occur in `text`: what expansion added."""
    own = text_token_ids(text, tokenizer)
    ids, weights = nonzero_terms(vector, len(vocab))
    keep = ~np.isin(ids, list(own)) if own else np.ones(len(ids), dtype=bool)
    other = np.zeros(len(vocab), dtype=np.float32)
    other[ids[keep]] = weights[keep]
    return vocab.decode(other, top_k)


def term_table(vector, vocab: Vocabulary) -> list[list]:
    """Every non-zero term of `vector` as [term, weight] rows, heaviest first: the exact vector, editable."""
    ids, weights = nonzero_terms(vector, len(vocab))
    order = np.lexsort((ids, -weights))
    return [[vocab.terms[ids[i]], round(float(weights[i]), 4)] for i in order]


def vector_from_terms(rows: Sequence[Sequence], vocab: Vocabulary, tokenizer) -> sp.csr_matrix:
    """Rebuild a (1, vocab) query from edited [term, weight] rows; a user may delete, reweight, add or negate.

    A term that is not a word piece is split into its pieces, each given the row's weight; when
    a piece appears twice, the later row wins. Rows with an empty term are ignored.
    """
    if len(rows) > MAX_EDITED_TERMS:
        raise InputError(f"{len(rows):,} terms is more than the {MAX_EDITED_TERMS:,} a query may have.")
    weights: dict[int, float] = {}
    for number, row in enumerate(rows, 1):
        if len(row) < 2:
            raise InputError(f"row {number}: expected a term and a weight.")
        term, raw_weight = row[0], row[1]
        term = "" if term is None or (isinstance(term, float) and math.isnan(term)) else str(term).strip()
        if not term:
            continue
        weight = _parse_weight(raw_weight, number, term)
        for piece_id in _piece_ids(term, vocab, tokenizer, number):
            weights[piece_id] = weight
    weights = {term_id: w for term_id, w in weights.items() if w != 0}
    if not weights:
        raise InputError("the term table is empty: add at least one term with a non-zero weight.")
    ids = np.fromiter(weights, dtype=np.int64)
    values = np.fromiter(weights.values(), dtype=np.float32)
    return sp.csr_matrix((values, (np.zeros(len(ids), dtype=np.int64), ids)), shape=(1, len(vocab)))


def _parse_weight(raw, number: int, term: str) -> float:
    try:
        weight = float(str(raw).strip()) if raw is not None and str(raw).strip() else 0.0
    except ValueError:
        raise InputError(f"row {number} ({term!r}): the weight {raw!r} is not a number.") from None
    if not math.isfinite(weight):
        raise InputError(f"row {number} ({term!r}): the weight must be a finite number, not {raw!r}.")
    if abs(weight) > MAX_ABS_WEIGHT:
        raise InputError(
            f"row {number} ({term!r}): |weight| {abs(weight):g} is above {MAX_ABS_WEIGHT:g}; the model's own"
            " weights are about 0-3."
        )
    return weight


def _piece_ids(term: str, vocab: Vocabulary, tokenizer, number: int) -> list[int]:
    if term in vocab.ids:
        return [vocab.ids[term]]
    if term.lower() in vocab.ids:
        return [vocab.ids[term.lower()]]
    ids = tokenizer(term, add_special_tokens=False)["input_ids"]
    unknown = getattr(tokenizer, "unk_token_id", None)
    if not ids or unknown in ids or len(ids) > MAX_PIECES_PER_TERM:
        raise InputError(
            f"row {number}: {term!r} is not in the vocabulary"
            + (f" (it would take {len(ids)} word pieces)" if ids and unknown not in ids else "")
            + "; use a word or a word piece from the vocabulary."
        )
    return list(ids)


def _dense_row(vector, vocab_size: int) -> np.ndarray:
    ids, weights = nonzero_terms(vector, vocab_size)
    row = np.zeros(vocab_size, dtype=np.float32)
    row[ids] = weights
    return row
