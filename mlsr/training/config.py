"""The settings of a training run (plain data: the command line reads its defaults without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from mlsr.errors import InputError

AMP_MODES = ("off", "bf16", "fp16")
# How a masked caption's tokens are taken: "reference" as the published train.py (the tokenizer's [CLS] and [SEP]
# kept, up to 512 word pieces), "retrieval" as mlsr searches (the raw text's word pieces only, up to 128).
MASK_TOKENS = ("reference", "retrieval")
LAST_BATCH = ("keep", "drop")  # an epoch's partial last batch: a step of its own (the reference's DataLoader), or none
# Validation captions: "reference" masked batch by batch with the epoch's mask ratio, as train.py validates;
# "expanded" fully expanded, as at search time.
VALIDATION = ("reference", "expanded")
# The masked-LM whose LayerNorm + vocabulary projector start the head, as in the paper's code; "none" on the
# command line (None here) starts from random weights.
DEFAULT_MLM = "distilbert-base-uncased"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (a resumed run must have the same). Defaults follow the paper.

    The published recipe (thongnt99/lsr-multimodal, train.py): 200 epochs, batch 512, L1 1e-3 on both sides,
    temperature 1e-3, warm-up 20% of the steps, masking schedule 1 -> 0 by 95% of the epochs, masks with
    [CLS]/[SEP] up to 512 tokens, the partial last batch kept, validation masked with the epoch's ratio,
    and the head saved when its validation R@1 beats every earlier one (from 0). The schedules are
    fractions of the run, so fewer epochs compress them rather than cut them off. `mask_tokens`,
    `last_batch` and `validation` name mlsr's alternatives (docs/training.md).
    """

    epochs: int = 200
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
    mask_tokens: str = "reference"  # MASK_TOKENS
    last_batch: str = "keep"  # LAST_BATCH
    validation: str = "reference"  # VALIDATION

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
        for name, allowed in (("amp", AMP_MODES), ("mask_tokens", MASK_TOKENS), ("last_batch", LAST_BATCH),
                              ("validation", VALIDATION)):
            if getattr(self, name) not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}.")
        if self.val_split in self.train_splits:
            raise InputError(f"the validation split {self.val_split!r} is also a training split.")


    def to_json(self) -> dict:
        """The settings as JSON values (tuples become lists), as a run records and compares them."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


# Named starting points for `train --preset`; flags given on the command line override them.
# paper: the published recipe. At the CPU speed bench/bench_train.py measured (~300 pairs/s, ~23 min per COCO
#        epoch) 200 epochs take days: a GPU's job.
# cpu:   20 epochs with bf16 autocast (~2.3x the fp32 CPU speed in the same benchmark): about a twentieth of the
#        time. The schedules compress with the run; how much that costs in R@1 is not measured here.
PRESETS: dict[str, TrainConfig] = {"paper": TrainConfig(), "cpu": TrainConfig(epochs=20, amp="bf16")}
