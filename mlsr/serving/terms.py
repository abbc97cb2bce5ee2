"""Term-level views of a query vector: highlighted text, expansion terms, and an editable term table."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.checks import shown
from mlsr.errors import InputError
from mlsr.vocab import Terms, Vocabulary, nonzero_terms

_MAX_EDITED_TERMS = 2_000
_MAX_PIECES_PER_TERM = 3  # "motorbike" -> motor ##bike is a word; "zzqxvwkj" spelled letter by letter is not
MAX_ABS_WEIGHT = 100.0  # the published heads give weights of about 0-3; far larger ones swamp every other term
_MAX_TERM_CHARS = 64  # the longest word piece has about 20 characters: more is not one word


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


def _text_token_ids(text: str, tokenizer) -> set[int]:
    """The term ids a text's own word pieces map to (no special tokens)."""
    return set(tokenizer(text, add_special_tokens=False)["input_ids"])


def expansion_terms(text: str, vector, tokenizer, vocab: Vocabulary, top_k: int = 30) -> Terms:
    """The weighted terms of `vector` that do not occur in `text`: what expansion added."""
    own = _text_token_ids(text, tokenizer)
    ids, weights = nonzero_terms(vector, len(vocab))
    keep = ~np.isin(ids, list(own)) if own else np.ones(len(ids), dtype=bool)
    other = np.zeros(len(vocab), dtype=np.float32)
    other[ids[keep]] = weights[keep]
    return vocab.decode(other, top_k)


def term_table(vector, vocab: Vocabulary) -> list[list]:
    """Every non-zero term of `vector` as [term, weight] rows, heaviest first: the vector, editable.

    Control tokens ([CLS], [PAD], [unused0], ...) are not terms: they are left out here, as `decode`
    leaves them out, and `vector_from_terms` refuses them (`control_part` holds their weights).
    """
    ids, weights = nonzero_terms(vector, len(vocab))
    keep = ~vocab.special_mask[ids]
    ids, weights = ids[keep], weights[keep]
    order = np.lexsort((ids, -weights))
    return [[vocab.terms[ids[i]], round(float(weights[i]), 4)] for i in order]


def control_part(vector, vocab: Vocabulary) -> sp.csr_matrix:
    """(1, vocab) CSR: only the control-token weights of one vector (the part a term table leaves out)."""
    ids, weights = nonzero_terms(vector, len(vocab))
    keep = vocab.special_mask[ids]
    return sp.csr_matrix((weights[keep], (np.zeros(int(keep.sum()), dtype=np.int64), ids[keep])),
                         shape=(1, len(vocab)), dtype=np.float32)


def vector_from_terms(rows: Sequence[Sequence], vocab: Vocabulary, tokenizer) -> sp.csr_matrix:
    """Rebuild a (1, vocab) query from edited [term, weight] rows; a user may delete, reweight, add or negate.

    Each row is a pair [term, weight]. A term is one word: a word piece of the vocabulary, or a word
    the tokenizer spells with at most _MAX_PIECES_PER_TERM pieces (each piece gets the row's weight).
    Rows with an empty term are ignored. Refused, naming the row: a term with a space in it (one word
    per row), a control token, a term (or a piece) given twice, a term longer than _MAX_TERM_CHARS, a
    weight that is not a finite number within MAX_ABS_WEIGHT. `rows` is read, never changed.
    """
    if isinstance(rows, (str, bytes, dict)) or not hasattr(rows, "__len__"):
        raise InputError("the term table must be a list of [term, weight] rows.")
    if len(rows) > _MAX_EDITED_TERMS:
        raise InputError(f"{len(rows):,} terms is more than the {_MAX_EDITED_TERMS:,} a query may have.")
    weights: dict[int, float] = {}
    given_by: dict[int, int] = {}  # piece id -> the row that gave it
    for number, row in enumerate(rows, 1):
        term, raw_weight = _pair(row, f"row {number}")
        if not term:
            continue
        weight = _parse_weight(raw_weight, f"row {number}", term)
        for piece_id in _piece_ids(term, vocab, tokenizer, f"row {number}"):
            if piece_id in given_by:
                raise InputError(f"row {number} ({shown(term)}): already given in row {given_by[piece_id]};"
                                 " give each term once.")
            given_by[piece_id] = number
            weights[piece_id] = weight
    weights = {term_id: w for term_id, w in weights.items() if w != 0}
    if not weights:
        raise InputError("the term table is empty: add at least one term with a non-zero weight.")
    ids = np.fromiter(weights, dtype=np.int64)
    values = np.fromiter(weights.values(), dtype=np.float32)
    return sp.csr_matrix((values, (np.zeros(len(ids), dtype=np.int64), ids)), shape=(1, len(vocab)))


def with_term(rows: Sequence[Sequence], term: str, weight: object, vocab: Vocabulary, tokenizer) -> list[list]:
    """A new table: [term, weight] first, then the non-empty `rows`; the term is checked as a search checks a row
    (one known word, a finite weight within range) and refused when the table already holds it. `rows` is read,
    never changed."""
    if not isinstance(term, str) or not term.strip():
        raise InputError("type a term to add: one word, or a word piece of the vocabulary.")
    term, _ = _pair([term, weight], "the new term")
    new_ids = set(_piece_ids(term, vocab, tokenizer, "the new term"))
    table = [[term, _parse_weight(weight, "the new term", term)]]
    for number, row in enumerate(rows, 1):
        old, old_weight = _pair(row, f"row {number}")
        if not old:
            continue
        if new_ids & set(_piece_ids(old, vocab, tokenizer, f"row {number}")):
            found = f"row {number}" + ("" if old == term else f", as {shown(old)}")
            raise InputError(f"{shown(term)} is already in the table ({found}): change its weight there.")
        table.append([old, old_weight])
    return table


def _pair(row, where: str) -> tuple[str, object]:
    """The (term, weight) of one row: the term stripped ('' for an empty cell), or an InputError."""
    if isinstance(row, (str, bytes, dict)) or not hasattr(row, "__len__") or len(row) != 2:
        raise InputError(f"{where}: expected a term and a weight, [term, weight], got {shown(row)}.")
    term, weight = row[0], row[1]
    if term is None or (isinstance(term, float) and math.isnan(term)):
        return "", weight
    if not isinstance(term, str):
        raise InputError(f"{where}: the term must be text, got {shown(term)}.")
    term = term.strip()
    if len(term) > _MAX_TERM_CHARS:
        raise InputError(f"{where}: the term is {len(term):,} characters long; a term is one word"
                         f" (at most {_MAX_TERM_CHARS}).")
    if len(term.split()) > 1:
        raise InputError(f"{where} ({shown(term)}): one word per row; give each word its own row.")
    return term, weight


def _parse_weight(raw, where: str, term: str) -> float:
    if isinstance(raw, bool):
        raise InputError(f"{where} ({shown(term)}): the weight {shown(raw)} is not a number.")
    try:
        weight = float(str(raw).strip()) if raw is not None and str(raw).strip() else 0.0
    except ValueError:
        raise InputError(f"{where} ({shown(term)}): the weight {shown(raw)} is not a number.") from None
    if not math.isfinite(weight):
        raise InputError(f"{where} ({shown(term)}): the weight must be a finite number, not {shown(raw)}.")
    if abs(weight) > MAX_ABS_WEIGHT:
        raise InputError(
            f"{where} ({shown(term)}): |weight| {abs(weight):g} is above {MAX_ABS_WEIGHT:g}; the model's own"
            " weights are about 0-3."
        )
    return weight


def _piece_ids(term: str, vocab: Vocabulary, tokenizer, where: str) -> list[int]:
    known = vocab.ids.get(term, vocab.ids.get(term.lower()))
    if known is not None:
        if vocab.special_mask[known]:
            raise InputError(f"{where}: {shown(term)} is a control token, not a term.")
        return [known]
    ids = tokenizer(term, add_special_tokens=False)["input_ids"]
    unknown = getattr(tokenizer, "unk_token_id", None)
    if not ids or unknown in ids or len(ids) > _MAX_PIECES_PER_TERM:
        raise InputError(
            f"{where}: {shown(term)} is not in the vocabulary"
            + (f" (it would take {len(ids)} word pieces)" if ids and unknown not in ids else "")
            + "; use a word or a word piece from the vocabulary."
        )
    if any(vocab.special_mask[i] for i in ids):
        raise InputError(f"{where}: {shown(term)} holds a control token, not a term.")
    return list(ids)


def _dense_row(vector, vocab_size: int) -> np.ndarray:
    ids, weights = nonzero_terms(vector, vocab_size)
    row = np.zeros(vocab_size, dtype=np.float32)
    row[ids] = weights
    return row
