"""Published dense vectors -> a ready index: `import-dense`, and the app's default gallery (`prepare`).

The lsr42 datasets (`lsr42/mscoco-blip-dense`, `lsr42/flickr30k-blip-dense`, ...) hold BLIP's 256-d vectors of
every Karpathy-split image and caption. Applying the sparse head to one split's image vectors gives an index
without running the image encoder: no backbone, no image download. Vectors are streamed from the parquet
file in record batches and only the split's rows are kept, so memory grows with the split, not the dataset.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr import __version__
from mlsr.data.lsr42 import IMAGE_FILE, META_FILE
from mlsr.models.encoder import Encoder
from mlsr.errors import InputError, ModelLoadError
from mlsr.models.hub import Source, resolve
from mlsr.index.sparse import SparseIndex

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "lsr42/mscoco-blip-dense"
DEFAULT_SPLIT = "test"
DEFAULT_INDEX = "index/mscoco-test"
COCO_IMAGE_URL = "http://images.cocodataset.org/{filepath}/{filename}"
READ_BATCH = 4096  # parquet rows per record batch: what the reader holds at once besides the kept rows
# The dense model behind each published dataset family (recorded in the index; its weights are not loaded).
PUBLISHED_BACKBONES = {"mscoco-blip": "Salesforce/blip-itm-base-coco", "flickr30k-blip": "Salesforce/blip-itm-base-flickr"}

Progress = Callable[[int], None]


@dataclass
class ImportReport:
    """What `import_dense` wrote: images, the image source used, and how long it took."""

    images: int = 0
    split: str = ""
    image_source: str = ""
    seconds: float = 0.0
    missing_images: list[str] = field(default_factory=list)  # with --image-root: files not found there


def resolve_dataset(name_or_path: str | Path, files: Sequence[str]) -> Source:
    """A dense dataset's folder (local, or the Hub files `files` downloaded into the cache); says what is missing."""
    source = resolve(name_or_path, list(files), repo_type="dataset", what="dense dataset")
    missing = [name for name in files if not (source.folder / name).is_file()]
    if missing:
        raise ModelLoadError(f"dense dataset {source.name!r} lacks {', '.join(missing)} in {source.folder}.")
    return source


def read_meta(folder: Path, name: str) -> dict:
    """`dataset_meta.json` (Karpathy format) with its `images` list checked."""
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"dense dataset {name!r}: {META_FILE} cannot be read as JSON ({error}).") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("images"), list):
        raise ModelLoadError(f"dense dataset {name!r}: {META_FILE} has no 'images' list (Karpathy format).")
    return meta


def split_images(meta: dict, split: str, name: str) -> list[dict]:
    """The metadata entries of one split's images (with `restval` counted as itself), in file order."""
    images = [image for image in meta["images"] if isinstance(image, dict) and image.get("split") == split]
    if not images:
        counts: dict[str, int] = {}
        for image in meta["images"]:
            counts[str(image.get("split"))] = counts.get(str(image.get("split")), 0) + 1
        raise InputError(f"dense dataset {name!r} has no images in split {split!r}; it has {counts}.")
    for image in images:
        if "imgid" not in image or not isinstance(image.get("sentences", []), list):
            raise ModelLoadError(f"dense dataset {name!r}: {META_FILE} has an image entry without imgid/sentences.")
    return images


def stream_vectors(path: Path, wanted: set[str], batch_rows: int = READ_BATCH) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, (n, d) float32) chunks of the rows of an (`id`, `emb`) parquet file whose id is in `wanted`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        batches = reader.iter_batches(batch_size=batch_rows, columns=["id", "emb"])
        for batch in batches:
            ids = [str(item) for item in batch.column(0).to_pylist()]
            keep = np.fromiter((item in wanted for item in ids), dtype=bool, count=len(ids))
            if not keep.any():
                continue
            column = batch.column(1)
            if column.null_count:
                raise ModelLoadError(f"{path}: {column.null_count} rows have no emb.")
            lengths = np.asarray(column.value_lengths())
            if (lengths != lengths[0]).any():
                raise ModelLoadError(f"{path}: emb lists have different lengths.")
            values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
            vectors = values.reshape(len(ids), int(lengths[0]))[keep]
            if not np.isfinite(vectors).all():
                raise ModelLoadError(f"{path}: emb holds NaN or infinite values.")
            yield [item for item, k in zip(ids, keep) if k], vectors
    except (OSError, KeyError, pa.ArrowException) as error:
        raise ModelLoadError(f"{path}: cannot read the columns id and emb ({error}).") from None


def collect_vectors(path: Path, ids: Sequence[str], progress: Progress | None = None,
                    transform: Callable[[list[str], np.ndarray], object] | None = None
                    ) -> tuple[np.ndarray, list, np.ndarray]:
    """The vectors of `ids`, in that order, streamed from `path`; `transform` maps each chunk as it arrives.

    Returns the (len(ids), d) dense array, the transformed chunks in file order, and `order`: row i of
    the result is row `order[i]` of the chunks stacked in file order.
    """
    position = {item: i for i, item in enumerate(ids)}
    found: list[np.ndarray] = []
    dense_chunks: list[np.ndarray] = []
    outputs: list = []
    for chunk_ids, vectors in stream_vectors(path, set(position)):
        found.append(np.fromiter((position[item] for item in chunk_ids), dtype=np.int64, count=len(chunk_ids)))
        dense_chunks.append(vectors)
        if transform is not None:
            outputs.append(transform(chunk_ids, vectors))
        if progress:
            progress(len(chunk_ids))
    rows = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    if len(rows) != len(ids) or len(np.unique(rows)) != len(ids):
        missing = sorted(set(range(len(ids))) - set(rows.tolist()))
        raise ModelLoadError(f"{path}: {len(missing)} ids of the split have no row (e.g. {ids[missing[0]]!r})."
                             if missing else f"{path}: the id column has duplicates.")
    order = np.argsort(rows, kind="stable")
    dense = np.concatenate(dense_chunks)[order] if dense_chunks else np.zeros((0, 0), np.float32)
    return dense, outputs, order


def backbone_record(name: str, meta: dict) -> dict:
    """The dense model that made a dataset's vectors: from an `encode-dense` record, else the known published ones.

    The published datasets do not name their model in the files, and without loading its weights the
    backbone's fingerprint is unknown (None): the app then checks only the head and the vocabulary.
    """
    recorded = (meta.get("mlsr") or {}).get("backbone") if isinstance(meta.get("mlsr"), dict) else None
    if isinstance(recorded, dict):
        return {"id": recorded.get("id"), "revision": recorded.get("revision"), "fingerprint": recorded.get("fingerprint")}
    for key, backbone in PUBLISHED_BACKBONES.items():
        if key in name.lower():
            return {"id": backbone, "revision": None, "fingerprint": None}
    return {"id": None, "revision": None, "fingerprint": None}


def image_of(image: dict, name: str, out: Path, image_root: Path | None) -> str | None:
    """The item's image: a file under `image_root` (stored relative to the index), the COCO URL, or None."""
    filename, filepath = str(image.get("filename", "")), str(image.get("filepath", "") or "")
    if image_root is not None:
        for candidate in (image_root / filepath / filename, image_root / filename):
            if filename and candidate.is_file():
                return os.path.relpath(candidate.resolve(), out.resolve())
        return None
    if "coco" in name.lower() or filename.startswith("COCO_"):
        return COCO_IMAGE_URL.format(filepath=filepath, filename=filename) if filepath else None
    return None


def import_dense(
    encoder: Encoder,
    dataset: str | Path,
    out: str | Path,
    *,
    split: str = DEFAULT_SPLIT,
    image_root: str | Path | None = None,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
) -> tuple[SparseIndex, ImportReport]:
    """Write an index of one split's images from a dense dataset: the head applied to their published vectors.

    Items carry `id` (= imgid), `image` (COCO URL, or a file under `image_root`, else None: the app shows a
    placeholder), `captions`, `filename`; `dense.npy` keeps the dense vectors for the FAISS comparison.
    `total` is called once with the number of images before `progress` counts them.
    """
    started = time.perf_counter()
    out = Path(out)
    root = Path(image_root).expanduser() if image_root is not None else None
    if root is not None and not root.is_dir():
        raise InputError(f"--image-root {root} is not a folder.")
    source = resolve_dataset(dataset, [IMAGE_FILE, META_FILE])
    meta = read_meta(source.folder, source.name)
    images = split_images(meta, split, source.name)
    if total:
        total(len(images))
    ids = [str(image["imgid"]) for image in images]
    dense, chunks, order = collect_vectors(source.folder / IMAGE_FILE, ids, progress,
                                             transform=lambda _ids, vectors: encoder.sparsify(vectors))
    if dense.shape[1] != encoder.dense_size:
        raise ModelLoadError(f"dense dataset {source.name!r} has {dense.shape[1]}-d vectors, the head reads"
                             f" {encoder.dense_size}-d ones; pick the head trained on this dataset's model.")
    vectors = sp.vstack(chunks, format="csr")[order]
    report = ImportReport(split=split)
    items = []
    for image in images:
        location = image_of(image, source.name, out, root)
        if root is not None and location is None:
            report.missing_images.append(str(image.get("filename")))
        item = {"id": str(image["imgid"]), "image": location,
                "captions": [str(s.get("raw", "")) for s in image.get("sentences", ()) if isinstance(s, dict)],
                "filename": image.get("filename")}
        if "cocoid" in image:
            item["cocoid"] = image["cocoid"]
        items.append(item)
    models = encoder.models()
    models["backbone"] = backbone_record(source.name, meta)
    info = {"documents": "image", "models": models,
            "build": {"mlsr": __version__, "source": {"dataset": source.name, "revision": source.revision,
                                                     "split": split, "image_root": str(root) if root else None},
                      "skipped": [], "seconds": round(time.perf_counter() - started, 2)}}
    index = SparseIndex.build(vectors, items, vocab=encoder.vocab, dense=dense, info=info)
    index.save(out)
    report.images = len(items)
    report.image_source = "local files" if root else ("COCO URLs" if items and str(items[0]["image"]).startswith("http")
                                                      else "none (placeholder)")
    report.seconds = time.perf_counter() - started
    return index, report


def ensure_index(
    index_dir: str | Path,
    *,
    dataset: str | Path = DEFAULT_DATASET,
    split: str = DEFAULT_SPLIT,
    head: str,
    tokenizer: str,
    device: str | None = None,
    progress: Progress | None = None,
    total: Callable[[int], None] | None = None,
) -> bool:
    """Build `index_dir` from a published dataset unless it already exists; True when it was built now.

    The first start of the app and `python -m mlsr prepare` call this; later calls reuse the folder.
    Offline, `resolve` raises ModelLoadError saying the Hub could not be reached.
    """
    index_dir = Path(index_dir)
    if index_dir.exists():
        return False
    encoder = Encoder.head_only(head, tokenizer, device=device)
    logger.info("building %s from %s (%s split)", index_dir, dataset, split)
    import_dense(encoder, dataset, index_dir, split=split, progress=progress, total=total)
    return True


def prepare_command(index_dir: str | Path, dataset: str | Path = DEFAULT_DATASET) -> str:
    """The command that builds a missing default index, for messages."""
    extra = "" if str(dataset) == DEFAULT_DATASET else f" --dataset {dataset}"
    return f"python -m mlsr prepare --index {index_dir}{extra}"


def builds_on_first_start(index_dir: str | Path, dataset: str | None) -> bool:
    """The app builds a missing index from published vectors when it is the default one or a dataset is named."""
    return dataset is not None or Path(index_dir) == Path(DEFAULT_INDEX)


def missing_index_hint(index_dir: str | Path, dataset: str | None) -> str:
    """What to run when the app's index is missing and could not be built here (offline), or ''."""
    if Path(index_dir).exists() or not builds_on_first_start(index_dir, dataset):
        return ""
    dataset = dataset or DEFAULT_DATASET
    size = " (a download of roughly 0.3 GB)" if dataset == DEFAULT_DATASET else ""
    return (f" To build it from the published vectors of {dataset}{size}, run"
            f" `{prepare_command(index_dir, dataset)}` on a machine that reaches the Hugging Face Hub.")
