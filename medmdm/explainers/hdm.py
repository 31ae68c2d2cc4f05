"""Hierarchical dynamic masks (HDM): a cascade of DM modules over what is left of the image.

Our design of ``METHOD.md`` section 5:

1. Level 1 runs a DM module on the image and gives saliency ``S1``.
2. What it found is removed: voxels where ``S1 >= removal_threshold`` are replaced by the baseline
   (softly below that), cumulatively over levels.
3. While the remaining image keeps at least ``stop_fraction`` of the class evidence, the next
   level runs a DM module on it, up to ``levels`` levels.
4. Fusion: each level's map is weighted by the share of the evidence that keeping only that map
   preserves on the original image (at least ``min_weight``), and the weighted maps are summed and
   normalised. Weighting by what a region can carry, not by the score drop its removal causes,
   keeps redundant evidence (two lesions, each enough alone) in the map.

References
----------
Peng, Yang, Liu, He. "Hierarchical Dynamic Masks for Visual Explanation of Neural Networks",
arXiv:2301.04970, 2023.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medmdm.errors import OptionError
from medmdm.explainers.base import Explanation, LevelRecord, ModelScorer
from medmdm.explainers.dynamic_masks import DynamicMasks
from medmdm.explainers.mask_optimisation import MaskProblem
from medmdm.explainers.masks import default_benchmark_sizes, normalise
from medmdm.explainers.perturbation import keep, remove
from medmdm.explainers.targets import BoundTarget


class HierarchicalDynamicMasks(DynamicMasks):
    """A cascade of dynamic-mask modules, each explaining what the previous ones left.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (B, classes).
    levels : int
        Most DM levels.
    stop_fraction : float
        The next level runs only while the remaining image keeps at least this fraction of the
        class evidence (the score's distance from the baseline score).
    removal_threshold : float
        Saliency at and above which a voxel is removed fully before the next level.
    min_weight : float
        Least fusion weight of a level that ran.
    **options
        See :class:`~medmdm.explainers.dynamic_masks.DynamicMasks`.
    """

    name = "hdm"

    def __init__(
        self,
        model: nn.Module,
        *,
        levels: int = 3,
        stop_fraction: float = 0.5,
        removal_threshold: float = 0.5,
        min_weight: float = 0.1,
        **options: Any,
    ) -> None:
        super().__init__(model, **options)
        if not isinstance(levels, int) or levels < 1:
            raise OptionError(f"levels must be a positive int, got {levels!r}")
        if not 0 < removal_threshold <= 1:
            raise OptionError(f"removal_threshold must be in (0, 1], got {removal_threshold}")
        if not 0 <= min_weight <= 1:
            raise OptionError(f"min_weight must be in [0, 1], got {min_weight}")
        self.levels = levels
        self.stop_fraction = stop_fraction
        self.removal_threshold = removal_threshold
        self.min_weight = min_weight

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        problem = self._problem(x, target, scorer, score_original)
        batch, dims = x.shape[0], x.ndim - 2
        fused = torch.zeros_like(x[:, :1])
        removed = torch.zeros_like(x[:, :1])
        score_current = score_original.clone()
        running = torch.ones(batch, dtype=torch.bool)
        records = []
        for level in range(1, self.levels + 1):
            index = running.nonzero()[:, 0].to(x.device)
            if index.numel() == 0:
                break
            sub = MaskProblem(
                problem.x[index] if level == 1 else remove(x[index], problem.baseline[index], removed[index]),
                problem.baseline[index],
                target[index],
                score_current[index],
                problem.score_baseline[index],
            )
            saliency, steps = self._dm_module(self._optimiser(sub, scorer), level)
            masked = scorer.scores(keep(x[index], sub.baseline, saliency), sub.target)
            weight = problem.retention(masked, index).clamp(self.min_weight, 1)
            fused[index] += weight.view(-1, *[1] * (dims + 1)) * saliency
            region = (self._found_region(saliency) / self.removal_threshold).clamp(max=1)
            removed[index] = torch.maximum(removed[index], region)
            remaining = scorer.scores(remove(x[index], sub.baseline, removed[index]), sub.target)
            records.append(
                self._record(batch, index, saliency, weight, sub.score_original, masked, remaining, steps)
            )
            score_current[index] = remaining
            # An empty map removes nothing: a further level would see the same image again.
            found = saliency.flatten(1).amax(1) > 0
            keeps_enough = problem.retention(remaining, index) >= self.stop_fraction
            running[index.cpu()] = (keeps_enough & found).cpu()
        saliency = normalise(fused, dims)
        return self._explanation(
            problem, saliency, self._kept_and_remaining(scorer, problem, saliency), records
        )

    def _found_region(self, saliency: torch.Tensor) -> torch.Tensor:
        """The saliency spread to each voxel's neighbourhood (a max filter half a finest coarse cell
        wide): fine masks keep scattered voxels of what they found, and removing only those would
        leave the rest of it for the next level."""
        spatial = saliency.shape[2:]
        finest = max(self.benchmark_sizes or default_benchmark_sizes(spatial))
        width = max(spatial) // (2 * finest)
        if width < 1:
            return saliency
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[len(spatial) - 1]
        return pool(saliency, 2 * width + 1, stride=1, padding=width)

    @staticmethod
    def _record(
        batch: int,
        index: torch.Tensor,
        saliency: torch.Tensor,
        weight: torch.Tensor,
        score_input: torch.Tensor,
        masked: torch.Tensor,
        remaining: torch.Tensor,
        steps: torch.Tensor,
    ) -> LevelRecord:
        """A level's record over the whole batch: zeros and NaN scores where it did not run."""

        def spread(values: torch.Tensor, fill: float) -> torch.Tensor:
            out = torch.full((batch, *values.shape[1:]), fill, dtype=values.dtype, device=values.device)
            out[index.to(values.device)] = values
            return out

        ran = torch.zeros(batch, dtype=torch.bool)
        ran[index.cpu()] = True
        return LevelRecord(
            map=spread(saliency, 0.0),
            ran=ran,
            weight=spread(weight, 0.0),
            score_input=spread(score_input, float("nan")),
            score_masked=spread(masked, float("nan")),
            score_remaining=spread(remaining, float("nan")),
            steps=spread(steps, 0),
        )
