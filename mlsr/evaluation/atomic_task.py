"""The seed paper's task: image suggestion on AToMiC (TREC 2023), as a small, reproducible recipe (not atomic writes).

Queries (page title + section title + section text) are encoded once; documents are built the seed's
three ways (`image`, `caption`, `image+caption`) and each is evaluated in each query mode through the
evaluation loop. The files are read by `mlsr.data.atomic_trec`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.data.atomic_trec import Collection
from mlsr.errors import InputError
from mlsr.evaluation.runs import Evaluation, QuerySet, evaluate_index
from mlsr.evaluation.tables import text_table
from mlsr.index.sparse import SparseIndex
from mlsr.index.rows import place_rows
from mlsr.items import Item
from mlsr.settings import DOCUMENTS, Status

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.models.encoder import Encoder

MEASURES = ("NDCG@5", "NDCG@10", "NDCG@100", "NDCG@500", "NDCG@1000", "MAP@5", "MAP@10", "MAP@100", "MAP@500",
            "MAP@1000", "R@20", "R@100", "R@500", "R@1000")
_TABLES = (("Table 2: NDCG@k", "NDCG"), ("Table 3: MAP@k", "MAP"), ("Table 4: R@k", "R"))
_LABELS = {"image": "T -> I (image)", "caption": "T -> T (caption)", "image+caption": "T -> T+I (image+caption)"}


@dataclass
class AtomicReport:
    """The three document representations evaluated in each query mode."""

    evaluations: dict[str, Evaluation]
    collection: Collection
    seconds: float = 0.0


def document_vectors(encoder: Encoder, collection: Collection, documents: Sequence[str]) -> dict[str, sp.csr_matrix]:
    """(images, vocab) CSR documents of each representation; images and captions are encoded once each."""
    image_vectors = caption_vectors = None
    if any(doc != "caption" for doc in documents):
        image_vectors = encoder.encode_images(collection.image_bytes)
    if any(doc != "image" for doc in documents):
        with_caption = [i for i, c in enumerate(collection.captions) if c.strip()]
        encoded = encoder.encode_captions([collection.captions[i][:encoder.max_chars] for i in with_caption]) \
            if with_caption else sp.csr_matrix((0, encoder.vocab_size), dtype=np.float32)
        caption_vectors = place_rows(encoded, with_caption, len(collection.captions))
    made = {"image": image_vectors, "caption": caption_vectors}
    if "image+caption" in documents:
        if image_vectors is None or caption_vectors is None:  # both are encoded whenever this document is asked for
            raise ValueError("image+caption documents need the image and the caption vectors.")
        made["image+caption"] = image_vectors + caption_vectors
    return {doc: made[doc] for doc in documents}


def run_atomic(encoder: Encoder, collection: Collection, *, modes: Sequence[str] = ("no_expand", "expand"),
               documents: Sequence[str] = DOCUMENTS, measures: Sequence[str] = MEASURES,
               runs_dir: str | Path | None = None, progress: Status | None = None) -> AtomicReport:
    """Encode queries, images and captions once; evaluate each document representation in each query mode."""
    started = time.perf_counter()
    for doc in documents:
        if doc not in DOCUMENTS:
            raise InputError(f"documents must be among {DOCUMENTS}, got {doc!r}.")
    if progress:
        progress(f"encoding {len(collection.queries)} queries, {len(collection.image_ids)} images and their captions")
    queries = QuerySet(collection.query_ids, encoder.encode_text_views(collection.queries))
    items = [Item(id=image_id, captions=[c] if c else [])
             for image_id, c in zip(collection.image_ids, collection.captions)]
    evaluations = {}
    for doc, vectors in document_vectors(encoder, collection, documents).items():
        index = SparseIndex.build(vectors, items, vocab=encoder.vocab, precision="float32")  # evaluation: exact weights
        evaluations[doc] = evaluate_index(index, queries, collection.qrels, runs=modes, measures=measures,
                                          runs_dir=runs_dir, run_prefix=f"{doc.replace('+', '_')}-")
    return AtomicReport(evaluations, collection, time.perf_counter() - started)


def format_tables(report: AtomicReport) -> str:
    """The seed's Tables 2-4 (NDCG@k, MAP@k, R@k in %): one row per document representation and query mode."""
    blocks = []
    for title, kind in _TABLES:
        measures = [m for m in next(iter(report.evaluations.values())).measures if m.split("@")[0] == kind]
        rows = [[f"{_LABELS[doc]}, query {result.run}", *(f"{100 * result.metrics[m]:.2f}" for m in measures)]
                for doc, evaluation in report.evaluations.items() for result in evaluation.results]
        blocks.append(f"{title}\n" + text_table(["run", *measures], rows))
    c = report.collection
    blocks.append(f"{len(c.query_ids)} validation queries, {len(c.image_ids)} images ({c.missing_images} relevant"
                  f" images"
                  f" not found in the {c.shards_read} image shards read); metrics in %")
    return "\n\n".join(blocks)
