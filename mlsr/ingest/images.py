"""Build a sparse index from a folder of images, optionally with captions (the seed paper's three runs), or add a
folder to one."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from mlsr import __version__
from mlsr._files import atomic_path, atomic_write_json, kill_point
from mlsr.data.captions import captions_of, scan_images
from mlsr.checks import check_precision
from mlsr.errors import InputError
from mlsr.images import IMAGE_SUFFIXES, load_image
from mlsr.index.folder import check_new_target
from mlsr.index.rows import place_rows
from mlsr.index.sparse import SparseIndex
from mlsr.index.thumbnails import Thumbnails, make_thumbnail, thumbnail_of
from mlsr.items import Item
from mlsr.settings import DOCUMENTS, Documents, Progress

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.models.encoder import Encoder

logger = logging.getLogger(__name__)


@dataclass
class BuildReport:
    """What a build did: documents indexed and the images that could not be read (name, reason)."""

    indexed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    resumed: int = 0  # batches taken from an interrupted earlier run


def build_index(
    encoder: Encoder,
    images_dir: str | Path,
    *,
    out: str | Path,
    captions: dict[str, list[str]] | None = None,
    documents: Documents = "image",
    dense: bool = False,
    strict: bool = False,
    precision: str = "float16",
    progress: Progress | None = None,
    overwrite: bool = False,
) -> tuple[SparseIndex, BuildReport]:
    """Encode every image under `images_dir` (and its captions) into an index saved at `out` (an index already
    there is refused, before any encoding, unless `overwrite`).

    Document vectors: `image` = the image's expanded vector; `caption` = its captions' vectors
    (masked to their tokens); `image+caption` = the sum of both (the seed paper's M4 run).
    `dense` also keeps the backbone's image vectors for the FAISS comparison. An image that cannot
    be read (damaged, or refused by the operating system), a subfolder that cannot be listed and a
    symbolic link that is not followed (see `mlsr.data.captions.scan_images`: links to files inside
    the folder are followed; links leaving it, broken or looping links and links to folders are not)
    are skipped and reported, or stop the build when `strict`. Item image paths are stored relative
    to `out`, so the index and the images can move together. `precision` is how
    document weights are stored (`mlsr.settings.PRECISIONS`: float16, 4 bytes per posting, by
    default; uint8 ~3.1; float32 keeps the head's weights exactly).

    Crash-safe and resumable: each finished batch is kept in `.<out>.partial/` beside `out`; a
    re-run over the same images, settings and models skips the batches already done, and gives
    the same index as an uninterrupted run. `out` is replaced atomically at the end, so an
    interrupted build leaves the previous index intact.
    """
    check_precision(precision)
    started = time.perf_counter()
    out = check_new_target(Path(out).resolve(), overwrite)  # before any encoding
    folder = encode_folder(encoder, images_dir, out, captions=captions, documents=documents, dense=dense,
                           strict=strict, progress=progress)
    report = folder.report
    report.seconds = time.perf_counter() - started
    # the image folder relative to the index (never the machine's absolute path: the manifest may be published)
    info = {"documents": documents, "models": encoder.models().to_json(),
            "build": {"mlsr_version": __version__, "images": os.path.relpath(folder.images_dir, out),
                      "skipped": len(report.skipped), "seconds": round(report.seconds, 3)}}
    index = SparseIndex.build(folder.vectors, folder.items, vocab=encoder.vocab, dense=folder.dense, info=info,
                              precision=precision, thumbnails=folder.thumbnails)
    index.save(out)
    folder.store.remove()
    return index, report


def add_images(
    encoder: Encoder,
    index: SparseIndex | str | Path,
    images_dir: str | Path,
    *,
    captions: dict[str, list[str]] | None = None,
    strict: bool = False,
    replace: bool = False,
    progress: Progress | None = None,
    plan: AddPlan | None = None,
) -> tuple[SparseIndex, BuildReport]:
    """Encode the images under `images_dir` with the index's own models and document kind, and append them.

    `index` is an index folder (or an index loaded from one, to spare a second read). The new images' ids
    are their paths under the index's own image folder when `images_dir` lies inside it, else under
    `images_dir` (see `id_root`); an id the index holds already is refused unless `replace` (then the old
    item is removed and the new one appended). The index folder is replaced atomically at the end, as by a
    build; an interrupted add resumes its encoded batches on re-run. `plan` is `plan_add`'s, when the caller
    checked first (the command line does, before the models load).
    """
    started = time.perf_counter()
    if not isinstance(index, SparseIndex):
        index = SparseIndex.load(Path(index).resolve())
    if index.path is None:
        raise InputError("add_images changes an index folder: give its path, or an index loaded from it.")
    index_dir = index.path.resolve()
    index.check_models(encoder.models())
    documents = index.info.get("documents", "image")
    plan = plan or plan_add(index, images_dir, strict=strict, replace=replace)
    folder = encode_folder(encoder, images_dir, index_dir, captions=captions, documents=documents,
                           dense=index.dense is not None, strict=strict, progress=progress, root=plan.root)
    if plan.taken:
        index = index.remove(plan.taken)
    index = index.add(folder.vectors, folder.items, dense=folder.dense, thumbnails=folder.thumbnails)
    index.save(index_dir)
    folder.store.remove()
    folder.report.seconds = time.perf_counter() - started
    return index, folder.report


@dataclass(frozen=True)
class AddPlan:
    """What adding a folder to an index will do, known before any model loads."""

    root: Path  # the folder the new ids are relative to (see `id_root`)
    images: int  # images found under the folder
    taken: list[str]  # their ids that the index holds already (replaced)


def plan_add(index: SparseIndex, images_dir: str | Path, *, strict: bool = False, replace: bool = False) -> AddPlan:
    """Scan `images_dir` and refuse ids the index holds already, unless `replace`."""
    images_dir = Path(images_dir).resolve()
    root = id_root(index, images_dir)
    held = {str(item["id"]) for item in index.items}
    names = [path.relative_to(root).as_posix() for path in scan_images(images_dir, strict=strict).paths]
    taken = [name for name in names if name in held]
    if taken and not replace:
        raise InputError(f"{len(taken)} of these images are in the index already (e.g. {taken[0]!r});"
                         " replace=True updates them, or remove them first.")
    return AddPlan(root, len(names), taken)


def id_root(index: SparseIndex, images_dir: Path) -> Path:
    """The folder new images' ids are relative to: the index's own image folder when `images_dir` lies inside
    it (so `photos/2026/` adds `2026/cat.jpg`, as a build of `photos/` would name it), else `images_dir`."""
    built_from = (index.info.get("build") or {}).get("images") if isinstance(index.info.get("build"), dict) else None
    if isinstance(built_from, str) and built_from and index.path is not None:
        root = (index.path / built_from).resolve()  # relative to the index (older indexes: absolute, kept by /)
        if images_dir == root or root in images_dir.parents:
            return root
    return images_dir


@dataclass
class EncodedFolder:
    """A folder of images encoded as documents: their rows, items (paths relative to the index) and dense vectors."""

    images_dir: Path
    vectors: sp.csr_matrix
    items: list[Item]
    dense: np.ndarray | None
    report: BuildReport
    store: _BatchStore
    thumbnails: Thumbnails  # one picture per item, made from the image already opened for encoding


def encode_folder(encoder: Encoder, images_dir: str | Path, out: Path, *, captions: dict[str, list[str]] | None,
                  documents: Documents, dense: bool, strict: bool, progress: Progress | None,
                  root: Path | None = None) -> EncodedFolder:
    """Every image under `images_dir` (and its captions) as `documents` rows, batches kept beside `out` until saved.

    Ids (and caption keys) are paths relative to `root` (default: `images_dir`).
    """
    if documents not in DOCUMENTS:
        raise InputError(f"documents must be one of {DOCUMENTS}, got {documents!r}.")
    images_dir = Path(images_dir).resolve()
    scan = scan_images(images_dir, strict=strict)
    paths = scan.paths
    if not paths:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {images_dir}.")
    names = [path.relative_to(root or images_dir).as_posix() for path in paths]
    captions = captions or {}
    _check_captions(documents, names, captions)
    report = BuildReport(skipped=list(scan.skipped))
    store = _BatchStore.open(out, _fingerprint(encoder, paths, names, documents != "caption" or dense, strict))
    kept, image_vectors, dense_vectors, pictures = _encode_images(encoder, paths, names, store, report, documents,
                                                                  dense, strict, progress)
    vectors = image_vectors
    if documents != "image":
        groups = [captions_of(names[i], captions) or [] for i in kept]
        with_caption = [j for j, group in enumerate(groups) if group]
        caption_full = place_rows(encoder.encode_captions([groups[j] for j in with_caption]), with_caption, len(kept))
        vectors = caption_full if documents == "caption" else vectors + caption_full
    items = []
    for i in kept:
        item = Item(id=names[i], image=os.path.relpath(paths[i], out))
        if captions:
            item["captions"] = captions_of(names[i], captions) or []
        items.append(item)
    report.indexed = len(kept)
    if vectors is None:  # only caption documents skip the images, and they have caption rows
        raise InputError(f"no image under {images_dir} could be encoded.")
    return EncodedFolder(images_dir, vectors.astype(np.float32), items, dense_vectors, report, store,
                         Thumbnails.from_pictures(pictures))


def _check_captions(documents: str, names: list[str], captions: dict[str, list[str]]) -> None:
    """Caption documents need captions (every image one, for `caption` alone)."""
    if documents == "image":
        return
    if not captions:
        raise InputError(f"documents={documents!r} needs captions (a captions file).")
    missing = [name for name in names if captions_of(name, captions) is None]
    if documents == "caption" and missing:
        raise InputError(
            f"{len(missing)} images have no caption (e.g. {missing[:3]}); documents='caption' needs one each."
        )


def _encode_images(encoder: Encoder, paths: list[Path], names: list[str], store: _BatchStore,
                   report: BuildReport, documents: str, dense: bool, strict: bool, progress: Progress | None
                   ) -> tuple[list[int], sp.csr_matrix | None, np.ndarray | None, list[bytes | None]]:
    """The images that could be read (their numbers), their sparse and (with `dense`) dense vectors, thumbnails.

    Batch by batch, each finished batch kept in `store` and taken from it on a re-run. Caption-only
    documents without `dense` encode no image: their images are only read small, for the thumbnail
    (one that cannot be read gets none, and the item stays). Skipped images are added to `report`.
    """
    need_images = documents != "caption" or dense
    kept: list[int] = []
    image_rows: list[sp.csr_matrix] = []
    dense_rows: list[np.ndarray] = []
    pictures: list[bytes | None] = []
    for start in range(0, len(paths), encoder.batch_size):
        stop = min(start + encoder.batch_size, len(paths))
        if not need_images:
            batch = _Batch(list(range(start, stop)), [], None, None, [_picture(paths[i]) for i in range(start, stop)])
        elif (loaded := store.load(start)) is not None:
            batch = loaded
            report.resumed += 1
        else:
            batch = _encode_batch(encoder, paths, names, range(start, stop), strict)
            store.save(start, batch)
        kept += batch.kept
        pictures += batch.pictures
        report.skipped += batch.skipped
        if batch.sparse is not None and batch.dense is not None:  # both or neither (caption documents only)
            image_rows.append(batch.sparse)
            dense_rows.append(batch.dense)
        if progress:
            progress(stop - start)
    for name, reason in report.skipped:
        logger.warning("skipped %s: %s", name, reason)
    vectors = sp.vstack(image_rows, format="csr") if image_rows else None
    return kept, vectors, (np.concatenate(dense_rows) if dense else None), pictures


def _picture(path: Path) -> bytes | None:
    """A caption document's thumbnail, or None when its image cannot be read (the caption is indexed anyway)."""
    try:
        return thumbnail_of(path)
    except InputError:
        return None


@dataclass
class _Batch:
    """One encoded batch: the image numbers kept, those skipped (name, reason), their vectors."""

    kept: list[int]
    skipped: list[tuple[str, str]]
    sparse: sp.csr_matrix | None
    dense: np.ndarray | None
    pictures: list[bytes | None]  # the kept images' thumbnails


def _encode_batch(encoder: Encoder, paths: list[Path], names: list[str], numbers: range, strict: bool) -> _Batch:
    kept, images, skipped = [], [], []
    pictures: list[bytes | None] = []
    for i in numbers:
        try:
            images.append(load_image(paths[i]))
            kept.append(i)
            pictures.append(make_thumbnail(images[-1]))
        except InputError as error:
            if strict:
                raise
            skipped.append((names[i], str(error)))
    if not images:
        return _Batch(kept, skipped, sp.csr_matrix((0, encoder.vocab_size), dtype=np.float32),
                      np.zeros((0, encoder.dense_size), dtype=np.float32), [])
    sparse, dense = encoder.encode_images_with_dense(images)
    return _Batch(kept, skipped, sparse, dense, pictures)


def _fingerprint(encoder: Encoder, paths: list[Path], names: list[str], need_images: bool, strict: bool) -> str:
    """What finished batches depend on: the files (name, size, mtime), the models, batching, strictness."""
    stats = [(name, path.stat().st_size, path.stat().st_mtime_ns) for name, path in zip(names, paths)]
    plan = {"files": stats, "models": encoder.models().to_json(), "batch_size": encoder.batch_size,
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
    def open(cls, out: Path, fingerprint: str) -> _BatchStore:
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
            packed = stem.with_suffix(".thumbnails").read_bytes()
            sizes = [int(size) for size in meta["pictures"]]
        except (OSError, ValueError, KeyError, TypeError):
            return None  # not finished (or damaged): encode it again
        n = len(meta["kept"])
        if sparse.shape[0] != n or dense.shape[0] != n or len(sizes) != n or sum(sizes) != len(packed):
            return None
        ends = np.cumsum(sizes).tolist()
        pictures: list[bytes | None] = [packed[end - size:end] for end, size in zip(ends, sizes)]
        return _Batch(meta["kept"], [tuple(s) for s in meta["skipped"]], sparse.tocsr(), dense, pictures)

    def save(self, start: int, batch: _Batch) -> None:
        pictures = [picture for picture in batch.pictures if picture is not None]
        if batch.sparse is None or batch.dense is None or len(pictures) != len(batch.pictures):
            raise ValueError("only an encoded batch is kept: its vectors and every picture")  # not caption rows
        stem = self.folder / f"batch-{start:09d}"
        with atomic_path(stem.with_suffix(".npz")) as tmp, open(tmp, "wb") as handle:
            sp.save_npz(handle, batch.sparse, compressed=False)
        with atomic_path(stem.with_suffix(".npy")) as tmp, open(tmp, "wb") as handle:
            np.save(handle, batch.dense, allow_pickle=False)
        with atomic_path(stem.with_suffix(".thumbnails")) as tmp:
            tmp.write_bytes(b"".join(pictures))
        atomic_write_json(stem.with_suffix(".json"), {"kept": batch.kept, "skipped": batch.skipped,
                                                      "pictures": [len(picture) for picture in pictures]})
        kill_point("batch-saved")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
