"""Adding and removing documents: a new index equal to a fresh build of the changed collection, from its first changed
block.

Blocks are independent (`mlsr.index.blocks`), so a change keeps every block before the first row it
touches as it is and inverts again only the rows from there on: an add touches the last, partial
block (at most 65,535 stored rows plus the new ones), a remove the blocks from the first removed row
to the end. The rows inverted again are the stored weights: for float16 and float32 that is exactly
what a fresh build of the changed collection stores; for uint8 the rows of those blocks are quantized
again from their stored impacts, each weight moving by at most half its new group's scale step (the
bound of any uint8 build, but from the stored weight: over many changes of the same block the moves can
add up; a build from the original vectors starts afresh). Saving is the usual atomic folder write
(`SparseIndex.save`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from itertools import chain

import numpy as np
import scipy.sparse as sp

from mlsr.checks import shown
from mlsr.errors import InputError
from mlsr.index import blocks as layout
from mlsr.index.blocks import Part, concatenate
from mlsr.index.folder import check_items
from mlsr.index.forward import joined
from mlsr.index.inverted import HALF_MAX, InvertedIndex
from mlsr.index.rows import checked_rows
from mlsr.items import Item

logger = logging.getLogger(__name__)


def appended(inverted: InvertedIndex, rows: sp.csr_matrix) -> InvertedIndex:
    """`inverted` with canonical float32 CSR `rows` appended after its last document."""
    (rows,) = checked_rows([rows], inverted.vocab_size, inverted.precision, "new vectors")  # before any work
    precision = inverted.precision
    if precision == "float16" and rows.nnz and np.abs(rows.data).max() > HALF_MAX:
        # as a build of the union would: float32 throughout, every block inverted again
        logger.warning("new document weights exceed float16's range (%g): storing the index in float32", HALF_MAX)
        return InvertedIndex.from_rows(chain(_stored_rows(inverted, 0, None), [rows]), inverted.vocab_size, "float32")
    keep = _kept_blocks(inverted, inverted.n_docs)
    return _rebuilt(inverted, keep, _stored_rows(inverted, keep, None), rows)


def without(inverted: InvertedIndex, drop: np.ndarray) -> InvertedIndex:
    """`inverted` without the documents at the (distinct, in-range) rows `drop`; later rows move up."""
    if not len(drop):
        return inverted
    keep = _kept_blocks(inverted, int(drop.min()))
    removed = np.zeros(inverted.n_docs, dtype=bool)
    removed[drop] = True
    return _rebuilt(inverted, keep, _stored_rows(inverted, keep, removed), None)


def new_items(items: list[Item], added: Sequence[Item] | None, m: int, existing: set[str]) -> list[Item]:
    """Copies of the items of m new rows (default ids: their future row numbers), checked unique against `existing`."""
    start = len(items)
    added = [Item(id=str(start + i)) for i in range(m)] if added is None else [item.copy() for item in added]
    check_items(added, m)
    taken = [str(item["id"]) for item in added if str(item["id"]) in existing]
    if taken:
        raise InputError(f"{len(taken)} ids are already in the index ({_some(taken)}); remove them first to replace"
                         f" them.")
    return added


def recorded(info: dict, added: int = 0, removed: int = 0) -> dict:
    """A copy of an index's info with its `edits` ({"added", "removed"} since the build) counted up."""
    edits = info["edits"] if isinstance(info.get("edits"), dict) else {}
    return {**info, "edits": {"added": int(edits.get("added", 0)) + added,
                              "removed": int(edits.get("removed", 0)) + removed}}


def rows_of_ids(items: list[Item], ids: Sequence[str]) -> np.ndarray:
    """int64 rows of the items with these ids (each id once), refusing an id the index does not hold."""
    if isinstance(ids, (str, bytes)):
        raise InputError("ids must be a list of ids, not one string.")
    wanted = [str(name) for name in ids]
    if len(set(wanted)) != len(wanted):
        raise InputError("ids to remove must be distinct.")
    row_of = {str(item["id"]): row for row, item in enumerate(items)}
    missing = [name for name in wanted if name not in row_of]
    if missing:
        raise InputError(f"{len(missing)} ids are not in the index ({_some(missing)}); nothing was removed.")
    return np.array(sorted(row_of[name] for name in wanted), dtype=np.int64)


def _some(names: list[str], count: int = 3) -> str:
    """The first few names, each cut short, and how many more."""
    more = f" and {len(names) - count} more" if len(names) > count else ""
    return ", ".join(shown(name) for name in names[:count]) + more


def _kept_blocks(inverted: InvertedIndex, first_changed_row: int) -> int:
    """Blocks before the first changed row, kept as they are (none when the index is one block of its own size).
    `first_changed_row` is at most the document count (`n_docs` itself when rows are only appended)."""
    if inverted.block_size != layout.BLOCK_DOCS:
        return 0  # one block sized to a small collection: a fresh build of the changed one sizes it again
    return first_changed_row // inverted.block_size


def _stored_rows(inverted: InvertedIndex, first_block: int, removed: np.ndarray | None) -> Iterator[sp.csr_matrix]:
    """The stored weights of the blocks from `first_block` on, as document rows, without the `removed` ones."""
    for block in range(first_block, inverted.n_blocks):
        start = block * inverted.block_size
        rows = np.arange(start, start + inverted.block_rows(block))
        if removed is not None:
            rows = rows[~removed[rows]]
        yield inverted.forward.rows(rows, inverted.vocab_size)  # sorted indices, as the builder needs


def _rebuilt(inverted: InvertedIndex, keep: int, rows: Iterator[sp.csr_matrix], extra: sp.csr_matrix | None
             ) -> InvertedIndex:
    """The first `keep` blocks of `inverted` as they are, then `rows` (and `extra`) inverted in blocks after them."""
    chunks = rows if extra is None else chain(rows, [extra])
    if keep == 0:
        return InvertedIndex.from_rows(chunks, inverted.vocab_size, inverted.precision)
    tail = InvertedIndex.from_rows(chunks, inverted.vocab_size, inverted.precision, block_size=inverted.block_size,
                                   own_size=False)
    part = concatenate([_head(inverted, keep), Part(**{name: getattr(tail, name) for name in Part.__annotations__})])
    head_rows = keep * inverted.block_size
    forward = joined([inverted.forward.head(head_rows), tail.forward], inverted.precision)  # the kept rows as they are
    return InvertedIndex(head_rows + tail.n_docs, inverted.vocab_size, inverted.block_size, **part.arrays(),
                         stored_forward=forward)


def _head(inverted: InvertedIndex, blocks: int) -> Part:
    """The first `blocks` blocks of an index as a Part (views of its arrays; `concatenate` copies them)."""
    postings = int(inverted.indptr[blocks * inverted.vocab_size])
    columns = int(inverted.dense_indptr[blocks])
    scales = int(inverted.scale_starts[blocks])
    return Part(inverted.indptr[: blocks * inverted.vocab_size + 1], inverted.docs[:postings],
                inverted.weights[:postings], inverted.scales[:scales], inverted.dense_indptr[: blocks + 1],
                inverted.dense_terms[:columns], inverted.dense_weights[:columns], inverted.dense_scales[:columns])
