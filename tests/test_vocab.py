"""Decoding vectors to readable terms."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from transformers import AutoTokenizer

from mlsr.errors import InputError
from mlsr.vocab import Vocabulary


@pytest.fixture(scope="module")
def vocab(tokenizer_dir):
    return Vocabulary.from_tokenizer(AutoTokenizer.from_pretrained(tokenizer_dir))


def vector(vocab, weights: dict) -> np.ndarray:
    out = np.zeros(len(vocab), dtype=np.float32)
    for term, weight in weights.items():
        out[vocab.ids[term]] = weight
    return out


def test_real_vocabulary_shape(vocab):
    assert len(vocab) == 30522
    assert vocab.terms[101] == "[CLS]" and vocab.ids["dog"] == 3899


def test_decode_drops_special_tokens_and_punctuation_by_default(vocab):
    row = vector(vocab, {"dog": 2.0, "[CLS]": 5.0, "[SEP]": 4.0, "[unused3]": 3.0, ",": 1.5, "##.": 1.4,
                         "beach": 1.0, "2010": 0.5, "##s": 0.7})
    assert vocab.decode(row) == [("dog", 2.0), ("beach", 1.0), ("##s", pytest.approx(0.7)), ("2010", 0.5)]
    with_punct = [term for term, _ in vocab.decode(row, keep_punctuation=True)]
    assert with_punct == ["dog", ",", "##.", "beach", "##s", "2010"]


def test_decode_accepts_sparse_rows_tensors_and_top_k(vocab):
    row = vector(vocab, {"cat": 1.0, "sofa": 3.0, "sleeping": 2.0})
    expected = [("sofa", 3.0), ("sleeping", 2.0)]
    assert vocab.decode(sp.csr_matrix(row), top_k=2) == expected
    assert vocab.decode(torch.from_numpy(row), top_k=2) == expected
    assert len(vocab.decode(row, top_k=None)) == 3
    for bad in (0, -1, 1.5, True, "2"):  # the rule of mlsr.checks: a whole number >= 1, or None for all
        with pytest.raises(InputError, match="top_k must be"):
            vocab.decode(row, top_k=bad)


def test_ties_are_ordered_by_term_id_and_negative_weights_by_magnitude(vocab):
    row = vector(vocab, {"zebra": 1.0, "apple": 1.0, "not": -2.0})
    assert [t for t, _ in vocab.decode(row)] == ["not", "apple", "zebra"]


def test_special_tokens_without_brackets_are_hidden_too():
    """CLIP's tokenizer names its specials <|startoftext|> and <|endoftext|>: hidden because they are special ids."""
    from tests.helpers.models import make_clip_tokenizer

    tokenizer = make_clip_tokenizer()
    vocab = Vocabulary.from_tokenizer(tokenizer)
    specials = sorted(tokenizer.all_special_ids)
    assert [vocab.terms[i] for i in specials] == ["<|startoftext|>", "<|endoftext|>"]
    row = np.zeros(len(vocab), dtype=np.float32)
    row[specials] = [5.0, 4.0]
    row[vocab.ids["a</w>"]], row[vocab.ids["b"]] = 2.0, 1.0
    assert vocab.decode(row) == [("a</w>", 2.0), ("b", 1.0)]
    plain = Vocabulary(("<s>", "</s>", "hello", "world"), frozenset({0, 1}))
    assert plain.decode(np.array([3.0, 2.0, 1.0, 0.5], dtype=np.float32)) == [("hello", 1.0), ("world", 0.5)]


def test_decode_refuses_a_vector_of_the_wrong_size(vocab):
    with pytest.raises(InputError, match="30522"):
        vocab.decode(np.ones(10))


def test_save_load_roundtrip_and_hash(vocab, tmp_path):
    vocab.save(tmp_path / "vocab.txt")
    loaded = Vocabulary.load(tmp_path / "vocab.txt")
    assert loaded.terms == vocab.terms and loaded.sha256 == vocab.sha256
    assert Vocabulary(vocab.terms[:-1] + ("other",)).sha256 != vocab.sha256
