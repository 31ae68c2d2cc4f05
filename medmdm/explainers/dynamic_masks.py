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
from dataclasses import dataclass, replace

import torch
from torch.profiler import record_function

from medmdm.explainers.base import Explainer, ModelScorer
from medmdm.explainers.explanation import Explanation, LevelRecord
from medmdm.explainers.mask_optimisation import MaskOptimiser, MaskProblem, Objective, Schedule
from medmdm.explainers.masks import (
    combine_scales,
    default_auxiliary_sizes,
    default_benchmark_sizes,
    grid_shape,
    normalise,
)
from medmdm.explainers.one_shot import gradient_magnitude, removal_cost
from medmdm.explainers.options import option
from medmdm.explainers.perturbation import BaselineOptions, gaussian_blur, keep, remove
from medmdm.explainers.targets import BoundTarget

_TIE_BREAK = 1e-3
_PATCH_BLUR = 24  # the removal cost in patches: blurred by the longest side over this, in voxels
# The final map orders what the masks leave below _TIE_BREAK of its maximum by the removal cost,
# blurred at one of these scales (the longest side over each), with this weight: an order, no mass.
_TIE_SCALES = (48, 24, 12, 6)
_TIE_WEIGHT = 1e-6
# The share of the voxels whose removal in each candidate order is scored to choose the scale.
_TIE_PROBES = (0.05, 0.1, 0.2)
# The removal cost from which a kept voxel keeps all its saliency (a share of the image's largest):
# the voxels that carry the evidence keep the masks' plateau, so that the map kept as a soft mask
# keeps some of the score (2D demo: 13% of the evidence at 0.75, 45% at 0.5, 0% at 1), while the 3D
# demo map stays whole (at most 2 pieces at 0.75, 3 at 0.5).
_EVIDENCE_SATURATION = 0.75


class MaskExplainer(Explainer):
    """Shared options and bookkeeping of the mask-learning explainers."""

    @dataclass(frozen=True)
    class Options(BaselineOptions):
        """Options of every mask-learning method."""

        baseline: str = BaselineOptions.with_default("baseline", "auto")
        steps: int = option(80, "most optimisation steps per stage", low=1)
        min_steps: int = option(20, "steps an image runs before it may stop early", low=0)
        patience: int = option(15, "an image stops early after this many steps without improving", low=1)
        lr: float = option(0.1, "Adam learning rate on the grid values", low=0, low_open=True)
        area_weight: float = option(1.0, "weight of the mask-area term of the loss", low=0)
        deletion_weight: float = option(0.0, "weight of the removed-region term of the loss", low=0)
        init_jitter: float = option(0.01, "noise on the initial grid values, drawn from seed", low=0)
        evidence_order: bool = option(
            True,
            "order the voxels the masks rank equally (those they leave at 0 above all) by what "
            "removing each costs the score, in patches: for dm and hdm integrated gradients "
            "(evidence_steps points, the evidence weighting's cost on the original image, reused), "
            "for mdm the first-order cost (one more forward+backward pass)",
        )
        settle_tolerance: float = option(
            0.02,
            "an image also stops early once no grid value moved by this share of lr per step "
            "since the last loss check; 0: off",
            low=0,
            high=1,
        )

    objective_form = "retention"

    def _objective(self) -> Objective:
        return Objective(
            form=self.objective_form,
            area_weight=self.options.area_weight,
            deletion_weight=self.options.deletion_weight,
        )

    def _schedule(self) -> Schedule:
        options = self.options
        return Schedule(
            lr=options.lr,
            max_steps=options.steps,
            min_steps=min(options.min_steps, options.steps),
            patience=options.patience,
            settle_tolerance=options.settle_tolerance,
        )

    def _problem(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score: torch.Tensor
    ) -> MaskProblem:
        chosen = self.options.baseline_for(x, scorer, target, score)
        score_baseline = (
            scorer.scores(chosen.image, target, _each(x)) if chosen.score is None else chosen.score
        )
        return MaskProblem(x, chosen.image, target, score, score_baseline, chosen.names)

    def _optimiser(self, problem: MaskProblem, scorer: ModelScorer) -> MaskOptimiser:
        return MaskOptimiser(
            problem,
            scorer,
            self._objective(),
            max_batch=self.options.max_batch,
            seed=self.options.seed,
            init_jitter=self.options.init_jitter,
            progress=self.progress,
        )

    def _kept_and_remaining(
        self, scorer: ModelScorer, problem: MaskProblem, saliency: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) scores of the original with only ``saliency`` kept, and with it removed."""
        owner = _each(problem.x)
        masked = scorer.scores(keep(problem.x, problem.baseline, saliency), problem.target, owner)
        remaining = scorer.scores(remove(problem.x, problem.baseline, saliency), problem.target, owner)
        return masked, remaining

    def _single_level(
        self,
        problem: MaskProblem,
        scorer: ModelScorer,
        saliency: torch.Tensor,
        steps: torch.Tensor,
        removal: torch.Tensor | None = None,
    ) -> Explanation:
        """The explanation of a method with one level (``removal``: see :meth:`_ranked`)."""
        saliency, notes = self._ranked(problem, scorer, saliency, removal)
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
        return self._explanation(problem, saliency, (masked, remaining), [level], notes)

    def _ranked(
        self,
        problem: MaskProblem,
        scorer: ModelScorer,
        saliency: torch.Tensor,
        removal: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[str]]:
        """The final map and what makes it less trustworthy: ties ordered by evidence
        (``evidence_order``), and an image whose masks cannot rank anything ranked by gradient.
        ``removal``: every image's :meth:`_removal_costs` on the original, where already computed
        (else the first-order cost is)."""
        notes = []
        flat = (problem.score_original - problem.score_baseline).abs() < 0.05 * torch.maximum(
            problem.score_original.abs(), problem.score_baseline.abs()
        )
        empty = saliency.flatten(1).amax(1) <= 0
        if flat.any():
            which = (
                "every candidate baseline (mean, blur at two scales, minimum)"
                if self.options.baseline == "auto"
                else f"the {self.options.baseline!r} baseline"
            )
            notes.append(
                f"{which} keeps almost all of the target score of image(s) "
                f"{flat.nonzero()[:, 0].tolist()}: masks cannot find the evidence, so the map ranks "
                "voxels by the gradient magnitude of the score"
            )
        if (empty & ~flat).any():
            notes.append(
                f"the masks of image(s) {(empty & ~flat).nonzero()[:, 0].tolist()} kept nothing; "
                "their map ranks voxels by the gradient magnitude of the score"
            )
        fallback, ranked = (flat | empty).nonzero()[:, 0], (~(flat | empty)).nonzero()[:, 0]
        saliency = saliency.clone()
        if self.options.evidence_order and ranked.numel():
            if removal is None:
                cost = self._removal_costs(scorer, problem, ranked, steps=1)
            else:
                cost = removal[ranked]
            resolved = saliency[ranked]
            peak = resolved.flatten(1).amax(1).view(-1, *[1] * (resolved.ndim - 1))
            resolved = torch.where(resolved >= _TIE_BREAK * peak, resolved / peak, 0.0)
            tie_order = self._tie_order(problem, scorer, resolved, cost, ranked)
            saliency[ranked] = normalise(resolved + _TIE_WEIGHT * tie_order, saliency.ndim - 2)
        if fallback.numel():
            saliency[fallback] = gradient_magnitude(scorer, problem.x[fallback], problem.target[fallback], 1)
        return saliency, notes

    def _tie_order(
        self,
        problem: MaskProblem,
        scorer: ModelScorer,
        resolved: torch.Tensor,
        cost: torch.Tensor,
        images: torch.Tensor,
    ) -> torch.Tensor:
        """(N, 1, *spatial) order of the voxels the ``resolved`` maps (normalised, 0 below
        ``_TIE_BREAK``) of ``problem``'s ``images`` leave at 0: their removal ``cost`` blurred at
        the scale of ``_TIE_SCALES`` whose order, after the resolved map, loses the most of the
        score when its first ``_TIE_PROBES`` of the voxels are removed (a handful of forward passes).

        Unblurred, the cost removes scattered voxels, which some models read as texture; blurred
        too widely it removes context the model ignores. Which scale a model rewards differs (on
        the 2D demo bundles' deletion curves a CNN gains with coarse patches, a ViT with fine ones).
        """
        dims = cost.ndim - 2
        side = max(cost.shape[2:])
        candidates = torch.stack([normalise(gaussian_blur(cost, side / k), dims) for k in _TIE_SCALES])
        ranking = (resolved + _TIE_WEIGHT * candidates).flatten(2)  # (K, N, voxels)
        order = ranking.argsort(dim=2, descending=True)
        probes = []
        for fraction in _TIE_PROBES:
            removed = torch.zeros_like(ranking)
            removed.scatter_(2, order[..., : max(1, round(fraction * ranking.shape[2]))], 1.0)
            probes.append(removed)
        count = len(_TIE_SCALES) * len(_TIE_PROBES)
        removed = torch.stack(probes, 1).view(count * images.numel(), 1, *cost.shape[2:])
        owner = images.to(problem.x.device).repeat(count)
        scores = scorer.scores(
            remove(problem.x[owner], problem.baseline[owner], removed), problem.target[owner], owner
        )
        chosen = scores.view(len(_TIE_SCALES), len(_TIE_PROBES), -1).mean(1).argmin(0)
        return candidates[chosen, torch.arange(images.numel(), device=chosen.device)]

    @staticmethod
    def _in_patches(cost: torch.Tensor) -> torch.Tensor:
        """(N, 1, *spatial) removal costs blurred by the longest side over ``_PATCH_BLUR`` and
        normalised: a ranking that removes coherent patches first."""
        return normalise(gaussian_blur(cost, max(cost.shape[2:]) / _PATCH_BLUR), cost.ndim - 2)

    def _removal_costs(
        self, scorer: ModelScorer, problem: MaskProblem, images: torch.Tensor, steps: int
    ) -> torch.Tensor:
        """(N, 1, *spatial) normalised removal cost (:func:`removal_cost`) of ``problem``'s
        ``images``, one image a pass as every pass of the engine (each map is the one it gets alone)."""
        costs = [
            removal_cost(
                scorer,
                problem.x[i, None],
                problem.baseline[i, None],
                problem.target[i, None],
                steps,
                self.options.max_batch,
            )
            for i in images.tolist()
        ]
        return normalise(torch.cat(costs), problem.x.ndim - 2)

    def _evidence_weighted(self, saliency: torch.Tensor, cost: torch.Tensor) -> torch.Tensor:
        """``saliency`` times ``1 - w + w * c``, with ``c`` the removal ``cost`` (:meth:`_removal_costs`
        on the image the masks saw, ``evidence_steps`` points of the path) blurred by
        ``evidence_sigma``, normalised and saturated at 3/4 of its maximum: of what the masks kept,
        what the score needs ranks first.
        An image whose kept voxels cost nothing keeps its map."""
        dims, weight = saliency.ndim - 2, self.options.evidence_weight
        if self.options.evidence_sigma > 0:
            cost = normalise(gaussian_blur(cost, self.options.evidence_sigma), dims)
        cost = (cost / _EVIDENCE_SATURATION).clamp(max=1)
        weighted = normalise(saliency * (1 - weight + weight * cost), dims)
        kept = weighted.flatten(1).amax(1) > 0
        return torch.where(kept.view(-1, *[1] * (dims + 1)), weighted, saliency)

    def _explanation(
        self,
        problem: MaskProblem,
        saliency: torch.Tensor,
        scores: tuple[torch.Tensor, torch.Tensor],
        levels: list[LevelRecord],
        notes: list[str],
    ) -> Explanation:
        """The explanation of the final map ``saliency``, with its kept and remaining ``scores``."""
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
            baselines=list(problem.baseline_names),
        )


class DynamicMasks(MaskExplainer):
    """Dynamic masks: benchmark masks guiding superimposed auxiliary masks (one DM module).

    Grid sizes default to sizes derived from the input size and dimensionality (224^2: 4, 7, 11,
    16 and 28, 56, 112; 96^3: 3, 4, 6, 8 and 12, 24, 48).
    """

    @dataclass(frozen=True)
    class Options(MaskExplainer.Options):
        """Options of ``dm``."""

        method = "dm"

        benchmark_sizes: tuple[int, ...] | None = option(
            None, "cells along the longest side of the coarse masks; None: from the input size", low=2
        )
        auxiliary_sizes: tuple[int, ...] | None = option(
            None, "cells along the longest side of the fine masks; None: from the input size", low=2
        )
        guidance_weight: float = option(
            0.02, "weight of the term keeping fine masks close to the guide where it is high", low=0
        )
        guide_saturation: float = option(
            0.5,
            "guide value from which a fine mask may reach 1 (below it, bounded by guide / this)",
            low=0,
            high=1,
            low_open=True,
        )
        density_sigma: float = option(
            0.5, "sigma of the map's density weighting, in finest benchmark cells; 0: off", low=0
        )
        evidence_weight: float = option(
            1.0,
            "weight of the removal cost in each DM module's map: the map is multiplied by "
            "1 - w + w * (removal cost on the image the module saw, blurred by evidence_sigma); 0: off",
            low=0,
            high=1,
        )
        evidence_steps: int = option(
            8, "points of the path from the baseline at which the removal cost is estimated", low=1
        )
        evidence_sigma: float = option(1.0, "blur of the removal cost, in voxels", low=0)

    def _objective(self) -> Objective:
        return replace(super()._objective(), guidance_weight=self.options.guidance_weight)

    def _dm_module(
        self, optimiser: MaskOptimiser, level: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Saliency (B, 1, *spatial) of one DM module, the steps (B,) it ran per image, and the
        removal cost (B, 1, *spatial) of the image it saw (None when ``evidence_weight`` is 0)."""
        spatial = optimiser.problem.spatial
        options = self.options
        bench_sizes = options.benchmark_sizes or default_benchmark_sizes(spatial)
        aux_sizes = options.auxiliary_sizes or default_auxiliary_sizes(spatial)
        schedule = self._schedule()
        bench = optimiser.run(
            [grid_shape(k, spatial) for k in bench_sizes],
            schedule,
            init=0.5,
            level=level,
            stage="benchmark",
        )
        guide = combine_scales(bench.masks, bench_sizes, exponent=0)
        aux = optimiser.run(
            [grid_shape(k, spatial) for k in aux_sizes],
            schedule,
            init=1.0,
            guide=(guide / options.guide_saturation).clamp(max=1),
            level=level,
            stage="auxiliary",
        )
        refined = combine_scales(aux.masks, aux_sizes, exponent=2)
        # Fine masks clamp at 1 over whole plateaus; the guide orders voxels they keep equally.
        saliency = normalise(refined + _TIE_BREAK * guide, len(spatial))
        if options.density_sigma > 0:
            # Weighting by the map's local density keeps dense kept regions and damps the isolated
            # voxels fine masks also keep: on 30 2D demo cases, energy 0.22 -> 0.31, pointing game
            # 0.80 -> 0.90, deletion AUC 0.18 -> 0.14 (docs/benchmarks.md).
            sigma = options.density_sigma * self._finest_cell(spatial)
            with record_function("medmdm.blur"):
                density = gaussian_blur(saliency, sigma)
            saliency = normalise(saliency * density, len(spatial))
        removal = None
        if options.evidence_weight > 0:
            removal = self._evidence_costs(optimiser.scorer, optimiser.problem)
            saliency = self._evidence_weighted(saliency, removal)
        return saliency, bench.steps + aux.steps, removal

    def _evidence_costs(self, scorer: ModelScorer, problem: MaskProblem) -> torch.Tensor:
        """(B, 1, *spatial) removal cost (:meth:`_removal_costs`) of every image of ``problem``,
        ``evidence_steps`` points of the path."""
        images = torch.arange(problem.x.shape[0])
        return self._removal_costs(scorer, problem, images, self.options.evidence_steps)

    def _finest_cell(self, spatial: Sequence[int]) -> float:
        """Width in voxels of a cell of the finest benchmark grid along the longest side."""
        return max(spatial) / max(self.options.benchmark_sizes or default_benchmark_sizes(spatial))

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        problem = self._problem(x, target, scorer, score_original)
        saliency, steps, removal = self._dm_module(self._optimiser(problem, scorer))
        if removal is None and self.options.evidence_order:
            removal = self._evidence_costs(scorer, problem)
        return self._single_level(problem, scorer, saliency, steps, removal)


def _each(x: torch.Tensor) -> torch.Tensor:
    """(B,) the owner of each image of a batch: itself (see :meth:`ModelScorer.scores`)."""
    return torch.arange(x.shape[0], device=x.device)
