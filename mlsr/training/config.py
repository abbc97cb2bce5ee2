"""The settings of a training run (plain data: the command line reads its defaults without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from mlsr.errors import InputError

AMP_MODES = ("off", "bf16", "fp16")


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


    def to_json(self) -> dict:
        """The settings as JSON values (tuples become lists), as a run records and compares them."""
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}
