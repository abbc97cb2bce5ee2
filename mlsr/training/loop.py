"""Train a D2S sparse head on paired dense vectors: the recipe of Nguyen et al., ECIR 2024 ("Training").

The frozen dense model is the teacher: for a batch of (caption, image) pairs its in-batch scores,
sharpened by a temperature, are soft labels for the sparse scores in both directions. L1 keeps the
vectors sparse; its weight ramps up quadratically. Expansion control: with a probability that falls
from 1 to 0 over the epochs, a batch's captions may light up only their own tokens, so the head first
learns to put weight on the words people write, then learns to expand. Images always expand.

Output folder: the best head by validation R@1 (`config.json`, `model.safetensors`, loads with
`SparseHead.from_pretrained`), its tokenizer, a model card (`README.md`), `training.json`,
`train_log.jsonl`, and `checkpoint/` (the last epoch, with optimizer state) for `resume`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from mlsr import __version__
from mlsr.data.lsr42 import DenseDataset, Pairs, load_dense_dataset
from mlsr.models.encoder import DEFAULT_TOKENIZER, load_tokenizer, to_csr
from mlsr.errors import InputError, ModelLoadError
from mlsr.models.head import HeadConfig, SparseHead
from mlsr.models.hub import resolve_with_weights
from mlsr.index.sparse import SparseIndex
from mlsr.index.inverted import top_k
from mlsr._files import atomic_path, atomic_write_json, replace_folder, staging_folder, write_jsonl
from mlsr.text import clean_caption
from mlsr.vocab import Vocabulary

logger = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
LOG_FILE = "train_log.jsonl"
SUMMARY_FILE = "training.json"
CARD_FILE = "README.md"
STATE_FORMAT = 1
AMP_MODES = ("off", "bf16", "fp16")
# The LayerNorm just before the vocabulary projection in the masked-LM heads we can start from.
MLM_LAYER_NORMS = {"distilbert": "vocab_layer_norm", "bert": "cls.predictions.transform.LayerNorm"}
MAX_CAPTION_TOKENS = 128  # tokens kept per caption for its no-expansion mask
_SPARSE_SEARCH_MAX_OVERLAP = 0.01  # query density x doc density below this: score with the sparse index


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (a resumed run must have the same). Defaults follow the paper."""

    epochs: int = 20
    batch_size: int = 512
    q_reg: float = 1e-3  # L1 weight on caption (query) vectors
    d_reg: float = 1e-3  # L1 weight on image (document) vectors
    temperature: float = 1e-3  # of the dense teacher's softmax
    lr: float = 5e-5  # LayerNorm + vocabulary projector (pretrained when started from an MLM)
    proj_lr: float = 1e-3  # the new dense -> hidden projection
    warmup: float = 0.2  # fraction of steps over which L1 weights (quadratically) and lrs (linearly) ramp up
    mask_ratio: float | None = None  # None: expansion control, 1 -> 0 by mask_until of the epochs; else fixed
    mask_until: float = 0.95
    hidden_size: int = 768  # with random initialisation only; an MLM brings its own
    train_splits: tuple[str, ...] = ("train",)
    val_split: str = "val"
    seed: int = 0
    amp: str = "off"  # mixed precision: off, bf16 (CPU or CUDA), fp16 (CUDA, with loss scaling)
    eval_batch_size: int = 1024

    def check(self) -> None:
        """Raise InputError for a setting that cannot train."""
        if self.epochs < 1 or self.batch_size < 2 or self.eval_batch_size < 1:
            raise InputError("epochs must be >= 1, batch size >= 2 (in-batch negatives) and eval batch size >= 1.")
        if min(self.q_reg, self.d_reg) < 0 or self.temperature <= 0 or min(self.lr, self.proj_lr) <= 0:
            raise InputError("regularisation weights must be >= 0; temperature and learning rates > 0.")
        if not 0 <= self.warmup <= 1 or not 0 < self.mask_until <= 1:
            raise InputError("warmup must be in [0, 1] and mask_until in (0, 1].")
        if self.mask_ratio is not None and not 0 <= self.mask_ratio <= 1:
            raise InputError(f"mask ratio must be in [0, 1], got {self.mask_ratio}.")
        if self.amp not in AMP_MODES:
            raise InputError(f"amp must be one of {AMP_MODES}, got {self.amp!r}.")
        if self.val_split in self.train_splits:
            raise InputError(f"the validation split {self.val_split!r} is also a training split.")


# -- schedules and loss (the paper's formulas) ---------------------------------------------------------


def mask_ratio(epoch: int, epochs: int, until: float = 0.95) -> float:
    """Probability that a batch's captions are masked to their own tokens in 0-based `epoch`.

    Falls linearly from 1 at the first epoch to 0 at `until` of the epochs, then stays 0.
    """
    return max(0.0, 1.0 - epoch / (until * epochs))


def reg_weight(step: int, warmup_steps: int, weight: float) -> float:
    """The L1 weight at optimizer step `step`: weight * (step / warmup_steps)^2, then `weight`."""
    if warmup_steps <= 0:
        return weight
    return weight * min(step / warmup_steps, 1.0) ** 2


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """Learning-rate multiplier: linear warm-up to 1 over `warmup_steps`, then linear decay to 0 at the end."""
    if step < warmup_steps:
        return step / warmup_steps
    return max(0.0, (total_steps - step) / max(total_steps - warmup_steps, 1))


def distillation_loss(
    text_sparse: torch.Tensor,
    image_sparse: torch.Tensor,
    text_dense: torch.Tensor,
    image_dense: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Two-way in-batch distillation: cross-entropy of sparse scores against the dense teacher's softmax.

    (B, V) sparse and (B, d) dense vectors of B paired captions and images. Sparse logits
    S = text_sparse @ image_sparse.T; teacher P = softmax(text_dense @ image_dense.T / temperature).
    Loss = (CE(S rows, P rows) + CE(S columns, P columns)) / 2: caption->image and image->caption.
    """
    logits = (text_sparse @ image_sparse.T).float()
    with torch.no_grad():
        dense = text_dense.float() @ image_dense.float().T / temperature
        text_to_image, image_to_text = torch.softmax(dense, dim=1), torch.softmax(dense.T, dim=1)
    return (F.cross_entropy(logits, text_to_image) + F.cross_entropy(logits.T, image_to_text)) / 2


def l1(weights: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the L1 norm of (B, V) term weights."""
    return weights.float().abs().sum(dim=1).mean()


# -- the head ---------------------------------------------------------------------------------------


def new_head(dense_size: int, vocab_size: int, *, mlm: str | None = None, hidden_size: int = 768,
             mlm_head: str = DEFAULT_TOKENIZER, seed: int = 0) -> SparseHead:
    """A head for `dense_size` inputs; LayerNorm and vocabulary projector copied from a masked-LM when given.

    `mlm` is a Hub id or folder of a DistilBERT or BERT masked-LM (the paper used
    distilbert-base-uncased); without one every layer starts random. The dense -> hidden
    projection is always new. Initialisation is seeded and leaves the global RNG untouched.
    """
    if mlm is None:
        config = HeadConfig(dense_size=dense_size, hidden_size=hidden_size, vocab_size=vocab_size, mlm_head=mlm_head)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return SparseHead(config)
    layer_norm, projector, name = _mlm_layers(mlm)
    if projector.out_features != vocab_size:
        raise ModelLoadError(
            f"masked-LM {mlm!r} scores {projector.out_features:,} terms but the tokenizer has {vocab_size:,};"
            " give the tokenizer of that model (--tokenizer) or leave --tokenizer out."
        )
    config = HeadConfig(dense_size=dense_size, hidden_size=projector.in_features, vocab_size=vocab_size,
                        mlm_head=name, layer_norm_eps=float(layer_norm.eps))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = SparseHead(config)
    with torch.no_grad():
        head.vocab_layer_norm.weight.copy_(layer_norm.weight)
        head.vocab_layer_norm.bias.copy_(layer_norm.bias)
        head.vocab_projector.weight.copy_(projector.weight)
        head.vocab_projector.bias.copy_(projector.bias if projector.bias is not None else torch.zeros(vocab_size))
    return head


def _mlm_layers(name_or_path: str) -> tuple[torch.nn.LayerNorm, torch.nn.Linear, str]:
    """The LayerNorm and output projection of a DistilBERT/BERT masked-LM head."""
    from transformers import AutoModelForMaskedLM

    source = resolve_with_weights(name_or_path, what="masked-LM")
    config_path = source.folder / "config.json"
    model_type = json.loads(config_path.read_text()).get("model_type") if config_path.is_file() else None
    if model_type not in MLM_LAYER_NORMS:
        raise ModelLoadError(
            f"masked-LM {name_or_path!r} has model_type {model_type!r}; --mlm takes a DistilBERT or BERT"
            " masked-LM (e.g. distilbert-base-uncased, bert-base-uncased)."
        )
    try:
        model = AutoModelForMaskedLM.from_pretrained(source.folder)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"masked-LM {name_or_path!r}: cannot load it ({error}).") from None
    return model.get_submodule(MLM_LAYER_NORMS[model_type]), model.get_output_embeddings(), source.name


# -- one step -----------------------------------------------------------------------------------------


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


# -- validation ---------------------------------------------------------------------------------------


def retrieval_metrics(ranked: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """R@1, R@5, R@10 and MRR@10 of (q, k) ranked document ids against one relevant id per query."""
    hits = np.asarray(ranked)[:, :10] == np.asarray(relevant)[:, None]
    found = hits.any(axis=1)
    first = np.where(found, hits.argmax(axis=1), 10)
    return {
        "r1": float((first < 1).mean()),
        "r5": float((first < 5).mean()),
        "r10": float((first < 10).mean()),
        "mrr10": float(np.where(found, 1.0 / (first + 1), 0.0).mean()),
    }


@torch.inference_mode()
def evaluate(head: SparseHead, data: DenseDataset, pairs: Pairs, *, device: str | torch.device = "cpu",
             batch_size: int = 1024, search: str = "auto") -> dict[str, float | str]:
    """Caption -> image retrieval over the images of `pairs`, with fully expanded vectors (as at search time).

    Returns R@1/5/10, MRR@10, mean active terms of captions and images, and FLOPs (the expected
    number of multiplications per caption-image pair: sum over terms of df_captions x df_images / (Q x D)).
    Rankings come from `SparseIndex.search`; while the vectors are still dense (early in training),
    scoring them as a sparse product would take hours, so `search="auto"` then uses a dense product
    of the same vectors (same scores up to float rounding, same tie rule).
    """
    head.eval()
    gallery, relevant = pairs.gallery()
    docs = _head_rows(head, data.image_vectors[gallery], device, batch_size)
    doc_df = (docs > 0).sum(dim=0).double()
    n_queries = len(pairs)
    first = _head_rows(head, data.text_vectors[pairs.text_rows[:batch_size]], device, batch_size)
    density = float((docs > 0).float().mean()) * float((first > 0).float().mean())
    if search == "auto":
        search = "sparse" if density < _SPARSE_SEARCH_MAX_OVERLAP else "dense"
    index = SparseIndex.build(to_csr(docs)) if search == "sparse" else None
    ranked, query_terms, flops = [], 0.0, 0.0
    for start in range(0, n_queries, batch_size):
        queries = first if start == 0 else _head_rows(
            head, data.text_vectors[pairs.text_rows[start : start + batch_size]], device, batch_size)
        active = queries > 0
        query_terms += float(active.sum())
        flops += float((active.sum(dim=0).double() * doc_df).sum())
        if index is not None:
            ranked.append(index.search(to_csr(queries), 10).indices)
        else:
            scores = (queries @ docs.T).float().cpu().numpy()
            ranked.append(np.stack([top_k(row, 10) for row in scores]) if len(scores) else np.zeros((0, 10)))
    metrics: dict[str, float | str] = dict(retrieval_metrics(np.concatenate(ranked), relevant))
    metrics.update(
        query_terms=query_terms / max(n_queries, 1),
        image_terms=float((docs > 0).sum()) / max(len(gallery), 1),
        flops=flops / max(n_queries * len(gallery), 1),
        queries=n_queries,
        images=len(gallery),
        search=search,
    )
    return metrics


def _head_rows(head: SparseHead, dense: np.ndarray, device, batch_size: int) -> torch.Tensor:
    """(n, d) dense vectors -> (n, V) expanded term weights on `device`, float32."""
    rows = [head(torch.from_numpy(np.ascontiguousarray(dense[start : start + batch_size])).to(device)).float()
            for start in range(0, len(dense), batch_size)]
    return torch.cat(rows) if rows else torch.zeros(0, head.vocab_size, device=device)


# -- checkpoints ---------------------------------------------------------------------------------------


def save_checkpoint(folder: Path, head: SparseHead, optimizer: torch.optim.Optimizer, state: dict,
                    scaler: torch.amp.GradScaler | None = None) -> None:
    """Write head weights, optimizer state (safetensors) and run state (JSON) as one folder, atomically.

    Nothing is pickled: tensors go to safetensors, every scalar to JSON.
    """
    folder = Path(folder)
    staging = staging_folder(folder)
    try:
        head.save_pretrained(staging)
        tensors, optimizer_json = _optimizer_to_files(optimizer.state_dict())
        with atomic_path(staging / OPTIMIZER_FILE) as tmp:
            save_file(tensors, str(tmp))
        state = {**state, "format": STATE_FORMAT, "optimizer": optimizer_json,
                 "scaler": scaler.state_dict() if scaler is not None else None}
        atomic_write_json(staging / STATE_FILE, state)
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_checkpoint(folder: Path) -> tuple[SparseHead, dict, dict]:
    """(head, optimizer state dict, run state) of a checkpoint folder; tensors read with safetensors only."""
    folder = _checkpoint_folder(folder)
    try:
        state = json.loads((folder / STATE_FILE).read_text())
        tensors = load_file(str(folder / OPTIMIZER_FILE))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"checkpoint {folder}: cannot read it ({error}); start a new run.") from None
    if state.get("format") != STATE_FORMAT:
        raise ModelLoadError(f"checkpoint {folder} has format {state.get('format')!r}; this mlsr reads {STATE_FORMAT}.")
    head = SparseHead.from_pretrained(folder)
    return head, _optimizer_from_files(tensors, state["optimizer"]), state


def _checkpoint_folder(folder: Path) -> Path:
    """The checkpoint folder, or the previous one when a crash hit between the two renames of a save."""
    folder = Path(folder)
    if (folder / STATE_FILE).is_file():
        return folder
    old = sorted(folder.parent.glob(f".{folder.name}.old-*"))
    if old and (old[-1] / STATE_FILE).is_file():
        return old[-1]
    raise InputError(f"no training checkpoint in {folder}; start a new run (without --resume).")


def _optimizer_to_files(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into named tensors and a JSON-able rest."""
    tensors, scalars = {}, {}
    for param_id, values in state_dict["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value.detach().to("cpu").contiguous()
            else:
                scalars[f"{param_id}.{key}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _optimizer_from_files(tensors: dict[str, torch.Tensor], saved: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *saved["scalars"].items()]:
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group for group in saved["param_groups"]]
    return {"state": state, "param_groups": groups}


# -- the run ------------------------------------------------------------------------------------------


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
    mlm: str | None = None,
    device: str | None = None,
    resume: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train a head on a dense dataset (folder or Hub dataset id) and write it to `out`; see the module doc.

    `tokenizer` gives the vocabulary (default: the `mlm` model's, else distilbert-base-uncased);
    `mlm` the masked-LM whose head initialises ours (none: random). `resume` continues the run in
    `out` after its last finished epoch, with the same settings. `progress(step, total_steps)` is
    called after every optimizer step.
    """
    config = config or TrainConfig()
    config.check()
    out = Path(out)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if config.amp == "fp16" and device.type != "cuda":
        raise InputError("fp16 mixed precision needs a CUDA device; use --amp bf16 on a CPU.")
    _check_out(out, resume)
    dataset = data if isinstance(data, DenseDataset) else load_dense_dataset(data)
    train_pairs, val_pairs = dataset.pairs(config.train_splits), dataset.pairs([config.val_split])
    if len(train_pairs) < 2 or len(val_pairs) < 1:
        raise InputError(
            f"dense dataset {dataset.source!r} has {len(train_pairs)} training pairs (splits"
            f" {', '.join(config.train_splits)}) and {len(val_pairs)} validation captions (split"
            f" {config.val_split!r}); images per split: {dataset.split_counts()}. Choose other splits, or"
            " re-run encode-dense with --val-fraction."
        )
    term_tokenizer, tokenizer_name = load_tokenizer(tokenizer or mlm or DEFAULT_TOKENIZER)
    vocab = Vocabulary.from_tokenizer(term_tokenizer)
    run = {"data": {"source": dataset.source, "revision": dataset.revision, "train_pairs": len(train_pairs),
                    "val_captions": len(val_pairs), "val_images": len(val_pairs.gallery()[0]),
                    "dense_size": dataset.dense_size, "backbone": dataset.info.get("mlsr", {}).get("backbone")},
           "tokenizer": tokenizer_name, "vocab_sha256": vocab.sha256, "mlm": mlm, "config": _config_json(config)}

    if resume:
        head, optimizer_state, state = load_checkpoint(out / CHECKPOINT_DIR)
        _check_same_run(state["run"], run)
        history, start_epoch, step = state["history"], state["epoch"], state["step"]
        best_epoch, best = state["best_epoch"], state["best"]
        logger.info("resuming %s after epoch %d of %d", out, start_epoch, config.epochs)
    else:
        if mlm is None:
            logger.warning(
                "no masked-LM given (--mlm): the LayerNorm and vocabulary projector start from random weights."
                " The paper starts from distilbert-base-uncased's MLM head; a random start needs a higher --lr."
            )
        head = new_head(dataset.dense_size, len(vocab), mlm=mlm, hidden_size=config.hidden_size,
                        mlm_head=tokenizer_name, seed=config.seed)
        optimizer_state, history, start_epoch, step, best_epoch, best, state = None, [], 0, 0, 0, {}, {}
    head.to(device)
    optimizer = build_optimizer(head, config)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])

    out.mkdir(parents=True, exist_ok=True)
    batch = min(config.batch_size, len(train_pairs))
    steps_per_epoch = len(train_pairs) // batch
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(total_steps * config.warmup)
    texts = torch.from_numpy(dataset.text_vectors).to(device)
    images = torch.from_numpy(dataset.image_vectors).to(device)
    text_rows = torch.from_numpy(train_pairs.text_rows).to(device)
    image_rows = torch.from_numpy(train_pairs.image_rows).to(device)
    masking = config.mask_ratio != 0
    token_ids, token_mask = _caption_tokens(term_tokenizer, train_pairs.captions, device) if masking else (None, None)

    if not history:
        initial = evaluate(head, dataset, val_pairs, device=device, batch_size=config.eval_batch_size)
        history.append({"epoch": 0, "step": 0, **{f"val_{k}": v for k, v in initial.items()}})
        logger.info("before training: %s", _describe(history[-1]))
    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)  # per epoch: resumable
        order = torch.randperm(len(train_pairs), generator=generator).to(device)
        ratio = config.mask_ratio if config.mask_ratio is not None else mask_ratio(epoch, config.epochs, config.mask_until)
        masked = (torch.rand(steps_per_epoch, generator=generator) < ratio).tolist()
        totals = torch.zeros(5, device=device)
        for b in range(steps_per_epoch):
            pick = order[b * batch : (b + 1) * batch]
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * lr_factor(step, total_steps, warmup_steps)
            ids = mask = None
            if masked[b]:
                ids, mask = token_ids[pick], token_mask[pick]
            totals += train_step(
                head, optimizer, texts[text_rows[pick]], images[image_rows[pick]], input_ids=ids, attention_mask=mask,
                q_weight=reg_weight(step, warmup_steps, config.q_reg), d_weight=reg_weight(step, warmup_steps, config.d_reg),
                temperature=config.temperature, amp=config.amp, scaler=scaler,
            )
            step += 1
            if progress:
                progress(step, total_steps)
        seconds = time.perf_counter() - started
        loss, distill, reg, q_terms, d_terms = (totals / steps_per_epoch).tolist()
        metrics = evaluate(head, dataset, val_pairs, device=device, batch_size=config.eval_batch_size)
        row = {"epoch": epoch + 1, "step": step, "loss": loss, "distill_loss": distill, "reg_loss": reg,
               "train_query_terms": q_terms, "train_image_terms": d_terms, "mask_ratio": ratio,
               "masked_batches": sum(masked) / steps_per_epoch, "lr": optimizer.param_groups[0]["lr"],
               "proj_lr": optimizer.param_groups[1]["lr"],
               "q_reg_weight": reg_weight(step, warmup_steps, config.q_reg),
               "d_reg_weight": reg_weight(step, warmup_steps, config.d_reg),
               "train_seconds": seconds, "pairs_per_second": steps_per_epoch * batch / seconds,
               **{f"val_{k}": v for k, v in metrics.items()}}
        row["best"] = not best or metrics["r1"] > best["r1"]
        history.append(row)
        if row["best"]:
            best_epoch, best = epoch + 1, metrics
            head.save_pretrained(out)
        logger.info("epoch %d/%d: %s", epoch + 1, config.epochs, _describe(row))
        state = {"run": run, "epoch": epoch + 1, "step": step, "history": history, "best_epoch": best_epoch,
                 "best": best, "mlsr_version": __version__}
        save_checkpoint(out / CHECKPOINT_DIR, head, optimizer, state, scaler)
        if epoch == start_epoch:  # after the first checkpoint: a run cut short before it leaves `out` empty
            _save_tokenizer(term_tokenizer, out)
        _write_reports(out, run, history, best_epoch, best, config)
    if start_epoch >= config.epochs:
        logger.info("%s: all %d epochs were already done", out, config.epochs)
    return TrainResult(out, best_epoch, best, history)


def _check_out(out: Path, resume: bool) -> None:
    if resume:
        _checkpoint_folder(out / CHECKPOINT_DIR)
        return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        hint = " It holds a training run: pass --resume to continue it." if (out / CHECKPOINT_DIR).exists() else ""
        raise InputError(f"output folder {out} exists and is not empty; choose another --out.{hint}")


def _check_same_run(saved: dict, now: dict) -> None:
    """A resumed run must train on the same data with the same settings; say what differs."""
    differ = [key for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]
    if "config" in differ:
        differ.remove("config")
        differ += [f"config.{k}" for k in sorted(now["config"]) if saved["config"].get(k) != now["config"][k]]
    if differ:
        raise InputError(
            f"cannot resume: this run differs from the saved one in {', '.join(differ)}. Use the same"
            " data and settings, or start a new run in another --out."
        )


def _config_json(config: TrainConfig) -> dict:
    return json.loads(json.dumps({f.name: getattr(config, f.name) for f in fields(config)}))


def _caption_tokens(tokenizer, captions: Sequence[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, L) token ids and attention mask of the cleaned captions, without special tokens, on `device`."""
    encoded = tokenizer([clean_caption(text) for text in captions], add_special_tokens=False, truncation=True,
                        max_length=MAX_CAPTION_TOKENS)["input_ids"]
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
             [("loss", "loss"), ("R@1", "val_r1"), ("R@5", "val_r5"), ("R@10", "val_r10"), ("MRR@10", "val_mrr10")]
             if key in row]
    parts += [f"{name} {row[key]:.1f}" for name, key in
              [("query terms", "val_query_terms"), ("image terms", "val_image_terms")] if key in row]
    if "pairs_per_second" in row:
        parts.append(f"{row['pairs_per_second']:.0f} pairs/s")
    return ", ".join(parts)


def _write_reports(out: Path, run: dict, history: list[dict], best_epoch: int, best: dict, config: TrainConfig) -> None:
    """train_log.jsonl, training.json and the model card, rewritten whole (atomically) after every epoch."""
    write_jsonl(out / LOG_FILE, history)
    atomic_write_json(out / SUMMARY_FILE, {"mlsr_version": __version__, **run, "best_epoch": best_epoch,
                                          "best": best, "epochs_done": history[-1]["epoch"]})
    with atomic_path(out / CARD_FILE) as tmp:
        tmp.write_text(model_card(run, history, best_epoch, config, out.name), encoding="utf-8")


def model_card(run: dict, history: list[dict], best_epoch: int, config: TrainConfig, name: str) -> str:
    """A short README.md for the head folder: data, backbone, settings, validation numbers, usage."""
    data = run["data"]
    backbone = data.get("backbone") or {}
    backbone_line = (f"`{backbone.get('id')}` ({backbone.get('model_type')}, revision {backbone.get('revision')},"
                     f" weights fingerprint {backbone.get('fingerprint')})" if backbone
                     else "not recorded in the dataset (for lsr42 datasets: the model named in the dataset id)")
    init = f"LayerNorm and vocabulary projector from `{run['mlm']}`" if run["mlm"] else "random (no masked-LM)"
    rows = ["| epoch | R@1 | R@5 | R@10 | MRR@10 | caption terms | image terms |", "|---|---|---|---|---|---|---|"]
    for row in history:
        if row["epoch"] in (0, best_epoch, history[-1]["epoch"]):
            label = {0: "0 (untrained)", best_epoch: f"{best_epoch} (best)"}.get(row["epoch"], str(row["epoch"]))
            rows.append(f"| {label} | {row['val_r1']:.4f} | {row['val_r5']:.4f} | {row['val_r10']:.4f} |"
                        f" {row['val_mrr10']:.4f} | {row['val_query_terms']:.1f} | {row['val_image_terms']:.1f} |")
    settings = ", ".join(f"{key} {'1 -> 0 schedule' if value is None else value}" for key, value in run["config"].items())
    return f"""---
library_name: mlsr
tags: [learned-sparse-retrieval, multimodal, d2s]
---
# {name}: a D2S sparse head

Maps {data['dense_size']}-d dense image/text vectors onto the {run['tokenizer']} vocabulary as weighted terms,
`log1p(ReLU(W2 LayerNorm(W1 x)))`, trained with `mlsr train` (the recipe of Nguyen et al., "Multimodal Learned
Sparse Retrieval with Probabilistic Expansion Control", ECIR 2024).

- **Data**: `{data['source']}` (revision {data['revision']}); {data['train_pairs']:,} training caption-image pairs,
  validation on {data['val_captions']:,} captions x {data['val_images']:,} images.
- **Dense backbone** (frozen, the teacher): {backbone_line}. Use the same backbone at search time.
- **Initialisation**: {init}.
- **Settings**: {settings}.

## Validation (caption -> image, expanded vectors; {history[-1]['epoch']} of {config.epochs} epochs done)

{chr(10).join(rows)}

## Use

```bash
python -m mlsr build-index --images photos/ --backbone {backbone.get('id', 'BACKBONE')} --head {name} --tokenizer {name} --out index/photos
python -m mlsr search --index index/photos --backbone {backbone.get('id', 'BACKBONE')} --head {name} --tokenizer {name} "a query"
```
"""
