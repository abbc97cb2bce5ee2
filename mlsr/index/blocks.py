"""Building the blocked inverted layout (`mlsr.index.inverted`) from document rows, one block at a time.

Documents are cut into blocks of `block_size` rows (65,536 by default, so that a row within its
block fits 16 bits). Each block is inverted on its own: for every term, the block's rows holding it
(uint16, ascending) and their weights; a term held by enough of the block's rows is a dense column
instead (one weight per row of the block, 0 = absent). Blocks are independent, so a collection is
indexed from row chunks without ever holding all its rows at once.

Weights are stored in one of three precisions:

- "float32": exactly as given;
- "float16": rounded to the nearest float16 (relative error <= 2^-11; weights that underflow to 0
  are dropped, as absent terms);
- "uint8": 8-bit impacts with a calibrated float32 scale per group of 32 consecutive postings of a
  block's lists (and per 64 rows of a dense column): `scale = max weight of the group / 255` and
  `impact = round(weight / scale)`, so the stored weight `scale * impact` is within `scale / 2` of
  the original. PISA quantizes with one scale for the whole collection, Seismic per summary block;
  a scale per small group follows each list's local range, which measured best (recall@10 against
  float32 in bench/bench_scale.py: one scale per term and block lost twice as many of the top 10).
  Impacts rounded to 0 are dropped, as absent terms (the groups are then formed again). Impacts are
  unsigned: document weights must be >= 0 (learned sparse weights are).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Iterable, Iterator

import numpy as np
import scipy.sparse as sp

BLOCK_DOCS = 65_536  # rows per block: the largest block whose rows fit uint16
_IMPACT_LEVELS = 255  # uint8 impacts 1..255 (0 = absent)
LIST_GROUP = 32  # consecutive postings of a block's lists that share one uint8 scale
COLUMN_GROUP = 64  # rows of a dense column that share one uint8 scale
# A term held by at least `_DENSE_SHARE` of a block's rows is a dense column there: adding a column
# with vector instructions costs ~0.1 ns per row, a scatter over a posting list ~1 ns per posting.
# Terms from FAST_DENSE_SHARE up become columns too, as long as the block stays within
# DENSE_BYTES_FACTOR times the bytes of its posting lists (a column costs a weight per row).
_DENSE_SHARE = 1 / 3
FAST_DENSE_SHARE = 0.15
DENSE_BYTES_FACTOR = 1.25
DENSE_MIN_DOCS = 4096  # ...but only in blocks this large (below it the difference is noise)
ID_DTYPE = np.dtype(np.uint16)
WEIGHT_DTYPES: dict[str, np.dtype] = {"uint8": np.dtype(np.uint8), "float16": np.dtype(np.float16),
                                      "float32": np.dtype(np.float32)}


@dataclass
class Part:
    """Consecutive blocks' postings, laid out as in `mlsr.index.inverted.InvertedIndex` with offsets from 0."""

    indptr: np.ndarray  # int64 (blocks * vocab + 1,): into docs/weights
    docs: np.ndarray  # uint16: rows within each block, ascending per term
    weights: np.ndarray  # the precision's dtype
    scales: np.ndarray  # float32: uint8 (each block's ceil(postings / LIST_GROUP)), else (0,)
    dense_indptr: np.ndarray  # int64 (blocks + 1,): into dense_terms/dense_weights
    dense_terms: np.ndarray  # int32, ascending within each block
    dense_weights: np.ndarray  # (columns, block_size), the precision's dtype
    dense_scales: np.ndarray  # float32: uint8 (columns, column_groups(block_size)), else (0, column_groups(block_size))

    def arrays(self) -> dict[str, np.ndarray]:
        return dict(vars(self))


def column_groups(block_size: int) -> int:
    """Scale groups of a dense column (COLUMN_GROUP rows each)."""
    return -(-block_size // COLUMN_GROUP)


def list_groups(postings: np.ndarray) -> np.ndarray:
    """Scale groups of blocks holding `postings` listed postings each (LIST_GROUP postings per group)."""
    return -(-np.asarray(postings, dtype=np.int64) // LIST_GROUP)


def row_blocks(chunks: Iterable[sp.csr_matrix], block_size: int) -> Iterator[sp.csr_matrix]:
    """Regroup CSR row chunks (any sizes, same width) into consecutive blocks of `block_size` rows (the last may be
    shorter)."""
    pending: list[sp.csr_matrix] = []
    held = 0
    for chunk in chunks:
        start = 0
        while start < chunk.shape[0]:
            take = min(block_size - held, chunk.shape[0] - start)
            pending.append(chunk[start : start + take] if (start, take) != (0, chunk.shape[0]) else chunk)
            held += take
            start += take
            if held == block_size:
                yield pending[0] if len(pending) == 1 else sp.vstack(pending, format="csr")
                pending, held = [], 0
    if held:
        yield pending[0] if len(pending) == 1 else sp.vstack(pending, format="csr")


def invert_block(rows: sp.csr_matrix, precision: str, block_size: int) -> Part:
    """Invert one block of canonical CSR float32 rows (at most `block_size`, no explicit zeros) in a precision."""
    n, vocab_size = rows.shape
    columns = rows.tocsc()  # terms x rows, rows ascending: the block's posting lists
    indptr, docs, data = columns.indptr.astype(np.int64), columns.indices, columns.data
    if precision == "float16":
        data = data.astype(np.float16)
    keep = data != 0  # weights that rounded to 0 are dropped, as absent terms
    terms = np.repeat(np.arange(vocab_size), np.diff(indptr))
    counts = np.bincount(terms[keep], minlength=vocab_size)
    weight_bytes = WEIGHT_DTYPES[precision].itemsize
    dense_terms = dense_columns(counts, n, weight_bytes) if n >= DENSE_MIN_DOCS else np.zeros(0, np.int64)
    dense = np.zeros((len(dense_terms), block_size), dtype=np.float32 if precision == "uint8" else data.dtype)
    for slot, term in enumerate(dense_terms):
        start, stop = indptr[term], indptr[term + 1]
        dense[slot, docs[start:stop]] = data[start:stop]
    listed = np.ones(vocab_size, dtype=bool)
    listed[dense_terms] = False
    keep &= listed[terms]
    docs, data, terms = docs[keep], data[keep], terms[keep]
    scales = np.zeros(0, dtype=np.float32)
    dense_scales = np.zeros((0, column_groups(block_size)), dtype=np.float32)
    if precision == "uint8":
        data, scales, kept = quantize_lists(data)
        docs, terms = docs[kept], terms[kept]
        dense, dense_scales = _quantize_columns(dense)
    block_indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(np.bincount(terms, minlength=vocab_size), out=block_indptr[1:])
    return Part(block_indptr, docs.astype(ID_DTYPE), data, scales, np.array([0, len(dense_terms)], dtype=np.int64),
                dense_terms.astype(np.int32), dense, dense_scales)


def quantize_lists(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 impacts of a block's listed float32 weights (>= 0, in posting order), their group scales, and which were
    kept.

    A group is LIST_GROUP consecutive postings; scale = its max / 255. Postings whose impact rounds
    to 0 are dropped and the groups formed again over the rest (rarely needed more than once; after
    8 rounds any zeros left stay, stored as 0: they add nothing to a score).
    """
    kept = np.arange(len(values))
    for round in range(8):
        scales = _group_max(values[kept], LIST_GROUP) / np.float32(_IMPACT_LEVELS)
        impacts = impacts_of(values[kept], np.repeat(scales, LIST_GROUP)[: len(kept)])
        if impacts.all() or round == 7:  # the last round keeps its zeros: impacts and kept stay the same length
            break
        kept = kept[impacts > 0]
    return impacts, scales, kept


def _quantize_columns(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 impacts of float32 dense columns (m, block_size) and their scales (m, groups): one per COLUMN_GROUP
    rows."""
    m, size = columns.shape
    groups = column_groups(size)
    padded = np.zeros((m, groups * COLUMN_GROUP), dtype=np.float32)
    padded[:, :size] = columns
    scales = padded.reshape(m, groups, COLUMN_GROUP).max(axis=2) / np.float32(_IMPACT_LEVELS)
    impacts = impacts_of(padded, np.repeat(scales, COLUMN_GROUP, axis=1))
    return impacts[:, :size], scales


def _group_max(values: np.ndarray, size: int) -> np.ndarray:
    """float32 max of each run of `size` consecutive values (the last run may be shorter)."""
    if not len(values):
        return np.zeros(0, dtype=np.float32)
    return np.maximum.reduceat(values, np.arange(0, len(values), size)).astype(np.float32)


def impacts_of(values: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """round(value / scale) as uint8 (0 where the scale is 0)."""
    ratio = np.divide(values, scales, out=np.zeros(values.shape, dtype=np.float32), where=scales > 0)
    return np.clip(np.rint(ratio), 0, _IMPACT_LEVELS).astype(np.uint8)


def dense_columns(counts: np.ndarray, n: int, weight_bytes: int) -> np.ndarray:
    """Terms of a block to store as dense columns (ascending): see _DENSE_SHARE and FAST_DENSE_SHARE."""
    posting_bytes = ID_DTYPE.itemsize + weight_bytes
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] >= FAST_DENSE_SHARE * n]
    sparse_bytes = posting_bytes * (counts.sum() - np.cumsum(counts[order]))  # if the first j+1 become columns
    total = sparse_bytes + weight_bytes * n * np.arange(1, len(order) + 1)
    fits = (counts[order] >= _DENSE_SHARE * n) | (total <= DENSE_BYTES_FACTOR * posting_bytes * max(counts.sum(), 1))
    chosen = len(order) if fits.all() else int(np.argmin(fits))  # the longest prefix that fits
    return np.sort(order[:chosen])


def empty_part(precision: str, block_size: int) -> Part:
    """The postings of no documents (no blocks)."""
    dtype = WEIGHT_DTYPES[precision]
    return Part(np.zeros(1, np.int64), np.zeros(0, ID_DTYPE), np.zeros(0, dtype), np.zeros(0, np.float32),
                np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros((0, block_size), dtype),
                np.zeros((0, column_groups(block_size)), np.float32))


def widened(part: Part) -> Part:
    """float16 postings with their weights as float32 (exactly the same values)."""
    return Part(part.indptr, part.docs, part.weights.astype(np.float32), part.scales, part.dense_indptr,
                part.dense_terms, part.dense_weights.astype(np.float32), part.dense_scales)


def concatenate(parts: list[Part]) -> Part:
    """One part of consecutive parts, each part's arrays freed once copied (`parts` is emptied).

    The builder concatenates every few blocks and then those: the many block-sized arrays live on
    the allocator's heap, which does not give memory back to the system, while large arrays are
    mapped and returned as soon as they are freed -- so the peak stays near one index, not two.
    """
    if len(parts) == 1:
        return parts.pop()
    names = ("docs", "weights", "scales", "dense_terms")  # sizes only: a list of the arrays would keep them all alive
    joined = {name: np.empty(sum(len(getattr(part, name)) for part in parts), dtype=getattr(parts[0], name).dtype)
              for name in names}
    postings = np.concatenate([[0], np.cumsum([len(part.docs) for part in parts])]).astype(np.int64)
    columns = np.concatenate([[0], np.cumsum([len(part.dense_terms) for part in parts])]).astype(np.int64)
    indptr = np.concatenate([[0]] + [part.indptr[1:] + postings[i] for i, part in enumerate(parts)]).astype(np.int64)
    dense_indptr = np.concatenate([[0]] + [part.dense_indptr[1:] + columns[i] for i, part in enumerate(parts)])
    width = parts[0].dense_weights.shape[1]
    dense_weights = np.empty((int(columns[-1]), width), dtype=parts[0].dense_weights.dtype)
    dense_scales = np.empty((sum(len(part.dense_scales) for part in parts), parts[0].dense_scales.shape[1]), np.float32)
    at = dict.fromkeys(joined, 0)
    scale_rows = 0
    while parts:
        part = parts.pop(0)
        for name in joined:
            array = getattr(part, name)
            joined[name][at[name] : at[name] + len(array)] = array
            at[name] += len(array)
        dense_weights[columns[0] : columns[0] + len(part.dense_terms)] = part.dense_weights
        dense_scales[scale_rows : scale_rows + len(part.dense_scales)] = part.dense_scales
        columns = columns[1:]
        scale_rows += len(part.dense_scales)
        del part, array
    return Part(indptr, joined["docs"], joined["weights"], joined["scales"], dense_indptr.astype(np.int64),
                joined["dense_terms"], dense_weights, dense_scales)
