"""Fixtures of the sentence-transformers tests: a head that lights many terms, saved, and its encoder."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.models import make_head


@pytest.fixture(scope="session")
def wide_head_dir(tmp_path_factory):
    """A head whose bias is 0 (about half the vocabulary lights up before masking): no_expand rows are not empty."""
    head = make_head(seed=3)
    with torch.no_grad():
        head.vocab_projector.bias.zero_()
    folder = tmp_path_factory.mktemp("wide-head")
    head.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def wide_encoder(backbone_dir, wide_head_dir, tokenizer_dir):
    from mlsr.models.encoder import Encoder

    return Encoder.from_pretrained(str(backbone_dir), str(wide_head_dir), str(tokenizer_dir), device="cpu",
                                   batch_size=64)


@pytest.fixture(scope="session")
def models(backbone_dir, wide_head_dir, tokenizer_dir) -> list[str]:
    """The command-line flags of `wide_encoder`'s models."""
    return ["--backbone", str(backbone_dir), "--head", str(wide_head_dir), "--tokenizer", str(tokenizer_dir),
            "--device", "cpu"]
