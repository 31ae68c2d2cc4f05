"""Gradient baselines: plain gradients (saliency) and integrated gradients.

References
----------
Simonyan, Vedaldi, Zisserman. "Deep Inside Convolutional Networks: Visualising Image Classification
Models and Saliency Maps", arXiv:1312.6034, 2013.
Sundararajan, Taly, Yan. "Axiomatic Attribution for Deep Networks", ICML 2017, arXiv:1703.01365.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from medmdm.explainers.base import Explainer, ModelScorer
from medmdm.explainers.explanation import Explanation
from medmdm.explainers.masks import normalise
from medmdm.explainers.one_shot import gradient_magnitude, removal_cost, single_level_explanation
from medmdm.explainers.options import ExplainerOptions, option
from medmdm.explainers.perturbation import BaselineOptions
from medmdm.explainers.targets import BoundTarget


class Saliency(Explainer):
    """Gradient magnitude: ``max_c |d score / d x_c|`` (Simonyan et al. 2013).

    One forward and backward pass per image (plus 3 scoring samples, see
    :func:`single_level_explanation`). The map shows where the score is sensitive, not what
    supports it; it is often noisy. Takes only the options every method has.
    """

    @dataclass(frozen=True)
    class Options(ExplainerOptions):
        """Options of ``saliency``: those every method has."""

        method = "saliency"

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        saliency = gradient_magnitude(scorer, x, target, self.options.max_batch)
        return single_level_explanation(self.name, x, target, scorer, score_original, saliency)


class IntegratedGradients(Explainer):
    """Integrated gradients along the straight line from a baseline image (Sundararajan et al. 2017).

    The attribution of a voxel is ``(x - b) * mean gradient`` on the path ``b + a (x - b)``,
    ``a`` in [0, 1], integrated with the trapezoid rule, summed over channels. Only positive
    evidence is kept (negative attributions become 0), so high = important; then each map is
    min-max normalised. Cost: ``steps`` forward+backward samples per image (plus 3 scoring
    samples), passed ``max_batch`` at a time. The path's start is a baseline image (see
    :func:`~medmdm.explainers.perturbation.baseline_image`).
    """

    @dataclass(frozen=True)
    class Options(BaselineOptions):
        """Options of ``integrated_gradients``; the baseline is the path's start."""

        method = "integrated_gradients"

        baseline: str = BaselineOptions.with_default("baseline", "constant")
        steps: int = option(32, "points on the path, both ends included", low=2)

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        options = self.options
        base = options.baseline_for(x, scorer, target, score_original).image
        attribution = removal_cost(scorer, x, base, target, options.steps, options.max_batch)
        saliency = normalise(attribution, x.ndim - 2)
        return single_level_explanation(self.name, x, target, scorer, score_original, saliency)
