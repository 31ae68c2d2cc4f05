"""Hierarchical dynamic masks (HDM): a cascade of DM modules over what is left of the image.

Our design of ``METHOD.md`` section 5:

1. Level 1 runs a DM module on the image and gives saliency ``S1``.
2. What it found is removed: voxels where ``S1 >= removal_threshold`` are replaced by the baseline
   (softly below that), cumulatively over levels.
3. While the remaining image keeps at least ``stop_fraction`` of the class evidence, the next
   level runs a DM module on it, up to ``levels`` levels.
4. Fusion: each level's map is weighted by its Shapley value in the removal game over levels (the
   share of the evidence lost when a set of levels' regions is removed from the original image; at
   least ``min_weight``), and the weighted maps are summed and normalised. Two regions that are
   each enough alone share the loss of removing both equally, so redundant evidence (two lesions)
   stays in the map; a level whose region the decision does not need gets little weight.
5. Verification: the fused map's largest connected regions (where its spread reaches
   ``verify_threshold`` of its maximum) are removed one at a time from the original image, and
   each region's share of the map's mass is made its share of the evidence (what its removal
   loses); a region that loses less than ``min_weight`` times the largest loss of the image's
   regions is weighted like the rest of the map, by ``min_weight``. A preservation
   mask can keep a region that holds evidence only against the baseline (textured tissue on a
   blurred background reads as a lesion to some classifiers); removing that region from the
   original loses little, so it falls below the regions the decision needs. The regions outside
   the map where the removal cost on the original (integrated gradients from the baseline, as
   the first level's evidence weighting has it), blurred into patches, peaks are removed too: a
   lesion that no level kept (the cascade stops once the rest of the image keeps less than
   ``stop_fraction`` of the evidence) and whose removal loses at least ``cost_regions`` of the
   evidence gets its share, shaped by that cost.
6. Hole filling: fine masks keep scattered voxels of a lesion, so the map's grey-scale closing
   (a max filter, then a min filter, ``2 * fill_width + 1`` voxels wide), where it reaches
   ``verify_threshold`` of its maximum, is added to it. The gaps inside what was found then rank
   above the rest of the image; a closing does not grow a region past its edges.
7. Peak check: one found region can join a lesion and a higher peak beside it that the decision
   does not need, and verification then weighs them alike. The ``check_peaks`` highest pieces of
   the map above half its maximum, each grown by a voxel, play the game of removing any set of
   them from the original image; a piece whose Shapley value is under ``min_weight`` times the
   largest is lowered by ``min_weight``. Pieces that are each enough alone, or each hold some of
   the evidence, keep their values.
8. A cascade that missed: when removing every level's region together loses less than
   ``min_found_loss`` of the evidence, no mask kept what the decision needs (a classifier that
   reads a lesion only with the tissue around it keeps no score from the lesion alone), and the
   map ranks voxels by their removal cost (integrated gradients from the baseline, blurred into
   patches), with a warning.

References
----------
Peng, Yang, Liu, He. "Hierarchical Dynamic Masks for Visual Explanation of Neural Networks",
arXiv:2301.04970, 2023.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medmdm.explainers.base import ModelScorer
from medmdm.explainers.dynamic_masks import DynamicMasks
from medmdm.explainers.explanation import Explanation, LevelRecord
from medmdm.explainers.mask_optimisation import MaskProblem
from medmdm.explainers.masks import connected_regions, normalise
from medmdm.explainers.options import option
from medmdm.explainers.perturbation import gaussian_blur, keep, remove
from medmdm.explainers.targets import BoundTarget

# Shapley fusion scores every subset of levels: 2**levels - 1 forward passes per image.
_MAX_LEVELS = 8
# The share of the evidence below which removing a verified region has changed nothing measurable.
_MEASURABLE_LOSS = 0.01
# Regions outside the map where the removal cost, blurred into patches, reaches this
# share of its maximum are verified too, the _COST_REGIONS with the highest peaks per image.
_COST_PEAK = 0.4
_COST_REGIONS = 3
# The share of the map's maximum above which its pieces are checked by removal (check_peaks).
_PEAK_LEVEL = 0.5


class HierarchicalDynamicMasks(DynamicMasks):
    """A cascade of dynamic-mask modules, each explaining what the previous ones left (steps 1 to 8
    of the module docstring)."""

    @dataclass(frozen=True)
    class Options(DynamicMasks.Options):
        """Options of ``hdm``: those of ``dm`` and the cascade's."""

        method = "hdm"

        levels: int = option(3, "most DM levels", low=1, high=_MAX_LEVELS)
        stop_fraction: float = option(
            0.5, "a next level runs while the remaining image keeps this share of the evidence", low=0, high=1
        )
        removal_threshold: float = option(
            0.5,
            "saliency from which a voxel is removed fully before the next level",
            low=0,
            high=1,
            low_open=True,
        )
        min_weight: float = option(
            0.1,
            "least weight of a level that ran; weight of the map outside the verified regions the "
            "decision needs (those losing at least this share of the largest region's loss)",
            low=0,
            high=1,
        )
        verify_threshold: float = option(
            0.2,
            "share of the fused map's maximum outlining the regions verified by removal; 0: no verification",
            low=0,
            high=1,
            high_open=True,
        )
        verify_regions: int = option(
            8, "most regions verified per image; the rest of the map gets min_weight", low=1
        )
        fill_width: int = option(
            2, "half-width in voxels of the closing that fills gaps inside found regions; 0: off", low=0
        )
        cost_regions: float = option(
            0.15,
            "least share of the evidence that removing a region outside the map, where the "
            "removal cost peaks, must lose for it to join the map with that share (a "
            "lesion no level kept); 0: off",
            low=0,
            high=1,
        )
        check_peaks: int = option(
            3,
            "most pieces of the map above half its maximum whose removal (grown by a voxel) is played "
            "as a Shapley game on the original; one whose value is under min_weight times the "
            "largest is lowered by min_weight; 0: off",
            low=0,
            high=_MAX_LEVELS,
        )
        min_found_loss: float = option(
            0.35,
            "least share of the evidence that removing every level's region must lose; below it the "
            "masks missed what the decision needs and the map ranks voxels by their removal cost; 0: off",
            low=0,
            high=1,
        )

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        problem = self._problem(x, target, scorer, score_original)
        batch, dims = x.shape[0], x.ndim - 2
        removed = torch.zeros_like(x[:, :1])
        score_current = score_original.clone()
        running = torch.ones(batch, dtype=torch.bool)
        found_levels = []
        removal = None
        for level in range(1, self.options.levels + 1):
            index = running.nonzero()[:, 0].to(x.device)
            if index.numel() == 0:
                break
            sub = MaskProblem(
                problem.x[index] if level == 1 else remove(x[index], problem.baseline[index], removed[index]),
                problem.baseline[index],
                target[index],
                score_current[index],
                problem.score_baseline[index],
                tuple(problem.baseline_names[i] for i in index.tolist()),
            )
            saliency, steps, cost = self._dm_module(self._optimiser(sub, scorer), level)
            if level == 1:
                removal = cost  # on the original image: the tie order's and the cost regions
            masked = scorer.scores(keep(x[index], sub.baseline, saliency), sub.target, index)
            region = torch.zeros_like(removed)
            region[index] = self._removal_region(self._found_region(saliency))
            removed = torch.maximum(removed, region)
            remaining = scorer.scores(remove(x[index], sub.baseline, removed[index]), sub.target, index)
            found_levels.append((index, saliency, region, sub.score_original, masked, remaining, steps))
            score_current[index] = remaining
            # An empty map removes nothing: a further level would see the same image again.
            found = saliency.flatten(1).amax(1) > 0
            keeps_enough = problem.retention(remaining, index) >= self.options.stop_fraction
            running[index.cpu()] = (keeps_enough & found).cpu()

        regions = [region for _, _, region, *_ in found_levels]
        losses = self._removal_losses(problem, scorer, regions)
        shapley = _shapley_values(losses)
        fused = torch.zeros_like(removed)
        records = []
        for level, (index, saliency, _, score_input, masked, remaining, steps) in enumerate(found_levels):
            weight = shapley[index, level].clamp(self.options.min_weight, 1)
            fused[index] += weight.view(-1, *[1] * (dims + 1)) * saliency
            records.append(
                self._record(batch, index, saliency, weight, score_input, masked, remaining, steps)
            )
        saliency = normalise(fused, dims)
        if removal is None and (self.options.evidence_order or self.options.cost_regions > 0):
            removal = self._evidence_costs(scorer, problem)
        if self.options.verify_threshold > 0:
            saliency = self._verified(problem, scorer, saliency, removal)
        if self.options.fill_width > 0:
            saliency = normalise(saliency + self._closed_regions(saliency), dims)
        if self.options.check_peaks > 0:
            saliency = self._checked_peaks(problem, scorer, saliency)
        saliency, missed = self._unless_missed(problem, scorer, saliency, losses[-1], removal)
        saliency, notes = self._ranked(problem, scorer, saliency, removal)
        return self._explanation(
            problem, saliency, self._kept_and_remaining(scorer, problem, saliency), records, missed + notes
        )

    def _unless_missed(
        self,
        problem: MaskProblem,
        scorer: ModelScorer,
        saliency: torch.Tensor,
        found_loss: torch.Tensor,
        removal: torch.Tensor | None,
    ) -> tuple[torch.Tensor, list[str]]:
        """``saliency``, where removing every level's region together lost less than
        ``min_found_loss`` of the evidence (``found_loss``, (B,)) replaced by the removal cost
        (``removal``, computed here when None) in patches, and the note that says so."""
        missed = (found_loss < self.options.min_found_loss).nonzero()[:, 0]
        if missed.numel() == 0:
            return saliency, []
        if removal is None:
            cost = self._removal_costs(scorer, problem, missed, self.options.evidence_steps)
        else:
            cost = removal[missed]
        saliency = saliency.clone()
        saliency[missed] = self._in_patches(cost)
        note = (
            f"removing every region the masks found in image(s) {missed.tolist()} loses less than "
            f"{self.options.min_found_loss:.0%} of the evidence: the masks missed what the decision "
            "needs, so the map ranks voxels by what removing them costs the score"
        )
        return saliency, [note]

    def _removal_losses(
        self,
        problem: MaskProblem,
        scorer: ModelScorer,
        regions: list[torch.Tensor],
        images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(2**L, N) share of the evidence lost when the union of a subset of L regions (each
        (N, 1, *spatial); subset ``s`` holds region ``l`` when bit ``l`` of ``s`` is set) is
        removed from the original of ``problem``'s ``images`` (default: all of them)."""
        if images is None:
            images = torch.arange(problem.x.shape[0])
        count, subsets = len(regions), 2 ** len(regions) - 1
        unions = torch.cat(
            [
                torch.stack([regions[i] for i in range(count) if s >> i & 1]).amax(0)
                for s in range(1, subsets + 1)
            ]
        )
        owner = images.to(problem.x.device).repeat(subsets)
        removed = remove(problem.x[owner], problem.baseline[owner], unions)
        scores = scorer.scores(removed, problem.target[owner], owner)
        lost = 1 - problem.retention(scores, owner).view(subsets, images.numel())
        return torch.cat([torch.zeros_like(lost[:1]), lost])

    def _verified(
        self,
        problem: MaskProblem,
        scorer: ModelScorer,
        saliency: torch.Tensor,
        cost: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``saliency`` with each of its largest regions given the share of the map's mass that is
        its share of the evidence (what removing it from the original image loses); regions that
        lose less than ``min_weight`` times the largest loss, and the rest of the map, weighted by
        ``min_weight``. With ``cost`` (every image's removal cost on the original), the regions
        outside the map where that cost peaks (:meth:`_cost_regions`) are verified too, and one
        whose removal loses at least ``cost_regions`` of the evidence gets its share, shaped by
        the cost."""
        dims = saliency.ndim - 2
        spread = self._found_region(saliency)
        removal_region = self._removal_region(spread)
        if cost is not None and self.options.cost_regions > 0:
            patches = self._in_patches(cost)
            sigma = self.options.evidence_sigma
            shaped = normalise(gaussian_blur(cost, sigma), dims) if sigma > 0 else cost
        regions: list[_Region] = []
        threshold = self.options.verify_threshold
        for i in range(saliency.shape[0]):
            found = spread[i, 0] >= threshold * spread[i, 0].max()
            labels, count = connected_regions(found)
            if count == 0:
                continue
            labels = torch.from_numpy(labels).to(saliency.device)
            mass = torch.zeros(count + 1, dtype=saliency.dtype, device=saliency.device)
            mass.index_add_(0, labels.flatten(), saliency[i, 0].flatten())
            for label in mass[1:].argsort(descending=True)[: self.options.verify_regions] + 1:
                inside = labels == label
                regions.append(_Region(i, inside, removal_region[i, 0] * inside, saliency[i, 0] * inside))
            if cost is not None and self.options.cost_regions > 0:
                regions += self._cost_regions(i, found, patches[i, 0], shaped[i, 0])
        if not regions:
            return saliency
        owner = torch.tensor([region.image for region in regions], device=saliency.device)
        removal = torch.stack([region.removal for region in regions])[:, None]
        removed = remove(problem.x[owner], problem.baseline[owner], removal)
        scores = scorer.scores(removed, problem.target[owner], owner)
        floor = self.options.min_weight
        lost = 1 - problem.retention(scores, owner)
        tiny = torch.finfo(saliency.dtype).tiny
        mass = torch.stack([region.content.sum() for region in regions]).clamp_min(tiny)
        # A region the decision needs gets a share of the map's mass equal to its share of the
        # evidence: weighting its voxels by the loss alone would count its size twice, once in its
        # mass and once in the loss, and a small lesion holding a third of the evidence would get a
        # tenth of the map. Needed is relative to the image's largest loss, so a lesion that adds
        # evidence only beside another (each alone loses little) is not taken for noise.
        from_cost = torch.tensor([region.from_cost for region in regions], device=saliency.device)
        # A region no mask kept is a finding of its own only where it holds a lesion's worth of
        # the evidence: on a classifier whose evidence is spread (a ViT), patches of context lose
        # a few percent each (0.12 at most on the 2D demo's two-lesion cases, where the lesions
        # a level missed lose 0.17 to 0.40).
        needed = (lost > _MEASURABLE_LOSS) & (~from_cost | (lost >= self.options.cost_regions))
        typical = torch.ones_like(mass)
        for i in owner.unique().tolist():
            mine = owner == i
            if needed[mine].any():
                needed[mine] &= lost[mine] >= floor * lost[mine & needed].max()
                typical[mine] = mass[mine & needed].mean()
        value = torch.where(needed, lost.clamp(floor, 1) * typical / mass, floor)
        verified = saliency * floor
        for region, weight, is_needed in zip(regions, value, needed.tolist(), strict=True):
            kept = verified[region.image, 0]
            if not region.from_cost:
                kept[region.inside] = region.content[region.inside] * weight
            elif is_needed:
                kept[region.inside] = torch.maximum(kept, region.content * weight)[region.inside]
        return normalise(verified, dims)

    def _checked_peaks(
        self, problem: MaskProblem, scorer: ModelScorer, saliency: torch.Tensor
    ) -> torch.Tensor:
        """``saliency`` with the pieces above half its maximum that the decision does not need
        lowered by ``min_weight``. The ``check_peaks`` highest pieces of an image, each grown by a
        voxel, are the players of the game of removing any set of them from the original image;
        one whose Shapley value is under ``min_weight`` times the largest (when that is
        measurable) is lowered. Verification weighs whole found regions, and one region can join
        a lesion and a peak beside it that costs nothing; played together, a piece whose removal
        alone raises the score but that matters beside the others keeps its value."""
        checked = saliency.clone()
        floor = self.options.min_weight
        for i in range(saliency.shape[0]):
            labels, count = connected_regions(saliency[i, 0] >= _PEAK_LEVEL * saliency[i, 0].max())
            if count < 2:
                continue
            labels = torch.from_numpy(labels).to(saliency.device)
            peaks = torch.zeros(count + 1, dtype=saliency.dtype, device=saliency.device)
            peaks.scatter_reduce_(0, labels.flatten().long(), saliency[i, 0].flatten(), "amax")
            highest = (peaks[1:].argsort(descending=True)[: self.options.check_peaks] + 1).tolist()
            pieces = [labels == label for label in highest]
            grown = _max_filter(torch.stack(pieces)[:, None].to(saliency.dtype), 1)
            losses = self._removal_losses(problem, scorer, list(grown[:, None]), torch.tensor([i]))
            value = _shapley_values(losses)[0]
            if value.max() <= _MEASURABLE_LOSS:
                continue
            for piece, needed in zip(pieces, (value >= floor * value.max()).tolist(), strict=True):
                if not needed:
                    checked[i, 0][piece] *= floor
        return normalise(checked, saliency.ndim - 2)

    def _cost_regions(
        self, image: int, found: torch.Tensor, patches: torch.Tensor, shaped: torch.Tensor
    ) -> list[_Region]:
        """Where the removal cost in patches (``patches``, (*spatial)) reaches
        ``_COST_PEAK`` of its maximum outside the map's ``found`` regions: the ``_COST_REGIONS``
        connected regions with the highest peaks, removed whole, their content the cost blurred by
        ``evidence_sigma`` (``shaped``). A lesion that no level kept (a level stops once the rest of
        the image keeps less than ``stop_fraction`` of the evidence) is found there."""
        labels, count = connected_regions(patches >= _COST_PEAK * patches.max())
        labels = torch.from_numpy(labels).to(patches.device)
        outside = [labels == label for label in range(1, count + 1)]
        outside = [inside for inside in outside if not (inside & found).any()]
        outside.sort(key=lambda inside: float(patches[inside].max()), reverse=True)
        return [
            _Region(image, inside, inside.to(shaped.dtype), shaped * inside, from_cost=True)
            for inside in outside[:_COST_REGIONS]
        ]

    def _closed_regions(self, saliency: torch.Tensor) -> torch.Tensor:
        """The map's grey-scale closing where it reaches ``verify_threshold`` of its maximum: the
        gaps inside found regions filled, the low background (whose closing would raise all of
        it to its local maxima) left out."""
        width = self.options.fill_width
        closed = -_max_filter(-_max_filter(saliency, width), width)
        peak = closed.flatten(1).amax(1).view(-1, *[1] * (saliency.ndim - 1))
        return torch.where(closed >= self.options.verify_threshold * peak, closed, 0.0)

    def _removal_region(self, spread: torch.Tensor) -> torch.Tensor:
        """How much of each voxel removing what a map found replaces, from the map's spread
        (:meth:`_found_region`): all of it where the spread reaches ``removal_threshold``,
        proportionally below."""
        return (spread / self.options.removal_threshold).clamp(max=1)

    def _found_region(self, saliency: torch.Tensor) -> torch.Tensor:
        """The saliency spread to each voxel's neighbourhood (a max filter half a finest coarse cell
        wide): fine masks keep scattered voxels of what they found, and removing only those would
        leave the rest of it for the next level."""
        return _max_filter(saliency, int(self._finest_cell(saliency.shape[2:]) // 2))

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


@dataclass(frozen=True)
class _Region:
    """A region that verification removes: its image, its voxels, what removing it replaces, and
    its content in the map (the map's own voxels, or a removal cost for a region from the cost)."""

    image: int
    inside: torch.Tensor
    removal: torch.Tensor
    content: torch.Tensor
    from_cost: bool = False


def _shapley_values(value: torch.Tensor) -> torch.Tensor:
    """(B, L) Shapley values of the L players of a game given as (2**L, B) coalition values
    (coalition ``s`` holds player ``l`` when bit ``l`` of ``s`` is set; ``value[0]`` is the empty one)."""
    count = (value.shape[0] - 1).bit_length()
    shapley = torch.zeros(value.shape[1], count, dtype=value.dtype, device=value.device)
    for player in range(count):
        for coalition in range(2**count):
            if coalition >> player & 1:
                continue
            size = bin(coalition).count("1")
            share = math.factorial(size) * math.factorial(count - size - 1) / math.factorial(count)
            shapley[:, player] += share * (value[coalition | 1 << player] - value[coalition])
    return shapley


def _max_filter(maps: torch.Tensor, width: int) -> torch.Tensor:
    """(B, 1, *spatial) maps through a max filter ``2 * width + 1`` voxels wide (unchanged at 0)."""
    if width < 1:
        return maps
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[maps.ndim - 3]
    return pool(maps, 2 * width + 1, stride=1, padding=width)
