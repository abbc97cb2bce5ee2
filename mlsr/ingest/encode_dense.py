"""`encode-dense`: embed a folder of captioned images with a dense model into a dataset in the lsr42 layout.

The dataset is what `train` learns a sparse head from (see `mlsr.data.lsr42` for the layout). Finished
chunks are cached, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlsr import __version__
from mlsr._files import atomic_path, atomic_write_json
from mlsr.data.captions import captions_of, find_images, read_captions, read_splits
from mlsr.data.lsr42 import IMAGE_FILE, META_FILE, TEXT_FILE, write_vectors
from mlsr.errors import InputError
from mlsr.images import load_image
from mlsr.models.record import recorded_name
from mlsr.settings import ENCODE_BATCH, Progress
from mlsr.text import check_text, clean_caption

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.models.backbone import Backbone

logger = logging.getLogger(__name__)

_CACHE_DIR = ".encode-dense-cache"  # finished chunks of an interrupted run, removed once the dataset is written
_CHUNK_SIZE = 512  # images (or captions) per cached chunk: the most work an interruption can lose


@dataclass
class EncodeReport:
    """What `encode_dense` did: images and captions written, and what it left out (with reasons)."""

    images: int = 0
    captions: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # unreadable images
    uncaptioned: list[str] = field(default_factory=list)  # images without a caption: nothing to pair
    unmatched: list[str] = field(default_factory=list)  # captions file names with no image
    reused_chunks: int = 0
    seconds: float = 0.0


def check_new_dataset(out: Path, overwrite: bool = False, how: str = "overwrite=True") -> None:
    """Refuse a file at `out`, or, unless `overwrite`, a finished dataset there (an interrupted one resumes)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a dataset folder; refusing to overwrite it.")
    if not overwrite and (out / META_FILE).is_file():
        try:
            meta = json.loads((out / META_FILE).read_text(encoding="utf-8"))
            images = meta.get("images") or []
            what = f"{len(images):,} images, {sum(len(i.get('sentences', ())) for i in images):,} captions"
        except (OSError, ValueError, AttributeError, TypeError):
            what = "its metadata cannot be read"
        raise InputError(f"{out} holds a dense dataset already ({what}); nothing was changed. To replace it, say so"
                         f" ({how}), or choose another folder.")


def encode_dense(
    backbone: Backbone,
    images_dir: str | Path,
    captions_path: str | Path,
    out: str | Path,
    *,
    val_fraction: float | None = None,
    test_fraction: float = 0.0,
    seed: int = 0,
    batch_size: int = ENCODE_BATCH,
    strict: bool = False,
    chunk_size: int = _CHUNK_SIZE,
    progress: Progress | None = None,
    overwrite: bool = False,
    how: str = "overwrite=True",
) -> EncodeReport:
    """Embed every captioned image under `images_dir` and its captions with `backbone`; write a dataset to `out`.

    Splits come from a `split` column of the captions file (train/val/test/restval per image), or
    else from a seeded random draw of images: `val_fraction` (default 0.1) to val, `test_fraction`
    to test, the rest to train. Captions are cleaned as BLIP cleaned them and truncated to the
    backbone's text length, as the published vectors were. Finished chunks are cached under
    `out/.encode-dense-cache`, so an interrupted run resumes where it stopped; the three files are
    written atomically at the end. `progress` is called with the number of images or captions done. A
    finished dataset already at `out` is refused before any work unless `overwrite` (`how` says how the
    caller asks for it). Folders are recorded by name only: a dataset may be published.
    """
    started = time.perf_counter()
    images_dir, out = Path(images_dir), Path(out)
    check_new_dataset(out, overwrite, how)
    report = EncodeReport()
    paired, groups, splits, split_source = _pairs(images_dir, captions_path, val_fraction, test_fraction, seed, report)
    cache = _open_cache(out / _CACHE_DIR, backbone, paired, groups, chunk_size)
    image_vectors, kept, report.skipped, reused = _encode_images(
        backbone, images_dir, paired, cache, chunk_size, batch_size, strict, progress
    )
    flat = [clean_caption(text) for i in kept for text in groups[i]]
    text_vectors, reused_texts = _encode_texts(backbone, flat, cache, chunk_size, batch_size, progress)
    report.reused_chunks = reused + reused_texts
    meta_images, text_ids = _meta_images([paired[i] for i in kept], [groups[i] for i in kept],
                                         [splits[i] for i in kept])
    meta = {
        "dataset": out.name,
        "images": meta_images,
        "mlsr": {
            "version": __version__,
            "backbone": {"id": recorded_name(backbone.source, backbone.revision), "revision": backbone.revision,
                         "model_type": backbone.model_type, "fingerprint": backbone.fingerprint(),
                         "dense_size": backbone.dense_size},
            "images_dir": images_dir.resolve().name,
            "splits": split_source,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    write_vectors(out / IMAGE_FILE, [str(i) for i in range(len(kept))], image_vectors)
    write_vectors(out / TEXT_FILE, text_ids, text_vectors)
    atomic_write_json(out / META_FILE, meta)  # last: a folder with a meta file is complete
    shutil.rmtree(out / _CACHE_DIR, ignore_errors=True)
    report.images, report.captions = len(kept), len(text_ids)
    for image in meta_images:
        report.splits[image["split"]] = report.splits.get(image["split"], 0) + 1
    report.seconds = time.perf_counter() - started
    return report


def _pairs(images_dir: Path, captions_path: str | Path, val_fraction: float | None, test_fraction: float, seed: int,
           report: EncodeReport) -> tuple[list[str], list[list[str]], list[str], object]:
    """The captioned images (names), their captions, their splits, and how the splits were made.

    Images without a caption and captions naming no image are recorded in `report`; a caption that
    is not usable text stops the run, naming the image.
    """
    captions = read_captions(captions_path)
    given_splits = read_splits(captions_path)
    if given_splits is not None and val_fraction is not None:
        raise InputError("the captions file has a split column; drop val_fraction/test_fraction or the column.")
    names = [path.relative_to(images_dir).as_posix() for path in find_images(images_dir)]
    paired = [name for name in names if captions_of(name, captions)]
    report.uncaptioned = [name for name in names if not captions_of(name, captions)]
    known = set(names) | {Path(name).name for name in names}
    report.unmatched = sorted(name for name in captions if name not in known)
    if not paired:
        raise InputError(f"no image under {images_dir} has a caption in {captions_path}; check the file names.")
    groups = [captions_of(name, captions) or [] for name in paired]
    for name, group in zip(paired, groups):
        for text in group:
            try:
                check_text(text)
            except InputError as error:
                raise InputError(f"{captions_path}: a caption of {name}: {error}") from None
    if given_splits is not None:  # each captioned image's rows name its split, under the key its captions have
        return paired, groups, [given_splits.get(n) or given_splits[Path(n).name] for n in paired], "captions file"
    val_fraction = 0.1 if val_fraction is None else val_fraction
    splits = _random_splits(len(paired), val_fraction, test_fraction, seed)
    return paired, groups, splits, {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed}


def _meta_images(names: list[str], groups: list[list[str]], splits: list[str]) -> tuple[list[dict], list[str]]:
    """dataset_meta.json's `images` entries (Karpathy format) of the encoded images, and the caption row ids."""
    meta_images: list[dict] = []
    text_ids: list[str] = []
    for imgid, (name, group, split) in enumerate(zip(names, groups, splits)):
        sentids = list(range(len(text_ids), len(text_ids) + len(group)))
        text_ids.extend(str(s) for s in sentids)
        path = Path(name)
        meta_images.append({
            "imgid": imgid,
            "filename": path.name,
            "filepath": path.parent.as_posix() if path.parent != Path(".") else "",
            "split": split,
            "sentids": sentids,
            "sentences": [{"raw": raw, "sentid": s, "imgid": imgid, "tokens": clean_caption(raw).split()}
                          for raw, s in zip(group, sentids)],
        })
    return meta_images, text_ids


def _random_splits(n: int, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """A seeded split of n images: round(n * val_fraction) to val, round(n * test_fraction) to test, rest train."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise InputError(
            f"val and test fractions must be in [0, 1) and sum below 1, got {val_fraction} and {test_fraction}."
        )
    n_val, n_test = round(n * val_fraction), round(n * test_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = max(n_val, 1)  # a validation split that asked for images gets at least one
    splits = np.full(n, "train", dtype=object)
    order = np.random.default_rng(seed).permutation(n)
    splits[order[:n_val]] = "val"
    splits[order[n_val : n_val + n_test]] = "test"
    return splits.tolist()


def _open_cache(folder: Path, backbone: Backbone, names: list[str], groups: list[list[str]], chunk_size: int) -> Path:
    """The chunk cache for exactly these images, captions, backbone and chunk size; a stale one is cleared."""
    digest = hashlib.sha256(json.dumps([names, groups]).encode()).hexdigest()
    key = {"backbone": backbone.fingerprint(), "model_type": backbone.model_type, "inputs": digest,
           "chunk_size": chunk_size, "max_text_tokens": backbone.max_text_tokens}
    key_file = folder / "key.json"
    try:
        same = json.loads(key_file.read_text()) == key
    except (OSError, ValueError):
        same = False
    if not same:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        atomic_write_json(key_file, key)
    return folder


def _save_array(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)


def _encode_images(backbone: Backbone, images_dir: Path, names: list[str], cache: Path, chunk_size: int,
                   batch_size: int, strict: bool, progress) -> tuple[np.ndarray, list[int], list[tuple[str, str]], int]:
    """(vectors of the readable images, their positions in `names`, the skipped ones, chunks reused)."""
    vectors, kept, reused = [], [], 0
    skipped: list[tuple[str, str]] = []
    for chunk, start in enumerate(range(0, len(names), chunk_size)):
        vectors_file, done_file = cache / f"images-{chunk:06d}.npy", cache / f"images-{chunk:06d}.json"
        stop = min(start + chunk_size, len(names))
        if done_file.is_file() and vectors_file.is_file():
            done = json.loads(done_file.read_text())
            vectors.append(np.load(vectors_file, allow_pickle=False))
            kept.extend(done["kept"])
            skipped.extend((name, reason) for name, reason in done["skipped"])
            reused += 1
            if progress:
                progress(stop - start)
            continue
        chunk_vectors, chunk_kept, chunk_skipped = [], [], []
        for batch_start in range(start, stop, batch_size):
            batch, indices = [], []
            for i in range(batch_start, min(batch_start + batch_size, stop)):
                try:
                    batch.append(load_image(images_dir / names[i]))
                    indices.append(i)
                except InputError as error:
                    if strict:
                        raise
                    logger.warning("skipping %s: %s", names[i], error)
                    chunk_skipped.append((names[i], str(error)))
            if batch:
                chunk_vectors.append(backbone.embed_images(batch).cpu().numpy())
                chunk_kept.extend(indices)
            if progress:
                progress(min(batch_start + batch_size, stop) - batch_start)
        array = np.concatenate(chunk_vectors) if chunk_vectors else np.zeros((0, backbone.dense_size), np.float32)
        _save_array(vectors_file, array)
        atomic_write_json(done_file, {"kept": chunk_kept, "skipped": chunk_skipped})  # marks the chunk done
        vectors.append(array)
        kept.extend(chunk_kept)
        skipped.extend(chunk_skipped)
    return np.concatenate(vectors), kept, skipped, reused


def _encode_texts(backbone: Backbone, texts: list[str], cache: Path, chunk_size: int, batch_size: int,
                  progress) -> tuple[np.ndarray, int]:
    """(n, d) vectors of cleaned captions, chunk by chunk through the cache; and the chunks reused."""
    vectors, reused = [], 0
    # Text chunks are keyed by their content too: which captions remain depends on which images were readable.
    for chunk, start in enumerate(range(0, len(texts), chunk_size)):
        part = texts[start : start + chunk_size]
        digest = hashlib.sha256("\n".join(part).encode()).hexdigest()[:16]
        path = cache / f"texts-{chunk:06d}-{digest}.npy"
        if path.is_file():
            vectors.append(np.load(path, allow_pickle=False))
            reused += 1
            if progress:
                progress(len(part))
            continue
        rows = []
        for batch_start in range(0, len(part), batch_size):
            batch = part[batch_start : batch_start + batch_size]
            rows.append(backbone.embed_texts(batch).cpu().numpy())
            if progress:
                progress(len(batch))
        array = np.concatenate(rows)
        _save_array(path, array)
        vectors.append(array)
    return (np.concatenate(vectors) if vectors else np.zeros((0, backbone.dense_size), np.float32)), reused

