"""Fixtures of the command-line tests."""

from __future__ import annotations

import pytest

from mlsr.data.captions import read_captions
from mlsr.ingest.images import build_index


@pytest.fixture
def built(encoder, image_folder, tmp_path):
    """An image+caption index with dense vectors over the six test images."""
    out = tmp_path / "index"
    build_index(encoder, image_folder, out=out, documents="image+caption", dense=True,
                captions=read_captions(image_folder / "captions.csv"))
    return out
