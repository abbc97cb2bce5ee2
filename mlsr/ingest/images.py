"""Build a sparse index from a folder of images, optionally with captions (the seed paper's three runs)."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import scipy.sparse as sp

from mlsr import __version__
from mlsr.models.encoder import Encoder
from mlsr.errors import InputError
from mlsr.images import IMAGE_SUFFIXES, load_image
from mlsr.index.sparse import SparseIndex
from mlsr._files import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

Documents = Literal["image", "caption", "image+caption"]
DOCUMENTS: tuple[str, ...] = ("image", "caption", "image+caption")
_FILE_COLUMNS = ("file", "filename", "image", "path")
_CAPTION_COLUMNS = ("caption", "text")
SPLITS: tuple[str, ...] = ("train", "val", "test", "restval")  # the Karpathy split names of COCO / Flickr30k


@dataclass
class BuildReport:
    """What a build did: documents indexed and the images that could not be read (name, reason)."""

    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    resumed: int = 0  # batches taken from an interrupted earlier run


def find_images(folder: str | Path) -> list[Path]:
    """Image files under `folder` (recursively, by suffix), sorted by relative path; symlinks are skipped."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"images folder {folder} does not exist.")
    found = [
        path for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file() and not path.is_symlink()
    ]
    return sorted(found, key=lambda path: path.relative_to(folder).as_posix())


def read_captions(path: str | Path) -> dict[str, list[str]]:
    """Read captions from CSV (header with `file` and `caption` columns) or JSONL (`{"file":..., "caption":...}`).

    A file may appear on several rows: all its captions are kept, in order.
    """
    captions: dict[str, list[str]] = {}
    for name, text, _ in _caption_rows(path):
        captions.setdefault(name, []).append(text)
    return captions


def read_splits(path: str | Path) -> dict[str, str] | None:
    """The optional `split` column of a captions file: file -> split, or None when the file has no such column.

    Every row must then name a split, and the rows of one file must agree (a split belongs to an image).
    """
    rows = _caption_rows(path)
    if all(split is None for _, _, split in rows):
        return None
    splits: dict[str, str] = {}
    for number, (name, _, split) in enumerate(rows, 1):
        if split is None:
            raise InputError(f"{path}: row {number} ({name}) has no split, but other rows do; give every row one.")
        if splits.setdefault(name, split) != split:
            raise InputError(f"{path}: {name} is in split {splits[name]!r} and in {split!r}; one split per image.")
    return splits


def _caption_rows(path: str | Path) -> list[tuple[str, str, str | None]]:
    """(file, caption, split or None) per row of a CSV or JSONL captions file, validated."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"captions file {path} does not exist.")
    if path.suffix.lower() in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise InputError(f"{path}:{number}: not valid JSON ({error.msg}).") from None
    else:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    parsed = []
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise InputError(f"{path}: row {number} is not an object with a file and a caption.")
        name = next((row[c] for c in _FILE_COLUMNS if row.get(c)), None)
        text = next((row[c] for c in _CAPTION_COLUMNS if row.get(c)), None)
        if not isinstance(name, str) or not isinstance(text, str):
            raise InputError(
                f"{path}: row {number} needs a file name column ({'/'.join(_FILE_COLUMNS)}) and a caption"
                f" column ({'/'.join(_CAPTION_COLUMNS)})."
            )
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise InputError(f"{path}: row {number} has split {split!r}; use one of {', '.join(SPLITS)}.")
        parsed.append((Path(name).as_posix(), text, split))
    return parsed


def build_index(
    encoder: Encoder,
    images_dir: str | Path,
    *,
    out: str | Path,
    captions: dict[str, list[str]] | None = None,
    documents: Documents = "image",
    dense: bool = False,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[SparseIndex, BuildReport]:
    """Encode every image under `images_dir` (and its captions) into an index saved at `out`.

    Document vectors: `image` = the image's expanded vector; `caption` = its captions' vectors
    (masked to their tokens); `image+caption` = the sum of both (the seed paper's M4 run).
    `dense` also keeps the backbone's image vectors for the FAISS comparison. An unreadable
    image is skipped and reported, or stops the build when `strict`. Item image paths are
    stored relative to `out`, so the index and the images can move together.

    Crash-safe and resumable: each finished batch is kept in `.<out>.partial/` beside `out`; a
    re-run over the same images, settings and models skips the batches already done, and gives
    the same index as an uninterrupted run. `out` is replaced atomically at the end, so an
    interrupted build leaves the previous index intact.
    """
    if documents not in DOCUMENTS:
        raise InputError(f"documents must be one of {DOCUMENTS}, got {documents!r}.")
    started = time.perf_counter()
    images_dir, out = Path(images_dir).resolve(), Path(out).resolve()
    paths = find_images(images_dir)
    if not paths:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {images_dir}.")
    names = [path.relative_to(images_dir).as_posix() for path in paths]
    captions = captions or {}
    if documents != "image":
        if not captions:
            raise InputError(f"documents={documents!r} needs a captions file (--captions).")
        missing = [name for name in names if captions_of(name, captions) is None]
        if documents == "caption" and missing:
            raise InputError(
                f"{len(missing)} images have no caption (e.g. {missing[:3]}); documents='caption' needs one each."
            )

    report = BuildReport()
    need_images = documents != "caption" or dense
    store = _BatchStore.open(out, _fingerprint(encoder, paths, names, need_images, strict))
    kept: list[int] = []
    image_rows: list[sp.csr_matrix] = []
    dense_rows: list[np.ndarray] = []
    for start in range(0, len(paths), encoder.batch_size):
        stop = min(start + encoder.batch_size, len(paths))
        if not need_images:
            batch = _Batch(list(range(start, stop)), [], None, None)
        elif (batch := store.load(start)) is not None:
            report.resumed += 1
        else:
            batch = _encode_batch(encoder, paths, names, range(start, stop), strict)
            store.save(start, batch)
        kept += batch.kept
        report.skipped += batch.skipped
        if batch.sparse is not None:
            image_rows.append(batch.sparse)
            dense_rows.append(batch.dense)
        if progress:
            progress(stop - start)
    for name, reason in report.skipped:
        logger.warning("skipped %s: %s", name, reason)

    vectors = sp.vstack(image_rows, format="csr") if image_rows else None
    if documents != "image":
        groups = [captions_of(names[i], captions) or [] for i in kept]
        with_caption = [j for j, group in enumerate(groups) if group]
        caption_vectors = encoder.encode_captions([groups[j] for j in with_caption])
        # Place caption row r at document with_caption[r]; documents without a caption stay empty.
        placement = sp.csr_matrix(
            (np.ones(len(with_caption), np.float32), (with_caption, np.arange(len(with_caption)))),
            shape=(len(kept), len(with_caption)),
        )
        caption_full = (placement @ caption_vectors).tocsr()
        vectors = caption_full if documents == "caption" else vectors + caption_full
    items = []
    for i in kept:
        item = {"id": names[i], "image": os.path.relpath(paths[i], out)}
        if captions:
            item["captions"] = captions_of(names[i], captions) or []
        items.append(item)
    report.indexed = len(kept)
    report.seconds = time.perf_counter() - started
    info = {
        "documents": documents,
        "models": encoder.models(),
        "build": {
            "mlsr_version": __version__,
            "images": str(images_dir),
            "skipped": len(report.skipped),
            "seconds": round(report.seconds, 3),
        },
    }
    index = SparseIndex.build(
        vectors.astype(np.float32),
        items,
        vocab=encoder.vocab,
        dense=np.concatenate(dense_rows) if dense else None,
        info=info,
    )
    index.save(out)
    store.remove()
    return index, report


@dataclass
class _Batch:
    """One encoded batch: the image numbers kept, those skipped (name, reason), their vectors."""

    kept: list[int]
    skipped: list[tuple[str, str]]
    sparse: sp.csr_matrix | None
    dense: np.ndarray | None


def _encode_batch(encoder: Encoder, paths: list[Path], names: list[str], numbers: range, strict: bool) -> _Batch:
    kept, images, skipped = [], [], []
    for i in numbers:
        try:
            images.append(load_image(paths[i]))
            kept.append(i)
        except InputError as error:
            if strict:
                raise
            skipped.append((names[i], str(error)))
    if not images:
        return _Batch(kept, skipped, sp.csr_matrix((0, encoder.vocab_size), dtype=np.float32),
                      np.zeros((0, encoder.dense_size), dtype=np.float32))
    sparse, dense = encoder.encode_images_with_dense(images)
    return _Batch(kept, skipped, sparse, dense)


def _fingerprint(encoder: Encoder, paths: list[Path], names: list[str], need_images: bool, strict: bool) -> str:
    """What finished batches depend on: the files (name, size, mtime), the models, batching, strictness."""
    stats = [(name, path.stat().st_size, path.stat().st_mtime_ns) for name, path in zip(names, paths)]
    plan = {"files": stats, "models": encoder.models(), "batch_size": encoder.batch_size,
            "need_images": need_images, "strict": strict, "mlsr": __version__}
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


@dataclass
class _BatchStore:
    """Finished batches of an interrupted build, in `.<name>.partial/` beside the index folder.

    Each batch is three files; its JSON is written last, by rename, so a batch counts as done only
    when all of it is on disk. A store made for other inputs is wiped, never mixed in.
    """

    folder: Path

    @classmethod
    def open(cls, out: Path, fingerprint: str) -> "_BatchStore":
        folder = out.parent / f".{out.name}.partial"
        plan = folder / "plan.json"
        if folder.is_dir() and (not plan.is_file() or json.loads(plan.read_text()).get("fingerprint") != fingerprint):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if not plan.is_file():
            atomic_write_json(plan, {"fingerprint": fingerprint})
        return cls(folder)

    def load(self, start: int) -> _Batch | None:
        stem = self.folder / f"batch-{start:09d}"
        try:
            meta = json.loads(stem.with_suffix(".json").read_text())
            sparse = sp.load_npz(stem.with_suffix(".npz"))
            dense = np.load(stem.with_suffix(".npy"), allow_pickle=False)
        except (OSError, ValueError, KeyError):
            return None  # not finished (or damaged): encode it again
        if sparse.shape[0] != len(meta["kept"]) or dense.shape[0] != len(meta["kept"]):
            return None
        return _Batch(meta["kept"], [tuple(s) for s in meta["skipped"]], sparse.tocsr(), dense)

    def save(self, start: int, batch: _Batch) -> None:
        stem = self.folder / f"batch-{start:09d}"
        with atomic_path(stem.with_suffix(".npz")) as tmp:
            with open(tmp, "wb") as handle:
                sp.save_npz(handle, batch.sparse, compressed=False)
        with atomic_path(stem.with_suffix(".npy")) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, batch.dense, allow_pickle=False)
        atomic_write_json(stem.with_suffix(".json"), {"kept": batch.kept, "skipped": batch.skipped})

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def captions_of(name: str, captions: dict[str, list[str]]) -> list[str] | None:
    """Captions keyed by relative path, or by bare file name when the captions file gives only names."""
    return captions.get(name) or captions.get(Path(name).name)
