"""The opt-in 8-bit text path (mlsr.models.int8): an int8 copy of the text encoder only; the float32 encoder, its
images, head and fingerprints are untouched; the int8 vectors are close to float32 but not the same floats."""

import numpy as np
import pytest
import torch

from tests.helpers.data import CAPTIONS, make_image


def cosine(a, b) -> np.ndarray:
    a, b = a.toarray().astype(np.float64), b.toarray().astype(np.float64)
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def pair(encoder):
    return encoder, encoder.with_int8_text()


def quantized_layers(module: torch.nn.Module) -> int:
    return sum(type(layer).__module__.startswith("torch.ao.nn.quantized.dynamic") for layer in module.modules())


def test_only_a_copy_of_the_text_encoder_is_quantized(pair):
    plain, int8 = pair
    assert quantized_layers(int8.backbone.model.text_encoder) > 0
    assert quantized_layers(plain.backbone.model) == 0  # the float32 encoder keeps its own text encoder
    assert int8.backbone.model.vision_model is plain.backbone.model.vision_model and int8.head is plain.head
    assert int8.models() == plain.models()  # projections and head untouched: an index's model check is unchanged


def test_int8_text_vectors_are_close_to_float32_but_not_the_same(pair):
    plain, int8 = pair
    texts = list(CAPTIONS)[:6]
    float_vectors, int8_vectors = plain.encode_text(texts), int8.encode_text(texts)
    assert (float_vectors != int8_vectors).nnz > 0  # the int8 products really ran
    assert cosine(float_vectors, int8_vectors).min() > 0.9
    image = make_image(7)
    assert (plain.encode_images([image]) != int8.encode_images([image])).nnz == 0  # images stay float32
