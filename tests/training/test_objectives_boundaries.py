"""The training objective and its schedules against hand-computed values, at and around every boundary
(first and last epoch, the warm-up's last step, the end of training, bfloat16 inputs, rows against columns)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mlsr.training.objectives import distillation_loss, l1, lr_factor, mask_ratio, reg_weight, teacher_scores


@pytest.mark.parametrize("epoch, epochs, until, expected", [
    (0, 10, 0.95, 1.0), (5, 10, 0.95, 1 - 5 / 9.5), (9, 10, 0.95, 1 - 9 / 9.5), (10, 10, 0.95, 0.0),
    (12, 10, 0.95, 0.0), (18, 20, 0.95, 1 - 18 / 19), (19, 20, 0.95, 0.0), (1, 4, 0.5, 0.5), (2, 4, 0.5, 0.0),
])
def test_mask_ratio_falls_linearly_to_zero_at_until_of_the_epochs(epoch, epochs, until, expected):
    assert mask_ratio(epoch, epochs, until) == pytest.approx(expected, abs=1e-12)


def test_mask_ratio_default_until_is_the_papers_95_percent():
    assert mask_ratio(18, 20) == pytest.approx(1 - 18 / 19) and mask_ratio(19, 20) == 0.0


@pytest.mark.parametrize("step, warmup, weight, expected", [
    (0, 10, 2.0, 0.0), (1, 10, 2.0, 0.02), (5, 10, 2.0, 0.5), (9, 10, 2.0, 1.62), (10, 10, 2.0, 2.0),
    (11, 10, 2.0, 2.0), (1000, 10, 2.0, 2.0), (3, 0, 2.0, 2.0), (0, 0, 0.5, 0.5), (3, -1, 0.5, 0.5),
    (0, 1, 2.0, 0.0), (1, 1, 2.0, 2.0),  # a one-step warm-up still starts at 0
])
def test_reg_weight_is_quadratic_during_the_warm_up_then_constant(step, warmup, weight, expected):
    assert reg_weight(step, warmup, weight) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("step, total, warmup, expected", [
    (0, 110, 10, 0.0), (1, 110, 10, 0.1), (9, 110, 10, 0.9), (10, 110, 10, 1.0), (60, 110, 10, 0.5),
    (109, 110, 10, 0.01), (110, 110, 10, 0.0), (200, 110, 10, 0.0), (0, 10, 0, 1.0), (5, 10, 0, 0.5),
    (11, 12, 11, 1.0), (12, 12, 11, 0.0), (10, 10, 10, 0.0), (11, 10, 10, 0.0),
])
def test_lr_factor_warms_up_linearly_then_decays_linearly_to_zero(step, total, warmup, expected):
    assert lr_factor(step, total, warmup) == pytest.approx(expected, abs=1e-12)


def test_teacher_scores_are_the_scaled_product_by_hand():
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    image = torch.tensor([[3.0, 1.0], [1.0, 1.0]])
    assert teacher_scores(text, image, 0.5).tolist() == [[6.0, 2.0], [4.0, 4.0]]


def test_teacher_scores_stay_float32_and_exact_under_bf16_autocast():
    generator = torch.Generator().manual_seed(0)
    text, image = torch.randn(4, 64, generator=generator), torch.randn(4, 64, generator=generator)
    exact = (text.double() @ image.double().T / 1e-3).numpy()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = teacher_scores(text, image, 1e-3)
    assert scores.dtype == torch.float32
    np.testing.assert_allclose(scores.numpy(), exact, rtol=1e-5, atol=1e-3)


def test_teacher_scores_carry_no_gradient():
    text = torch.ones(2, 3, requires_grad=True)
    assert not teacher_scores(text, torch.ones(2, 3), 1.0).requires_grad


def _cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean over rows of -sum(target * log_softmax(logit)), written out."""
    total = 0.0
    for row, target in zip(logits, targets):
        log_norm = math.log(sum(math.exp(v) for v in row))
        total -= sum(t * (v - log_norm) for t, v in zip(target, row))
    return total / len(logits)


def _softmax_rows(matrix: np.ndarray) -> np.ndarray:
    exp = np.exp(matrix - matrix.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("batch", [1, 2, 3])
def test_distillation_loss_is_the_mean_of_both_directions_by_hand(batch):
    generator = torch.Generator().manual_seed(batch)
    text_sparse, image_sparse = torch.rand(batch, 5, generator=generator), torch.rand(batch, 5, generator=generator)
    text_dense, image_dense = torch.randn(batch, 3, generator=generator), torch.randn(batch, 3, generator=generator)
    logits = (text_sparse @ image_sparse.T).double().numpy()
    dense = (text_dense @ image_dense.T).double().numpy() / 0.7
    expected = (_cross_entropy(logits, _softmax_rows(dense)) + _cross_entropy(logits.T, _softmax_rows(dense.T))) / 2
    loss = distillation_loss(text_sparse, image_sparse, text_dense, image_dense, 0.7)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_distillation_loss_one_direction_differs_from_the_other():
    # An asymmetric 2x2 case computed by hand: a swapped axis or a single direction gives another number.
    text_sparse, image_sparse = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    text_dense, image_dense = torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0], [1.0]])
    # S = [[1, 1], [0, 0]]; teacher logits [[1, 1], [0, 0]] -> rows uniform; columns softmax([1, 0]).
    s = math.exp(1) / (1 + math.exp(1))
    rows = math.log(2)
    columns = -(s * (1 - math.log(1 + math.e)) + (1 - s) * (0 - math.log(1 + math.e)))
    loss = distillation_loss(text_sparse, image_sparse, text_dense, image_dense, 1.0)
    assert loss.item() == pytest.approx((rows + columns) / 2, rel=1e-6)


def test_distillation_loss_trains_the_sparse_side_only():
    text_sparse = torch.rand(2, 4, requires_grad=True)
    text_dense = torch.randn(2, 3, requires_grad=True)
    distillation_loss(text_sparse, torch.rand(2, 4), text_dense, torch.randn(2, 3), 0.1).backward()
    assert text_sparse.grad is not None and text_dense.grad is None


def test_l1_is_the_mean_of_row_norms_by_hand():
    weights = torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 4.0]])
    assert l1(weights).item() == pytest.approx(3.5)  # rows 3 and 4; columns would give 7/3


def test_l1_sums_bfloat16_weights_in_float32():
    weights = torch.tensor([[256.0, 1.0]], dtype=torch.bfloat16)  # 257 is not a bfloat16
    result = l1(weights)
    assert result.dtype == torch.float32 and result.item() == 257.0
