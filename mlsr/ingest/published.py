"""Published dense vectors -> a ready index: `import-dense`, and `prepare` (the app's default gallery).

The lsr42 datasets (`lsr42/mscoco-blip-dense`, `lsr42/flickr30k-blip-dense`, ...) hold BLIP's 256-d vectors of
every Karpathy-split image and caption. Applying the sparse head to one split's image vectors gives an index
without running the image encoder: no backbone, no image download. Vectors are streamed from the parquet
file in record batches and only the split's rows are kept, so memory grows with the split, not the dataset.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Callable

from mlsr import __version__
from mlsr.checks import check_precision, existing_folder
from mlsr.data.lsr42 import IMAGE_FILE, META_FILE, open_dataset
from mlsr.errors import InputError, ModelLoadError
from mlsr.index.folder import check_new_target
from mlsr.index.sparse import SparseIndex
from mlsr.items import Item
from mlsr.models.record import recorded_name
from mlsr.ingest.pictures import collect_pictures, discard_pictures, picture_source
from mlsr.settings import DEFAULT_DATASET, DEFAULT_SPLIT, Progress

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.models.encoder import Encoder

logger = logging.getLogger(__name__)

_COCO_IMAGE_URL = "http://images.cocodataset.org/{filepath}/{filename}"


@dataclass
class ImportReport:
    """What `import_dense` wrote: images, the image source used, and how long it took."""

    images: int = 0
    split: str = ""
    image_source: str = ""
    seconds: float = 0.0
    missing_images: list[str] = field(default_factory=list)  # with --image-root: files not found there
    pictures_made: int = 0  # thumbnails made now (the rest, if any, taken from an interrupted run)
    no_picture: list[tuple[str, str]] = field(default_factory=list)  # (id, why) of items shown as a placeholder
    fetch_seconds: float = 0.0


def _image_of(image: dict, out: Path, image_root: Path | None) -> str | None:
    """The item's image: a file under `image_root` (stored relative to the index), the COCO URL, or None."""
    filename, filepath = str(image.get("filename", "")), str(image.get("filepath", "") or "")
    if image_root is not None:
        for candidate in (image_root / filepath / filename, image_root / filename):
            if filename and candidate.is_file():
                return os.path.relpath(candidate.resolve(), out.resolve())
        return None
    if filename.startswith("COCO_") and filepath:  # every COCO file name in the Karpathy splits
        return _COCO_IMAGE_URL.format(filepath=filepath, filename=filename)
    return None


def import_dense(
    encoder: Encoder,
    dataset: str | Path,
    out: str | Path,
    *,
    split: str = DEFAULT_SPLIT,
    image_root: str | Path | None = None,
    precision: str = "float16",
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
    picture_progress: Progress | None = None,
    picture_total: Callable[[int], None] | None = None,
    overwrite: bool = False,
) -> tuple[SparseIndex, ImportReport]:
    """Write an index of one split's images from a dense dataset: the head applied to their published vectors
    (an index already at `out` is refused, before any work, unless `overwrite`).

    Items carry `id` (= imgid), `image` (the COCO URL, or a file under `image_root` relative to the index,
    else None), `captions`, `filename`; `dense.npy` keeps the dense vectors for the FAISS comparison, and
    the index keeps each item's thumbnail, fetched (or read) here once (`mlsr.ingest.pictures`; an item
    whose picture cannot be had is listed in the report and shows a placeholder). `precision` is how
    document weights are stored (`mlsr.settings.PRECISIONS`; float32 for evaluation). `total` is
    called once with the number of images before `progress` counts them; `picture_total` and
    `picture_progress` do the same for the pictures.
    """
    started = time.perf_counter()
    out = check_new_target(out, overwrite)  # before any work: a file, a non-index folder or an index is refused
    index, report = split_index(encoder, dataset, split=split, image_root=image_root, out=out, precision=precision,
                                progress=progress, total=total)
    ids = [str(item["id"]) for item in index.items]
    sources = [picture_source(item.get("image"), out) for item in index.items]
    if picture_total:
        picture_total(sum(source is not None for source in sources))
    thumbnails, pictures = collect_pictures(ids, sources, out, progress=picture_progress)
    index.thumbnails = thumbnails
    report.pictures_made, report.fetch_seconds = pictures.made, pictures.seconds
    report.no_picture = pictures.failed
    index.save(out)
    discard_pictures(out)
    report.seconds = time.perf_counter() - started
    return index, report


def split_index(
    encoder: Encoder,
    dataset: str | Path,
    *,
    split: str = DEFAULT_SPLIT,
    image_root: str | Path | None = None,
    out: str | Path | None = None,
    precision: str = "float32",
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
) -> tuple[SparseIndex, ImportReport]:
    """The index of one split's images, in memory (what `import_dense` saves; `evaluate` searches it as it is).

    Float32 by default: evaluation indexes keep the head's weights exactly, so the metrics are those of
    the reference computation. `out` is where the index will be saved (image paths under `image_root`
    are stored relative to it; needed only with `image_root`).
    """
    check_precision(precision)
    started = time.perf_counter()
    root = Path(image_root).expanduser() if image_root is not None else None
    if root is not None:
        existing_folder(root, "image_root")
    if root is not None and out is None:
        raise InputError("an index with an image root needs the folder it will be saved in (out).")
    source = open_dataset(dataset, [IMAGE_FILE, META_FILE])
    images = source.images(split)
    if total:
        total(len(images))
    ids = [str(image["imgid"]) for image in images]
    dense = source.vectors(IMAGE_FILE, ids, progress)
    if dense.shape[1] != encoder.dense_size:
        raise ModelLoadError(f"dense dataset {source.name!r} has {dense.shape[1]}-d vectors, the head reads"
                             f" {encoder.dense_size}-d ones; pick the head trained on this dataset's model.")
    vectors = encoder.sparsify(dense)  # all at once, in the encoder's own batches: the same floats however read
    report = ImportReport(split=split)
    items = []
    for image in images:
        location = _image_of(image, Path(out) if out is not None else Path("."), root)
        if root is not None and location is None:
            report.missing_images.append(str(image.get("filename")))
        item: Item = {"id": str(image["imgid"]), "image": location,
                "captions": [str(s.get("raw", "")) for s in image.get("sentences", ()) if isinstance(s, dict)],
                "filename": image.get("filename")}
        if "cocoid" in image:
            item["cocoid"] = image["cocoid"]
        items.append(item)
    models = encoder.models().with_backbone(source.backbone())
    info = {"documents": "image", "models": models.to_json(),
            "build": {"mlsr": __version__, "source": {"dataset": recorded_name(source.name, source.revision),
                                                     "revision": source.revision,
                                                     "split": split, "image_root": _relative(root, out)},
                      "skipped": [], "seconds": round(time.perf_counter() - started, 2)}}
    index = SparseIndex.build(vectors, items, vocab=encoder.vocab, dense=dense, info=info, precision=precision)
    report.images = len(items)
    report.image_source = "local files" if root else ("COCO URLs" if items and str(items[0]["image"]).startswith("http")
                                                      else "none (placeholder)")
    report.seconds = time.perf_counter() - started
    return index, report


def _relative(folder: Path | None, out: str | Path | None) -> str | None:
    """A folder as the manifest records it: relative to the index (a manifest may be published; no machine paths)."""
    if folder is None:
        return None
    return os.path.relpath(folder.resolve(), Path(out).resolve()) if out is not None else folder.name


def ensure_index(
    index_dir: str | Path,
    *,
    dataset: str | Path = DEFAULT_DATASET,
    split: str = DEFAULT_SPLIT,
    head: str,
    tokenizer: str,
    device: str | None = None,
    precision: str = "float16",
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
    picture_progress: Progress | None = None,
    picture_total: Callable[[int], None] | None = None,
) -> ImportReport | None:
    """Build `index_dir` from a published dataset unless it already exists; the build's report, or None if it existed.

    The first start of the app and `python -m mlsr prepare` call this; later calls reuse the folder.
    Offline, `resolve` raises ModelLoadError saying the Hub could not be reached.
    """
    index_dir = Path(index_dir)
    if index_dir.exists():
        return None
    from mlsr.models.encoder import Encoder

    encoder = Encoder.head_only(head, tokenizer, device=device)
    logger.info("building %s from %s (%s split)", index_dir, dataset, split)
    _, report = import_dense(encoder, dataset, index_dir, split=split, precision=precision, progress=progress,
                             total=total, picture_progress=picture_progress, picture_total=picture_total)
    return report
