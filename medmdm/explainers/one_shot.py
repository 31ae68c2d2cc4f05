"""What the one-shot baseline explainers share (``saliency``, ``integrated_gradients``, ``occlusion``,
``rise``, ``gradcam``, ``gradcampp``): chunking of perturbed samples, input gradients, and
:func:`single_level_explanation`, which turns a finished map into an
:class:`~medmdm.explainers.base.Explanation` scored the same way for every method.
"""

from __future__ import annotations

import torch

from medmdm.explainers.base import ModelScorer
from medmdm.explainers.explanation import Explanation, LevelRecord
from medmdm.explainers.masks import normalise
from medmdm.explainers.perturbation import baseline_image, keep, remove
from medmdm.explainers.targets import BoundTarget

# Most voxels (samples x channels x spatial) of perturbed images built at once when max_batch is None.
_VOXEL_BUDGET = 2**25


def perturbation_chunk(max_batch: int | None, sample: torch.Tensor) -> int:
    """Samples of perturbed images to build at once: ``max_batch``, else a fixed memory budget.

    Parameters
    ----------
    max_batch : int, optional
        The explainer's bound on the model batch.
    sample : torch.Tensor
        (C, *spatial) or (1, *spatial), one sample of what is built.
    """
    budget = max(1, _VOXEL_BUDGET // sample.numel())
    return min(max_batch, budget) if max_batch is not None else budget


def input_gradients(scorer: ModelScorer, x: torch.Tensor, target: BoundTarget) -> torch.Tensor:
    """(N, C, *spatial) gradient of each sample's target score with respect to that sample.

    One pass of ``x`` (chunk it to bound memory); model parameters get no gradient. Samples do not
    interact in an eval-mode model, so the gradient of the summed scores is per-sample. A score
    that does not depend on the input has a zero gradient.
    """
    with torch.enable_grad():
        inputs = x.detach().clone().requires_grad_(True)
        score = scorer(inputs, target).sum()
        if not score.requires_grad:
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(score, inputs, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.float()


def chunked_input_gradients(
    scorer: ModelScorer, x: torch.Tensor, target: BoundTarget, max_batch: int | None = None
) -> torch.Tensor:
    """:func:`input_gradients` of ``x``, passed ``max_batch`` samples at a time."""
    chunk = max_batch or x.shape[0]
    return torch.cat(
        [
            input_gradients(scorer, x[i : i + chunk], target[i : i + chunk])
            for i in range(0, x.shape[0], chunk)
        ]
    )


def gradient_magnitude(
    scorer: ModelScorer, x: torch.Tensor, target: BoundTarget, max_batch: int | None = None
) -> torch.Tensor:
    """(N, 1, *spatial) normalised ``max_c |d score / d x_c|``, ``max_batch`` samples a pass."""
    grads = chunked_input_gradients(scorer, x, target, max_batch)
    return normalise(grads.abs().amax(1, keepdim=True), x.ndim - 2)


def removal_cost(
    scorer: ModelScorer,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: BoundTarget,
    steps: int = 1,
    max_batch: int | None = None,
) -> torch.Tensor:
    """(N, 1, *spatial) ``relu(sum_c (x_c - baseline_c) * mean gradient_c)``, not normalised.

    What replacing each voxel by the baseline costs the score, estimated from the gradients at
    ``steps`` points of the straight path from ``baseline`` to ``x`` (trapezoid rule, both ends
    included: integrated gradients); ``steps=1`` takes the gradient at ``x`` only (first order).
    Voxels whose removal would raise the score get 0. ``steps`` forward+backward samples per image,
    passed ``max_batch`` at a time.
    """
    if steps == 1:
        alphas, weights = torch.ones(1, device=x.device), torch.ones(1, device=x.device)
    else:
        alphas = torch.linspace(0, 1, steps, device=x.device)
        weights = torch.full((steps,), 1 / (steps - 1), device=x.device)
        weights[[0, -1]] /= 2  # the trapezoid rule on [0, 1]: the weights sum to 1
    shape = (-1, *[1] * (x.ndim - 1))
    mean_grad = torch.zeros_like(x)
    count = x.shape[0] * steps
    chunk = max_batch or count
    for start in range(0, count, chunk):
        flat = torch.arange(start, min(start + chunk, count), device=x.device)
        image, point = flat // steps, flat % steps
        path = baseline[image] + alphas[point].view(shape) * (x - baseline)[image]
        grads = input_gradients(scorer, path, target[image])
        mean_grad.index_add_(0, image, grads * weights[point].view(shape))
    return ((x - baseline) * mean_grad).sum(1, keepdim=True).clamp_min(0)


def single_level_explanation(
    method: str,
    x: torch.Tensor,
    target: BoundTarget,
    scorer: ModelScorer,
    score_original: torch.Tensor,
    saliency: torch.Tensor,
) -> Explanation:
    """The explanation of a one-shot method, scored like every other explainer.

    Whatever baseline a method perturbs towards, its scores are recorded against the ``mean``
    baseline image, so that maps of different methods compare: ``score_baseline`` is the score of
    that image, ``score_masked`` of the original with only the map kept, ``score_remaining`` with
    the map removed. Costs 3 samples per image.

    Parameters
    ----------
    method : str
        Registry name, for warnings.
    x : torch.Tensor
        (B, C, *spatial) images on the compute device.
    target : BoundTarget
        What is explained for each image.
    score_original : torch.Tensor
        (B,) its score on ``x``.
    scorer : ModelScorer
        The call's scorer (counts the samples).
    saliency : torch.Tensor
        (B, 1, *spatial) normalised map.
    """
    base = baseline_image(x, "mean")
    masked = scorer.scores(keep(x, base, saliency), target)
    remaining = scorer.scores(remove(x, base, saliency), target)
    batch = x.shape[0]
    level = LevelRecord(
        map=saliency,
        ran=torch.ones(batch, dtype=torch.bool),
        weight=torch.ones(batch),
        score_input=score_original,
        score_masked=masked,
        score_remaining=remaining,
        steps=torch.zeros(batch, dtype=torch.long),
    )
    notes = []
    empty = (saliency.flatten(1).amax(1) <= 0).cpu()
    if empty.any():
        notes.append(
            f"{method} found no evidence in image(s) {empty.nonzero()[:, 0].tolist()}: their maps are "
            "empty (the score does not respond to the input there)"
        )
    return Explanation(
        map=saliency,
        target=target.index,
        score_original=score_original,
        score_baseline=scorer.scores(base, target),
        score_masked=masked,
        score_remaining=remaining,
        levels=[level],
        steps=level.steps.clone(),
        warnings=notes,
    )
