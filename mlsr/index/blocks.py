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
- "uint8": 8-bit impacts with a calibrated scale per term and block, as PISA and Seismic quantize:
  `scale[b, t] = max weight of term t in block b / 255` and `impact = round(weight / scale)`, so
  the stored weight `scale * impact` is within `scale / 2` of the original (impacts rounded to 0 are
  dropped). Impacts are unsigned: document weights must be >= 0 (learned sparse weights are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import scipy.sparse as sp

BLOCK_DOCS = 65_536  # rows per block: the largest block whose rows fit uint16
IMPACT_LEVELS = 255  # uint8 impacts 1..255 (0 = absent)
# A term held by at least `DENSE_SHARE` of a block's rows is a dense column there: adding a column
# with vector instructions costs ~0.1 ns per row, a scatter over a posting list ~1 ns per posting.
# Terms from FAST_DENSE_SHARE up become columns too, as long as the block stays within
# DENSE_BYTES_FACTOR times the bytes of its posting lists (a column costs a weight per row).
DENSE_SHARE = 1 / 3
FAST_DENSE_SHARE = 0.15
DENSE_BYTES_FACTOR = 1.25
DENSE_MIN_DOCS = 4096  # ...but only in blocks this large (below it the difference is noise)
ID_DTYPE = np.dtype(np.uint16)
WEIGHT_DTYPES = {"uint8": np.dtype(np.uint8), "float16": np.dtype(np.float16), "float32": np.dtype(np.float32)}


@dataclass
class Block:
    """One block's postings: `indptr` (vocab + 1,) into `docs`/`weights`, its dense columns and uint8 scales."""

    indptr: np.ndarray  # int64 (vocab + 1,), from 0
    docs: np.ndarray  # uint16: rows within the block, ascending per term
    weights: np.ndarray  # the precision's dtype
    dense_terms: np.ndarray  # int32, ascending
    dense_weights: np.ndarray  # (len(dense_terms), block_size), the precision's dtype
    scales: np.ndarray | None  # float32 (vocab,) for uint8, else None


def row_blocks(chunks: Iterable[sp.csr_matrix], block_size: int) -> Iterator[sp.csr_matrix]:
    """Regroup CSR row chunks (any sizes, same width) into consecutive blocks of `block_size` rows (the last may be shorter)."""
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


def invert_block(rows: sp.csr_matrix, precision: str, block_size: int) -> Block:
    """Invert one block of canonical CSR float32 rows (at most `block_size`, no explicit zeros) in a precision."""
    n, vocab_size = rows.shape
    columns = rows.tocsc()  # terms x rows, rows ascending: the block's posting lists
    indptr, docs, data = columns.indptr.astype(np.int64), columns.indices, columns.data
    scales = None
    if precision == "uint8":
        data, scales = quantize(data, indptr)
    elif precision == "float16":
        data = data.astype(np.float16)
    keep = data != 0  # weights that rounded to 0 are dropped, as absent terms
    counts = np.bincount(np.repeat(np.arange(vocab_size), np.diff(indptr))[keep], minlength=vocab_size)
    weight_bytes = WEIGHT_DTYPES[precision].itemsize
    dense_terms = dense_columns(counts, n, weight_bytes) if n >= DENSE_MIN_DOCS else np.zeros(0, np.int64)
    dense_weights = np.zeros((len(dense_terms), block_size), dtype=WEIGHT_DTYPES[precision])
    for slot, term in enumerate(dense_terms):
        start, stop = indptr[term], indptr[term + 1]
        dense_weights[slot, docs[start:stop]] = data[start:stop]
    sparse_counts = counts.copy()
    sparse_counts[dense_terms] = 0
    keep &= np.repeat(sparse_counts > 0, np.diff(indptr))
    block_indptr = np.zeros(vocab_size + 1, dtype=np.int64)
    np.cumsum(sparse_counts, out=block_indptr[1:])
    return Block(block_indptr, docs[keep].astype(ID_DTYPE), data[keep], dense_terms.astype(np.int32), dense_weights, scales)


def quantize(data: np.ndarray, indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint8 impacts of non-negative float32 weights grouped by term (`indptr`), and each term's float32 scale.

    scale = max / 255 per term (0 for a term without postings); impact = round(weight / scale).
    """
    vocab_size = len(indptr) - 1
    lengths = np.diff(indptr)
    scales = np.zeros(vocab_size, dtype=np.float32)
    held = np.flatnonzero(lengths)
    if len(held):
        scales[held] = np.maximum.reduceat(data, indptr[held]) / np.float32(IMPACT_LEVELS)
    per_posting = np.repeat(scales, lengths)
    impacts = np.divide(data, per_posting, out=np.zeros_like(data), where=per_posting > 0)
    impacts = np.clip(np.rint(impacts), 0, IMPACT_LEVELS).astype(np.uint8)
    return impacts, scales


def dense_columns(counts: np.ndarray, n: int, weight_bytes: int) -> np.ndarray:
    """Terms of a block to store as dense columns (ascending): see DENSE_SHARE and FAST_DENSE_SHARE."""
    posting_bytes = ID_DTYPE.itemsize + weight_bytes
    order = np.argsort(-counts, kind="stable")
    order = order[counts[order] >= FAST_DENSE_SHARE * n]
    sparse_bytes = posting_bytes * (counts.sum() - np.cumsum(counts[order]))  # if the first j+1 become columns
    total = sparse_bytes + weight_bytes * n * np.arange(1, len(order) + 1)
    fits = (counts[order] >= DENSE_SHARE * n) | (total <= DENSE_BYTES_FACTOR * posting_bytes * max(counts.sum(), 1))
    chosen = len(order) if fits.all() else int(np.argmin(fits))  # the longest prefix that fits
    return np.sort(order[:chosen])


def widened(block: Block) -> Block:
    """A float16 block with its weights as float32 (exactly the same values)."""
    return Block(block.indptr, block.docs, block.weights.astype(np.float32), block.dense_terms,
                 block.dense_weights.astype(np.float32), None)


def concatenate_blocks(blocks: list[Block], precision: str, vocab_size: int, block_size: int) -> dict[str, np.ndarray]:
    """The layout's arrays from per-block postings, each block's arrays freed once copied (peak ~ one index)."""
    dtype = WEIGHT_DTYPES[precision]
    n_blocks = len(blocks)
    sizes = np.array([len(block.docs) for block in blocks], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    indptr = np.zeros(n_blocks * vocab_size + 1, dtype=np.int64)
    docs = np.empty(int(starts[-1]), dtype=ID_DTYPE)
    weights = np.empty(int(starts[-1]), dtype=dtype)
    columns = np.array([len(block.dense_terms) for block in blocks], dtype=np.int64)
    dense_indptr = np.concatenate([[0], np.cumsum(columns)]).astype(np.int64)
    dense_terms = np.empty(int(dense_indptr[-1]), dtype=np.int32)
    dense_weights = np.empty((int(dense_indptr[-1]), block_size), dtype=dtype)
    scales = np.zeros((n_blocks, vocab_size) if precision == "uint8" else (0, vocab_size), dtype=np.float32)
    for b in range(n_blocks):
        block = blocks[b]
        indptr[b * vocab_size + 1 : (b + 1) * vocab_size + 1] = block.indptr[1:] + starts[b]
        docs[starts[b] : starts[b + 1]] = block.docs
        weights[starts[b] : starts[b + 1]] = block.weights
        dense_terms[dense_indptr[b] : dense_indptr[b + 1]] = block.dense_terms
        dense_weights[dense_indptr[b] : dense_indptr[b + 1]] = block.dense_weights
        if block.scales is not None:
            scales[b] = block.scales
        blocks[b] = None  # type: ignore[call-overload]  # free as we go
    return {"indptr": indptr, "docs": docs, "weights": weights, "scales": scales,
            "dense_indptr": dense_indptr, "dense_terms": dense_terms, "dense_weights": dense_weights}
