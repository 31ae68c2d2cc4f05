"""Faithfulness: how the model's score changes when the voxels a map ranks highest are perturbed.

Deletion replaces the top-ranked voxels with a baseline and should make the score fall fast (low
area under the curve); insertion starts from a blurred image, puts the top-ranked voxels of the
original back and should make the score rise fast (high area). Average drop / increase score the
image multiplied by its own map.

The score is the softmax probability (sigmoid for a model with one logit) of the class predicted
on the original image, or of ``target``. The model runs without gradients, in eval mode, on its
own device; its ``training`` and ``requires_grad`` flags are restored afterwards, also on errors.
Results are float32 tensors on the device of ``x``.

References
----------
Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
BMVC 2018 (deletion and insertion). Chattopadhyay et al., "Grad-CAM++: Generalized Gradient-based
Visual Explanations for Deep Convolutional Networks", WACV 2018 (average drop and increase).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from medmdm.explainers.base import ModelScorer, TargetLike, check_input, frozen, model_device, resolve_targets
from medmdm.explainers.perturbation import BaselineKind, baseline_image, remove
from medmdm.metrics._checks import check_positive_int, check_saliency


class Curve(NamedTuple):
    """A deletion or insertion curve.

    Attributes
    ----------
    fractions : torch.Tensor
        (steps + 1,) fraction of the voxels deleted or inserted: 0, 1/steps, ..., 1.
    probabilities : torch.Tensor
        (B, steps + 1) probability of the explained class at each fraction.
    """

    fractions: torch.Tensor
    probabilities: torch.Tensor


class DropIncrease(NamedTuple):
    """Per-image average drop and increase in confidence (average them over a data set).

    Attributes
    ----------
    drop : torch.Tensor
        (B,) ``max(0, p - p_masked) / p`` (0 where ``p`` is 0); lower is better.
    increase : torch.Tensor
        (B,) 1.0 where ``p_masked > p``, else 0.0; higher is better.
    """

    drop: torch.Tensor
    increase: torch.Tensor


def deletion_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    target: TargetLike = None,
    *,
    baseline: BaselineKind = "mean",
    steps: int = 20,
    max_batch: int | None = None,
) -> Curve:
    """Probability of the explained class as the most salient voxels are replaced by a baseline.

    Voxels are ranked by saliency, highest first; equal values keep their flat index order. At step
    ``k`` the ``round(k * N / steps)`` top-ranked of the ``N`` voxels are replaced, in every channel,
    by the baseline of :func:`medmdm.explainers.perturbation.baseline_image`.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (B, classes). Left as found.
    x : torch.Tensor
        (B, C, *spatial) images.
    saliency : torch.Tensor
        (B, 1, *spatial) maps, higher = more important.
    target : None, int or one int per sample
        Class to score; None takes the class the model predicts on ``x``.
    baseline : {"mean", "blur", "constant"}
        What deleted voxels become (``constant`` is 0).
    steps : int
        Number of deletion steps; the curve has ``steps + 1`` points.
    max_batch : int, optional
        Most images passed through the model at once; None passes a whole curve at once.

    Returns
    -------
    Curve
        ``fractions`` (steps + 1,) and ``probabilities`` (B, steps + 1), float32 on ``x``'s device.

    Raises
    ------
    InputError
        If ``x``, ``saliency`` or ``target`` is invalid.
    OptionError
        If ``baseline``, ``steps`` or ``max_batch`` is invalid.

    Examples
    --------
    >>> from medmdm.testing import BoxModel, box_image, region_mask
    >>> box = ((8, 16), (8, 16))
    >>> x = box_image((32, 32), box)
    >>> perfect = region_mask((32, 32), box).float()[None, None]
    >>> curve = deletion_curve(BoxModel(box), x, perfect, steps=10)
    >>> curve.probabilities.shape
    torch.Size([1, 11])
    >>> bool(curve.probabilities[0, 0] > 0.99 and curve.probabilities[0, -1] < 0.1)
    True
    """
    return _curve(model, x, saliency, target, baseline, steps, max_batch, insert=False)


def insertion_curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    target: TargetLike = None,
    *,
    baseline: BaselineKind = "blur",
    steps: int = 20,
    max_batch: int | None = None,
) -> Curve:
    """Probability of the explained class as the most salient voxels of ``x`` are put back.

    Starts from the ``baseline`` image (by default a Gaussian blur of ``x``) and, at step ``k``,
    replaces its ``round(k * N / steps)`` top-ranked voxels with those of ``x`` (all channels).
    Parameters, returns and errors as :func:`deletion_curve`.
    """
    return _curve(model, x, saliency, target, baseline, steps, max_batch, insert=True)


def deletion_auc(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    target: TargetLike = None,
    *,
    baseline: BaselineKind = "mean",
    steps: int = 20,
    max_batch: int | None = None,
) -> torch.Tensor:
    """(B,) trapezoid area under :func:`deletion_curve` on [0, 1]; lower is better."""
    curve = deletion_curve(model, x, saliency, target, baseline=baseline, steps=steps, max_batch=max_batch)
    return curve_area(curve)


def insertion_auc(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    target: TargetLike = None,
    *,
    baseline: BaselineKind = "blur",
    steps: int = 20,
    max_batch: int | None = None,
) -> torch.Tensor:
    """(B,) trapezoid area under :func:`insertion_curve` on [0, 1]; higher is better."""
    curve = insertion_curve(model, x, saliency, target, baseline=baseline, steps=steps, max_batch=max_batch)
    return curve_area(curve)


def curve_area(curve: Curve) -> torch.Tensor:
    """(B,) trapezoid area under a :class:`Curve`, in [0, 1] for probabilities."""
    return torch.trapezoid(curve.probabilities, curve.fractions, dim=1)


def average_drop_increase(
    model: nn.Module, x: torch.Tensor, saliency: torch.Tensor, target: TargetLike = None
) -> DropIncrease:
    """Average drop and increase in confidence of each image when multiplied by its map.

    With ``p`` the probability of the explained class on ``x`` and ``p_masked`` that on
    ``x * saliency`` (the map broadcast over channels): ``drop = max(0, p - p_masked) / p`` and
    ``increase = 1`` if ``p_masked > p`` else 0. The maps are expected in [0, 1].

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (B, classes). Left as found.
    x : torch.Tensor
        (B, C, *spatial) images.
    saliency : torch.Tensor
        (B, 1, *spatial) maps in [0, 1].
    target : None, int or one int per sample
        Class to score; None takes the class the model predicts on ``x``.

    Returns
    -------
    DropIncrease
        ``drop`` and ``increase``, each (B,) float32 on ``x``'s device. The papers report their
        means over a data set, in percent.
    """
    x = check_input(x)
    saliency = check_saliency(saliency, x)
    device = model_device(model) or x.device
    inputs = x.detach().to(device=device, dtype=torch.float32)
    maps = saliency.detach().to(device=device, dtype=torch.float32)
    with frozen(model):
        scorer = ModelScorer(model, "probability")
        logits = scorer.all_logits(inputs)
        targets = resolve_targets(target, logits)
        p = scorer.scores_from_logits(logits, targets)
        p_masked = scorer.scores(inputs * maps, targets)
    drop = torch.where(p > 0, (p - p_masked).clamp(min=0) / p.clamp(min=torch.finfo(p.dtype).tiny), 0.0)
    increase = (p_masked > p).float()
    return DropIncrease(drop.to(x.device), increase.to(x.device))


def _curve(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    target: TargetLike,
    baseline: BaselineKind,
    steps: int,
    max_batch: int | None,
    insert: bool,
) -> Curve:
    x = check_input(x)
    saliency = check_saliency(saliency, x)
    check_positive_int(steps, "steps")
    check_positive_int(max_batch, "max_batch", allow_none=True)
    batch, _, *spatial = x.shape
    device = model_device(model) or x.device
    inputs = x.detach().to(device=device, dtype=torch.float32)
    base = baseline_image(inputs, baseline)
    start, end = (base, inputs) if insert else (inputs, base)
    ranks = _ranks(saliency.detach().to(device).reshape(batch, -1))
    voxels = ranks.shape[1]
    counts = [round(k * voxels / steps) for k in range(steps + 1)]
    per_chunk = max(1, (max_batch or batch * (steps + 1)) // batch)
    scores = []
    with frozen(model):
        scorer = ModelScorer(model, "probability", max_batch=max_batch)
        targets = resolve_targets(target, scorer.all_logits(inputs))
        for first in range(0, steps + 1, per_chunk):
            chunk = torch.tensor(counts[first : first + per_chunk], device=device)
            # (n, B, 1, *spatial): 1 where a voxel has moved from the start image to the end image
            masks = (ranks[None] < chunk[:, None, None]).float().reshape(-1, 1, *spatial)
            n, tile = chunk.numel(), (chunk.numel(), *[1] * (x.ndim - 1))
            images = remove(start.repeat(tile), end.repeat(tile), masks)  # step-major: (n * B, C, ...)
            scores.append(scorer.scores(images, targets.repeat(n)).reshape(n, batch))
    probabilities = torch.cat(scores).T.contiguous()
    fractions = torch.linspace(0.0, 1.0, steps + 1, device=device)
    return Curve(fractions.to(x.device), probabilities.to(x.device))


def _ranks(saliency: torch.Tensor) -> torch.Tensor:
    """(B, N) rank of each voxel of (B, N) maps, 0 = most salient; ties in flat index order."""
    order = torch.sort(saliency, dim=1, descending=True, stable=True).indices
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


__all__ = [
    "Curve",
    "DropIncrease",
    "average_drop_increase",
    "curve_area",
    "deletion_auc",
    "deletion_curve",
    "insertion_auc",
    "insertion_curve",
]
