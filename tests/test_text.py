"""Text checks, BLIP's caption cleaning and the windowing of long text."""

import pytest
from hypothesis import given, settings, strategies as st

from mlsr.errors import InputError
from mlsr.text import MAX_TEXT_CHARS, Window, check_text, clean_caption, text_windows


def word_pieces(words):
    """A stand-in tokenizer: one piece per 4 characters, so long words cost more."""
    return [max(1, -(-len(word) // 4)) for word in words]


def test_clean_caption_follows_blip():
    assert clean_caption("A Dog (brown) runs!  On the beach...\n") == "a dog brown runs on the beach"
    # BLIP keeps commas, apostrophes, hyphens and question marks
    assert clean_caption("Rock-climbing, isn't it?") == "rock-climbing, isn't it?"
    assert clean_caption("tab\there\x00nul\u200bzero") == "tab here nul zero"


@pytest.mark.parametrize("bad", ["", "   \n\t", "...!!!", "\x00\x01"])
def test_empty_text_is_refused(bad):
    with pytest.raises(InputError, match="empty"):
        check_text(bad)


def test_huge_text_and_non_text_are_refused():
    with pytest.raises(InputError, match="limit"):
        check_text("word " * (MAX_TEXT_CHARS // 4))
    with pytest.raises(InputError, match="expected text"):
        check_text(None)


def cleaned_windows(text, count_tokens, max_tokens) -> list[str]:
    """The cleaned text of each window (what the dense model reads)."""
    return [window.text for window in text_windows(text, count_tokens, max_tokens)]


def test_short_text_is_one_window_equal_to_its_cleaned_self():
    text = "A red bus. Parked on the street!"
    assert cleaned_windows(text, word_pieces, 33) == [clean_caption(text)]


def test_long_text_windows_respect_the_limit_and_keep_every_word_in_order():
    sentences = [f"Sentence number {i} talks about topic {i} in several plain words." for i in range(40)]
    text = " ".join(sentences)
    windows = cleaned_windows(text, word_pieces, 20)
    assert len(windows) > 10
    assert all(sum(word_pieces(w.split())) <= 20 for w in windows)
    assert " ".join(windows).split() == clean_caption(text).split()


def test_whole_sentences_are_kept_together_when_they_fit():
    text = "one two three. four five six. seven eight nine."
    # each sentence costs 3 pieces; a 7-piece window holds two sentences, never a sentence and a half
    assert cleaned_windows(text, lambda ws: [1] * len(ws), 7) == ["one two three four five six", "seven eight nine"]


def test_a_sentence_longer_than_a_window_is_cut_between_words():
    text = " ".join(f"w{i}" for i in range(10))
    assert cleaned_windows(text, lambda ws: [1] * len(ws), 4) == ["w0 w1 w2 w3", "w4 w5 w6 w7", "w8 w9"]


def test_windows_carry_their_raw_spans():
    text = "First (one). Second: two!\nThird, three... four"
    windows = text_windows(text, lambda ws: [1] * len(ws), 3)
    assert [w.text for w in windows] == ["first one", "second two", "third, three four"]
    assert [w.raw for w in windows] == ["First (one). ", "Second: two!\n", "Third, three... four"]
    assert text_windows("  A dog.  ", word_pieces, 33) == [Window("a dog", "  A dog.  ")]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcdXYZ .!?;:()\"*#~,-'\n\t\x00\u200b\u00e9\u0130")), max_size=120),
       st.integers(1, 12))
def test_raw_spans_cut_the_text_into_consecutive_pieces(text, max_tokens):
    windows = text_windows(text, word_pieces, max_tokens)
    if windows:
        assert "".join(w.raw for w in windows) == text  # every character in exactly one window, in order
        for window in windows:  # a window's raw span holds exactly its own words
            assert clean_caption(window.raw).split() == window.text.split()
    else:
        assert not clean_caption(text)
