"""Hub repo ids resolve through the Hugging Face cache: the code path users take, tested offline.

The cache is laid out as huggingface_hub lays it out (models--owner--name/snapshots/<commit>), filled with
the tiny test models, and the Hub is switched to offline mode so nothing is fetched.
"""

import shutil

import huggingface_hub.constants as hub_constants
import pytest

from mlsr.models.encoder import Encoder
from mlsr.errors import ModelLoadError
from mlsr.models.head import SparseHead

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    def add(repo_id: str, folder):
        repo = tmp_path / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(folder, repo / "snapshots" / COMMIT)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(COMMIT)

    return add


def test_head_by_hub_id_loads_from_the_cache_and_records_the_commit(offline_cache, head_dir):
    offline_cache("lsr42/d2s_tiny", head_dir)
    head = SparseHead.from_pretrained("lsr42/d2s_tiny")
    assert head.source == "lsr42/d2s_tiny" and head.revision == COMMIT
    assert head.fingerprint() == SparseHead.from_pretrained(head_dir).fingerprint()


def test_encoder_by_hub_ids_records_ids_and_revisions(offline_cache, backbone_dir, head_dir, tokenizer_dir):
    offline_cache("Salesforce/blip-tiny", backbone_dir)
    offline_cache("lsr42/d2s_tiny", head_dir)
    offline_cache("tiny/uncased", tokenizer_dir)
    encoder = Encoder.from_pretrained("Salesforce/blip-tiny", "lsr42/d2s_tiny", "tiny/uncased", device="cpu")
    models = encoder.models()
    assert models.backbone.id == "Salesforce/blip-tiny" and models.backbone.revision == COMMIT
    assert models.head.revision == COMMIT and models.tokenizer.id == "tiny/uncased"
    assert encoder.encode_text("a dog").shape == (1, 30522)


def test_uncached_hub_id_offline_says_what_to_do(offline_cache):
    with pytest.raises(ModelLoadError, match="could not be reached.*local folder"):
        SparseHead.from_pretrained("lsr42/never-downloaded")
