"""Plain-text tables of evaluation results, in the papers' layout (metrics in percent)."""

from __future__ import annotations

from collections.abc import Sequence

from mlsr.evaluation.runs import RUN_LABELS, Evaluation, RunResult
from mlsr.settings import REFERENCE_HYBRID_DEPTH


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell: the first left-aligned, the rest right-aligned; a rule under the header."""
    table = [list(map(str, header)), *[list(map(str, row)) for row in rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in table]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def format_evaluation(evaluation: Evaluation) -> str:
    """One row per run (then the published rows), metrics in %, then active terms and FLOPs; and a note."""
    measures = evaluation.measures
    rows = [[_run_label(r), *(f"{100 * r.metrics[m]:.1f}" for m in measures),
             _number(r.query_terms, 1), _number(r.doc_terms, 1), _number(r.flops, 2)] for r in evaluation.results]
    for label, values in (evaluation.published.get("rows") or {}).items():
        rows.append([label, *(f"{values[m]:.1f}" if m in values else "-" for m in measures), "-", "-", "-"])
    note = (f"{evaluation.queries:,} queries ({evaluation.judged:,} judged), {evaluation.documents:,} documents;"
            " metrics in %, averaged over judged queries")
    if any(r.depth is not None for r in evaluation.results):
        note += ("\nhybrid: the top-`depth` no_expand candidates re-scored by the expanded query, then filled to the"
                 " cut-off by expanded score;\n"
                 f"depth {REFERENCE_HYBRID_DEPTH} is the reference code's (its own hybrid writes the new scores to a"
                 " copy, so its output equals no_expand), 1000 mlsr's default")
    if evaluation.published:
        note += f"\npublished rows: {evaluation.published['source']}"
    return text_table(["run", *measures, "q terms", "d terms", "FLOPs"], rows) + "\n" + note


def _run_label(result: RunResult) -> str:
    """The table's name of a run: "sparse hybrid (depth 10, as the reference)" for a hybrid run."""
    label = RUN_LABELS.get(result.run.partition("@")[0], result.run)
    if result.depth is not None:
        label += f" (depth {result.depth}{', as the reference' if result.depth == REFERENCE_HYBRID_DEPTH else ''})"
    return label


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"
