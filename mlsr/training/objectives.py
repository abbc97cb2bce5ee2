"""The training objective and its schedules (Nguyen et al., ECIR 2024, "Training"): two-way distillation from the
dense teacher's scores, L1 with a quadratic warm-up, and the probability of masking captions to their own tokens."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def teacher_scores(text_dense: torch.Tensor, image_dense: torch.Tensor, temperature: float) -> torch.Tensor:
    """The dense teacher's (B, B) caption x image logits, text_dense @ image_dense.T / temperature, in float32.

    Autocast is turned off here: under `--amp bf16` the product would otherwise run in bfloat16 (8 bits of
    mantissa), and at temperature 1e-3 its rounding moves the logits by up to ~1.5, which changes the
    soft labels. The teacher is a (B, d) x (d, B) product: float32 costs nothing worth saving.
    """
    with torch.no_grad(), torch.autocast(text_dense.device.type, enabled=False):
        return text_dense.float() @ image_dense.float().T / temperature


def distillation_loss(
    text_sparse: torch.Tensor,
    image_sparse: torch.Tensor,
    text_dense: torch.Tensor,
    image_dense: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Two-way in-batch distillation: cross-entropy of sparse scores against the dense teacher's softmax.

    (B, V) sparse and (B, d) dense vectors of B paired captions and images. Sparse logits
    S = text_sparse @ image_sparse.T; teacher P = softmax(text_dense @ image_dense.T / temperature),
    always computed in float32 (`teacher_scores`). Loss = (CE(S rows, P rows) + CE(S columns, P columns)) / 2:
    caption->image and image->caption.
    """
    logits = (text_sparse @ image_sparse.T).float()
    dense = teacher_scores(text_dense, image_dense, temperature)
    with torch.no_grad():
        text_to_image, image_to_text = torch.softmax(dense, dim=1), torch.softmax(dense.T, dim=1)
    return (F.cross_entropy(logits, text_to_image) + F.cross_entropy(logits.T, image_to_text)) / 2


def l1(weights: torch.Tensor) -> torch.Tensor:
    """Mean over rows of the L1 norm of (B, V) term weights."""
    return weights.float().abs().sum(dim=1).mean()
