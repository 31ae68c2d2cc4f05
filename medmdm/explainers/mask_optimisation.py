"""The engine every dynamic-mask method runs: learn a set of masks per image against a frozen model.

Each image gets its own masks, one per grid shape, learned with Adam and clamped to [0, 1] after
every step. All masks of all images still optimising go through the model as one batch per step
(split into chunks of ``max_batch`` samples when asked). Early stopping is per image, so a batch
gives the same masks as explaining its images one by one.

The loss of one mask ``m`` (upsampled to the input, superimposed on a guide ``G`` when given):

- ``retention`` objective (ours)::

      keep_weight * relu((s0 - s(keep)) / d) ** 2          # keep the class score
    + deletion_weight * relu((s(remove) - sb) / d)         # removing the mask's region loses it
    + area_weight * mean(m)                                 # as little of the image as possible
    + guidance_weight * mean(G * (G - m) ** 2)              # stay close to the guide where it is high

  with ``s0`` the score of the original, ``sb`` of the baseline image, ``d = |s0 - sb|``.
  Scores are thus compared in units of the evidence the image holds, whatever the model's scale.
- ``reference`` objective (the MDM authors')::

      1e-2 * (s(keep) - s0) ** 2 + mean(|m|)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from medmdm.errors import OptionError
from medmdm.explainers.base import ModelScorer, ProgressCallback, ProgressEvent
from medmdm.explainers.masks import GridShape, upsample
from medmdm.explainers.perturbation import keep, remove
from medmdm.explainers.targets import BoundTarget


@dataclass(frozen=True)
class Objective:
    """Weights of the mask loss (see the module docstring)."""

    form: Literal["retention", "reference"] = "retention"
    keep_weight: float = 1.0
    deletion_weight: float = 0.0
    area_weight: float = 1.0
    guidance_weight: float = 0.0
    reference_consistency: float = 1e-2

    def __post_init__(self) -> None:
        if self.form not in ("retention", "reference"):
            raise OptionError(f"objective form must be 'retention' or 'reference', got {self.form!r}")
        for name in ("keep_weight", "deletion_weight", "area_weight", "guidance_weight"):
            if getattr(self, name) < 0:
                raise OptionError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Schedule:
    """Adam learning rate and the step budget of one stage, with per-image early stopping.

    An image stops once it has run ``min_steps`` and its loss has not improved by a relative
    ``tolerance`` for ``patience`` steps, or at ``max_steps``. Loss is read back every
    ``check_every`` steps, so stopping happens on those steps.
    """

    lr: float = 0.1
    max_steps: int = 80
    min_steps: int = 20
    patience: int = 15
    tolerance: float = 1e-3
    check_every: int = 5

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise OptionError(f"lr must be positive, got {self.lr}")
        if self.max_steps < 1:
            raise OptionError(f"steps must be at least 1, got {self.max_steps}")
        if self.min_steps < 0 or self.patience < 1 or self.check_every < 1:
            raise OptionError("min_steps must be >= 0, patience and check_every >= 1")


@dataclass
class MaskProblem:
    """The images to explain and what the loss compares against.

    Attributes
    ----------
    x, baseline : torch.Tensor
        (B, C, *spatial) images and their baselines.
    target : BoundTarget
        What is scored for each image.
    score_original, score_baseline : torch.Tensor
        (B,) target score on ``x`` and on ``baseline``.
    """

    x: torch.Tensor
    baseline: torch.Tensor
    target: BoundTarget
    score_original: torch.Tensor
    score_baseline: torch.Tensor

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self.x.shape[2:])

    @property
    def evidence(self) -> torch.Tensor:
        """(B,) the score scale ``|s0 - sb|``, bounded away from 0."""
        span = (self.score_original - self.score_baseline).abs()
        floor = 1e-3 * (self.score_original.abs() + self.score_baseline.abs()) + 1e-6
        return torch.maximum(span, floor)

    def retention(self, score: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """Fraction of the evidence that a score keeps: 1 at the original, 0 at the baseline."""
        return (score - self.score_baseline[index]) / self.evidence[index]


@dataclass
class StageResult:
    """Masks learned in one stage.

    Attributes
    ----------
    masks : torch.Tensor
        (B, M, *spatial) upsampled masks (superimposed on the guide when there is one), in [0, 1].
    steps : torch.Tensor
        (B,) steps run per image.
    retention : torch.Tensor
        (B,) mean retention of the masked-in images at the last step.
    """

    masks: torch.Tensor
    steps: torch.Tensor
    retention: torch.Tensor


class MaskOptimiser:
    """Runs stages of mask learning for one problem.

    Parameters
    ----------
    problem : MaskProblem
        Images, baselines, targets and reference scores.
    scorer : ModelScorer
        The frozen model's target score.
    objective : Objective
        Loss weights.
    max_batch : int, optional
        Most samples per forward+backward pass.
    seed : int
        Seed of the initial jitter; each image uses the same stream, whatever its batch position.
    init_jitter : float
        Standard deviation of the noise added to the initial grid values (breaks ties).
    progress : callable, optional
        Receives :class:`ProgressEvent` at each loss check.
    """

    def __init__(
        self,
        problem: MaskProblem,
        scorer: ModelScorer,
        objective: Objective,
        *,
        max_batch: int | None = None,
        seed: int = 0,
        init_jitter: float = 0.0,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.problem = problem
        self.scorer = scorer
        self.objective = objective
        self.max_batch = max_batch
        self.seed = seed
        self.init_jitter = init_jitter
        self.progress = progress

    def _initial_grids(self, shapes: Sequence[GridShape], init: float) -> list[list[torch.Tensor]]:
        batch = self.problem.x.shape[0]
        device = self.problem.x.device
        generator = torch.Generator().manual_seed(self.seed)
        start = []
        for shape in shapes:
            noise = torch.randn((1, 1, *shape), generator=generator) * self.init_jitter
            start.append((init + noise).clamp(0, 1).to(device))
        return [[grid.clone().requires_grad_(True) for grid in start] for _ in range(batch)]

    def _masks(
        self, grids: list[list[torch.Tensor]], index: list[int], guide: torch.Tensor | None
    ) -> torch.Tensor:
        """(A, M, *spatial) masks of the images in ``index``."""
        spatial = self.problem.spatial
        per_shape = [upsample(torch.cat([grids[i][g] for i in index]), spatial) for g in range(len(grids[0]))]
        masks = torch.cat(per_shape, dim=1)
        if guide is not None:
            masks = masks * guide[index]
        return masks

    def run(
        self,
        shapes: Sequence[GridShape],
        schedule: Schedule,
        *,
        init: float = 0.5,
        guide: torch.Tensor | None = None,
        level: int = 1,
        stage: str = "benchmark",
    ) -> StageResult:
        """Learn one mask per grid shape for every image.

        Parameters
        ----------
        shapes : sequence of tuple of int
            Grid shapes, one mask each.
        schedule : Schedule
            Learning rate, step budget and early stopping.
        init : float
            Initial grid value.
        guide : torch.Tensor, optional
            (B, 1, *spatial) map in [0, 1] that every mask is multiplied by.
        level, stage : int, str
            Reported to the progress callback.
        """
        batch = self.problem.x.shape[0]
        grids = self._initial_grids(shapes, init)
        optimiser = torch.optim.Adam([g for image in grids for g in image], lr=schedule.lr)
        steps = torch.zeros(batch, dtype=torch.long)
        best = torch.full((batch,), float("inf"))
        since_best = torch.zeros(batch, dtype=torch.long)
        active = list(range(batch))
        pending_loss: list[torch.Tensor] = []
        last_check = 0
        retention = torch.zeros(batch, device=self.problem.x.device)
        for step in range(1, schedule.max_steps + 1):
            optimiser.zero_grad(set_to_none=True)
            index = torch.tensor(active, device=self.problem.x.device)
            loss, kept = self._loss_and_backward(self._masks(grids, active, guide), index, guide)
            optimiser.step()
            with torch.no_grad():
                for i in active:
                    for grid in grids[i]:
                        grid.clamp_(0, 1)
            retention[index] = kept
            pending_loss.append(loss)
            steps[active] += 1
            if step % schedule.check_every and step != schedule.max_steps:
                continue
            window = torch.stack(pending_loss).min(dim=0).values.cpu()
            pending_loss.clear()
            if self.progress is not None:
                self.progress(
                    ProgressEvent(
                        level, stage, step, schedule.max_steps, float(window.mean()), float(kept.mean())
                    )
                )
            active_t = torch.tensor(active)
            improved = window < best[active_t] - schedule.tolerance * best[active_t].abs().clamp_max(1e12)
            best[active_t] = torch.where(improved, window, best[active_t])
            since_best[active_t] = torch.where(improved, 0, since_best[active_t] + step - last_check)
            last_check = step
            done = (steps[active_t] >= schedule.min_steps) & (since_best[active_t] >= schedule.patience)
            active = [i for i, stop in zip(active, done.tolist(), strict=True) if not stop]
            if not active:
                break
        with torch.no_grad():
            masks = self._masks(grids, list(range(batch)), guide)
        return StageResult(masks=masks.detach(), steps=steps, retention=retention.detach())

    def _loss_and_backward(
        self, masks: torch.Tensor, index: torch.Tensor, guide: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image loss (A,) and keep retention (A,); gradients land on the grids."""
        problem, objective = self.problem, self.objective
        count, per_image = masks.shape[:2]
        x = problem.x[index][:, None]
        baseline = problem.baseline[index][:, None]
        m = masks[:, :, None]
        kinds = [keep(x, baseline, m)]
        if objective.form == "retention" and objective.deletion_weight > 0:
            kinds.append(remove(x, baseline, m))
        inputs = torch.cat(kinds, dim=1).flatten(0, 1)
        image = index.repeat_interleave(per_image * len(kinds))
        kind = torch.arange(len(kinds), device=index.device).repeat_interleave(per_image).repeat(count)

        leaf = inputs.detach().requires_grad_(True)
        score_loss = torch.empty(inputs.shape[0], device=inputs.device)
        keep_retention = torch.empty(inputs.shape[0], device=inputs.device)
        chunk = self.max_batch or inputs.shape[0]
        for start in range(0, inputs.shape[0], chunk):
            part = slice(start, start + chunk)
            scores = self.scorer(leaf[part], problem.target[image[part]])
            losses = self._score_loss(scores, image[part], kind[part])
            if losses.requires_grad:  # not so for a model whose output ignores its input
                losses.sum().backward()
            score_loss[part] = losses.detach()
            keep_retention[part] = problem.retention(scores.detach(), image[part])

        mask_loss = objective.area_weight * masks.flatten(2).mean(-1)
        if guide is not None and objective.guidance_weight > 0:
            g = guide[index]
            mask_loss = mask_loss + objective.guidance_weight * (g * (g - masks) ** 2).flatten(2).mean(-1)
        score_grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
        surrogate = (inputs * score_grad).sum() + mask_loss.sum()
        surrogate.backward()

        loss = mask_loss.detach().sum(1) + score_loss.view(count, -1).sum(1)
        kept = keep_retention.view(count, len(kinds), per_image)[:, 0].mean(1)
        return loss, kept

    def _score_loss(self, scores: torch.Tensor, image: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        problem, objective = self.problem, self.objective
        if objective.form == "reference":
            return objective.reference_consistency * (scores - problem.score_original[image]) ** 2
        shortfall = (problem.score_original[image] - scores) / problem.evidence[image]
        leftover = problem.retention(scores, image)
        return torch.where(
            kind == 0,
            objective.keep_weight * shortfall.clamp_min(0) ** 2,
            objective.deletion_weight * leftover.clamp_min(0),
        )
