"""Train a D2S sparse head on paired dense vectors: the recipe of Nguyen et al., ECIR 2024 ("Training").

The frozen dense model is the teacher: for a batch of (caption, image) pairs its in-batch scores,
sharpened by a temperature, are soft labels for the sparse scores in both directions. L1 keeps the
vectors sparse; its weight ramps up quadratically. Expansion control: with a probability that falls
from 1 to 0 over the epochs, a batch's captions may light up only their own tokens, so the head first
learns to put weight on the words people write, then learns to expand. Images always expand.

Output folder: the best head by validation R@1 (`config.json`, `model.safetensors`, loads with
`SparseHead.from_pretrained`), its tokenizer, a model card (`README.md`), `training.json`,
`train_log.jsonl`, and `checkpoint/` (the last epoch, with optimizer state) for `resume`. The objective is in
`mlsr.training.objectives`, validation in `mlsr.training.validation`.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast
from collections.abc import Callable, Sequence

import numpy as np
import torch

from mlsr import __version__
from mlsr._files import atomic_path, atomic_write_json, write_jsonl
from mlsr.data.lsr42 import DenseDataset, load_dense_dataset
from mlsr.errors import InputError
from mlsr.models import default_device
from mlsr.models.head import SparseHead
from mlsr.models.tokenizer import load_tokenizer
from mlsr.settings import DEFAULT_TOKENIZER
from mlsr.training.card import model_card
from mlsr.training.checkpoint import CHECKPOINT_DIR, _checkpoint_folder, load_checkpoint, save_checkpoint
from mlsr.training.config import DEFAULT_MLM, TrainConfig
from mlsr.training.head_init import new_head, resolve_mlm
from mlsr.training.objectives import distillation_loss, l1, lr_factor, mask_ratio, reg_weight
from mlsr.training.validation import MEASURES, validate
from mlsr.vocab import Vocabulary

logger = logging.getLogger(__name__)

_LOG_FILE = "train_log.jsonl"
_SUMMARY_FILE = "training.json"
CARD_FILE = "README.md"
_MAX_CAPTION_TOKENS = {"reference": 512, "retrieval": 128}  # word pieces kept per caption for its mask, by mask_tokens
_LEGACY_CONFIG = {"mask_tokens": "retrieval", "last_batch": "drop", "validation": "expanded"}  # runs before these


def build_optimizer(head: SparseHead, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with two groups: the (pretrained) LayerNorm + vocab projector at `lr`, the new projection at `proj_lr`."""
    pretrained = [*head.vocab_layer_norm.parameters(), *head.vocab_projector.parameters()]
    return torch.optim.AdamW(
        [{"params": pretrained, "lr": config.lr, "base_lr": config.lr},
         {"params": list(head.proj.parameters()), "lr": config.proj_lr, "base_lr": config.proj_lr}],
        betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
    )



def train_step(
    head: SparseHead,
    optimizer: torch.optim.Optimizer,
    text_dense: torch.Tensor,
    image_dense: torch.Tensor,
    *,
    input_ids: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    q_weight: float,
    d_weight: float,
    temperature: float,
    amp: str = "off",
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """One update on a batch of paired dense vectors; captions masked to `input_ids` when given.

    Loss = distillation + (q_weight * L1(captions) + d_weight * L1(images)) / 2. Returns a detached
    (5,) tensor: loss, distillation loss, regularisation, mean active terms of captions, of images.
    """
    head.train()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
    with torch.autocast(text_dense.device.type, dtype=dtype, enabled=dtype is not None):
        texts = head(text_dense, input_ids, attention_mask)
        images = head(image_dense)
        distill = distillation_loss(texts, images, text_dense, image_dense, temperature)
    reg = (q_weight * l1(texts) + d_weight * l1(images)) / 2
    loss = distill + reg
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        active = torch.stack([(texts > 0).sum(dim=1).float().mean(), (images > 0).sum(dim=1).float().mean()])
        return torch.cat([torch.stack([loss, distill, reg]).float(), active]).detach()



@dataclass
class TrainResult:
    """Where the head went and how it did: the best epoch's validation metrics and every epoch's log row."""

    out: Path
    best_epoch: int
    best: dict
    history: list[dict] = field(default_factory=list)



def train(
    data: str | Path | DenseDataset,
    out: str | Path,
    config: TrainConfig | None = None,
    *,
    tokenizer: str | None = None,
    mlm: str | None = DEFAULT_MLM,
    device: str | torch.device | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train a head on a dense dataset (folder or Hub dataset id) and write it to `out`; see the module doc.

    `tokenizer` gives the vocabulary (default: the `mlm` model's, else distilbert-base-uncased); `mlm`
    the masked-LM whose head initialises ours (default distilbert-base-uncased, as the paper; None:
    random). `resume` continues the run in `out` after its last finished epoch, with the same settings.
    `progress(step, total_steps)` is called after every optimizer step.
    """
    config = config or TrainConfig()
    config.check()
    out = Path(out)
    device = torch.device(device or default_device())
    if config.amp == "fp16" and device.type != "cuda":
        raise InputError("fp16 mixed precision needs a CUDA device; use amp='bf16' on a CPU.")
    _check_out(out, resume)
    dataset = data if isinstance(data, DenseDataset) else load_dense_dataset(data)
    train_pairs, val_pairs = _pairs(dataset, config)
    if mlm is not None and not resume:
        resolve_mlm(mlm)  # first: offline, an uncached masked-LM is the likeliest failure, and says what to do
    term_tokenizer, tokenizer_name = load_tokenizer(tokenizer or mlm or DEFAULT_TOKENIZER)
    vocab = Vocabulary.from_tokenizer(term_tokenizer)
    run = {"data": {"source": dataset.source, "revision": dataset.revision, "train_pairs": len(train_pairs),
                    "val_captions": len(val_pairs), "val_images": len(val_pairs.gallery()[0]),
                    "dense_size": dataset.dense_size, "backbone": dataset.info.get("mlsr", {}).get("backbone")},
           "tokenizer": tokenizer_name, "vocab_sha256": vocab.sha256, "mlm": mlm, "config": config.to_json()}
    state = _start(out, run, resume, dataset, len(vocab), mlm, tokenizer_name, config)
    head = state.head.to(device)
    optimizer = build_optimizer(head, config)
    if state.optimizer is not None:
        optimizer.load_state_dict(state.optimizer)
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    if scaler is not None and state.scaler:
        scaler.load_state_dict(state.scaler)
    out.mkdir(parents=True, exist_ok=True)
    batches = _Batches.of(dataset, train_pairs, term_tokenizer, config, device)
    val_tokens = (_caption_tokens(term_tokenizer, val_pairs.captions, device, config.mask_tokens)
                  if config.validation == "reference" and config.mask_ratio != 0 else None)
    if not state.history:
        initial = validate(head, dataset, val_pairs, device=device, batch_size=config.eval_batch_size)
        state.history.append({"epoch": 0, "step": 0, **{f"val_{k}": v for k, v in initial.items()}})
        logger.info("before training: %s", _describe(state.history[-1]))
    start_epoch = state.epoch
    for epoch in range(start_epoch, config.epochs):
        row = _run_epoch(head, optimizer, scaler, batches, state, epoch, config, progress)
        metrics = validate(head, dataset, val_pairs, device=device, batch_size=config.eval_batch_size,
                           tokens=val_tokens, mask_ratio=row["mask_ratio"], seed=config.seed * 1_000_003 + epoch)
        row.update({f"val_{k}": v for k, v in metrics.items()})
        # as train.py: saved when R@1 beats every earlier epoch's, from 0 (a run that never beats 0 keeps its last)
        recall = cast(float, metrics["R@1"])  # a measure of the evaluation (a float; only costs may be None)
        row["best"] = recall > state.best.get("R@1", 0.0) or (not state.best and epoch + 1 == config.epochs)
        state.history.append(row)
        if row["best"]:
            state.best_epoch, state.best = epoch + 1, metrics
            head.save_pretrained(out)
        logger.info("epoch %d/%d: %s", epoch + 1, config.epochs, _describe(row))
        state.epoch = epoch + 1
        save_checkpoint(out / CHECKPOINT_DIR, head, optimizer, state.saved(run), scaler)
        if epoch == start_epoch:  # after the first checkpoint: a run cut short before it leaves `out` empty
            _save_tokenizer(term_tokenizer, out)
        _write_reports(out, run, state.history, state.best_epoch, state.best, config)
    if start_epoch >= config.epochs:
        logger.info("%s: all %d epochs were already done", out, config.epochs)
    return TrainResult(out, state.best_epoch, state.best, state.history)


def _pairs(dataset: DenseDataset, config: TrainConfig):
    """The training and validation pairs, or an InputError saying what the splits hold."""
    train_pairs, val_pairs = dataset.pairs(config.train_splits), dataset.pairs([config.val_split])
    if len(train_pairs) < 2 or len(val_pairs) < 1:
        raise InputError(
            f"dense dataset {dataset.source!r} has {len(train_pairs)} training pairs (splits"
            f" {', '.join(config.train_splits)}) and {len(val_pairs)} validation captions (split"
            f" {config.val_split!r}); images per split: {dataset.split_counts()}. Choose other splits, or"
            " re-run encode-dense with val_fraction."
        )
    return train_pairs, val_pairs


@dataclass
class _RunState:
    """Where a run stands: the head, and what a checkpoint keeps (optimizer state, history, best epoch)."""

    head: SparseHead
    optimizer: dict | None = None
    scaler: dict | None = None
    history: list[dict] = field(default_factory=list)
    epoch: int = 0  # epochs done
    step: int = 0
    best_epoch: int = 0
    best: dict = field(default_factory=dict)

    def saved(self, run: dict) -> dict:
        return {"run": run, "epoch": self.epoch, "step": self.step, "history": self.history,
                "best_epoch": self.best_epoch, "best": self.best, "mlsr_version": __version__}


def _start(out: Path, run: dict, resume: bool, dataset: DenseDataset, vocab_size: int, mlm: str | None,
           tokenizer_name: str, config: TrainConfig) -> _RunState:
    """A new head, or the checkpoint of the run in `out` (refused when its settings differ)."""
    if resume:
        head, optimizer_state, state = load_checkpoint(out / CHECKPOINT_DIR)
        _check_same_run(state["run"], run)
        logger.info("resuming %s after epoch %d of %d", out, state["epoch"], config.epochs)
        return _RunState(head, optimizer_state, state.get("scaler"), state["history"], state["epoch"], state["step"],
                         state["best_epoch"], state["best"])
    if mlm is None:
        logger.warning(
            "no masked-LM (--mlm none): the LayerNorm and vocabulary projector start from random weights."
            " The paper starts from distilbert-base-uncased's MLM head; a random start needs a higher --lr."
        )
    return _RunState(new_head(dataset.dense_size, vocab_size, mlm=mlm, hidden_size=config.hidden_size,
                              mlm_head=tokenizer_name, seed=config.seed))


@dataclass
class _Batches:
    """The training pairs on the device, and how an epoch cuts them into batches and schedules."""

    texts: torch.Tensor
    images: torch.Tensor
    text_rows: torch.Tensor
    image_rows: torch.Tensor
    token_ids: torch.Tensor | None
    token_mask: torch.Tensor | None
    size: int
    per_epoch: int
    total_steps: int
    warmup_steps: int

    @classmethod
    def of(cls, dataset: DenseDataset, pairs, tokenizer, config: TrainConfig, device) -> _Batches:
        size = min(config.batch_size, len(pairs))
        per_epoch = -(-len(pairs) // size) if config.last_batch == "keep" else len(pairs) // size
        total = per_epoch * config.epochs
        ids, mask = (_caption_tokens(tokenizer, pairs.captions, device, config.mask_tokens) if config.mask_ratio != 0
                     else (None, None))
        return cls(torch.from_numpy(dataset.text_vectors).to(device),
                   torch.from_numpy(dataset.image_vectors).to(device),
                   torch.from_numpy(pairs.text_rows).to(device), torch.from_numpy(pairs.image_rows).to(device),
                   ids, mask, size, per_epoch, total, int(total * config.warmup))


def _run_epoch(head: SparseHead, optimizer, scaler, batches: _Batches, state: _RunState, epoch: int,
               config: TrainConfig, progress) -> dict:
    """One epoch of optimizer steps; the epoch's log row (training columns; validation is added by the caller)."""
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)  # per epoch: resumable
    order = torch.randperm(len(batches.text_rows), generator=generator).to(batches.texts.device)
    ratio = config.mask_ratio if config.mask_ratio is not None else mask_ratio(epoch, config.epochs, config.mask_until)
    masked = (torch.rand(batches.per_epoch, generator=generator) < ratio).tolist()
    totals = torch.zeros(5, device=batches.texts.device)
    for b in range(batches.per_epoch):
        pick = order[b * batches.size : (b + 1) * batches.size]
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_factor(state.step, batches.total_steps, batches.warmup_steps)
        ids = mask = None
        if masked[b]:
            if batches.token_ids is None or batches.token_mask is None:  # made whenever a batch can be masked
                raise ValueError("masked batches need the captions' tokens.")
            ids, mask = batches.token_ids[pick], batches.token_mask[pick]
        totals += train_step(
            head, optimizer, batches.texts[batches.text_rows[pick]], batches.images[batches.image_rows[pick]],
            input_ids=ids, attention_mask=mask,
            q_weight=reg_weight(state.step, batches.warmup_steps, config.q_reg),
            d_weight=reg_weight(state.step, batches.warmup_steps, config.d_reg),
            temperature=config.temperature, amp=config.amp, scaler=scaler,
        )
        state.step += 1
        if progress:
            progress(state.step, batches.total_steps)
    seconds = time.perf_counter() - started
    loss, distill, reg, q_terms, d_terms = (totals / batches.per_epoch).tolist()
    return {"epoch": epoch + 1, "step": state.step, "loss": loss, "distill_loss": distill, "reg_loss": reg,
            "train_query_terms": q_terms, "train_image_terms": d_terms, "mask_ratio": ratio,
            "masked_batches": sum(masked) / batches.per_epoch, "lr": optimizer.param_groups[0]["lr"],
            "proj_lr": optimizer.param_groups[1]["lr"],
            "q_reg_weight": reg_weight(state.step, batches.warmup_steps, config.q_reg),
            "d_reg_weight": reg_weight(state.step, batches.warmup_steps, config.d_reg),
            "train_seconds": seconds,
            "pairs_per_second": min(batches.per_epoch * batches.size, len(batches.text_rows)) / seconds}


def _check_out(out: Path, resume: bool) -> None:
    if resume:
        _checkpoint_folder(out / CHECKPOINT_DIR)
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        hint = " It holds a training run: resume=True continues it." if (out / CHECKPOINT_DIR).exists() else ""
        raise InputError(f"output folder {out} exists and is not empty; choose another output folder.{hint}")



def _check_same_run(saved: dict, now: dict) -> None:
    """A resumed run must train on the same data with the same settings; say what differs (a run saved before
    `mask_tokens`, `last_batch` and `validation` existed trained as _LEGACY_CONFIG says)."""
    saved = {**saved, "config": {**_LEGACY_CONFIG, **saved.get("config", {})}}
    differ = [key for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]
    if "config" in differ:
        differ.remove("config")
        differ += [f"config.{k}" for k in sorted(now["config"]) if saved["config"].get(k) != now["config"][k]]
    if differ:
        raise InputError(
            f"cannot resume: this run differs from the saved one in {', '.join(differ)}. Use the same"
            " data and settings, or start a new run in another output folder."
        )



def _caption_tokens(tokenizer, captions: Sequence[str], device, kind: str = "reference"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, L) token ids and attention mask of the captions' masks, on `device`.

    "reference": as the published train.py's collator, the tokenizer's `[CLS]` and `[SEP]` kept, up to 512
    word pieces. "retrieval": the mask mlsr searches with (`Encoder.encode_text(mode="no_expand")`, and the
    reference's retrieval): the raw text's word pieces, punctuation included, without them, up to 128.
    """
    encoded = tokenizer(list(captions), add_special_tokens=kind == "reference", truncation=True,
                        max_length=_MAX_CAPTION_TOKENS[kind])["input_ids"]
    width = max(1, max((len(ids) for ids in encoded), default=1))
    # Compact types: COCO has ~600k training captions (the head's token_mask widens them per batch).
    ids = np.zeros((len(encoded), width), dtype=np.int32)
    mask = np.zeros((len(encoded), width), dtype=np.uint8)
    for row, pieces in enumerate(encoded):
        ids[row, : len(pieces)] = pieces
        mask[row, : len(pieces)] = 1
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)



def _save_tokenizer(tokenizer, out: Path) -> None:
    """Put the head's tokenizer beside it (so `--tokenizer OUT` works), file by file atomically."""
    staging = out / f".tokenizer.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tokenizer.save_pretrained(staging)
        for path in staging.iterdir():
            os.replace(path, out / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)



def _describe(row: dict) -> str:
    parts = [f"{name} {row[key]:.4f}" for name, key in
             [("loss", "loss"), *((measure, f"val_{measure}") for measure in MEASURES)] if key in row]
    parts += [f"{name} {row[key]:.1f}" for name, key in
              [("query terms", "val_query_terms"), ("image terms", "val_image_terms")] if key in row]
    if "pairs_per_second" in row:
        parts.append(f"{row['pairs_per_second']:.0f} pairs/s")
    return ", ".join(parts)



def _write_reports(out: Path, run: dict, history: list[dict], best_epoch: int, best: dict, config: TrainConfig) -> None:
    """train_log.jsonl, training.json and the model card, rewritten whole (atomically) after every epoch."""
    write_jsonl(out / _LOG_FILE, history)
    atomic_write_json(out / _SUMMARY_FILE, {"mlsr_version": __version__, **run, "best_epoch": best_epoch,
                                          "best": best, "epochs_done": history[-1]["epoch"]})
    with atomic_path(out / CARD_FILE) as tmp:
        tmp.write_text(model_card(run, history, best_epoch, config, out.name), encoding="utf-8")

