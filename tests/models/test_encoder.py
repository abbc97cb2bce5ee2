"""Encoder: text modes, windows, captions, images, and the model checks at load time."""

import dataclasses

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tests.helpers.data import CAPTIONS, make_image
from tests.helpers.models import make_head
from mlsr.models.encoder import Encoder
from mlsr.errors import InputError, ModelLoadError
from mlsr.models.head import HeadConfig, SparseHead
from mlsr.text import text_windows

ARTICLE = " ".join(
    f"The {animal} is a common animal in the region of {place}. Farmers keep it for milk and work in the fields."
    for animal, place in [("buffalo", "asia"), ("goat", "africa"), ("camel", "arabia"), ("yak", "tibet")] * 3
)


@pytest.fixture(scope="module")
def wide_encoder(encoder):
    """The same encoder with a head whose bias is 0: about half the vocabulary lights up before masking."""
    head = make_head()
    with torch.no_grad():
        head.vocab_projector.bias.zero_()
    return dataclasses.replace(encoder, head=head)


def assert_same_rows(a: sp.csr_matrix, b: sp.csr_matrix):
    assert a.shape == b.shape
    np.testing.assert_allclose(a.toarray(), b.toarray(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["expand", "no_expand"])
def test_text_batch_equals_one_by_one(wide_encoder, mode):
    texts = CAPTIONS + [ARTICLE]
    batch = wide_encoder.encode_text(texts, mode=mode)
    assert batch.shape == (len(texts), 30522) and batch.dtype == np.float32
    for i, text in enumerate(texts):
        assert_same_rows(batch[i], wide_encoder.encode_text(text, mode=mode))


def test_no_expand_keeps_only_the_texts_own_tokens(wide_encoder):
    text = "Two dogs playing with a ball in the park"
    expanded = wide_encoder.encode_text(text, mode="expand")
    masked = wide_encoder.encode_text(text, mode="no_expand")
    own = set(wide_encoder.tokenizer(text.lower(), add_special_tokens=False)["input_ids"])
    assert masked.nnz > 0 and set(masked.indices) <= own
    assert expanded.nnz > 10 * masked.nnz  # expansion lights up terms absent from the text
    for term in masked.indices:  # a kept term keeps its expanded weight
        assert masked[0, term] == pytest.approx(expanded[0, term])
    assert not set(masked.indices) & {101, 102, 0}  # never [CLS], [SEP], [PAD]


# Lower-case and free of . ! " ( ) * # : ; ~, so BLIP's caption cleaning leaves them as they are: their
# own tokens are the tokenizer's pieces of the text itself. The first is 12+ tokens (with word pieces),
# the second is padded in a batch with it.
MASKED_CAPTIONS = ["a snowboarder jumps over unbelievably tall moguls while two friends film him from the ski lift",
                   "a cat", "three zebras grazing near a watering hole"]


@pytest.fixture(scope="module")
def lit_encoder(encoder):
    """The encoder with a head whose biases light up every term, [PAD] included, for every input."""
    head = make_head()
    with torch.no_grad():
        head.vocab_projector.bias.fill_(20.0)
    return dataclasses.replace(encoder, head=head)


def test_no_expand_keeps_exactly_the_texts_own_tokens_in_a_padded_batch(lit_encoder):
    tokenizer = lit_encoder.tokenizer
    own = [set(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in MASKED_CAPTIONS]
    pieces = tokenizer(MASKED_CAPTIONS[0], add_special_tokens=False)["input_ids"]
    assert len(pieces) >= 12 and len(own[0]) >= 12 and len(own[1]) < len(own[2]) < len(own[0])
    assert lit_encoder.encode_text("a cat").nnz == 30522  # every term lights up before masking
    assert lit_encoder.batch_size >= len(MASKED_CAPTIONS)  # one batch: the short captions are padded
    views = lit_encoder.encode_text_views(MASKED_CAPTIONS)
    dense = views.dense
    for name, rows in [("encode_text", lit_encoder.encode_text(MASKED_CAPTIONS, mode="no_expand")),
                       ("encode_text_views", views.no_expand), ("encode_captions", lit_encoder.encode_captions(MASKED_CAPTIONS)),
                       ("sparsify", lit_encoder.sparsify(dense, mask_texts=MASKED_CAPTIONS))]:
        for row, text, tokens in zip(rows, MASKED_CAPTIONS, own):
            assert set(row.indices.tolist()) == tokens, (name, text)
    assert set(tokenizer.all_special_ids) & set(views.no_expand.indices.tolist()) == set()


@pytest.mark.parametrize("mode", ["expand", "no_expand"])
def test_long_text_is_the_max_over_its_windows(wide_encoder, mode):
    windows = [window.text for window in text_windows(ARTICLE, wide_encoder.backbone.count_tokens,
                                                        wide_encoder.backbone.max_text_tokens - 2)]
    assert len(windows) > 3
    pooled = wide_encoder.encode_text(ARTICLE, mode=mode)
    # each window encoded on its own: the raw span gives the same cleaned window and the same mask
    raws = [w.raw for w in text_windows(ARTICLE, wide_encoder.backbone.count_tokens,
                                        wide_encoder.backbone.max_text_tokens - 2)]
    per_window = wide_encoder.encode_text(raws, mode=mode).toarray()
    np.testing.assert_allclose(pooled.toarray()[0], per_window.max(axis=0), rtol=1e-5)
    dense = wide_encoder.encode_text_views(ARTICLE).dense
    window_mean = wide_encoder.encode_text_views(windows).dense.mean(axis=0)
    np.testing.assert_allclose(dense[0], window_mean / np.linalg.norm(window_mean), rtol=1e-4, atol=1e-6)


# -- no_expand masks: the word pieces of the raw text, as the reference (tokenizer.tokenize(raw)) -------------

PUNCTUATION = (".", "(", ")", "!", ":", ";", '"', "*", "#", "~", ",", "?")


@pytest.fixture(scope="module")
def punctuation_encoder(encoder):
    """The tiny encoder with a head whose punctuation terms light up for every input (planted, like PLANTED_WORDS)."""
    ids = encoder.tokenizer.convert_tokens_to_ids(list(PUNCTUATION))
    return dataclasses.replace(encoder, head=make_head(planted=tuple(ids)))


def reference_mask(tokenizer, raw: str) -> set[int]:
    """What the reference code keeps of a query: the ids of `tokenizer.tokenize(raw)`."""
    return set(tokenizer.convert_tokens_to_ids(tokenizer.tokenize(raw)))


def test_no_expand_keeps_the_raw_texts_word_pieces_punctuation_included(punctuation_encoder):
    encoder = punctuation_encoder
    raw = 'A dog (brown) runs! On the beach: "look" ~ *wow* #1; done.'
    expanded, masked = encoder.encode_text(raw, mode="expand"), encoder.encode_text(raw, mode="no_expand")
    mask = reference_mask(encoder.tokenizer, raw)
    assert set(masked.indices) == mask & set(expanded.indices)
    punctuation = set(encoder.tokenizer.convert_tokens_to_ids(list(PUNCTUATION[:10])))
    assert punctuation <= set(masked.indices)  # BLIP's cleaning drops these; the reference's mask keeps them
    assert not set(masked.indices) & {0, 101, 102}  # never [PAD], [CLS], [SEP]
    views = encoder.encode_text_views(raw)
    assert_same_rows(views.no_expand, masked)
    # the head on the same dense vector, masked by the raw text: what evaluation does with published captions
    assert_same_rows(encoder.sparsify(views.dense, mask_texts=[raw]), masked)
    plain = "a dog brown runs on the beach look wow 1 done"  # the cleaned text: same words, no punctuation
    assert not set(encoder.encode_text(plain, mode="no_expand").indices) & punctuation


def test_each_window_of_a_long_text_is_masked_by_its_own_raw_span(punctuation_encoder):
    encoder = punctuation_encoder
    article = ARTICLE + " A last (short) remark: the end!"
    windows = text_windows(article, encoder.backbone.count_tokens, encoder.backbone.max_text_tokens - 2)
    assert len(windows) > 3 and "".join(w.raw for w in windows) == article
    per_window = encoder.encode_text([w.raw for w in windows], mode="no_expand")
    for row, window in enumerate(windows):
        assert set(per_window[row].indices) <= reference_mask(encoder.tokenizer, window.raw)
    parens = set(encoder.tokenizer.convert_tokens_to_ids(["(", ")", ":", "!"]))
    assert parens <= set(per_window[len(windows) - 1].indices)  # only the last window holds them
    assert not parens & set(per_window[: len(windows) - 1].indices)
    pooled = encoder.encode_text(article, mode="no_expand")
    np.testing.assert_allclose(pooled.toarray()[0], per_window.toarray().max(axis=0), rtol=1e-5)


def test_the_mask_ids_are_the_reference_tokenize_ids(encoder):
    from hypothesis import given, settings, strategies as st

    tokenizer = encoder.tokenizer

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list("abcXYZ 12.,!?()\"*#:;~'-_/&é\u00e0\n")), max_size=60))
    def same(raw):
        ours = tokenizer([raw], add_special_tokens=False)["input_ids"][0]
        assert ours == tokenizer.convert_tokens_to_ids(tokenizer.tokenize(raw))

    same()


def test_caption_groups_are_max_pooled(wide_encoder):
    single = wide_encoder.encode_captions(CAPTIONS[:3]).toarray()
    grouped = wide_encoder.encode_captions([CAPTIONS[:2], [CAPTIONS[2]]]).toarray()
    np.testing.assert_allclose(grouped[0], single[:2].max(axis=0), rtol=1e-6)
    np.testing.assert_allclose(grouped[1], single[2], rtol=1e-6)
    with pytest.raises(InputError, match="at least one caption"):
        wide_encoder.encode_captions([[]])


def test_dense_view_is_unit_length(encoder):
    dense = encoder.encode_text_views(CAPTIONS).dense
    assert dense.shape == (len(CAPTIONS), 256) and dense.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("bad, match", [("", "empty"), ("  ?!. ", "empty"), ("x" * 20_001, "limit")])
def test_bad_text_is_refused(encoder, bad, match):
    with pytest.raises(InputError, match=match):
        encoder.encode_text(["fine text", bad])


def test_unknown_mode_is_refused(encoder):
    with pytest.raises(InputError, match="mode"):
        encoder.encode_text("a dog", mode="dense")


def test_images_batch_equals_one_by_one_and_accepts_paths_bytes_and_pil(encoder, image_folder):
    paths = sorted(image_folder.glob("*.jpg"))
    batch = encoder.encode_images(paths)
    assert batch.shape == (len(paths), 30522) and batch.nnz > 0
    for i, path in enumerate(paths):
        assert_same_rows(batch[i], encoder.encode_images(path))
    assert_same_rows(encoder.encode_images(paths[0].read_bytes()), batch[0])
    sparse, dense = encoder.encode_images_with_dense([make_image(1), make_image(2)])
    np.testing.assert_allclose(np.linalg.norm(dense, axis=1), 1.0, rtol=1e-5)
    assert_same_rows(encoder.sparsify(dense), sparse)  # the head on precomputed vectors gives the same rows
    np.testing.assert_allclose(encoder.encode_images_with_dense([make_image(1)])[1], dense[:1], rtol=1e-4, atol=1e-6)


def test_a_bad_image_is_refused(encoder, tmp_path):
    (tmp_path / "notes.jpg").write_text("not really a jpeg")
    with pytest.raises(InputError, match="not an image"):
        encoder.encode_images([tmp_path / "notes.jpg"])


def test_decode_gives_readable_terms(wide_encoder):
    vector = wide_encoder.encode_text("a cat sleeping on a sofa", mode="no_expand")
    terms = wide_encoder.decode(vector[0], top_k=10)
    assert terms and {t for t, _ in terms} <= {"a", "cat", "sleeping", "on", "sofa"}
    weights = [w for _, w in terms]
    assert weights == sorted(weights, reverse=True)


def test_models_record_what_an_index_checks(encoder):
    models = encoder.models()
    assert models.vocab_size == 30522 and models.dense_size == 256
    assert len(models.head.fingerprint) == 16 and len(models.backbone.fingerprint) == 16
    assert models.vocab_sha256 == encoder.vocab.sha256


def test_mismatched_head_is_refused_at_load(backbone_dir, tokenizer_dir, tmp_path):
    SparseHead(HeadConfig(dense_size=256, hidden_size=8, vocab_size=1000)).save_pretrained(tmp_path / "small-vocab")
    with pytest.raises(ModelLoadError, match="1,000"):
        Encoder.from_pretrained(str(backbone_dir), str(tmp_path / "small-vocab"), str(tokenizer_dir))
    SparseHead(HeadConfig(dense_size=512, hidden_size=8)).save_pretrained(tmp_path / "wide-input")
    with pytest.raises(ModelLoadError, match="512-d"):
        Encoder.from_pretrained(str(backbone_dir), str(tmp_path / "wide-input"), str(tokenizer_dir))


def test_a_model_that_is_not_blip_retrieval_is_refused(head_dir, tokenizer_dir, tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="BLIP retrieval"):
        Encoder.from_pretrained(str(tmp_path / "bert"), str(head_dir), str(tokenizer_dir))


def test_text_views_run_the_head_once_per_batch_and_equal_each_mode(wide_encoder):
    """encode_text_views: one head pass per batch of windows (not one per view); each view the same floats as
    encode_text in that mode, and the dense view the backbone's normalised window mean (the head is not in it)."""
    texts = ["a cat on a mat.", ARTICLE, "Two (small) dogs!"]
    calls = []
    hook = wide_encoder.head.register_forward_hook(lambda module, args, out: calls.append(out.shape[0]))
    try:
        views = wide_encoder.encode_text_views(texts)
    finally:
        hook.remove()
    windows = len(wide_encoder._windows(texts)[0])
    assert sum(calls) == windows and len(calls) == -(-windows // wide_encoder.batch_size)
    for view, mode in ((views.expand, "expand"), (views.no_expand, "no_expand")):
        want = wide_encoder.encode_text(texts, mode=mode)
        assert (view != want).nnz == 0 and view.nnz == want.nnz, mode
    windows, _, owners = wide_encoder._windows(texts)
    per_window = torch.cat([wide_encoder.backbone.embed_texts(windows[start : start + wide_encoder.batch_size])
                            for start in range(0, len(windows), wide_encoder.batch_size)]).numpy()
    mean = np.stack([per_window[owners == i].mean(axis=0) for i in range(len(texts))])
    np.testing.assert_allclose(views.dense, mean / np.linalg.norm(mean, axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
