"""Text and images -> sparse vocabulary vectors: frozen dense backbone, then the sparse head."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from collections.abc import Collection, Iterator, Sequence
from typing import cast

import numpy as np
import scipy.sparse as sp
import torch

from mlsr.errors import InputError, ModelLoadError
from mlsr.images import ImageInput, load_image
from mlsr.query_vectors import QueryVectors
from mlsr.models import default_device
from mlsr.models.backbone import Backbone, load_backbone, text_windows_of
from mlsr.models.head import SparseHead, token_mask
from mlsr.models.record import ModelRecord, ModelRef, recorded_name
from mlsr.models.tokenizer import LockedTokenizer, load_tokenizer
from mlsr.settings import (DEFAULT_BACKBONE, DEFAULT_HEAD, DEFAULT_TOKENIZER, ENCODE_BATCH, ENCODE_MODES, HEAD_BATCH,
                           EncodeMode, Progress)
from mlsr.text import MAX_TEXT_CHARS, as_texts
from mlsr.threads import configure_torch
from mlsr.vocab import Terms, Vocabulary

logger = logging.getLogger(__name__)


@dataclass
class Encoder:
    """Encodes text and images into (n, vocab) CSR matrices of term weights (rows are items)."""

    backbone: Backbone | None  # None: head only, for precomputed dense vectors (see `head_only`)
    head: SparseHead
    tokenizer: LockedTokenizer  # the head's tokenizer: term ids for masking and decoding
    vocab: Vocabulary
    batch_size: int = ENCODE_BATCH
    max_chars: int = MAX_TEXT_CHARS
    tokenizer_source: str | None = None
    backbone_ref: ModelRef | None = None  # head_only: the backbone that made the vectors (weights not loaded)

    def __post_init__(self) -> None:
        configure_torch(torch)  # the thread policy's intra-op threads, once the app or command line applied it

    @classmethod
    def from_pretrained(
        cls,
        backbone: str = DEFAULT_BACKBONE,
        head: str = DEFAULT_HEAD,
        tokenizer: str = DEFAULT_TOKENIZER,
        *,
        device: str | None = None,
        batch_size: int = ENCODE_BATCH,
        text_int8: bool = False,
    ) -> Encoder:
        """Load backbone, head and tokenizer, each from a Hub id or a local folder; `text_int8`: the opt-in 8-bit
        text encoder (`mlsr.models.int8`; CPU only, images and the head stay float32)."""
        device = device or default_device()
        sparse_head, term_tokenizer, vocab, source = _load_head_and_vocab(head, tokenizer, device)
        dense_model = load_backbone(backbone, device=device)
        if dense_model.dense_size != sparse_head.config.dense_size:
            raise ModelLoadError(
                f"backbone {backbone!r} gives {dense_model.dense_size}-d vectors but head {head!r} reads"
                f" {sparse_head.config.dense_size}-d ones; pick a head trained on this backbone."
            )
        encoder = cls(dense_model, sparse_head, term_tokenizer, vocab, batch_size=batch_size, tokenizer_source=source)
        return encoder.with_int8_text() if text_int8 else encoder

    @classmethod
    def head_only(
        cls,
        head: str = DEFAULT_HEAD,
        tokenizer: str = DEFAULT_TOKENIZER,
        *,
        device: str | None = None,
        batch_size: int = HEAD_BATCH,
        backbone: ModelRef | None = None,
    ) -> Encoder:
        """Head and tokenizer without the dense backbone: sparsifies precomputed vectors (published datasets).

        `backbone` is what `models()` reports for the model that made those vectors; its weights are not
        loaded, so its fingerprint is usually unknown (None).
        """
        device = device or default_device()
        sparse_head, term_tokenizer, vocab, source = _load_head_and_vocab(head, tokenizer, device)
        return cls(None, sparse_head, term_tokenizer, vocab, batch_size=batch_size, tokenizer_source=source,
                   backbone_ref=backbone)

    def with_int8_text(self) -> Encoder:
        """This encoder with an int8 copy of its text encoder (`mlsr.models.int8`); this one is unchanged."""
        from mlsr.models.int8 import int8_text_backbone

        return dataclasses.replace(self, backbone=int8_text_backbone(self._need_backbone()))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def dense_size(self) -> int:
        return self.head.config.dense_size

    def models(self) -> ModelRecord:
        """What an index records about the models that built it, and checks again when loaded: a Hub model by id
        and commit, a local folder by its name only (and, as every model, the fingerprint of its weights)."""
        if self.backbone is None:
            backbone = self.backbone_ref or ModelRef()
        else:
            backbone = ModelRef(recorded_name(self.backbone.source, self.backbone.revision), self.backbone.revision,
                                self.backbone.fingerprint())
        return ModelRecord(
            backbone=backbone,
            head=ModelRef(recorded_name(self.head.source, self.head.revision), self.head.revision,
                          self.head.fingerprint()),
            tokenizer=ModelRef(recorded_name(self.tokenizer_source, None)),
            vocab_size=self.vocab_size, vocab_sha256=self.vocab.sha256, dense_size=self.dense_size,
        )

    # -- text -------------------------------------------------------------------------------------

    def encode_text(self, texts: Sequence[str] | str, mode: EncodeMode = "expand",
                    progress: Progress | None = None) -> sp.csr_matrix:
        """Texts (queries) -> (n, vocab) CSR. `expand`: every term the head lights up; `no_expand`: only the text's
        own tokens.

        The own tokens are the word pieces of the raw text, as the reference code masks (`tokenizer.tokenize(raw)`):
        punctuation that BLIP's caption cleaning removes (`. ( ) ! " * # : ; ~`) stays in the mask; `[CLS]`/`[SEP]`
        do not. Long text (an article section) is split into caption-sized windows along sentence
        boundaries, because BLIP's text encoder was trained on 35-token captions; each window is
        encoded on its own and the text's vector is the element-wise max over its windows, so a
        term weighs what it weighs in the window that expresses it best.
        """
        if mode not in ENCODE_MODES:
            raise InputError(f"mode must be one of {ENCODE_MODES}, got {mode!r}.")
        return self._text_vectors(as_texts(texts), {mode}, progress).scoring(mode)

    def encode_captions(
        self, captions: Sequence[str | Sequence[str]] | str, progress: Progress | None = None
    ) -> sp.csr_matrix:
        """Captions as documents, masked to their own tokens (the seed paper's MLP caption encoder).

        An element may be one caption or a list of captions of the same document (COCO has five);
        a document's vector is then the element-wise max over its captions' vectors.
        """
        captions = as_texts(captions, "captions")
        groups = [[c] if isinstance(c, str) else list(c) for c in captions]
        if any(not group for group in groups):
            raise InputError("every document needs at least one caption.")
        flat = [caption for group in groups for caption in group]
        owners = np.repeat(np.arange(len(groups)), [len(group) for group in groups])
        return _max_pool(self.encode_text(flat, mode="no_expand", progress=progress), owners, len(groups))

    def encode_text_views(self, texts: Sequence[str] | str, progress: Progress | None = None) -> QueryVectors:
        """Texts -> their expanded, no_expand and dense vectors, from one backbone pass over their windows.

        `expand` and `no_expand` equal what `encode_text` gives in that mode, from one head pass instead of two
        (no_expand is the expanded weights times the text's token mask, as the head masks); `dense` is (n,
        dense_size) float32 unit vectors, a long text's the normalised mean of its windows' backbone vectors.
        """
        return self._text_vectors(as_texts(texts), {"expand", "no_expand", "dense"}, progress)

    # -- images -----------------------------------------------------------------------------------

    def encode_images(self, images: Sequence[ImageInput] | ImageInput, progress: Progress | None = None
                      ) -> sp.csr_matrix:
        """Images (a list of paths, bytes or PIL images, or one of them) -> (n, vocab) CSR, always expanded (an image
        has no tokens)."""
        sparse, _ = self.encode_images_with_dense(images, progress)
        return sparse

    def encode_images_with_dense(
        self, images: Sequence[ImageInput] | ImageInput, progress: Progress | None = None
    ) -> tuple[sp.csr_matrix, np.ndarray]:
        """Both the sparse (n, vocab) and the dense (n, dense_size) vectors, from one backbone pass."""
        # Anything but a list or tuple is one image (a str is a path, not a sequence of images).
        images = list(images) if isinstance(images, (list, tuple)) else [cast(ImageInput, images)]
        sparse_rows, dense_rows = [], []
        for dense in self._image_batches(images, progress):
            sparse_rows.append(self._sparsify(dense))
            dense_rows.append(dense.cpu().numpy())
        if not sparse_rows:
            return _empty(0, self.vocab_size), np.zeros((0, self.dense_size), dtype=np.float32)
        return sp.vstack(sparse_rows, format="csr"), np.concatenate(dense_rows)

    def sparsify(self, dense: np.ndarray, mask_texts: Sequence[str] | None = None) -> sp.csr_matrix:
        """Precomputed (n, dense_size) vectors -> (n, vocab) CSR (for published embeddings).

        Expanded, unless `mask_texts` (one raw text per row, e.g. a dataset's `raw` captions) is given:
        then each row keeps only the word pieces of its text (`no_expand`), as the reference code and
        `encode_text(..., mode="no_expand")` mask.
        """
        dense = np.asarray(dense, dtype=np.float32)  # a new array unless it is float32 already; never written to
        if dense.ndim != 2 or dense.shape[1] != self.dense_size:
            raise InputError(f"expected dense vectors of shape (n, {self.dense_size}), got {dense.shape}.")
        if not np.isfinite(dense).all():
            raise InputError("the dense vectors hold NaN or infinite values.")
        if not dense.flags.writeable:  # arrow's buffers are read-only; torch wants to own what it wraps
            dense = dense.copy()
        if mask_texts is not None and len(mask_texts) != len(dense):
            raise InputError(f"{len(mask_texts)} texts to mask {len(dense)} vectors: give one text per row.")
        masks = None if mask_texts is None else list(mask_texts)
        if masks is not None and not all(isinstance(text, str) for text in masks):
            raise InputError("mask_texts must be texts (str), one per row.")
        tensor = torch.from_numpy(dense).to(self.head.proj.weight.device)
        rows = [self._sparsify(tensor[start : start + HEAD_BATCH],
                               masks[start : start + HEAD_BATCH] if masks is not None else None)
                for start in range(0, len(dense), HEAD_BATCH)]
        return sp.vstack(rows, format="csr") if rows else _empty(0, self.vocab_size)

    def decode(self, row, top_k: int | None = 20, *, keep_punctuation: bool = False) -> Terms:
        """One vector (sparse row, array or tensor) -> [(term, weight), ...], heaviest first."""
        return self.vocab.decode(row, top_k, keep_punctuation=keep_punctuation)

    def to_sparse_encoder(self, query_mode: EncodeMode = "expand", document_mode: EncodeMode = "no_expand"):
        """This encoder as a sentence-transformers `SparseEncoder` (text and images; the same weights, not a copy).

        `query_mode` and `document_mode` say how `encode_query` and `encode_document` encode texts (images are
        always expanded). Needs the optional sentence-transformers package (`pip install mlsr[st]`).
        """
        from mlsr.models.st.assemble import to_sparse_encoder

        return to_sparse_encoder(self, query_mode=query_mode, document_mode=document_mode)

    # -- internals --------------------------------------------------------------------------------

    def _stack(self, rows: list[sp.csr_matrix]) -> sp.csr_matrix:
        return sp.vstack(rows, format="csr") if rows else _empty(0, self.vocab_size)

    def _need_backbone(self) -> Backbone:
        if self.backbone is None:
            raise ModelLoadError("this encoder holds only the sparse head (Encoder.head_only); encoding text or"
                                 " images needs the dense backbone: use Encoder.from_pretrained.")
        return self.backbone

    def _windows(self, texts: list[str]) -> tuple[list[str], list[str], np.ndarray]:
        """All windows of all texts (see `text_windows_of`)."""
        return text_windows_of(texts, self._need_backbone(), self.max_chars)

    def _text_batches(self, texts: list[str], progress: Progress | None
                      ) -> Iterator[tuple[np.ndarray, list[str], torch.Tensor]]:
        """Windows -> batches -> backbone, the one loop of every text method: per batch, each window's text (its
        owner), raw span and dense vector (on the head's device); `progress` counts a batch once it is used."""
        windows, raws, owners = self._windows(texts)
        backbone, device = self._need_backbone(), self.head.proj.weight.device
        for start in range(0, len(windows), self.batch_size):
            stop = start + self.batch_size
            yield owners[start:stop], raws[start:stop], backbone.embed_texts(windows[start:stop]).to(device)
            if progress:
                progress(len(windows[start:stop]))

    def _text_vectors(self, texts: list[str], views: Collection[str], progress: Progress | None) -> QueryVectors:
        """The `views` ("expand", "no_expand", "dense") of texts from one backbone pass, each pooled over a text's
        windows (max for the sparse views, normalised mean for dense); a view not asked for is None."""
        expand, no_expand, owners = [], [], []
        dense_sum = np.zeros((len(texts), self.dense_size), dtype=np.float32) if "dense" in views else None
        for batch_owners, raws, dense in self._text_batches(texts, progress):
            owners.append(batch_owners)
            if "expand" in views and "no_expand" in views:  # one head pass for both
                expanded, masked = self._sparsify_views(dense, raws)
                expand.append(expanded)
                no_expand.append(masked)
            elif "expand" in views:
                expand.append(self._sparsify(dense))
            elif "no_expand" in views:
                no_expand.append(self._sparsify(dense, raws))
            if dense_sum is not None:
                np.add.at(dense_sum, batch_owners, dense.cpu().numpy())
        window_owners = np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64)

        def pooled(rows: list[sp.csr_matrix], view: str) -> sp.csr_matrix | None:
            return _max_pool(self._stack(rows), window_owners, len(texts)) if view in views else None

        return QueryVectors(pooled(expand, "expand"), pooled(no_expand, "no_expand"),
                            None if dense_sum is None else _unit_rows(dense_sum))

    def _image_batches(self, images: list[ImageInput], progress: Progress | None) -> Iterator[torch.Tensor]:
        """Images -> batches -> backbone, as `_text_batches`: each batch's dense vectors (on the head's device)."""
        backbone, device = self._need_backbone(), self.head.proj.weight.device
        for start in range(0, len(images), self.batch_size):
            batch = [load_image(image) for image in images[start : start + self.batch_size]]
            yield backbone.embed_images(batch).to(device)
            if progress:
                progress(len(batch))

    @torch.inference_mode()
    def _sparsify(self, dense: torch.Tensor, mask_texts: Sequence[str] | None = None) -> sp.csr_matrix:
        """Head output as CSR; with `mask_texts`, each row keeps only the word pieces of its raw text.

        The ids are `tokenizer(text, add_special_tokens=False)`, the same as the reference's
        `convert_tokens_to_ids(tokenizer.tokenize(raw))`: no `[CLS]`/`[SEP]`, no truncation.
        """
        ids = attention = None
        if mask_texts is not None:
            tokens = self.tokenizer(list(mask_texts), add_special_tokens=False, padding=True, return_tensors="pt")
            ids, attention = tokens["input_ids"].to(dense.device), tokens["attention_mask"].to(dense.device)
        weights = self.head(dense, input_ids=ids, attention_mask=attention)
        return to_csr(weights)

    @torch.inference_mode()
    def _sparsify_views(self, dense: torch.Tensor, mask_texts: Sequence[str]) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """The expanded and the masked (`no_expand`) CSR of one head pass: the head masks by multiplying its
        weights by the same 0/1 token mask, so the masked view is the same floats as `_sparsify(dense, mask_texts)`."""
        weights = self.head(dense)
        tokens = self.tokenizer(list(mask_texts), add_special_tokens=False, padding=True, return_tensors="pt")
        mask = token_mask(tokens["input_ids"].to(dense.device), tokens["attention_mask"].to(dense.device),
                          self.head.config.vocab_size)
        return to_csr(weights), to_csr(weights * mask.to(weights))


def _load_head_and_vocab(head: str, tokenizer: str, device: str) -> tuple[SparseHead, LockedTokenizer, Vocabulary, str]:
    """The head, its tokenizer and vocabulary (checked to have the head's size), and the tokenizer's name."""
    sparse_head = SparseHead.from_pretrained(head).to(device)
    term_tokenizer, source = load_tokenizer(tokenizer)
    vocab = Vocabulary.from_tokenizer(term_tokenizer)
    if len(vocab) != sparse_head.vocab_size:
        raise ModelLoadError(
            f"tokenizer {tokenizer!r} has {len(vocab):,} terms but head {head!r} scores"
            f" {sparse_head.vocab_size:,}; use the tokenizer the head was trained with ({sparse_head.config.mlm_head})."
        )
    return sparse_head, term_tokenizer, vocab, source


def to_csr(weights: torch.Tensor) -> sp.csr_matrix:
    """A (B, V) mostly-zero tensor -> CSR float32, touching only the non-zeros."""
    rows, cols = torch.nonzero(weights, as_tuple=True)
    values = weights[rows, cols].float().cpu().numpy()
    matrix = sp.csr_matrix(
        (values, (rows.cpu().numpy(), cols.cpu().numpy())), shape=tuple(weights.shape), dtype=np.float32
    )
    matrix.sort_indices()
    return matrix


def _max_pool(rows: sp.csr_matrix, owners: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """Element-wise max of the rows that share an owner -> (n_groups, vocab) CSR (weights are >= 0)."""
    if len(owners) == n_groups and np.array_equal(owners, np.arange(n_groups)):
        return rows  # one row per group: nothing to pool
    vocab_size = rows.shape[1]
    coo = rows.tocoo()
    keys = owners[coo.row].astype(np.int64) * vocab_size + coo.col
    order = np.lexsort((-coo.data, keys))  # per (group, term): largest weight first
    keys, values = keys[order], coo.data[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[1:] != keys[:-1]
    keys, values = keys[first], values[first]
    return sp.csr_matrix(
        (values, (keys // vocab_size, keys % vocab_size)), shape=(n_groups, vocab_size), dtype=np.float32
    )


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def _empty(rows: int, cols: int) -> sp.csr_matrix:
    return sp.csr_matrix((rows, cols), dtype=np.float32)
