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
from dataclasses import dataclass

import torch

from medmdm.explainers.base import ModelScorer
from medmdm.explainers.dynamic_masks import MaskExplainer
from medmdm.explainers.explanation import Explanation
from medmdm.explainers.masks import (
    combine_scales,
    default_auxiliary_sizes,
    default_benchmark_sizes,
    grid_shape,
)
from medmdm.explainers.options import option
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
    """

    @dataclass(frozen=True)
    class Options(MaskExplainer.Options):
        """Options of ``mdm``."""

        method = "mdm"

        sizes: tuple[int, ...] | None = option(
            None, "cells along the longest side, one mask each; None: the DM sizes for the input", low=2
        )

    scale_exponent = 2.0

    def _default_sizes(self, spatial: Sequence[int]) -> list[int]:
        return default_benchmark_sizes(spatial) + default_auxiliary_sizes(spatial)

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        problem = self._problem(x, target, scorer, score_original)
        spatial = problem.spatial
        sizes = self.options.sizes or self._default_sizes(spatial)
        result = self._optimiser(problem, scorer).run(
            [grid_shape(k, spatial) for k in sizes], self._schedule(), init=0.5, stage="multiscale"
        )
        saliency = combine_scales(result.masks, sizes, self.scale_exponent)
        return self._single_level(problem, scorer, saliency, result.steps)


class MDMReference(MultipleDynamicMasks):
    """The MDM authors' configuration (see the module docstring); slow, for comparison.

    Options are those of :class:`MultipleDynamicMasks`, with the authors' values as defaults.
    """

    @dataclass(frozen=True)
    class Options(MultipleDynamicMasks.Options):
        """Options of ``mdm-reference``: those of ``mdm`` with the authors' defaults."""

        method = "mdm-reference"

        baseline: str = MultipleDynamicMasks.Options.with_default("baseline", "constant")
        steps: int = MultipleDynamicMasks.Options.with_default("steps", 20000)
        min_steps: int = MultipleDynamicMasks.Options.with_default("min_steps", 2000)
        patience: int = MultipleDynamicMasks.Options.with_default("patience", 200)
        lr: float = MultipleDynamicMasks.Options.with_default("lr", 3e-3)
        init_jitter: float = MultipleDynamicMasks.Options.with_default("init_jitter", 0.0)
        evidence_order: bool = MultipleDynamicMasks.Options.with_default("evidence_order", False)

    objective_form = "reference"
    scale_exponent = 0.0

    def _default_sizes(self, spatial: Sequence[int]) -> list[int]:
        return reference_sizes(spatial)
