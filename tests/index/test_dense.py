"""The FAISS dense index against numpy brute force."""

import numpy as np
import pytest

from mlsr.index.dense import DenseIndex
from mlsr.errors import InputError


def test_dense_search_equals_brute_force():
    rng = np.random.default_rng(0)
    docs = rng.normal(size=(500, 256)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = docs[:5] + 0.01 * rng.normal(size=(5, 256)).astype(np.float32)
    scores, indices = DenseIndex(docs).search(queries, 10)
    full = queries @ docs.T
    np.testing.assert_array_equal(indices, np.argsort(-full, axis=1)[:, :10])
    np.testing.assert_allclose(scores, np.sort(full, axis=1)[:, ::-1][:, :10], rtol=1e-5)
    assert indices[:, 0].tolist() == [0, 1, 2, 3, 4]


def test_dense_k_is_clamped_and_dims_are_checked():
    index = DenseIndex(np.eye(3, 8, dtype=np.float32))
    assert index.search(np.ones(8), 10).indices.shape == (1, 3)
    with pytest.raises(InputError, match="k must be at least 1"):  # one rule for k everywhere (mlsr.checks)
        index.search(np.ones(8), 0)
    with pytest.raises(InputError, match="dims"):
        index.search(np.ones((1, 4)), 1)
