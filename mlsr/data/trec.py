"""TREC files: runs (`qid Q0 docid rank score name`) and qrels (`qid iter docid rel`), read and written."""

from __future__ import annotations

from pathlib import Path
from collections.abc import Sequence

import numpy as np

from mlsr._files import atomic_path
from mlsr.errors import InputError

Qrels = dict[str, dict[str, int]]  # query id -> {document id: relevance}; relevance >= 1 counts as relevant


def write_run(path: str | Path, query_ids: Sequence[str], doc_ids: Sequence[str], indices: np.ndarray,
              scores: np.ndarray, name: str) -> None:
    """A TREC run file, `qid Q0 docid rank score name` per line, written atomically; rows of -1 (no hit) are left out.

    trec_eval reads a run by score (as a 32-bit float; ties by document id), not by rank, so the scores are
    written so that it reads our order: each strictly below the one ranked above it as a float32 (an entry
    tied with the one above is written one float32 step, ~1e-7 relative, under it), in 9 significant digits,
    which give the float32 back exactly.
    """
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for q, qid in enumerate(query_ids):
            hits = np.asarray(indices[q]) >= 0
            written = _file_scores(np.asarray(scores[q])[hits])
            for rank, (row, score) in enumerate(zip(np.asarray(indices[q])[hits], written), 1):
                handle.write(f"{qid} Q0 {doc_ids[int(row)]} {rank} {score:.9g} {name}\n")


def _file_scores(scores: np.ndarray) -> list[float]:
    """Best-first scores as float32 values, each strictly below the one before (see `write_run`)."""
    written, previous = [], None
    for score in np.asarray(scores, dtype=np.float32):
        if previous is not None and not score < previous:
            score = np.nextafter(previous, np.float32(-np.inf), dtype=np.float32)
        written.append(score)
        previous = score
    return [float(score) for score in written]


def read_run(path: str | Path) -> dict[str, list[str]]:
    """A TREC run file -> {query id: document ids best first} (by score descending, then rank)."""
    rows: dict[str, list[tuple[float, int, str]]] = {}
    for number, parts in _lines(path, 6):
        try:
            rows.setdefault(parts[0], []).append((-float(parts[4]), int(parts[3]), parts[2]))
        except ValueError:
            raise InputError(f"{path}:{number}: rank and score must be numbers: {' '.join(parts)!r}.") from None
    return {q: [doc for _, _, doc in sorted(entries)] for q, entries in rows.items()}


def read_qrels(path: str | Path) -> Qrels:
    """A TREC qrels file (`qid iter docid rel` per line) -> {query id: {document id: relevance}}."""
    qrels: Qrels = {}
    for number, parts in _lines(path, 4):
        try:
            qrels.setdefault(parts[0], {})[parts[2]] = int(parts[3])
        except ValueError:
            raise InputError(f"{path}:{number}: relevance must be an integer: {' '.join(parts)!r}.") from None
    if not qrels:
        raise InputError(f"{path} holds no judgements.")
    return qrels


def write_qrels(path: str | Path, qrels: Qrels) -> None:
    """Write qrels in TREC format (`qid 0 docid rel`), atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for qid, judged in qrels.items():
            for doc, rel in judged.items():
                handle.write(f"{qid} 0 {doc} {rel}\n")


def _lines(path: str | Path, columns: int):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read {path} ({error}).") from None
    for number, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != columns:
            raise InputError(f"{path}:{number}: expected {columns} columns, got {len(parts)}: {line[:80]!r}.")
        yield number, parts
