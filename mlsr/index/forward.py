"""The forward view of an index: each document's terms (ascending) and stored weights, read in O(its terms).

The inverted lists answer "which documents hold this term"; reading one document from them means a
search in every one of the vocabulary's lists (~10 ms at 30,522 terms). The forward view keeps the
same postings by row: `terms[indptr[r]:indptr[r + 1]]` and `weights[...]` are row r's terms and the
weights search reads for them (float16 stays float16; float32 and uint8 are the float32 stored weights,
`scale * impact` for uint8), so `document`, `explain`, `more_like_this`, the near-duplicate check and the
Milvus export read a row as a slice. It is built block by block with the inverted lists, saved beside them
(memory-mapped on load: only the rows read are paged in), checked on load, and derived from the lists
for an index saved before it was kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from mlsr.errors import InputError

if TYPE_CHECKING:
    from mlsr.index.inverted import InvertedIndex

_FORWARD_NAMES = ("indptr", "terms", "weights")
_SPOT_CHECKS = 4  # rows compared in full with the inverted lists on load (first, last and evenly spread; ~10 ms each)
_CHECK_CHUNK = 1 << 24  # postings checked at once


def _term_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies up to 65,536 terms (BERT's 30,522), int32 beyond."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def _weight_dtype(precision: str) -> np.dtype:
    """float16 for a float16 index (its stored weights exactly), float32 otherwise (uint8: scale * impact)."""
    return np.dtype(np.float16) if precision == "float16" else np.dtype(np.float32)


@dataclass(frozen=True, eq=False)
class Forward:
    """Rows of stored postings: row r's terms (ascending) and weights are `terms[s:e]`, `weights[s:e]`, `s, e =
    indptr[r], indptr[r + 1]`. Arrays may be memory-mapped, read-only."""

    indptr: np.ndarray  # int64 (n_docs + 1,)
    terms: np.ndarray  # _term_dtype(vocab_size) (stored postings,)
    weights: np.ndarray  # _weight_dtype(precision) (stored postings,)

    @property
    def n_docs(self) -> int:
        return len(self.indptr) - 1

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.terms.nbytes + self.weights.nbytes

    def document(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Row `row`'s term ids (int32, ascending) and float32 weights: copies, never views of the files."""
        start, stop = int(self.indptr[row]), int(self.indptr[row + 1])
        return self.terms[start:stop].astype(np.int32), self.weights[start:stop].astype(np.float32)

    def rows(self, rows: Sequence[int] | np.ndarray | None, vocab_size: int) -> sp.csr_matrix:
        """These rows (None: all) as a (len(rows), vocab) float32 CSR matrix with sorted indices."""
        if rows is None:
            matrix = sp.csr_matrix((self.weights.astype(np.float32), self.terms.astype(np.int32),
                                    np.array(self.indptr, dtype=np.int64)), shape=(self.n_docs, vocab_size))
        else:
            rows = np.asarray(rows, dtype=np.int64).reshape(-1)
            starts, stops = self.indptr[rows], self.indptr[rows + 1]
            indptr = np.zeros(len(rows) + 1, dtype=np.int64)
            np.cumsum(stops - starts, out=indptr[1:])
            at = np.repeat(starts - indptr[:-1], stops - starts) + np.arange(indptr[-1])
            matrix = sp.csr_matrix((self.weights[at].astype(np.float32), self.terms[at].astype(np.int32), indptr),
                                   shape=(len(rows), vocab_size))
        matrix.has_sorted_indices = True
        return matrix

    def head(self, n: int) -> Forward:
        """The first n rows (views)."""
        stop = int(self.indptr[n])
        return Forward(self.indptr[: n + 1], self.terms[:stop], self.weights[:stop])


def _of_rows(rows: sp.csr_matrix, vocab_size: int, precision: str) -> Forward:
    """The forward view of canonical stored rows (float32 CSR, sorted indices): a block's `block_term_major().T`."""
    return Forward(rows.indptr.astype(np.int64), rows.indices.astype(_term_dtype(vocab_size)),
                   rows.data.astype(_weight_dtype(precision)))


def of_block(rows: sp.csr_matrix, part, vocab_size: int, precision: str) -> Forward:
    """The forward view of one block as `mlsr.index.blocks.invert_block` stored it (`part`) from canonical `rows`.

    float32 keeps every weight and float16 drops those that round to 0, so their rows are read off `rows`
    directly; uint8 impacts depend on their posting groups, so that block is read back from its lists.
    """
    if precision == "uint8":
        return _of_rows(_uint8_rows(part, rows.shape[0], vocab_size), vocab_size, precision)
    weights = rows.data.astype(_weight_dtype(precision))
    indptr, terms = rows.indptr.astype(np.int64), rows.indices
    keep = weights != 0
    if not keep.all():
        counts = np.bincount(np.repeat(np.arange(rows.shape[0]), np.diff(indptr))[keep], minlength=rows.shape[0])
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        terms, weights = terms[keep], weights[keep]
    return Forward(indptr, terms.astype(_term_dtype(vocab_size)), weights)


def _uint8_rows(part, n: int, vocab_size: int) -> sp.csr_matrix:
    """One uint8 block's stored weights (float32 `scale * impact`, as search computes them) as (n, vocab) rows:
    its lists read as a CSC matrix and converted (a linear pass), its dense columns' non-zero rows added."""
    from mlsr.index.blocks import COLUMN_GROUP, LIST_GROUP  # here: blocks is imported by inverted, which imports us

    values = part.weights.astype(np.float32) * np.repeat(part.scales, LIST_GROUP)[: len(part.weights)]
    matrix = sp.csc_matrix((values, part.docs.astype(np.int32), part.indptr), shape=(n, vocab_size)).tocsr()
    rows, terms, weights = [], [], []
    for j, term in enumerate(part.dense_terms):
        found = np.flatnonzero(part.dense_weights[j, :n])
        rows.append(found)
        terms.append(np.full(len(found), term))
        weights.append(part.dense_weights[j, found].astype(np.float32) * part.dense_scales[j, found // COLUMN_GROUP])
    if rows:
        matrix = matrix + sp.csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(terms))),
                                        shape=(n, vocab_size))
    matrix.eliminate_zeros()  # an impact left at 0 is an absent term, as the lists read it
    matrix.sort_indices()
    return matrix


def joined(parts: list[Forward], precision: str) -> Forward:
    """One forward view of consecutive rows' views, weights in the precision's dtype (float16 widens exactly)."""
    if len(parts) == 1 and parts[0].weights.dtype == _weight_dtype(precision):
        return parts[0]
    starts = np.cumsum([0] + [len(part.terms) for part in parts[:-1]])
    indptr = np.concatenate([[0]] + [part.indptr[1:] + start for part, start in zip(parts, starts)]).astype(np.int64)
    return Forward(indptr, np.concatenate([part.terms for part in parts]),
                   np.concatenate([part.weights for part in parts]).astype(_weight_dtype(precision)))


def derived(inverted: InvertedIndex) -> Forward:
    """The forward view read from the inverted lists, block by block (an index saved before it was kept)."""
    parts = [_of_rows(inverted.block_term_major(b).T.tocsr(), inverted.vocab_size, inverted.precision)
             for b in range(inverted.n_blocks)]
    if not parts:
        return Forward(np.zeros(1, np.int64), np.zeros(0, _term_dtype(inverted.vocab_size)),
                       np.zeros(0, _weight_dtype(inverted.precision)))
    return joined(parts, inverted.precision)


def stored_nonzero(inverted: InvertedIndex) -> int:
    """The (document, term) weights that are not 0: the forward view's postings (a uint8 list may keep an impact
    of 0 when its groups did not settle; it is an absent term, as everywhere else)."""
    listed = len(inverted.docs) if not inverted.quantized else int(np.count_nonzero(inverted.weights))
    return listed + int(inverted.dense_counts.sum())


def checked(arrays: dict[str, np.ndarray], inverted: InvertedIndex) -> Forward:
    """Loaded forward arrays as a Forward, after checking them against the inverted lists they sit beside.

    Types, shapes and offsets; every term inside the vocabulary and ascending within its row; finite
    weights; as many postings as the lists hold; and a few whole rows equal to the lists' (the
    checksums already prove the files are the ones saved).
    """
    indptr, terms, weights = (arrays[name] for name in _FORWARD_NAMES)
    if (indptr.dtype, terms.dtype, weights.dtype) != (np.dtype(np.int64), _term_dtype(inverted.vocab_size),
                                                      _weight_dtype(inverted.precision)):
        raise InputError("the forward view has unexpected types; rebuild the index.")
    if indptr.shape != (inverted.n_docs + 1,) or terms.ndim != 1 or weights.shape != terms.shape:
        raise InputError("the forward view has inconsistent shapes; rebuild the index.")
    if indptr[0] != 0 or indptr[-1] != len(terms) or (np.diff(indptr) < 0).any():
        raise InputError("the forward view's row offsets are inconsistent; rebuild the index.")
    held = stored_nonzero(inverted)
    if len(terms) != held:
        raise InputError(f"the forward view holds {len(terms):,} postings, the inverted lists {held:,};"
                         " rebuild the index.")
    if len(terms) and int(terms.max()) >= inverted.vocab_size:
        raise InputError("the forward view names a term outside the vocabulary; rebuild the index.")
    for start in range(0, len(terms), _CHECK_CHUNK):
        stop = min(start + _CHECK_CHUNK + 1, len(terms))
        falls = np.diff(np.asarray(terms[start:stop]).astype(np.int32)) <= 0  # a step from position p to p + 1
        first, end = np.searchsorted(indptr, start + 1), np.searchsorted(indptr, stop - 1, side="right")
        falls[indptr[first:end] - start - 1] = False  # a row starting inside the chunk may start low
        if falls.any():
            raise InputError("the forward view's terms are not ascending within a row; rebuild the index.")
        chunk = np.asarray(weights[start:stop])
        finite = (chunk.view(np.uint16) & 0x7C00) != 0x7C00 if chunk.dtype == np.float16 else np.isfinite(chunk)
        if not finite.all():
            raise InputError("the forward view holds NaN or infinite weights; rebuild the index.")
    forward = Forward(*(np.asarray(arrays[name]) for name in _FORWARD_NAMES))
    spots = np.unique(np.linspace(0, inverted.n_docs - 1, min(_SPOT_CHECKS, inverted.n_docs)).astype(np.int64))
    for row in spots:
        found, expected = forward.document(int(row)), inverted.document_from_lists(int(row))
        if not all(np.array_equal(a, b) for a, b in zip(found, expected)):
            raise InputError(f"the forward view's row {row} differs from the inverted lists; rebuild the index.")
    return forward
