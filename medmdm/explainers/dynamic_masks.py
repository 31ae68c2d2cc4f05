"""Dynamic masks (DM): coarse benchmark masks find the evidence, fine auxiliary masks refine it.

The DM module of HDM, as our design in ``METHOD.md`` section 4 describes it:

1. Benchmark stage: coarse grids, learned jointly as one batch; the normalised mean of their
   normalised masks is the guide ``G``.
2. Auxiliary stage: fine grids, each superimposed on the guide (``m = H * up(a)`` with
   ``H = min(1, G / guide_saturation)``, ``a`` starting at 1 so the first mask is ``H``), with a term
   that keeps ``m`` close to ``H`` where it is high. Fine detail can only refine regions the coarse
   masks found.
3. The saliency is the normalised sum of the superimposed masks, each weighted by its squared
   cell count: coarse grids spread saliency about a cell past the edges of what they found, so
   fine masks carry the detail. The guide, already inside every superimposed mask, is added with
   a weight of 1e-3 to order the voxels that fine masks keep equally (they clamp at 1).

References
----------
Peng, Yang, Liu, He. "Hierarchical Dynamic Masks for Visual Explanation of Neural Networks",
arXiv:2301.04970, 2023.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from medmdm.errors import OptionError
from medmdm.explainers.base import Explainer, Explanation, LevelRecord, ModelScorer
from medmdm.explainers.mask_optimisation import MaskOptimiser, MaskProblem, Objective, Schedule
from medmdm.explainers.masks import (
    check_sizes,
    combine_scales,
    default_auxiliary_sizes,
    default_benchmark_sizes,
    grid_shape,
    normalise,
)
from medmdm.explainers.perturbation import (
    BaselineKind,
    baseline_image,
    check_baseline,
    gaussian_blur,
    keep,
    remove,
)
from medmdm.explainers.targets import BoundTarget

_TIE_BREAK = 1e-3


class MaskExplainer(Explainer):
    """Shared options and bookkeeping of the mask-learning explainers.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (B, classes).
    baseline : {"mean", "blur", "constant"}
        What removed content is replaced with.
    baseline_value : float
        Value of the ``constant`` baseline.
    blur_sigma : float, optional
        Sigma of the ``blur`` baseline in voxels (default: longest side / 20).
    steps : int
        Most optimisation steps per stage.
    min_steps, patience : int
        Early stopping: an image stops after ``min_steps`` once its loss has not improved
        for ``patience`` steps.
    lr : float
        Adam learning rate on the grid values.
    area_weight, deletion_weight : float
        Weights of the mask-area and the removed-region terms of the loss.
    init_jitter : float
        Noise on the initial grid values, drawn from ``seed``.
    **common
        ``score``, ``device``, ``seed``, ``mixed_precision``, ``max_batch``, ``progress``
        (see :class:`~medmdm.explainers.base.Explainer`).
    """

    objective_form = "retention"

    def __init__(
        self,
        model: nn.Module,
        *,
        baseline: BaselineKind = "mean",
        baseline_value: float = 0.0,
        blur_sigma: float | None = None,
        steps: int = 80,
        min_steps: int = 20,
        patience: int = 15,
        lr: float = 0.1,
        area_weight: float = 1.0,
        deletion_weight: float = 0.0,
        init_jitter: float = 0.01,
        **common: Any,
    ) -> None:
        super().__init__(model, **common)
        self.baseline = check_baseline(baseline)
        self.baseline_value = baseline_value
        self.blur_sigma = blur_sigma
        self.steps = steps
        self.min_steps = min_steps
        self.patience = patience
        self.lr = lr
        self.area_weight = area_weight
        self.deletion_weight = deletion_weight
        self.init_jitter = init_jitter
        self._schedule = Schedule(lr=lr, max_steps=steps, min_steps=min(min_steps, steps), patience=patience)
        self._objective = self._make_objective()

    def _make_objective(self) -> Objective:
        return Objective(
            form=self.objective_form, area_weight=self.area_weight, deletion_weight=self.deletion_weight
        )

    def _problem(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score: torch.Tensor
    ) -> MaskProblem:
        base = baseline_image(x, self.baseline, value=self.baseline_value, blur_sigma=self.blur_sigma)
        score_baseline = scorer.scores(base, target)
        return MaskProblem(x, base, target, score, score_baseline)

    def _optimiser(self, problem: MaskProblem, scorer: ModelScorer) -> MaskOptimiser:
        return MaskOptimiser(
            problem,
            scorer,
            self._objective,
            max_batch=self.max_batch,
            seed=self.seed,
            init_jitter=self.init_jitter,
            progress=self.progress,
        )

    def _kept_and_remaining(
        self, scorer: ModelScorer, problem: MaskProblem, saliency: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) scores of the original with only ``saliency`` kept, and with it removed."""
        masked = scorer.scores(keep(problem.x, problem.baseline, saliency), problem.target)
        remaining = scorer.scores(remove(problem.x, problem.baseline, saliency), problem.target)
        return masked, remaining

    def _single_level(
        self, problem: MaskProblem, scorer: ModelScorer, saliency: torch.Tensor, steps: torch.Tensor
    ) -> Explanation:
        """The explanation of a method with one level."""
        masked, remaining = self._kept_and_remaining(scorer, problem, saliency)
        batch = saliency.shape[0]
        level = LevelRecord(
            map=saliency,
            ran=torch.ones(batch, dtype=torch.bool),
            weight=torch.ones(batch),
            score_input=problem.score_original,
            score_masked=masked,
            score_remaining=remaining,
            steps=steps,
        )
        return self._explanation(problem, saliency, (masked, remaining), [level])

    def _explanation(
        self,
        problem: MaskProblem,
        saliency: torch.Tensor,
        scores: tuple[torch.Tensor, torch.Tensor],
        levels: list[LevelRecord],
    ) -> Explanation:
        notes = []
        flat = (problem.score_original - problem.score_baseline).abs() < 0.05 * torch.maximum(
            problem.score_original.abs(), problem.score_baseline.abs()
        )
        if flat.any():
            notes.append(
                f"the {self.baseline!r} baseline keeps almost all of the class score of image(s) "
                f"{flat.nonzero()[:, 0].tolist()}: nothing can be removed, so their maps say little; "
                "try another baseline"
            )
        return Explanation(
            map=saliency,
            target=problem.target.index,
            score_original=problem.score_original,
            score_baseline=problem.score_baseline,
            score_masked=scores[0],
            score_remaining=scores[1],
            levels=levels,
            steps=torch.stack([level.steps for level in levels]).sum(0),
            warnings=notes,
        )


class DynamicMasks(MaskExplainer):
    """Dynamic masks: benchmark masks guiding superimposed auxiliary masks (one DM module).

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (B, classes).
    benchmark_sizes, auxiliary_sizes : list of int, optional
        Grid cells along the longest side of the coarse and fine masks; by default derived from
        the input size and dimensionality (224^2: 4, 7, 11, 16 and 28, 56, 112; 96^3: 3, 4, 6, 8
        and 12, 24, 48).
    guidance_weight : float
        Weight of the term keeping fine masks close to the guide where it is high.
    guide_saturation : float
        Guide value from which a fine mask is free to reach 1; below it, fine masks are bounded
        by ``guide / guide_saturation``.
    density_sigma : float
        The module's map is weighted by its own Gaussian-smoothed copy (its local density) of this
        standard deviation, in finest benchmark cells; 0 turns the weighting off.
    **options
        See :class:`MaskExplainer`.
    """

    name = "dm"

    def __init__(
        self,
        model: nn.Module,
        *,
        benchmark_sizes: Sequence[int] | None = None,
        auxiliary_sizes: Sequence[int] | None = None,
        guidance_weight: float = 0.02,
        guide_saturation: float = 0.5,
        density_sigma: float = 0.5,
        **options: Any,
    ) -> None:
        if not density_sigma >= 0:
            raise OptionError(f"density_sigma must be >= 0, got {density_sigma}")
        self.density_sigma = density_sigma
        self.guidance_weight = guidance_weight
        super().__init__(model, **options)
        self.benchmark_sizes = (
            None if benchmark_sizes is None else check_sizes(benchmark_sizes, "benchmark_sizes")
        )
        self.auxiliary_sizes = (
            None if auxiliary_sizes is None else check_sizes(auxiliary_sizes, "auxiliary_sizes")
        )
        self.guide_saturation = guide_saturation

    def _make_objective(self) -> Objective:
        return Objective(
            form=self.objective_form,
            area_weight=self.area_weight,
            deletion_weight=self.deletion_weight,
            guidance_weight=self.guidance_weight,
        )

    def _dm_module(self, optimiser: MaskOptimiser, level: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Saliency (B, 1, *spatial) of one DM module and the steps (B,) it ran per image."""
        spatial = optimiser.problem.spatial
        bench_sizes = self.benchmark_sizes or default_benchmark_sizes(spatial)
        aux_sizes = self.auxiliary_sizes or default_auxiliary_sizes(spatial)
        bench = optimiser.run(
            [grid_shape(k, spatial) for k in bench_sizes],
            self._schedule,
            init=0.5,
            level=level,
            stage="benchmark",
        )
        guide = combine_scales(bench.masks, bench_sizes, exponent=0)
        aux = optimiser.run(
            [grid_shape(k, spatial) for k in aux_sizes],
            self._schedule,
            init=1.0,
            guide=(guide / self.guide_saturation).clamp(max=1),
            level=level,
            stage="auxiliary",
        )
        refined = combine_scales(aux.masks, aux_sizes, exponent=2)
        # Fine masks clamp at 1 over whole plateaus; the guide orders voxels they keep equally.
        saliency = normalise(refined + _TIE_BREAK * guide, len(spatial))
        if self.density_sigma > 0:
            # Weighting by the map's local density keeps dense kept regions and damps the isolated
            # voxels fine masks also keep: on 30 2D demo cases, energy 0.22 -> 0.31, pointing game
            # 0.80 -> 0.90, deletion AUC 0.18 -> 0.14 (docs/benchmarks.md).
            sigma = self.density_sigma * self._finest_cell(spatial)
            saliency = normalise(saliency * gaussian_blur(saliency, sigma), len(spatial))
        return saliency, bench.steps + aux.steps

    def _finest_cell(self, spatial: Sequence[int]) -> float:
        """Width in voxels of a cell of the finest benchmark grid along the longest side."""
        return max(spatial) / max(self.benchmark_sizes or default_benchmark_sizes(spatial))

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        problem = self._problem(x, target, scorer, score_original)
        saliency, steps = self._dm_module(self._optimiser(problem, scorer))
        return self._single_level(problem, scorer, saliency, steps)
