"""Paired dense vectors in the layout of the published lsr42 datasets: the one reader and writer of that layout.

A dataset folder (or Hub dataset repo, e.g. `lsr42/mscoco-blip-dense`) holds `img_embs.parquet` and
`text_embs.parquet` (columns `id`: string, `emb`: list of floats, one row per image / caption) and
`dataset_meta.json` in the Karpathy split format: `{"images": [{"imgid", "filename", "filepath", "split",
"sentids", "sentences": [{"raw", "sentid", "imgid", "tokens"}]}, ...]}`. Image rows are keyed by
`str(imgid)`, caption rows by `str(sentid)`. Written by `encode-dense`; read by `train`, `import-dense`
and `evaluate`. Vectors are streamed in record batches, so reading one split of a large dataset holds
that split, not the dataset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator, Sequence

import numpy as np

from mlsr._files import atomic_path
from mlsr.data.parquet import batches, pyarrow, reading
from mlsr.errors import InputError, ModelLoadError
from mlsr.models.hub import resolve
from mlsr.models.record import ModelRef
from mlsr.settings import Progress

IMAGE_FILE = "img_embs.parquet"
TEXT_FILE = "text_embs.parquet"
META_FILE = "dataset_meta.json"
_DATA_FILES = (IMAGE_FILE, TEXT_FILE, META_FILE)
READ_BATCH = 4096  # parquet rows per record batch: what the reader holds at once besides the rows it keeps
# The dense model behind each published dataset family, by the dataset's name (`lsr42/mscoco-blip-dense`, or a
# local copy in a folder named like it); recorded in an index built from its vectors, never loaded.
_PUBLISHED_BACKBONES = {"mscoco-blip": "Salesforce/blip-itm-base-coco",
                       "flickr30k-blip": "Salesforce/blip-itm-base-flickr"}


@dataclass(frozen=True)
class DatasetFolder:
    """A dataset's local folder (downloaded into the Hugging Face cache for a Hub id) and its metadata."""

    name: str
    folder: Path
    revision: str | None
    meta: dict

    def images(self, split: str | None = None) -> list[dict]:
        """The metadata entries of the images (of one split), in file order; checked to have imgid and sentences."""
        images = [image for image in self.meta["images"] if split is None or image.get("split") == split]
        if not images:
            counts: dict[str, int] = {}
            for image in self.meta["images"]:
                counts[str(image.get("split"))] = counts.get(str(image.get("split")), 0) + 1
            raise InputError(f"dense dataset {self.name!r} has no images in split {split!r}; it has {counts}.")
        return images

    def vectors(self, file: str, ids: Sequence[str], progress: Progress | None = None) -> np.ndarray:
        """The (len(ids), d) float32 vectors of `ids` in that order, streamed from `file` (IMAGE_FILE or TEXT_FILE)."""
        position = {item: i for i, item in enumerate(ids)}
        rows, chunks = [], []
        for chunk_ids, vectors in stream_vectors(self.folder / file, set(position)):
            rows.append(np.fromiter((position[item] for item in chunk_ids), dtype=np.int64, count=len(chunk_ids)))
            chunks.append(vectors)
            if progress:
                progress(len(chunk_ids))
        found = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        if len(found) != len(ids) or len(np.unique(found)) != len(ids):
            missing = sorted(set(range(len(ids))) - set(found.tolist()))
            raise ModelLoadError(f"dense dataset {self.name!r}: {len(missing)} ids have no row in {file}"
                                 f" (e.g. {ids[missing[0]]!r})." if missing
                                 else f"dense dataset {self.name!r}: the id column of {file} has duplicates.")
        dense = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
        return dense[np.argsort(found, kind="stable")]  # row i of the chunks is id found[i]

    def backbone(self) -> ModelRef:
        """The dense model that made the vectors: from an `encode-dense` record, else the known published ones.

        The published datasets do not name their model in the files; without loading its weights the
        backbone's fingerprint is unknown (None), and an index can check only the head and the vocabulary.
        """
        recorded = self.meta.get("mlsr", {}).get("backbone") if isinstance(self.meta.get("mlsr"), dict) else None
        if isinstance(recorded, dict):
            return ModelRef.from_json(recorded)
        family = Path(self.name).name.lower()
        return ModelRef(next((model for key, model in _PUBLISHED_BACKBONES.items() if key in family), None))


def open_dataset(name_or_path: str | Path, files: Sequence[str] = _DATA_FILES, *,
                 revision: str | None = None) -> DatasetFolder:
    """A dense dataset by Hub id or folder, with `files` present (only those are downloaded) and its metadata read."""
    source = resolve(name_or_path, list(files), revision=revision, repo_type="dataset", what="dense dataset")
    missing = [name for name in files if not (source.folder / name).is_file()]
    if missing:
        raise ModelLoadError(
            f"dense dataset {source.name!r} lacks {', '.join(missing)} in {source.folder}; make one with"
            " `python -m mlsr encode-dense` or use a published one such as lsr42/mscoco-blip-dense."
        )
    meta = _read_meta(source.folder / META_FILE, source.name)
    return DatasetFolder(source.name, source.folder, source.revision, meta)


def _read_meta(path: Path, name: str) -> dict:
    """`dataset_meta.json` (Karpathy format), with every image entry checked to have imgid and sentences."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"dense dataset {name!r}: {META_FILE} cannot be read as JSON ({error}).") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("images"), list):
        raise ModelLoadError(f"dense dataset {name!r}: {META_FILE} has no 'images' list (Karpathy format).")
    for image in meta["images"]:
        if not isinstance(image, dict) or "imgid" not in image or not isinstance(image.get("sentences", []), list):
            raise ModelLoadError(f"dense dataset {name!r}: {META_FILE} has an image entry without imgid/sentences.")
        for sentence in image.get("sentences", ()):
            if not isinstance(sentence, dict) or "sentid" not in sentence or "raw" not in sentence:
                raise ModelLoadError(
                    f"dense dataset {name!r}: image {image['imgid']} has a sentence without sentid/raw.")
    return meta


def stream_vectors(path: Path, wanted: set[str] | None = None,
                   batch_rows: int | None = None) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, (n, d) float32) chunks of the rows of an (`id`, `emb`) parquet file (those in `wanted`, if given)."""
    pa = pyarrow()
    for batch in batches(path, ("id", "emb"), batch_rows or READ_BATCH):
        ids = [str(item) for item in batch.column(0).to_pylist()]
        keep = np.ones(len(ids), bool) if wanted is None else \
            np.fromiter((item in wanted for item in ids), dtype=bool, count=len(ids))
        if not keep.any():
            continue
        column = batch.column(1)
        if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)
                or pa.types.is_fixed_size_list(column.type)):
            raise ModelLoadError(f"{path}: column emb must hold lists of floats, not {column.type}.")
        if column.null_count:
            raise ModelLoadError(f"{path}: {column.null_count} rows have no emb.")
        lengths = np.asarray(column.value_lengths())
        if len(lengths) and (lengths != lengths[0]).any():
            raise ModelLoadError(f"{path}: emb lists have different lengths ({sorted(set(lengths.tolist()))[:5]}).")
        with reading(path):
            values = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        # a writable copy of the kept rows: arrow's buffers are read-only, and torch wants to own what it trains on
        vectors = np.array(values.reshape(len(ids), int(lengths[0]) if len(lengths) else 0)[keep])
        if not np.isfinite(vectors).all():
            raise ModelLoadError(f"{path}: emb holds NaN or infinite values.")
        yield [item for item, k in zip(ids, keep) if k], vectors


def write_vectors(path: Path, ids: Sequence[str], vectors: np.ndarray) -> None:
    """Write one parquet table (`id` string, `emb` list<float>) atomically."""
    pa = pyarrow()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    offsets = np.arange(0, vectors.size + 1, max(vectors.shape[1], 1), dtype=np.int32)[: len(ids) + 1]
    emb = pa.ListArray.from_arrays(pa.array(offsets), pa.array(vectors.reshape(-1)))
    table = pa.table({"id": pa.array([str(item) for item in ids], pa.string()), "emb": emb})
    with atomic_path(path) as tmp:
        pa.parquet.write_table(table, tmp)


# -- the whole dataset, for training -----------------------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    """Caption-image pairs of some splits, as row numbers into a dataset's vector tables.

    `text_rows[i]` and `image_rows[i]` are the dense vectors of pair i; `captions[i]` its raw text.
    """

    text_rows: np.ndarray
    image_rows: np.ndarray
    captions: list[str]

    def __len__(self) -> int:
        return len(self.text_rows)

    def gallery(self) -> tuple[np.ndarray, np.ndarray]:
        """(the distinct image rows, in first-seen order; for each pair the position of its image among them)."""
        gallery, first = np.unique(self.image_rows, return_index=True)
        order = np.argsort(first, kind="stable")
        position = np.empty(len(gallery), dtype=np.int64)
        position[order] = np.arange(len(gallery))
        return gallery[order], position[np.searchsorted(gallery, self.image_rows)]


@dataclass
class DenseDataset:
    """Dense image and caption vectors (rows are items) with the Karpathy metadata that pairs them."""

    image_ids: list[str]
    image_vectors: np.ndarray  # (n_images, d) float32
    text_ids: list[str]
    text_vectors: np.ndarray  # (n_texts, d) float32
    images: list[dict]  # dataset_meta.json "images"
    info: dict = field(default_factory=dict)  # the rest of dataset_meta.json
    source: str = ""
    revision: str | None = None

    @property
    def dense_size(self) -> int:
        return int(self.image_vectors.shape[1])

    def split_counts(self) -> dict[str, int]:
        """Images per split."""
        counts: dict[str, int] = {}
        for image in self.images:
            counts[image.get("split", "")] = counts.get(image.get("split", ""), 0) + 1
        return counts

    def pairs(self, splits: Sequence[str]) -> Pairs:
        """Every (caption, image) pair whose image is in one of `splits`, in metadata order."""
        image_row = {item: row for row, item in enumerate(self.image_ids)}
        text_row = {item: row for row, item in enumerate(self.text_ids)}
        texts, images, captions = [], [], []
        for image in self.images:
            if image.get("split") not in splits:
                continue
            for sentence in image.get("sentences", ()):
                texts.append(text_row[str(sentence["sentid"])])
                images.append(image_row[str(image["imgid"])])
                captions.append(str(sentence["raw"]))
        return Pairs(np.asarray(texts, dtype=np.int64), np.asarray(images, dtype=np.int64), captions)


def load_dense_dataset(name_or_path: str | Path, *, revision: str | None = None) -> DenseDataset:
    """Read a whole dense dataset from a local folder or a Hub dataset repo id (e.g. `lsr42/mscoco-blip-dense`)."""
    dataset = open_dataset(name_or_path, revision=revision)
    image_ids, image_vectors = _all_vectors(dataset.folder / IMAGE_FILE)
    text_ids, text_vectors = _all_vectors(dataset.folder / TEXT_FILE)
    if image_vectors.shape[1] != text_vectors.shape[1]:
        raise ModelLoadError(
            f"dense dataset {dataset.name!r}: image vectors have {image_vectors.shape[1]} dims, text vectors"
            f" {text_vectors.shape[1]}; both must come from the same model."
        )
    images = dataset.meta["images"]
    known_images, known_texts = set(image_ids), set(text_ids)
    for image in images:
        if str(image["imgid"]) not in known_images:
            raise ModelLoadError(f"dense dataset {dataset.name!r}: image {image['imgid']} has no row in {IMAGE_FILE}.")
        for sentence in image.get("sentences", ()):
            if str(sentence["sentid"]) not in known_texts:
                raise ModelLoadError(
                    f"dense dataset {dataset.name!r}: sentence {sentence['sentid']} has no row in {TEXT_FILE}.")
    info = {key: value for key, value in dataset.meta.items() if key != "images"}
    return DenseDataset(image_ids, image_vectors, text_ids, text_vectors, images, info, dataset.name, dataset.revision)


def _all_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    for chunk_ids, vectors in stream_vectors(path):
        ids += chunk_ids
        chunks.append(vectors)
    if len(set(ids)) != len(ids):
        raise ModelLoadError(f"{path}: the id column has duplicates.")
    return ids, (np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32))
