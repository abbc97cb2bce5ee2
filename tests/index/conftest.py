"""What the index tests share: every storage precision as a fixture, and small blocks through the real knobs."""

from __future__ import annotations

import pytest

from mlsr.index import blocks
from mlsr.settings import PRECISIONS


@pytest.fixture(params=sorted(PRECISIONS))
def precision(request):
    return request.param


def use_small_blocks(monkeypatch, rows: int) -> None:
    """Blocks of `rows` documents, with dense columns allowed in blocks of any size: boundaries a test can reach."""
    monkeypatch.setattr(blocks, "BLOCK_DOCS", rows)
    monkeypatch.setattr(blocks, "DENSE_MIN_DOCS", 0)
