"""Test data with known content: generated images, an image folder with captions, a small gallery index,
and index folders in the old formats 1 and 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
REAL_IMAGES = ROOT / "assets" / "images"


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


MARKUP_CAPTION = "<img src=x> *not bold* [a link](http://example.com)"


def build_gallery(encoder, image_folder: Path, folder: Path) -> Path:
    """An image+caption index with dense vectors over the generated images, the three COCO photos, and one
    generated image (odd.png) whose caption is made of Markdown and HTML (MARKUP_CAPTION)."""
    from mlsr.data.captions import read_captions
    from mlsr.ingest.images import build_index

    shutil.copytree(image_folder, folder / "photos")
    coco_captions = ["a boy leading water buffalo through a market field",
                     "a man on a small motorbike on a dirt road", "a woman cutting a large white sheet cake"]
    rows = [f'{path.name},"{caption}"' for path, caption in zip(sorted(REAL_IMAGES.glob("*.jpg")), coco_captions)]
    for path in sorted(REAL_IMAGES.glob("*.jpg")):
        shutil.copy(path, folder / "photos" / path.name)
    make_image(99).save(folder / "photos" / "odd.png")  # a caption that must show as text, never as markup
    rows.append(f'odd.png,"{MARKUP_CAPTION}"')
    with open(folder / "photos" / "captions.csv", "a") as handle:
        handle.write("\n".join(rows) + "\n")
    build_index(encoder, folder / "photos", out=folder / "index", dense=True,
                documents="image+caption", captions=read_captions(folder / "photos" / "captions.csv"))
    return folder / "index"


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



def write_format2_index(folder: Path, vectors, items: list[dict], precision: str = "float16", dense_share: float = 1 / 3,
                        vocab=None, info: dict | None = None) -> Path:
    """An index folder exactly as mlsr wrote format 2: one posting list per term (int32 rows, float16 or float32
    weights) and dense columns over all documents for terms in at least `dense_share` of them."""
    import hashlib
    import json

    import scipy.sparse as sp

    folder.mkdir(parents=True)
    dtype = np.dtype(precision)
    vectors = sp.csr_matrix(vectors, dtype=np.float32)
    n, vocab_size = vectors.shape
    columns = vectors.tocsc()
    columns.sort_indices()
    counts = np.diff(columns.indptr)
    dense_terms = np.flatnonzero(counts >= dense_share * max(n, 1)).astype(np.int32)
    dense_weights = np.zeros((len(dense_terms), n), dtype=dtype)
    for slot, term in enumerate(dense_terms):
        start, stop = columns.indptr[term], columns.indptr[term + 1]
        dense_weights[slot, columns.indices[start:stop]] = columns.data[start:stop]
    sparse_counts = counts.copy()
    sparse_counts[dense_terms] = 0
    keep = np.repeat(sparse_counts > 0, counts)
    indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(sparse_counts, out=indptr[1:])
    arrays = {"indptr": indptr, "docs": columns.indices[keep].astype(np.int32), "weights": columns.data[keep].astype(dtype),
              "dense_terms": dense_terms, "dense_weights": dense_weights}
    for name, array in arrays.items():
        np.save(folder / f"postings.{name}.npy", array, allow_pickle=False)
    (folder / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    if vocab is not None:
        vocab.save(folder / "vocab.txt")
    files = sorted(p.name for p in folder.iterdir())
    manifest = {
        "format": "mlsr-index", "format_version": 2, **(info or {}), "count": n, "vocab_size": vocab_size,
        "vocab_sha256": vocab.sha256 if vocab is not None else None, "dense_size": None, "precision": precision,
        "postings": {"stored": int(keep.sum()), "dense_terms": len(dense_terms)}, "saved": "2026-02-01T00:00:00Z",
        "files": {name: {"bytes": (folder / name).stat().st_size,
                         "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest()} for name in files},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def write_manifest(folder: Path, manifest: dict) -> None:
    """Write an edited manifest as a tool (or an attacker) that knows the format would: sealed with its own checksum.

    Without the seal, mlsr blames any edit on the manifest itself before it looks at the files.
    """
    import json

    from mlsr.index.manifest import MANIFEST_FILE, sealed

    (folder / MANIFEST_FILE).write_text(json.dumps(sealed(manifest)))
