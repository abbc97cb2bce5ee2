"""Property-based tests: any text or term table gives a valid vector or a specific InputError, nothing else."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mlsr.errors import InputError
from mlsr.serving.terms import MAX_ABS_WEIGHT, highlight_text, vector_from_terms

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=400) | st.sampled_from(
    ["", " ", "\x00\x00", "\u200b", "🦬🐃 buffalo", "水牛 water buffalo", "Ünïcödé ñ", "a" * 30000, ".!?;:" * 40]
)
WEIGHT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6),
                   st.text(max_size=8), st.none())
TERM = st.one_of(st.text(max_size=20), st.sampled_from(["dog", "[CLS]", "##s", ",", "motorbike", "Sand", ""]), st.none())
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SLOW
@given(text=TEXT, mode=st.sampled_from(["expand", "no_expand"]))
def test_any_text_encodes_or_is_refused_clearly(encoder, text, mode):
    try:
        vectors = encoder.encode_text([text], mode=mode)
    except InputError as error:
        assert str(error)
        return
    assert vectors.shape == (1, encoder.vocab_size)
    assert np.isfinite(vectors.data).all() and (vectors.data > 0).all()


@SLOW
@given(text=st.text(max_size=300))
@example(text="뮴 buffalo 가")  # Hangul: several jamo pieces share one character's offsets
def test_highlight_always_covers_the_text(encoder, text):
    vector = np.random.default_rng(0).random(encoder.vocab_size).astype(np.float32)
    spans = highlight_text(text, vector, encoder.tokenizer, encoder.vocab)
    assert "".join(span for span, _ in spans) == text


@SLOW
@given(rows=st.lists(st.lists(st.one_of(TERM, WEIGHT), min_size=0, max_size=3), max_size=30))
def test_any_term_table_gives_a_bounded_vector_or_a_clear_error(encoder, rows):
    try:
        vector = vector_from_terms(rows, encoder.vocab, encoder.tokenizer)
    except InputError as error:
        assert str(error)
        return
    assert vector.shape == (1, encoder.vocab_size) and vector.nnz > 0
    assert np.isfinite(vector.data).all() and (np.abs(vector.data) <= MAX_ABS_WEIGHT).all()


@pytest.mark.parametrize("size", [1_000_000])
def test_a_megabyte_of_text_is_refused_fast(encoder, size):
    with pytest.raises(InputError, match="limit"):
        encoder.encode_text(["x" * size])
