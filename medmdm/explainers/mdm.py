"""Multiple dynamic masks (MDM): independent masks at many grid sizes, normalised and summed.

``"mdm"`` learns a few sizes with our objective and step budget; ``"mdm-reference"`` is the
authors' released configuration (27 sizes from 6 to 32 cells plus a quarter and a half of the
input size, their loss, Adam at 3e-3, 2,000 to 20,000 steps, stop after 200 without a new best,
a zero baseline), kept to compare against. Over 54,000 forward+backward passes per image.

References
----------
Peng, Yang, Liu, He. "MDM: Multiple Dynamic Masks for Visual Explanation of Neural Networks",
arXiv:2207.08046, 2022.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medmdm.explainers.base import Explanation, ModelScorer
from medmdm.explainers.dynamic_masks import MaskExplainer
from medmdm.explainers.masks import (
    check_sizes,
    combine_scales,
    default_auxiliary_sizes,
    default_benchmark_sizes,
    grid_shape,
)
from medmdm.explainers.perturbation import BaselineKind
from medmdm.explainers.targets import BoundTarget


def reference_sizes(spatial: Sequence[int]) -> list[int]:
    """The MDM authors' grid sizes: 6 ... 32, plus a quarter and a half of the input when larger."""
    longest = max(spatial)
    sizes = {k for k in range(6, 33) if k <= longest}
    sizes |= {k for k in (round(longest / 4), round(longest / 2)) if k > 32}
    return sorted(sizes) or [min(2, longest)]


class MultipleDynamicMasks(MaskExplainer):
    """Independent dynamic masks at several grid sizes, each normalised, then summed.

    Masks are weighted by their squared cell count (see
    :func:`~medmdm.explainers.masks.combine_scales`); the reference preset weighs them equally.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (B, classes).
    sizes : list of int, optional
        Grid cells along the longest side, one mask each; by default the DM benchmark and
        auxiliary sizes for the input.
    **options
        See :class:`~medmdm.explainers.dynamic_masks.MaskExplainer`.
    """

    name = "mdm"
    scale_exponent = 2.0

    def __init__(self, model: nn.Module, *, sizes: Sequence[int] | None = None, **options: Any) -> None:
        super().__init__(model, **options)
        self.sizes = None if sizes is None else check_sizes(sizes, "sizes")

    def _default_sizes(self, spatial: Sequence[int]) -> list[int]:
        return default_benchmark_sizes(spatial) + default_auxiliary_sizes(spatial)

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        problem = self._problem(x, target, scorer, score_original)
        spatial = problem.spatial
        sizes = self.sizes or self._default_sizes(spatial)
        result = self._optimiser(problem, scorer).run(
            [grid_shape(k, spatial) for k in sizes], self._schedule, init=0.5, stage="multiscale"
        )
        saliency = combine_scales(result.masks, sizes, self.scale_exponent)
        return self._single_level(problem, scorer, saliency, result.steps)


class MDMReference(MultipleDynamicMasks):
    """The MDM authors' configuration (see the module docstring); slow, for comparison.

    Parameters are those of :class:`MultipleDynamicMasks`, with the authors' values as defaults.
    """

    name = "mdm-reference"
    objective_form = "reference"
    scale_exponent = 0.0

    def __init__(
        self,
        model: nn.Module,
        *,
        sizes: Sequence[int] | None = None,
        baseline: BaselineKind = "constant",
        baseline_value: float = 0.0,
        steps: int = 20000,
        min_steps: int = 2000,
        patience: int = 200,
        lr: float = 3e-3,
        init_jitter: float = 0.0,
        **options: Any,
    ) -> None:
        super().__init__(
            model,
            sizes=sizes,
            baseline=baseline,
            baseline_value=baseline_value,
            steps=steps,
            min_steps=min_steps,
            patience=patience,
            lr=lr,
            init_jitter=init_jitter,
            **options,
        )

    def _default_sizes(self, spatial: Sequence[int]) -> list[int]:
        return reference_sizes(spatial)
