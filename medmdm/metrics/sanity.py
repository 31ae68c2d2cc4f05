"""Sanity check: a map that explains the model must change when the model's weights are randomised.

:func:`model_randomisation_check` compares the map of a model with the map of a copy whose
parameters are all re-drawn (the full, not cascading, randomisation) by Spearman rank correlation:
values near 1 mean the method ignores the model, so lower is better.

References
----------
Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from medmdm.errors import InputError
from medmdm.explainers.base import ModelScorer, TargetLike, check_input, frozen, model_device, resolve_targets
from medmdm.metrics._checks import check_saliency

ExplainerLike = Callable[[torch.Tensor, TargetLike], torch.Tensor]

# added to the seed, so that a model built right after torch.manual_seed(seed) is not re-drawn as itself
_SEED_OFFSET = 0x5EED_2018


def randomised_copy(model: nn.Module, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every parameter re-drawn; ``model`` itself is untouched.

    A submodule with a ``reset_parameters`` method (convolutions, linear and normalisation
    layers, ...) is reset by it; the parameters owned directly by any other submodule are drawn
    from a normal distribution with mean 0 and the standard deviation of their original values
    (1 for single values and constants). Buffers are kept, except those ``reset_parameters``
    resets (such as batch-norm running statistics). The global random state is left unchanged.

    Parameters
    ----------
    model : nn.Module
        The model to copy.
    seed : int
        Seed of the new parameters; the same seed gives the same copy. The generator is seeded with
        a fixed offset added, so a model built just after ``torch.manual_seed(seed)`` is not
        re-drawn to its own values.

    Returns
    -------
    nn.Module
        The randomised copy, on the model's device, with the same ``training`` and
        ``requires_grad`` flags.
    """
    clone = copy.deepcopy(model)
    cuda = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(_SEED_OFFSET + seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
                continue
            for param in module.parameters(recurse=False):
                std = param.std().item() if param.numel() > 1 else 0.0
                param.normal_(0.0, std if std > 0 else 1.0)
    return clone


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation of each pair of samples.

    Ranks are computed with torch (sort, then tied values share their average rank, as
    ``scipy.stats.spearmanr``), and the correlation is the Pearson correlation of the ranks.
    Average ranks matter for saliency maps: large zero areas would otherwise be ranked by position
    and correlate spuriously.

    Parameters
    ----------
    a, b : torch.Tensor
        (B, ...) tensors of the same shape, such as maps (B, 1, *spatial).

    Returns
    -------
    torch.Tensor
        (B,) float32 in [-1, 1] on ``a``'s device; NaN for a sample where either map is constant.

    Examples
    --------
    >>> spearman(torch.tensor([[1.0, 2.0, 2.0, 3.0]]), torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    tensor([0.9487])
    """
    for name, value in (("a", a), ("b", b)):
        if not isinstance(value, torch.Tensor):
            raise InputError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if a.shape != b.shape or a.ndim < 2 or a[0].numel() < 2:
        raise InputError(
            f"a and b must have the same shape (B, ...) with at least 2 values per sample; "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    ranks_a = _average_ranks(a.detach().reshape(a.shape[0], -1))
    ranks_b = _average_ranks(b.detach().to(a.device).reshape(b.shape[0], -1))
    ranks_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    ranks_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    norms = ranks_a.norm(dim=1) * ranks_b.norm(dim=1)
    correlation = (ranks_a * ranks_b).sum(dim=1) / norms
    return correlation.clamp(-1, 1).float()


def model_randomisation_check(
    explainer_factory: Callable[[nn.Module], ExplainerLike],
    model: nn.Module,
    x: torch.Tensor,
    target: TargetLike = None,
    seed: int = 0,
) -> torch.Tensor:
    """Spearman correlation between the maps of ``model`` and of its :func:`randomised_copy`.

    Both maps explain the same class: ``target``, or the class ``model`` predicts on ``x``.

    Parameters
    ----------
    explainer_factory : callable
        ``model -> explainer``, where ``explainer(x, target)`` returns (B, 1, *spatial) maps; for
        example ``lambda m: medmdm.explainers.create("hdm", m)``.
    model : nn.Module
        Classifier returning logits (B, classes). Not modified.
    x : torch.Tensor
        (B, C, *spatial) images.
    target : None, int or one int per sample
        Class to explain; passed to both explainers as a (B,) long tensor.
    seed : int
        Seed of the randomised copy.

    Returns
    -------
    torch.Tensor
        (B,) float32 on the device of the maps; lower is better (the map depends on the model).

    Raises
    ------
    InputError
        If ``x`` or ``target`` is invalid, or an explainer returns maps of the wrong shape.
    """
    x = check_input(x)
    with frozen(model):
        device = model_device(model) or x.device
        logits = ModelScorer(model, "probability").all_logits(
            x.detach().to(device=device, dtype=torch.float32)
        )
        targets = resolve_targets(target, logits)
    original = check_saliency(explainer_factory(model)(x, targets), x)
    randomised = check_saliency(explainer_factory(randomised_copy(model, seed))(x, targets), x)
    return spearman(original, randomised)


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """(B, N) float64 ranks of (B, N) values, 0-based, ties sharing their average rank."""
    batch, size = values.shape
    ordered, order = values.sort(dim=1, stable=True)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    # one group id per run of equal values, unique over the whole batch
    groups = (starts.cumsum(dim=1) - 1) + torch.arange(batch, device=values.device)[:, None] * size
    positions = torch.arange(size, dtype=torch.float64, device=values.device).expand(batch, size)
    sums = torch.zeros(batch * size, dtype=torch.float64, device=values.device)
    sums.index_add_(0, groups.reshape(-1), positions.reshape(-1))
    counts = torch.zeros_like(sums).index_add_(0, groups.reshape(-1), torch.ones_like(positions).reshape(-1))
    average = (sums / counts.clamp(min=1))[groups]
    return torch.empty_like(average).scatter_(1, order, average)


__all__ = ["model_randomisation_check", "randomised_copy", "spearman"]
