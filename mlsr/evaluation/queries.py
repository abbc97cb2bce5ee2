"""Where evaluation queries come from: a dense dataset's split (published caption vectors) or a text file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlsr.data.lsr42 import META_FILE, TEXT_FILE, open_dataset
from mlsr.data.trec import Qrels
from mlsr.errors import InputError
from mlsr.evaluation.runs import QuerySet
from mlsr.query_vectors import QueryVectors
from mlsr.settings import Progress

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.models.encoder import Encoder


def dataset_queries(encoder: Encoder, dataset: str | Path, split: str, *, no_expand: bool = True,
                    progress: Progress | None = None) -> tuple[QuerySet, Qrels]:
    """A Karpathy split's captions as queries (their published dense vectors through the head) and as qrels
    each caption's own image (relevance 1). Needs only the head and tokenizer."""
    source = open_dataset(dataset, [TEXT_FILE, META_FILE])
    ids, texts, qrels = [], [], {}
    for image in source.images(split):
        for sentence in image.get("sentences", ()):
            qid = str(sentence["sentid"])
            ids.append(qid)
            texts.append(str(sentence.get("raw", "")))
            qrels[qid] = {str(image["imgid"]): 1}
    if not ids:
        raise InputError(f"dense dataset {source.name!r}: split {split!r} has no captions.")
    dense = source.vectors(TEXT_FILE, ids, progress)
    masked = encoder.sparsify(dense, mask_texts=texts) if no_expand else None
    return QuerySet(ids, QueryVectors(encoder.sparsify(dense), masked, dense)), qrels


def text_queries(encoder: Encoder, path: str | Path) -> QuerySet:
    """Queries from a text file: `qid<TAB>text` per line, or one text per line (ids 1, 2, ...); one backbone pass."""
    try:
        lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read queries from {path} ({error}).") from None
    if not lines:
        raise InputError(f"{path} holds no queries.")
    tabbed = all("\t" in line for line in lines)
    ids = [line.split("\t", 1)[0].strip() for line in lines] if tabbed else [str(i) for i in range(1, len(lines) + 1)]
    texts = [line.split("\t", 1)[1] for line in lines] if tabbed else lines
    if len(set(ids)) != len(ids):
        raise InputError(f"{path}: query ids repeat; give each query its own id.")
    return QuerySet(ids, encoder.encode_text_views(texts))
