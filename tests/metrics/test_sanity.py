"""Model randomisation: the copy, the rank correlation and the check."""

from __future__ import annotations

import torch
from torch import nn

from medmdm.metrics import model_randomisation_check, randomised_copy, spearman
from medmdm.testing import BoxModel


def small_cnn(dims: int) -> nn.Module:
    """A tiny CNN built right after seed 0 (the default seed of the randomised copy, too)."""
    torch.manual_seed(0)
    conv = getattr(nn, f"Conv{dims}d")
    norm = getattr(nn, f"BatchNorm{dims}d")
    pool = getattr(nn, f"AdaptiveAvgPool{dims}d")
    return nn.Sequential(
        conv(1, 4, 3, padding=1), norm(4), nn.ReLU(), conv(4, 4, 3, padding=1), nn.ReLU(), pool(1),
        nn.Flatten(), nn.Linear(4, 2),
    )  # fmt: skip


def gradient_explainer(model: nn.Module):
    """Absolute input gradient of the target logit: a map that depends on the weights."""

    def explain(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        score = model(x).gather(1, torch.as_tensor(target).reshape(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(score, x)
        return gradient.abs().sum(dim=1, keepdim=True)

    return explain


def test_randomised_copy_changes_every_parameter_and_leaves_the_original(dims: int) -> None:
    model = small_cnn(dims).train()
    before = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    copy = randomised_copy(model, seed=3)
    assert torch.equal(torch.random.get_rng_state(), rng)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    changed = [not torch.equal(a, b) for a, b in zip(model.parameters(), copy.parameters(), strict=True)]
    assert sum(changed) >= 4  # both convolutions and the linear layer (batch norm resets to 1 and 0)
    assert copy.training
    again = randomised_copy(model, seed=3)
    for a, b in zip(copy.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


def test_randomised_copy_draws_parameters_of_modules_without_reset() -> None:
    model = BoxModel(((0, 4), (0, 4)))
    copy = randomised_copy(model)
    assert copy.gain.item() != model.gain.item() and model.gain.item() == 8.0


def test_spearman_of_a_map_with_itself_is_1_and_with_its_negation_minus_1(dims: int) -> None:
    maps = torch.rand(3, 1, *[6] * dims, generator=torch.Generator().manual_seed(0))
    maps[0] = maps[0].round()  # many ties
    torch.testing.assert_close(spearman(maps, maps), torch.ones(3))
    torch.testing.assert_close(spearman(maps, -maps), -torch.ones(3))
    assert spearman(maps, maps).dtype == torch.float32


def test_spearman_averages_tied_ranks_and_is_nan_for_a_constant_map() -> None:
    a = torch.tensor([[1.0, 2.0, 2.0, 3.0]])
    b = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # ranks (1, 2.5, 2.5, 4) and (1, 2, 3, 4): 4.5 / sqrt(4.5 * 5)
    torch.testing.assert_close(spearman(a, b), torch.tensor([4.5 / (4.5 * 5) ** 0.5]))
    zeros = torch.zeros(1, 1, 4, 4)
    assert torch.isnan(spearman(zeros, torch.rand(1, 1, 4, 4))).all()


def test_model_randomisation_changes_the_gradient_map(dims: int) -> None:
    model = small_cnn(dims).eval()
    x = torch.rand(2, 1, *[8] * dims, generator=torch.Generator().manual_seed(0))
    before = {name: value.clone() for name, value in model.state_dict().items()}
    correlation = model_randomisation_check(gradient_explainer, model, x)
    assert correlation.shape == (2,) and torch.isfinite(correlation).all()
    assert (correlation < 1).all()
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name])
    same = model_randomisation_check(lambda m: gradient_explainer(model), model, x, target=1)
    torch.testing.assert_close(same, torch.ones(2))
