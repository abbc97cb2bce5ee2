"""The tiny test models tell inputs apart: a test that compares rows (batch against one by one, build order,
swapped rows) can only fail if different inputs give different vectors."""

from itertools import combinations

import numpy as np
import pytest

from tests.helpers.data import CAPTIONS, make_image
from mlsr.models.backbone import load_backbone

IMAGES = [make_image(seed) for seed in range(6)]


def max_cosine(vectors: np.ndarray) -> float:
    """The largest cosine between two different rows."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return max(float(unit[a] @ unit[b]) for a, b in combinations(range(len(unit)), 2))


def max_overlap(vectors) -> float:
    """The largest Jaccard overlap of two different rows' active terms."""
    active = vectors.toarray() > 0
    return max(float((active[a] & active[b]).sum() / (active[a] | active[b]).sum())
               for a, b in combinations(range(len(active)), 2))


@pytest.mark.parametrize("which", ["backbone_dir", "clip_backbone_dir"])
def test_six_captions_and_six_images_give_clearly_different_dense_vectors(which, request):
    backbone = load_backbone(str(request.getfixturevalue(which)))
    texts = backbone.embed_texts(CAPTIONS).numpy()
    images = backbone.embed_images(IMAGES).numpy()
    print(f"{backbone.model_type}: max pairwise cosine, captions {max_cosine(texts):.4f}, images {max_cosine(images):.4f}")
    # With the default 0.02 initialisation these were above 1 - 5e-6 (captions) and 1 - 4e-7 (images).
    assert max_cosine(texts) < 0.95
    assert max_cosine(images) < 0.99


def test_six_captions_and_six_images_light_up_different_terms(encoder):
    captions, images = encoder.encode_text(CAPTIONS), encoder.encode_images(IMAGES)
    print(f"max Jaccard overlap of active terms: captions {max_overlap(captions):.3f}, images {max_overlap(images):.3f}")
    assert max_overlap(captions) < 0.6 and max_overlap(images) < 0.7
    assert max_cosine(captions.toarray()) < 0.9 and max_cosine(images.toarray()) < 0.9
    for vectors in (captions, images):  # ~1% of the vocabulary, as the head's bias is set for
        assert 0.003 * 30522 < vectors.getnnz(axis=1).min() and vectors.getnnz(axis=1).max() < 0.03 * 30522
