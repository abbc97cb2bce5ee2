"""The evaluation loop: queries x documents x runs -> metrics, cost (active terms, FLOPs) and TREC run files.

Every evaluation goes through `evaluate`: the `evaluate` command and its recipes, the AToMiC task
(`mlsr.evaluation.atomic_task`) and the validation of `train`. A run is one way of ranking: the sparse
query modes `expand`, `no_expand`, `hybrid`, or `dense` (FAISS over the dense vectors). `hybrid@N`
is hybrid re-scoring N candidates; plain `hybrid` re-scores `hybrid_depth` (default 1,000). The
default runs hold both `hybrid@10` (the reference code's depth) and `hybrid`. Costs come
from term document frequencies, so the document matrix is never materialised.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast
from collections.abc import Sequence

import numpy as np

from mlsr._files import atomic_write_json
from mlsr.data.trec import Qrels, write_qrels, write_run
from mlsr.errors import InputError
from mlsr.evaluation.metrics import flops_from_frequencies, parse_measure, score_rankings, term_frequency
from mlsr.checks import check_depth
from mlsr.index.modes import rank
from mlsr.query_vectors import QueryVectors
from mlsr.index.sparse import Results, SparseIndex
from mlsr.settings import HYBRID_DEPTH, REFERENCE_HYBRID_DEPTH, Status

if TYPE_CHECKING:  # pragma: no cover
    from mlsr.backends import SearchBackend

RunKind = Literal["expand", "no_expand", "hybrid", "dense"]
_RUNS: tuple[RunKind, ...] = ("expand", "no_expand", "hybrid", "dense")  # the kinds of run
DEFAULT_RUNS: tuple[str, ...] = ("expand", "no_expand", f"hybrid@{REFERENCE_HYBRID_DEPTH}", "hybrid", "dense")
RUN_LABELS = {"expand": "sparse expand", "no_expand": "sparse no_expand", "hybrid": "sparse hybrid",
              "dense": "dense (FAISS)"}
DEFAULT_MEASURES: tuple[str, ...] = ("R@1", "R@5", "R@10", "MRR@10", "NDCG@5", "NDCG@10", "NDCG@100", "NDCG@1000",
                                     "MAP@5", "MAP@10", "MAP@100", "MAP@1000")


@dataclass
class QuerySet:
    """Queries of one evaluation: their ids and their vectors (rows align with `ids`).

    A view of `vectors` may be any object that slices by rows into CSR (training passes vectors it
    computes chunk by chunk), as long as it has a `shape`.
    """

    ids: list[str]
    vectors: QueryVectors


@dataclass
class RunResult:
    """One run's metrics (fractions in [0, 1]) and the cost of its vectors."""

    run: str
    metrics: dict[str, float]
    depth: int | None = None  # hybrid runs: the no_expand candidates re-scored
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

    def run(self, name: str) -> RunResult:
        """The result of the run called `name`."""
        return next(result for result in self.results if result.run == name)


def evaluate(
    searcher: SparseIndex | SearchBackend,
    queries: QuerySet,
    qrels: Qrels,
    *,
    doc_ids: Sequence[str],
    doc_frequency: np.ndarray | None,
    runs: Sequence[str] = DEFAULT_RUNS,
    measures: Sequence[str] = DEFAULT_MEASURES,
    runs_dir: str | Path | None = None,
    run_prefix: str = "",
    hybrid_depth: int = HYBRID_DEPTH,
    batch_size: int | None = None,
    published: dict | None = None,
    progress: Status | None = None,
) -> Evaluation:
    """Rank the documents for the queries in each run, score the rankings against `qrels`, write TREC runs.

    `searcher` ranks rows (the index, a search backend, or training's tensor scorer); row r is the
    document `doc_ids[r]`, and `doc_frequency` (vocab,) counts the documents holding each term (None:
    no cost columns). Queries go `batch_size` rows at a time (default: all at once). Run files are
    named `<run_prefix><run>.trec` in `runs_dir`, beside `qrels.trec` and `metrics.json`. A run
    that ranks as an earlier one (`hybrid` at `hybrid_depth` 10 beside `hybrid@10`) is left out.
    """
    for name in measures:
        parse_measure(name)
    planned: dict[tuple[RunKind, int | None], str] = {}
    for run in runs:
        planned.setdefault(parse_run(run, hybrid_depth), run)
    n_docs = len(doc_ids)
    depth = min(max(parse_measure(name)[1] for name in measures), n_docs)
    known = {doc for judged in qrels.values() for doc in judged}
    if known and not known & set(map(str, doc_ids)):
        raise InputError("no judged document is in the index: do the qrels and the index use the same ids?"
                         f" (e.g. {sorted(known)[0]!r})")
    out = Path(runs_dir) if runs_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
        write_qrels(out / "qrels.trec", qrels)
    results = []
    for (kind, run_depth), run in planned.items():
        if progress:
            progress(run)
        started = time.perf_counter()
        ranked, query_frequency = _rank_run(searcher, queries, kind, depth, run_depth, batch_size)
        result = RunResult(run, score_rankings(ranked.indices, queries.ids, doc_ids, qrels, measures),
                           depth=run_depth, seconds=round(time.perf_counter() - started, 2))
        if query_frequency is not None and doc_frequency is not None:
            n_queries = len(queries.ids)
            result.query_terms = float(query_frequency.sum() / max(n_queries, 1))
            result.doc_terms = float(doc_frequency.sum() / max(n_docs, 1))
            result.flops = flops_from_frequencies(query_frequency, n_queries, doc_frequency, n_docs)
        if out:
            path = out / f"{run_prefix}{run}.trec"
            write_run(path, queries.ids, doc_ids, ranked.indices, ranked.scores, f"mlsr-{run_prefix}{run}")
            result.run_file = str(path)
        results.append(result)
    evaluation = Evaluation(results, len(queries.ids), n_docs, len(qrels), list(measures), dict(published or {}))
    if out:
        atomic_write_json(out / f"{run_prefix}metrics.json", evaluation.to_json())
    return evaluation


def parse_run(name: str, hybrid_depth: int = HYBRID_DEPTH) -> tuple[RunKind, int | None]:
    """A run name -> (kind, hybrid depth or None).

    "hybrid@10" -> ("hybrid", 10), "hybrid" -> ("hybrid", hybrid_depth), "expand" -> ("expand", None).
    """
    text, at, depth = str(name).partition("@")
    if text not in _RUNS or (at and text != "hybrid"):
        raise InputError(f"unknown run {name!r}; choose from {', '.join(_RUNS)} (hybrid@N: hybrid re-scoring N"
                         " candidates).")
    kind = cast(RunKind, text)  # one of _RUNS: checked above
    if kind != "hybrid":
        return kind, None
    if not at:
        return kind, check_depth(hybrid_depth)
    if not depth.isdigit():
        raise InputError(f"run {name!r}: the depth after @ must be a whole number >= 1.")
    return kind, check_depth(int(depth))


def evaluate_index(index: SparseIndex, queries: QuerySet, qrels: Qrels, *, backend: SearchBackend | None = None,
                   **options) -> Evaluation:
    """`evaluate` against an index's items (`id`) and document frequencies; searches go to `backend` if given."""
    if "dense" in options.get("runs", DEFAULT_RUNS) and index.dense is None:
        raise InputError("the index holds no dense vectors (build it with dense=True, or import-dense); drop the dense"
                         " run.")
    if backend is None:
        from mlsr.backends.local import LocalBackend

        backend = LocalBackend(index)
    return evaluate(backend, queries, qrels, doc_ids=[str(item["id"]) for item in index.items],
                    doc_frequency=index.document_frequency(), **options)


def _rank_run(searcher, queries: QuerySet, run: RunKind, depth: int, hybrid_depth: int | None,
              batch_size: int | None) -> tuple[Results, np.ndarray | None]:
    """The (q, depth) ranking of one run (a kind in _RUNS), batch by batch, and its query vectors' term
    frequencies (None: dense). A hybrid run re-scores exactly `hybrid_depth` candidates."""
    vectors = queries.vectors
    n = len(queries.ids)
    step = batch_size or max(n, 1)
    scores, indices, frequency = [], [], None
    for start in range(0, n, step):
        stop = min(start + step, n)
        if run == "dense":
            if vectors.dense is None:
                raise InputError("the queries have no vectors for the dense run.")
            ranked = searcher.dense_search(vectors.dense[start:stop], depth)
        else:
            chunk = QueryVectors(*(None if view is None else view[start:stop] for view in vectors[:2]))
            ranked = rank(searcher, chunk, run, depth, hybrid_depth or HYBRID_DEPTH)
            counted = term_frequency(chunk.scoring(run))
            frequency = counted if frequency is None else frequency + counted
        scores.append(ranked.scores)
        indices.append(ranked.indices)
    if not scores:
        return Results(np.zeros((0, depth), np.float32), np.zeros((0, depth), np.int64)), frequency
    return Results(np.concatenate(scores), np.concatenate(indices)), frequency
