"""Deletion, insertion and average drop / increase on the box model, whose evidence is known."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medmdm import InputError
from medmdm.explainers.perturbation import baseline_image
from medmdm.metrics import (
    average_drop_increase,
    deletion_auc,
    deletion_curve,
    insertion_auc,
    insertion_curve,
)
from tests.conftest import box_case


def perfect_map(dims: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    """Images, the map that is 1 in the box and 0 outside, and the box model."""
    case = box_case(dims, batch=batch)
    saliency = case.regions[0].float().expand(batch, 1, *case.x.shape[2:]).clone()
    return case.x, saliency, case.model


def first_step_past_box(saliency: torch.Tensor, steps: int) -> int:
    """First curve index at which every voxel of the box has been deleted or inserted."""
    inside, total = int(saliency[0].sum()), saliency[0].numel()
    return next(k for k in range(steps + 1) if round(k * total / steps) >= inside)


def class_1_probability(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)[:, 1]


def test_deletion_of_the_perfect_map_falls_to_the_baseline_once_the_box_is_gone(dims: int) -> None:
    x, perfect, model = perfect_map(dims)
    fractions, probabilities = deletion_curve(model, x, perfect, steps=20)
    assert fractions.shape == (21,) and probabilities.shape == (1, 21)
    torch.testing.assert_close(fractions, torch.linspace(0, 1, 21))
    assert probabilities[0, 0] > 0.99
    at_baseline = class_1_probability(model, baseline_image(x, "mean"))
    k = first_step_past_box(perfect, 20)
    assert k <= 3
    torch.testing.assert_close(probabilities[0, k:], at_baseline.expand(21 - k), atol=1e-5, rtol=0)
    worst = deletion_auc(model, x, 1 - perfect)
    best = deletion_auc(model, x, perfect)
    assert best.item() < 0.25 and worst.item() > 0.75


def test_insertion_of_the_perfect_map_rises_at_once(dims: int) -> None:
    x, perfect, model = perfect_map(dims)
    probabilities = insertion_curve(model, x, perfect, baseline="mean").probabilities
    k = first_step_past_box(perfect, 20)
    assert probabilities[0, 0] < 0.2
    torch.testing.assert_close(probabilities[0, k:], class_1_probability(model, x).expand(21 - k))
    best = insertion_auc(model, x, perfect, baseline="mean")
    worst = insertion_auc(model, x, 1 - perfect, baseline="mean")
    assert best.item() > 0.8 and worst.item() < 0.3
    # the default starts from a blur, which keeps the bright box: still at least as good as the worst map
    assert insertion_auc(model, x, perfect).item() >= insertion_auc(model, x, 1 - perfect).item()


def test_auc_values_lie_in_0_1_and_a_batch_equals_single_calls(dims: int) -> None:
    x, perfect, model = perfect_map(dims, batch=2)
    saliency = torch.cat(
        [perfect[:1], torch.rand(perfect[:1].shape, generator=torch.Generator().manual_seed(1))]
    )
    for metric in (deletion_auc, insertion_auc):
        together = metric(model, x, saliency, steps=10)
        assert together.shape == (2,) and together.dtype == torch.float32
        assert ((together >= 0) & (together <= 1)).all()
        single = torch.cat([metric(model, x[i : i + 1], saliency[i : i + 1], steps=10) for i in range(2)])
        torch.testing.assert_close(together, single)
        torch.testing.assert_close(metric(model, x, saliency, steps=10, max_batch=3), together)


def test_target_scores_that_class_and_one_logit_uses_the_sigmoid() -> None:
    x, perfect, model = perfect_map(2)
    predicted = deletion_curve(model, x, perfect, steps=5).probabilities
    other = deletion_curve(model, x, perfect, target=0, steps=5).probabilities
    torch.testing.assert_close(other, 1 - predicted)

    class OneLogit(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return model(x)[:, 1:]

    single = deletion_curve(OneLogit(), x, perfect, steps=5).probabilities
    logits = torch.logit(predicted.double()) / 2  # softmax of (-e, e) is sigmoid(2e)
    torch.testing.assert_close(single, torch.sigmoid(logits).float(), atol=1e-4, rtol=1e-4)


def test_model_flags_are_restored_also_after_an_error() -> None:
    x, perfect, model = perfect_map(2)
    model.train()
    deletion_auc(model, x, perfect, steps=4)
    average_drop_increase(model, x, perfect)
    assert model.training and model.gain.requires_grad
    with pytest.raises(InputError, match="out of range"):
        insertion_auc(model, x, perfect, target=5, steps=4)
    assert model.training and model.gain.requires_grad
    assert model.gain.grad is None


def test_average_drop_is_zero_for_the_perfect_map_and_large_for_its_inverse(dims: int) -> None:
    x, perfect, model = perfect_map(dims, batch=2)
    drop, increase = average_drop_increase(model, x, perfect)
    assert drop.shape == increase.shape == (2,) and drop.dtype == torch.float32
    torch.testing.assert_close(drop, torch.zeros(2), atol=1e-6, rtol=0)
    assert increase.tolist() == [0.0, 0.0]
    drop, increase = average_drop_increase(model, x, 1 - perfect)
    assert (drop > 0.9).all() and increase.tolist() == [0.0, 0.0]
    # removing the box raises the probability of class 0: an increase, no drop
    drop, increase = average_drop_increase(model, x, 1 - perfect, target=0)
    assert drop.tolist() == [0.0, 0.0] and increase.tolist() == [1.0, 1.0]
