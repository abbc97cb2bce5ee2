"""Validation during training: caption -> image retrieval with the head being trained, through the evaluation loop.

The head's vectors are computed batch by batch on the training device. Early in training they are
still dense (most terms positive), and scoring them as a sparse product would take hours; then
documents are scored by a dense product of the same vectors on the device (same scores up to float
rounding, same tie rule), otherwise by a `SparseIndex`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch

from mlsr.data.lsr42 import DenseDataset, Pairs
from mlsr.errors import InputError
from mlsr.evaluation.metrics import term_frequency
from mlsr.evaluation.runs import QuerySet, evaluate
from mlsr.index.ranking import top_k
from mlsr.query_vectors import QueryVectors
from mlsr.index.sparse import Results, SparseIndex
from mlsr.models.encoder import to_csr
from mlsr.models.head import SparseHead

MEASURES = ("R@1", "R@5", "R@10", "MRR@10")
_SPARSE_SEARCH_MAX_OVERLAP = 0.01  # query density x document density below this: score with the sparse index


class _HeadRows:
    """(n, vocab) term weights of n dense vectors, computed on the device when a slice of rows is read: expanded,
    or for the batches `masked` says, masked to the rows' `tokens` (ids, attention mask), as train.py validates."""

    def __init__(self, head: SparseHead, dense: np.ndarray, device, batch_size: int,
                 tokens: tuple[torch.Tensor, torch.Tensor] | None = None, masked: list[bool] | None = None) -> None:
        self.head, self.dense, self.device, self.batch_size = head, dense, device, batch_size
        self.tokens, self.masked = tokens, masked
        self.shape = (len(dense), head.vocab_size)

    def tensor(self, rows: slice) -> torch.Tensor:
        """float32 (rows, vocab) on the device (`rows` a slice with step 1)."""
        first = rows.indices(len(self.dense))[0]
        dense = self.dense[rows]
        out = []
        for start in range(0, len(dense), self.batch_size):
            vectors = torch.from_numpy(np.ascontiguousarray(dense[start : start + self.batch_size])).to(self.device)
            at = first + start  # batches are counted from row 0, as the evaluation loop reads them
            if self.masked is not None and self.masked[at // self.batch_size]:
                if self.tokens is None:  # masking needs each row's tokens
                    raise ValueError("masked batches need the rows' tokens (ids, attention mask).")
                ids, mask = (part[at : at + len(vectors)] for part in self.tokens)
                out.append(self.head(vectors, ids, mask).float())
            else:
                out.append(self.head(vectors).float())
        return torch.cat(out) if out else torch.zeros(0, self.head.vocab_size, device=self.device)

    def __getitem__(self, rows: slice) -> sp.csr_matrix:
        return to_csr(self.tensor(rows))


class _TensorScorer:
    """Exact top-k by a dense product on the device: the evaluation loop's searcher while vectors are dense."""

    name = "torch"

    def __init__(self, documents: torch.Tensor) -> None:
        self.documents = documents

    def __len__(self) -> int:
        return self.documents.shape[0]

    def search(self, queries: sp.spmatrix, k: int = 10) -> Results:
        dense = torch.from_numpy(queries.toarray()).to(self.documents)
        scores = (dense @ self.documents.T).float().cpu().numpy()
        rows = np.stack([top_k(row, k) for row in scores]) if len(scores) else np.zeros((0, k), np.int64)
        return Results(np.take_along_axis(scores, rows, 1).astype(np.float32), rows)

    def dense_search(self, vectors: np.ndarray, k: int = 10) -> Results:
        raise InputError("validation ranks sparse queries only (no dense run).")

    def score(self, query: sp.spmatrix, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        raise InputError("validation ranks sparse queries only (no hybrid run).")

    def close(self) -> None:
        """Nothing to release: the documents are a tensor."""


@torch.inference_mode()
def validate(head: SparseHead, data: DenseDataset, pairs: Pairs, *, device: str | torch.device = "cpu",
             batch_size: int = 1024, search: str = "auto", tokens: tuple[torch.Tensor, torch.Tensor] | None = None,
             mask_ratio: float = 0.0, seed: int = 0) -> dict[str, float | str | None]:
    """Caption -> image retrieval over the images of `pairs`.

    Captions are fully expanded (as at search time) unless `tokens` (their ids and attention mask) are
    given: then each batch of `batch_size` captions is masked to its tokens with probability `mask_ratio`
    (drawn from `seed`), as the published train.py validates. Returns R@1/5/10, MRR@10 (the evaluation
    loop's metrics), mean active terms of captions and images, FLOPs, and which scorer ranked (`search`:
    "sparse" or "dense"; "auto" picks by density).
    """
    head.eval()
    gallery, relevant = pairs.gallery()
    images = _HeadRows(head, data.image_vectors[gallery], device, batch_size)
    masked = None
    if tokens is not None and mask_ratio > 0:
        batches = -(-len(pairs) // batch_size)
        masked = (torch.rand(batches, generator=torch.Generator().manual_seed(seed)) < mask_ratio).tolist()
    captions = _HeadRows(head, data.text_vectors[pairs.text_rows], device, batch_size, tokens, masked)
    documents = images.tensor(slice(None))
    if search == "auto":
        first = captions.tensor(slice(0, batch_size))
        density = float((documents > 0).float().mean()) * float((first > 0).float().mean())
        search = "sparse" if density < _SPARSE_SEARCH_MAX_OVERLAP else "dense"
    # float32: validation scores the head's own weights, as the dense product beside it does
    searcher = (SparseIndex.build(to_csr(documents), precision="float32") if search == "sparse"
                else _TensorScorer(documents))
    query_ids = [str(i) for i in range(len(pairs))]
    qrels = {qid: {str(int(image)): 1} for qid, image in zip(query_ids, relevant)}
    doc_frequency = term_frequency(documents)
    evaluation = evaluate(searcher, QuerySet(query_ids, QueryVectors(captions)), qrels,
                          doc_ids=[str(i) for i in range(len(gallery))], doc_frequency=doc_frequency,
                          runs=["expand"], measures=MEASURES, batch_size=batch_size)
    result = evaluation.run("expand")
    return {**result.metrics, "query_terms": result.query_terms, "image_terms": result.doc_terms,
            "flops": result.flops, "queries": len(pairs), "images": len(gallery), "search": search}
