"""Text-to-image evaluation of an index: four runs (sparse expand, no_expand, hybrid; dense FAISS), TREC run
files, metrics (mlsr.evaluation.metrics) and the papers' table, with the published numbers beside ours.

Queries come either from a dense dataset (the published caption vectors of a Karpathy split, sparsified by
the head: no backbone needed) or from text (encoded by the full encoder); qrels from a TREC file or, for a
Karpathy split, each caption's own image.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.backends.local import LocalBackend, SearchBackend
from mlsr.data.lsr42 import META_FILE, TEXT_FILE
from mlsr.models.encoder import Encoder
from mlsr.errors import InputError
from mlsr.index.sparse import Results, SparseIndex
from mlsr._files import atomic_write_json
from mlsr.evaluation.metrics import Qrels, active_terms, flops, parse_measure, score_rankings, write_qrels, write_run
from mlsr.ingest.published import collect_vectors, read_meta, resolve_dataset, split_images
from mlsr.retrieval import HYBRID_DEPTH, hybrid_search

logger = logging.getLogger(__name__)

RUNS: tuple[str, ...] = ("expand", "no_expand", "hybrid", "dense")
RUN_LABELS = {"expand": "sparse expand", "no_expand": "sparse no_expand", "hybrid": "sparse hybrid",
              "dense": "dense (FAISS)"}
DEFAULT_MEASURES: tuple[str, ...] = ("R@1", "R@5", "R@10", "MRR@10", "NDCG@5", "NDCG@10", "NDCG@100", "NDCG@1000",
                                     "MAP@5", "MAP@10", "MAP@100", "MAP@1000")
# Text-to-image R@1 on the MS-COCO 5k test images, as reported by Nguyen et al., ECIR 2024 (secondary source:
# the project's method digest); printed beside ours, never used in a computation.
PUBLISHED = {"mscoco-test": {"source": "Nguyen et al., ECIR 2024 (MS-COCO 5k test, text-to-image)",
                             "rows": {"D2S-BLIP sparse (published)": {"R@1": 55.9},
                                      "BLIP dense (published)": {"R@1": 57.0}}}}
Progress = Callable[[str], None]


@dataclass
class QuerySet:
    """Queries of one evaluation: ids, expanded and no_expand sparse vectors, dense vectors (rows align)."""

    ids: list[str]
    expand: sp.csr_matrix
    no_expand: sp.csr_matrix | None = None
    dense: np.ndarray | None = None


@dataclass
class RunResult:
    """One run's metrics (fractions in [0, 1]) and the cost of its vectors."""

    run: str
    metrics: dict[str, float]
    query_terms: float | None = None
    doc_terms: float | None = None
    flops: float | None = None
    seconds: float = 0.0
    run_file: str | None = None


@dataclass
class Evaluation:
    """All runs of one evaluation, and what was evaluated."""

    results: list[RunResult]
    queries: int
    documents: int
    judged: int
    measures: list[str]
    published: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"queries": self.queries, "documents": self.documents, "judged_queries": self.judged,
                "measures": self.measures, "runs": [asdict(r) for r in self.results], "published": self.published}


# -- inputs -------------------------------------------------------------------------------------------


def dataset_queries(encoder: Encoder, dataset: str | Path, split: str, *, no_expand: bool = True,
                    progress: Callable[[int], None] | None = None) -> tuple[QuerySet, Qrels]:
    """A Karpathy split's captions as queries (their published dense vectors through the head) and as qrels
    each caption's own image (relevance 1). Needs only the head and tokenizer."""
    source = resolve_dataset(dataset, [TEXT_FILE, META_FILE])
    images = split_images(read_meta(source.folder, source.name), split, source.name)
    ids, texts, qrels = [], [], {}
    for image in images:
        for sentence in image.get("sentences", ()):
            qid = str(sentence["sentid"])
            ids.append(qid)
            texts.append(str(sentence.get("raw", "")))
            qrels[qid] = {str(image["imgid"]): 1}
    if not ids:
        raise InputError(f"dense dataset {source.name!r}: split {split!r} has no captions.")
    dense, chunks, order = collect_vectors(source.folder / TEXT_FILE, ids, progress,
                                           transform=lambda _ids, vectors: encoder.sparsify(vectors))
    expand = sp.vstack(chunks, format="csr")[order]
    masked = encoder.sparsify(dense, mask_texts=texts) if no_expand else None
    return QuerySet(ids, expand, masked, dense), qrels


def text_queries(encoder: Encoder, path: str | Path, *, dense: bool = True) -> QuerySet:
    """Queries from a text file: `qid<TAB>text` per line, or one text per line (ids 1, 2, ...)."""
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
    return QuerySet(ids, encoder.encode_text(texts, mode="expand"), encoder.encode_text(texts, mode="no_expand"),
                    encoder.dense_text(texts) if dense else None)


# -- running ------------------------------------------------------------------------------------------


def run_search(searcher: SearchBackend, queries: QuerySet, run: str, depth: int) -> Results:
    """The (q, depth) ranking of one run, from the scipy index or any other search backend."""
    if run == "expand":
        return searcher.search(queries.expand, depth)
    if run == "no_expand":
        return searcher.search(_need(queries.no_expand, run), depth)
    if run == "hybrid":
        return hybrid_search(searcher, _need(queries.no_expand, run), queries.expand, depth, max(HYBRID_DEPTH, depth))
    if run == "dense":
        return searcher.dense_search(_need(queries.dense, run), depth)
    raise InputError(f"unknown run {run!r}; choose from {RUNS}.")


def evaluate(index: SparseIndex, queries: QuerySet, qrels: Qrels, *, runs: Sequence[str] = RUNS,
             measures: Sequence[str] = DEFAULT_MEASURES, runs_dir: str | Path | None = None,
             progress: Progress | None = None, recipe: str | None = None,
             backend: SearchBackend | None = None) -> Evaluation:
    """Rank the index for the queries in each run, score the rankings against `qrels`, write TREC runs.

    Searches go to `backend` (e.g. a Milvus collection exported from this index) or, by default, the index.
    """
    for name in measures:
        parse_measure(name)
    for run in runs:
        if run not in RUNS:
            raise InputError(f"unknown run {run!r}; choose from {', '.join(RUNS)}.")
    depth = min(max(parse_measure(name)[1] for name in measures), len(index))
    doc_ids = [str(item["id"]) for item in index.items]
    unknown = {doc for judged in qrels.values() for doc in judged} - set(doc_ids)
    if unknown and len(unknown) == len({doc for judged in qrels.values() for doc in judged}):
        raise InputError("no judged document is in the index: do the qrels and the index use the same ids?"
                         f" (e.g. {sorted(unknown)[0]!r})")
    out = Path(runs_dir) if runs_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        write_qrels(out / "qrels.trec", qrels)
    if "dense" in runs and index.dense is None:
        raise InputError("the index holds no dense vectors (build it with --dense, or import-dense); drop the dense run.")
    searcher = backend if backend is not None else LocalBackend(index)
    doc_terms = active_terms(index.vectors)
    results = []
    for run in runs:
        if progress:
            progress(run)
        started = time.perf_counter()
        ranked = run_search(searcher, queries, run, depth)
        seconds = time.perf_counter() - started
        metrics = score_rankings(ranked.indices, queries.ids, doc_ids, qrels, measures)
        result = RunResult(run, metrics, seconds=round(seconds, 2))
        if run != "dense":
            vectors = queries.expand if run in ("expand", "hybrid") else queries.no_expand
            result.query_terms, result.doc_terms = active_terms(vectors), doc_terms
            result.flops = flops(vectors, index.vectors)
        if out:
            path = out / f"{run}.trec"
            write_run(path, queries.ids, doc_ids, ranked.indices, ranked.scores, f"mlsr-{run}")
            result.run_file = str(path)
        results.append(result)
    evaluation = Evaluation(results, len(queries.ids), len(index), len(qrels), list(measures),
                            PUBLISHED.get(recipe or "", {}))
    if out:
        atomic_write_json(out / "metrics.json", evaluation.to_json())
    return evaluation


def format_table(evaluation: Evaluation) -> str:
    """The papers' layout: one row per run, metrics in percent, then active terms and FLOPs."""
    measures = evaluation.measures
    header = ["run", *measures, "q terms", "d terms", "FLOPs"]
    rows = []
    for result in evaluation.results:
        rows.append([RUN_LABELS.get(result.run, result.run), *(f"{100 * result.metrics[m]:.1f}" for m in measures),
                     _number(result.query_terms, 1), _number(result.doc_terms, 1), _number(result.flops, 2)])
    for label, values in (evaluation.published.get("rows") or {}).items():
        rows.append([label, *(f"{values[m]:.1f}" if m in values else "-" for m in measures), "-", "-", "-"])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    note = (f"{evaluation.queries:,} queries ({evaluation.judged:,} judged), {evaluation.documents:,} documents;"
            " metrics in %, averaged over judged queries")
    if evaluation.published:
        note += f"\npublished rows: {evaluation.published['source']}"
    return "\n".join(lines) + "\n" + note


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _need(value, run: str):
    if value is None:
        raise InputError(f"the queries have no vectors for the {run} run.")
    return value
