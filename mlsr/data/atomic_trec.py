"""The files of the seed paper's task, AToMiC (TREC 2023): queries, images and qrels, read as a subset.

Reads the Hub datasets `TREC-AToMiC/AToMiC-Texts-v0.2.1` (sections: `text_id`, `page_title`, `section_title`,
`context_section_description`, ...), `TREC-AToMiC/AToMiC-Images-v0.2` (`image_id`, `image` = {bytes, path},
`caption_reference_description`, ...) and `TREC-AToMiC/AToMiC-Qrels-v0.2` (`text_id`, `Q0`, `image_id`, `rel`),
all parquet shards named `<split>-NNNNN-of-NNNNN*.parquet` (or kept in a `<split>/` folder); a local folder with
the same files works the same way. `limit` validation queries are taken with the images their qrels name,
plus sampled distractors; the image shards are streamed one at a time (the full collection is 11M images).
Documents are built three ways, the seed's three runs: `image`, `caption`, `image+caption`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from mlsr.data.parquet import batches, open_parquet, pyarrow, reading
from mlsr.data.trec import Qrels
from mlsr.errors import InputError, ModelLoadError
from mlsr.text import MAX_TEXT_CHARS

TEXTS = "TREC-AToMiC/AToMiC-Texts-v0.2.1"
IMAGES = "TREC-AToMiC/AToMiC-Images-v0.2"
QRELS = "TREC-AToMiC/AToMiC-Qrels-v0.2"
QUERY_FIELDS = ("page_title", "section_title", "context_section_description")  # the seed's query


@dataclass
class Collection:
    """The selected queries, their qrels and the images (needed + distractors) with captions."""

    query_ids: list[str]
    queries: list[str]
    qrels: Qrels
    image_ids: list[str] = field(default_factory=list)
    image_bytes: list[bytes] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    missing_images: int = 0
    shards_read: int = 0


def _parquet_shards(name_or_path: str | Path, split: str | None) -> Iterator[Path]:
    """The dataset's parquet shards of `split` (all when None), one local path at a time (downloaded lazily)."""
    path = Path(str(name_or_path)).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if _in_split(p.relative_to(path).as_posix(), split))
        if not files:
            raise ModelLoadError(f"{path} holds no parquet shards{f' of split {split!r}' if split else ''}.")
        yield from files
        return
    from huggingface_hub import HfApi, hf_hub_download

    network = _network_errors()
    try:
        names = sorted(f for f in HfApi().list_repo_files(str(name_or_path), repo_type="dataset")
                       if f.endswith(".parquet") and _in_split(f, split))
    except network as error:
        raise ModelLoadError(f"dataset {name_or_path!r}: not a local folder, and the Hub cannot list it"
                             f" ({type(error).__name__}); connect to the network or pass a local copy.") from None
    if not names:
        raise ModelLoadError(f"dataset {name_or_path!r} has no parquet"
                             f" shards{f' of split {split!r}' if split else ''}.")
    for name in names:
        try:
            yield Path(hf_hub_download(str(name_or_path), name, repo_type="dataset"))
        except network as error:
            raise ModelLoadError(f"dataset {name_or_path!r}: cannot download {name}"
                                 f" ({type(error).__name__}).") from None


def _network_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises when the Hub cannot be reached or answers with an error.

    huggingface_hub raises its HTTP library's own exceptions (httpx2, or httpx in older releases) for
    connection failures, which are not OSErrors; both are optional imports here.
    """
    from huggingface_hub.errors import HfHubHTTPError

    errors: list[type[BaseException]] = [HfHubHTTPError, OSError, ValueError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).HTTPError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)


def _in_split(relative: str, split: str | None) -> bool:
    if split is None:
        return True
    parts = relative.split("/")
    return parts[-1].startswith(f"{split}-") or parts[-1] == f"{split}.parquet" or split in parts[:-1]


def _batches(path: Path, columns: Sequence[str], batch_rows: int) -> Iterator[dict[str, list]]:
    for batch in batches(path, columns, batch_rows):
        yield {name: batch.column(name).to_pylist() for name in columns}


def _image_rows(path: Path, wanted: Callable[[str], bool]) -> Iterator[tuple[str, bytes | None, str]]:
    """(image_id, image bytes, reference caption) of the rows `wanted` accepts, one row group at a time.

    The ids of a row group are read first; its image bytes only when some row is wanted, so streaming
    past a shard of unwanted images decodes ids, not pictures.
    """
    pa = pyarrow()
    columns = ("image_id", "image", "caption_reference_description")
    reader = open_parquet(path, columns)
    for group in range(reader.num_row_groups):
        with reading(path):
            ids = [str(i) for i in reader.read_row_group(group, columns=["image_id"]).column(0).to_pylist()]
            keep = [row for row, image_id in enumerate(ids) if wanted(image_id)]
            if not keep:
                continue
            table = reader.read_row_group(group, columns=list(columns[1:])).take(pa.array(keep))
            images, captions = table.column(0).to_pylist(), table.column(1).to_pylist()
        for j, row in enumerate(keep):
            yield ids[row], _bytes(images[j]), _text(captions[j])


def atomic_query(page_title: str, section_title: str, section_text: str) -> str:
    """The seed paper's AToMiC query: page title, section title and section text, joined by spaces.

    Empty fields are left out. Article mode (`mlsr.articles.sections`) builds its section queries the same way.
    """
    return " ".join(part.strip() for part in (page_title, section_title, section_text) if part and part.strip())


def _text(value) -> str:
    """A field that may be a string, a list of strings (multilingual captions) or missing."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value if v)
    return str(value)


def _bytes(value) -> bytes | None:
    if isinstance(value, dict):
        value = value.get("bytes")
    return bytes(value) if isinstance(value, (bytes, bytearray)) and value else None  # bytes(b) is b itself


def load_collection(*, texts: str | Path = TEXTS, images: str | Path = IMAGES, qrels: str | Path = QRELS,
                    split: str = "validation", limit: int = 100, distractors: int | None = None, seed: int = 0,
                    distractor_rate: float = 0.5,
                    max_chars: int = MAX_TEXT_CHARS, max_image_shards: int | None = None,
                    progress: Callable[[str], None] | None = None) -> Collection:
    """The first `limit` judged queries of `split` (by text id), their relevant images and sampled distractors.

    Distractors: while the image shards stream by, each other image is taken with probability
    `distractor_rate` (seeded) until `distractors` (default 10 per query) are in.
    """
    if limit < 1:
        raise InputError("limit must be at least 1.")
    if not 0 < distractor_rate <= 1:
        raise InputError("distractor_rate must be in (0, 1].")
    judged = _read_qrels(qrels, split)
    chosen = sorted(q for q, rels in judged.items() if any(r > 0 for r in rels.values()))[:limit]
    if not chosen:
        raise InputError(f"the qrels of split {split!r} judge no image relevant.")
    found = _query_texts(texts, split, set(chosen), max_chars)
    query_ids = [q for q in chosen if q in found]
    collection = Collection(query_ids, [found[q] for q in query_ids], {q: judged[q] for q in query_ids})
    needed = {doc for q in query_ids for doc, rel in judged[q].items() if rel > 0}
    extra = 10 * len(query_ids) if distractors is None else distractors
    _sample_images(collection, images, needed, extra, np.random.default_rng(seed), distractor_rate,
                   max_image_shards, progress)
    return collection


def _read_qrels(qrels: str | Path, split: str) -> Qrels:
    """Every judgement of `split`: {text id: {image id: relevance}}."""
    judged: Qrels = {}
    for shard in _parquet_shards(qrels, split):
        for batch in _batches(shard, ("text_id", "image_id", "rel"), 65536):
            for text_id, image_id, rel in zip(batch["text_id"], batch["image_id"], batch["rel"]):
                judged.setdefault(str(text_id), {})[str(image_id)] = int(rel)
    return judged


def _query_texts(texts: str | Path, split: str, wanted: set[str], max_chars: int) -> dict[str, str]:
    """The AToMiC query of each wanted text id (page title + section title + context), cut at `max_chars`."""
    found: dict[str, str] = {}
    for shard in _parquet_shards(texts, split):
        for batch in _batches(shard, ("text_id", *QUERY_FIELDS), 4096):
            for i, text_id in enumerate(batch["text_id"]):
                if str(text_id) in wanted:
                    text = atomic_query(*(_text(batch[f][i]) for f in QUERY_FIELDS))
                    found[str(text_id)] = text[:max_chars] or "(empty)"
        if len(found) == len(wanted):
            break
    return found


def _sample_images(collection: Collection, images: str | Path, needed: set[str], extra: int,
                   rng: np.random.Generator, distractor_rate: float, max_image_shards: int | None,
                   progress: Callable[[str], None] | None) -> None:
    """Stream the image shards into `collection`: every needed image, and `extra` distractors, each other image
    taken with probability `distractor_rate`; stops when all are in or after `max_image_shards`."""
    taken_needed = 0
    seen: set[str] = set()

    def take(image_id: str) -> bool:
        """Needed images always; others with probability `distractor_rate` while distractors are missing."""
        nonlocal extra
        if image_id in seen:
            return False
        if image_id in needed:
            return True
        if extra > 0 and rng.random() < distractor_rate:
            extra -= 1
            return True
        return False

    for shard in _parquet_shards(images, None):
        collection.shards_read += 1
        if progress:
            progress(f"image shard {collection.shards_read}: {shard.name}")
        for image_id, data, caption in _image_rows(shard, take):
            seen.add(image_id)
            if data is None:
                extra += image_id not in needed  # an image without bytes does not count as a distractor
                continue
            collection.image_ids.append(image_id)
            collection.image_bytes.append(data)
            collection.captions.append(caption)
            if image_id in needed:
                needed.discard(image_id)
                taken_needed += 1
        if not needed and extra <= 0:
            break
        if max_image_shards is not None and collection.shards_read >= max_image_shards:
            break
    collection.missing_images = len(needed)
    if not taken_needed:
        raise InputError("none of the relevant images was found in the image shards read; read more shards.")
