"""`Encoder.to_sparse_encoder()`: the same sparse vectors and decoded terms as mlsr's Encoder, texts and images."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from PIL import Image

from mlsr.errors import InputError
from tests.helpers.data import CAPTIONS

LONG = "A boy leads a water buffalo (slowly) through the market. " * 8 + "Cake on a table; a road in a field!"
# Longest first: the order sentence-transformers encodes a batch in, so both sides pad and batch alike.
TEXTS = [LONG, "Two dogs, playing with a ball (in the park)!", *CAPTIONS[2:5]]


def dense(tensor) -> np.ndarray:
    return tensor.to_dense().cpu().numpy()


def images_of(folder):
    return sorted(p for p in folder.rglob("*") if p.suffix in (".jpg", ".png"))


@pytest.mark.parametrize("mode", ["expand", "no_expand"])
def test_query_texts_give_the_encoders_vectors(wide_encoder, mode):
    model = wide_encoder.to_sparse_encoder(query_mode=mode)
    expected = wide_encoder.encode_text(TEXTS, mode=mode).toarray()
    got = dense(model.encode_query(TEXTS, batch_size=64))
    assert np.abs(got - expected).max() <= 1e-6
    assert ((expected > 0).sum(axis=1) > 0).sum() >= 3  # rows with terms: the check can fail
    if mode == "no_expand":  # only the text's own word pieces survive
        own = set(wide_encoder.tokenizer(TEXTS[1], add_special_tokens=False)["input_ids"])
        assert set(np.flatnonzero(got[1])) <= own


def test_another_order_differs_only_by_batch_rounding(wide_encoder):
    """Encoded in another order, a batch pads and multiplies differently: float rounding, as mlsr's own batches."""
    model = wide_encoder.to_sparse_encoder()
    texts = TEXTS[::-1]
    assert np.abs(dense(model.encode(texts, batch_size=64)) - wide_encoder.encode_text(texts).toarray()).max() < 1e-5


def test_document_texts_are_encoded_as_captions(wide_encoder):
    model = wide_encoder.to_sparse_encoder(document_mode="no_expand")
    got = dense(model.encode_document(TEXTS, batch_size=64))
    assert np.abs(got - wide_encoder.encode_captions(TEXTS).toarray()).max() <= 1e-6
    expanded = dense(wide_encoder.to_sparse_encoder(document_mode="expand").encode_document(TEXTS, batch_size=64))
    assert (expanded > 0).sum() > (got > 0).sum()


def test_images_give_the_encoders_vectors_from_pil_and_paths(wide_encoder, image_folder):
    model = wide_encoder.to_sparse_encoder()
    paths = images_of(image_folder)
    expected = wide_encoder.encode_images(paths).toarray()
    from_pil = dense(model.encode_document([Image.open(p) for p in paths], batch_size=64))
    from_paths = dense(model.encode_document([str(p) for p in paths], batch_size=64))
    assert np.abs(from_pil - expected).max() <= 1e-6
    assert np.abs(from_paths - expected).max() <= 1e-6


def test_decode_names_the_same_terms(wide_encoder, image_folder):
    """The same (term, weight) pairs, heaviest first; equal weights may come in another order (mlsr: by term id)."""
    model = wide_encoder.to_sparse_encoder(query_mode="no_expand")
    vectors = [model.encode_query(TEXTS[1]), model.encode_document(Image.open(images_of(image_folder)[0]))]
    special = wide_encoder.vocab.special_mask
    for vector in vectors:
        ours = wide_encoder.decode(sp.csr_matrix(dense(vector)[None, :]), top_k=None, keep_punctuation=True)
        theirs = [(term, weight) for term, weight in model.decode(vector)
                  if not special[wide_encoder.vocab.ids[term]]]  # mlsr never shows [CLS], [unused0], ...
        assert len(ours) > 0 and dict(ours) == pytest.approx(dict(theirs), abs=1e-6)
        weights = [weight for _, weight in theirs]
        assert weights == sorted(weights, reverse=True)
        assert [term for term, _ in model.decode(vector, top_k=5)] == [term for term, _ in ours[:5]]


def test_intersection_and_similarity_are_dot_products(wide_encoder, image_folder):
    model = wide_encoder.to_sparse_encoder()
    query = model.encode_query(CAPTIONS[0])
    images = model.encode_document([Image.open(p) for p in images_of(image_folder)])
    scores = model.similarity(query, images).numpy()[0]
    expected = (wide_encoder.encode_text(CAPTIONS[0]) @ wide_encoder.encode_images(images_of(image_folder)).T)
    np.testing.assert_allclose(scores, expected.toarray()[0], rtol=1e-5)
    shared = model.intersection(query, images[0])
    assert np.isclose(dense(shared).sum(), scores[0], rtol=1e-5)


def test_mixed_batches_and_bad_modes_are_refused(wide_encoder, image_folder):
    with pytest.raises(InputError, match="query_mode"):
        wide_encoder.to_sparse_encoder(query_mode="hybrid")
    model = wide_encoder.to_sparse_encoder()
    with pytest.raises(ValueError):
        model.encode(["a text", Image.open(images_of(image_folder)[0])])
    with pytest.raises(InputError, match="empty"):
        model.encode(["..."])


def test_the_model_shares_the_encoders_weights(wide_encoder):
    model = wide_encoder.to_sparse_encoder()
    assert model[1].head is wide_encoder.head and model[0].model is wide_encoder.backbone.model
    assert model.get_embedding_dimension() == wide_encoder.vocab_size and model.modalities == ["text", "image"]


def test_without_a_backbone_or_the_package_it_says_what_is_missing(wide_encoder, monkeypatch):
    import dataclasses
    import sys

    from mlsr.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="Encoder.from_pretrained"):
        dataclasses.replace(wide_encoder, backbone=None).to_sparse_encoder()
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # as if the st extra were not installed
    with pytest.raises(ModelLoadError, match=r"mlsr\[st\]"):
        wide_encoder.to_sparse_encoder()
