"""The term vocabulary: ids <-> word pieces, which pieces are readable, and decoding vectors to terms."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mlsr.checks import check_top_k
from mlsr.errors import InputError

VOCAB_FILE = "vocab.txt"
_BRACKETED = re.compile(r"^\[[^\]]*\]$")  # [CLS], [SEP], [PAD], [MASK], [UNK], [unused17], ...

Terms = list[tuple[str, float]]


@dataclass(frozen=True)
class Vocabulary:
    """Word pieces in id order (row i of a tokenizer's vocabulary is term id i)."""

    terms: tuple[str, ...]
    special_ids: frozenset[int] = field(default_factory=frozenset)

    def __len__(self) -> int:
        return len(self.terms)

    @classmethod
    def from_tokenizer(cls, tokenizer) -> Vocabulary:
        """Read the id -> piece table and the special ids of a transformers tokenizer."""
        by_id = sorted(tokenizer.get_vocab().items(), key=lambda pair: pair[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise InputError("tokenizer vocabulary ids are not contiguous from 0; cannot use it as term ids.")
        return cls(tuple(piece for piece, _ in by_id), frozenset(tokenizer.all_special_ids))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a `vocab.txt` (one piece per line, line number = id)."""
        terms = tuple(Path(path).read_text(encoding="utf-8").split("\n"))
        return cls(terms[:-1] if terms and terms[-1] == "" else terms)

    def save(self, path: str | Path) -> None:
        """Write `vocab.txt`, one piece per line (callers make it atomic)."""
        Path(path).write_text("\n".join(self.terms) + "\n", encoding="utf-8")

    @cached_property
    def sha256(self) -> str:
        """Hash of the pieces in order: two vocabularies score alike only if their hashes agree."""
        return hashlib.sha256("\n".join(self.terms).encode()).hexdigest()

    @cached_property
    def special_mask(self) -> np.ndarray:
        """Boolean per id: control pieces ([CLS], [PAD], [unused0], ...), never shown as terms."""
        mask = np.array([bool(_BRACKETED.match(t)) for t in self.terms], dtype=bool)
        mask[[i for i in self.special_ids if i < len(mask)]] = True
        return mask

    @cached_property
    def punctuation_mask(self) -> np.ndarray:
        """Boolean per id: pieces with no letter or digit (",", "##.", "$"), which leak into long texts."""
        return np.array([not any(ch.isalnum() for ch in t.removeprefix("##")) for t in self.terms], dtype=bool)

    @cached_property
    def ids(self) -> dict[str, int]:
        """Piece -> id."""
        return {term: i for i, term in enumerate(self.terms)}

    def decode(self, vector, top_k: int | None = 20, *, keep_punctuation: bool = False) -> Terms:
        """The non-zero terms of one vector as [(term, weight), ...], by |weight| descending, then id.

        `vector` is a 1 x vocab sparse row, a dense 1-D array or tensor of length vocab (never changed);
        `top_k` None keeps every term. Special
        tokens are always dropped; punctuation-only pieces too unless `keep_punctuation`.
        """
        top_k = check_top_k(top_k)
        ids, weights = nonzero_terms(vector, len(self))
        keep = ~self.special_mask[ids]
        if not keep_punctuation:
            keep &= ~self.punctuation_mask[ids]
        ids, weights = ids[keep], weights[keep]
        order = np.lexsort((ids, -np.abs(weights)))[:top_k]
        return [(self.terms[ids[j]], float(weights[j])) for j in order]


def nonzero_terms(vector, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, weights) of the non-zero entries of one vector given as sparse row, array or tensor (new arrays:
    the vector is never changed)."""
    if sp.issparse(vector):
        row = sp.csr_matrix(vector, copy=True)  # a copy: sum_duplicates below works in place
        if row.shape != (1, vocab_size):
            raise InputError(f"expected one row of {vocab_size} terms, got shape {row.shape}.")
        row.sum_duplicates()
        ids, weights = row.indices.astype(np.int64), row.data.astype(np.float32)
    else:
        if hasattr(vector, "detach"):  # a torch tensor, without importing torch here
            vector = vector.detach().to("cpu").numpy()
        dense = np.asarray(vector, dtype=np.float32).reshape(-1)
        if dense.shape[0] != vocab_size:
            raise InputError(f"expected a vector of {vocab_size} terms, got {dense.shape[0]}.")
        ids = np.flatnonzero(dense)
        weights = dense[ids]
    if not np.isfinite(weights).all():
        raise InputError("the vector holds NaN or infinite weights.")
    nonzero = weights != 0
    return ids[nonzero], weights[nonzero]
