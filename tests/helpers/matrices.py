"""Hypothesis strategies for the matrices callers pass in (every scipy format, dense arrays, awkward layouts),
a bit-for-bit snapshot to prove they were not changed, and an exact brute-force scorer to check results.

The exact scorer adds the products of shared terms in ascending term order in float32, which is the order
the index promises (`mlsr.index.inverted`): its scores must equal these floats, not just be close to them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from hypothesis import strategies as st

FORMATS = ("csr", "csc", "coo", "lil", "csr_array", "dense")
DTYPES = ("float16", "float32", "float64", "int32", "int64")
# weights across the range a head can give, from below float16's smallest subnormal to large
WEIGHT = st.one_of(st.floats(1e-12, 1e4), st.sampled_from([1e-12, 1e-9, 6e-8, 1e-5, 0.5, 1.0, 3.0, 1e4]))


@dataclass
class Given:
    """A matrix as a caller passes it, and the values it stands for ((n, vocab) float32, as toarray() sums them)."""

    matrix: object
    value: np.ndarray
    form: str


@st.composite
def matrices(draw, rows: tuple[int, int] = (1, 6), vocab: int = 24, signed: bool = False,
             forms: tuple[str, ...] = FORMATS, dtypes: tuple[str, ...] = DTYPES) -> Given:
    """An (n, vocab) matrix in a drawn format and dtype, with explicit zeros, duplicates and unsorted indices."""
    n = draw(st.integers(*rows))
    form = draw(st.sampled_from(forms))
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    if dtype == np.float16:
        form = "dense"  # scipy.sparse has no float16
    cells = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, vocab - 1)), unique=True, max_size=4 * n + 8))
    weights = [draw(WEIGHT) * (draw(st.sampled_from([1, -1])) if signed else 1) for _ in cells]
    zeros = draw(st.lists(st.booleans(), min_size=len(cells), max_size=len(cells)))
    weights = [0.0 if zero and i % 3 == 0 else w for i, (w, zero) in enumerate(zip(weights, zeros))]  # explicit zeros
    if np.issubdtype(dtype, np.integer):
        weights = [float(np.rint(w)) for w in weights]
    entries = [(r, c, w) for (r, c), w in zip(cells, weights)]
    if form in ("csr", "csc", "coo", "csr_array"):  # the formats that can hold duplicates: each at most twice
        twice = draw(st.lists(st.sampled_from(entries), unique=True, max_size=4)) if entries else []
        entries += [(r, c, draw(WEIGHT) * (-1 if signed and draw(st.booleans()) else 1)) for r, c, _ in twice]
        if np.issubdtype(dtype, np.integer):
            entries = [(r, c, float(np.rint(w))) for r, c, w in entries]
        entries = draw(st.permutations(entries))  # unsorted indices
    value = np.zeros((n, vocab), dtype=dtype)
    for r, c, w in entries:
        value[r, c] += np.asarray(w, dtype=np.float64).astype(dtype)  # in the input's dtype, as scipy sums duplicates
    value = value.astype(np.float32)
    return Given(build(form, entries, n, vocab, dtype, draw), value, form)


def build(form: str, entries: list, n: int, vocab: int, dtype: np.dtype, draw) -> object:
    rows = np.array([r for r, _, _ in entries], dtype=np.int64)
    cols = np.array([c for _, c, _ in entries], dtype=np.int64)
    data = np.array([w for _, _, w in entries], dtype=np.float64).astype(dtype)
    if form == "dense":
        array = np.zeros((n, vocab), dtype=dtype)
        array[rows, cols] = data
        layout = draw(st.sampled_from(["C", "F", "strided", "readonly"]))
        if layout == "F":
            array = np.asfortranarray(array)
        elif layout == "strided":
            wide = np.zeros((n, 2 * vocab), dtype=dtype)
            wide[:, ::2] = array
            array = wide[:, ::2]
        elif layout == "readonly":
            array.flags.writeable = False
        return array
    if form == "coo":
        return sp.coo_matrix((data, (rows, cols)), shape=(n, vocab))
    if form == "lil":
        return sp.lil_matrix(sp.coo_matrix((data, (rows, cols)), shape=(n, vocab)))
    major, minor, shape = (cols, rows, (vocab, n)) if form == "csc" else (rows, cols, (n, vocab))
    order = np.argsort(major, kind="stable")  # group by major axis, keep the drawn (unsorted) order inside
    indptr = np.zeros(shape[0] + 1, dtype=np.int32)
    np.add.at(indptr, major + 1, 1)
    indptr = np.cumsum(indptr).astype(np.int32)
    parts = (data[order], minor[order].astype(np.int32), indptr)
    if form == "csc":
        return sp.csc_matrix(parts, shape=(n, vocab))
    return (sp.csr_array if form == "csr_array" else sp.csr_matrix)(parts, shape=(n, vocab))


def snapshot(obj) -> object:
    """Everything of `obj` a function could change: arrays (bytes, dtype, shape, strides, flags) and attributes."""
    if isinstance(obj, np.ndarray) and obj.dtype == object:  # lil_matrix rows and data: arrays of lists
        return ("objects", obj.shape, [copy.deepcopy(item) for item in obj.ravel()])
    if isinstance(obj, np.ndarray):
        flags = {name: bool(obj.flags[name]) for name in ("C_CONTIGUOUS", "F_CONTIGUOUS", "WRITEABLE", "ALIGNED", "OWNDATA")}
        return ("ndarray", obj.dtype.str, obj.shape, obj.strides, flags, np.array(obj, copy=True).tobytes())
    if sp.issparse(obj):
        state = {}
        for name, value in sorted(vars(obj).items()):
            state[name] = snapshot(value) if isinstance(value, (np.ndarray, tuple, list)) else copy.deepcopy(value)
        return (type(obj).__name__, obj.dtype.str, obj.shape, state)
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [snapshot(item) for item in obj])
    return copy.deepcopy(obj)


def exact_scores(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """(q, n) float32: per pair, the products of the terms in ascending order, added one by one in float32."""
    queries, docs = np.asarray(queries, np.float32), np.asarray(docs, np.float32)
    scores = np.zeros((len(queries), len(docs)), dtype=np.float32)
    for i, query in enumerate(queries):
        products = query[None, :] * docs  # float32 products; terms the pair does not share add 0
        if products.shape[1]:
            scores[i] = np.add.accumulate(products, axis=1, dtype=np.float32)[:, -1]  # sequential, not pairwise
    return scores


def exact_ranking(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of scores: score descending, then row ascending."""
    order = np.array([np.lexsort((np.arange(len(row)), -row))[:k] for row in scores], dtype=np.int64)
    order = order.reshape(len(scores), -1)
    return np.take_along_axis(scores, order, 1), order


def stored(value: np.ndarray, precision: str) -> np.ndarray:
    """The weights an index keeps of `value`: float32 as given, or rounded to float16 (then read as float32)."""
    return value if precision == "float32" else value.astype(np.float16).astype(np.float32)
