"""The engine every dynamic-mask method runs: learn a set of masks per image against a frozen model.

Each image gets its own masks, one per grid shape, learned with Adam and clamped to [0, 1] after
every step. The images still optimising share each step's work around the model, but each image's
samples pass the model on their own (in chunks of at most ``max_batch``), every update is
element-wise and early stopping is per image: a batch gives the same masks as explaining its images
one by one, whatever a model's numerics do with the batch size.

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
from torch.profiler import record_function

from medmdm.errors import OptionError
from medmdm.explainers.base import ModelScorer
from medmdm.explainers.explanation import ProgressCallback, ProgressEvent
from medmdm.explainers.masks import GridShape, upsample
from medmdm.explainers.targets import BoundTarget

# Labels of the parts of a step in ``torch.profiler`` traces (``benchmarks/speed.py --profile``).
PROFILE_PARTS = (
    "medmdm.model",
    "medmdm.masks",
    "medmdm.loss",
    "medmdm.optimiser",
    "medmdm.sync",
    "medmdm.blur",
)


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
    ``tolerance`` for ``patience`` steps, or once no grid value of the image has moved by
    ``settle_tolerance`` of the most Adam moves it (``lr`` a step) since the previous check (its
    masks have settled), or at
    ``max_steps``. Loss is read back every ``check_every`` steps, so stopping happens on those steps.
    """

    lr: float = 0.1
    max_steps: int = 80
    min_steps: int = 20
    patience: int = 15
    tolerance: float = 1e-3
    check_every: int = 5
    settle_tolerance: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise OptionError(f"lr must be positive, got {self.lr}")
        if self.max_steps < 1:
            raise OptionError(f"steps must be at least 1, got {self.max_steps}")
        if self.settle_tolerance < 0:
            raise OptionError(f"settle_tolerance must be >= 0, got {self.settle_tolerance}")
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
    baseline_names : tuple of str
        What each image's baseline is (for the report).
    """

    x: torch.Tensor
    baseline: torch.Tensor
    target: BoundTarget
    score_original: torch.Tensor
    score_baseline: torch.Tensor
    baseline_names: tuple[str, ...] = ()

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

    def _initial_grids(self, shapes: Sequence[GridShape], init: float) -> list[torch.Tensor]:
        """(B, 1, *shape) grid values per shape: every image starts from the same seeded values."""
        batch = self.problem.x.shape[0]
        device = self.problem.x.device
        generator = torch.Generator().manual_seed(self.seed)
        grids = []
        for shape in shapes:
            noise = torch.randn((1, 1, *shape), generator=generator) * self.init_jitter
            start = (init + noise).clamp(0, 1).to(device)
            grids.append(start.expand(batch, *start.shape[1:]).clone().requires_grad_(True))
        return grids

    def _masks(
        self, grids: list[torch.Tensor], rows: torch.Tensor, guide: torch.Tensor | None
    ) -> torch.Tensor:
        """(A, M, *spatial) masks of the images ``rows`` (``guide`` already of those images)."""
        spatial = self.problem.spatial
        masks = torch.cat([upsample(grid[rows], spatial) for grid in grids], dim=1)
        if guide is not None:
            masks = masks * guide
        return masks

    def _active(self, index: list[int], guide: torch.Tensor | None, kinds: int, per_image: int) -> _Active:
        """What the steps of the images in ``index`` share until one of them stops."""
        problem = self.problem
        rows = torch.tensor(index, device=problem.x.device)
        x = problem.x[rows][:, None]
        baseline = problem.baseline[rows][:, None]
        samples = kinds * per_image
        chunk = min(self.max_batch or samples, samples)
        return _Active(
            images=index,
            rows=rows,
            x=x,
            baseline=baseline,
            difference=x - baseline,
            guide=None if guide is None else guide[rows],
            image=rows.repeat_interleave(samples),
            kind=torch.arange(kinds, device=rows.device).repeat_interleave(per_image).repeat(len(index)),
            passes=[
                slice(s, min(s + chunk, start + samples))
                for start in range(0, len(index) * samples, samples)
                for s in range(start, start + samples, chunk)
            ],
        )

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
        kinds = 2 if self.objective.form == "retention" and self.objective.deletion_weight > 0 else 1
        grids = self._initial_grids(shapes, init)
        optimiser = _GridAdam(grids, schedule.lr)
        steps = torch.zeros(batch, dtype=torch.long)
        best = torch.full((batch,), float("inf"))
        since_best = torch.zeros(batch, dtype=torch.long)
        active = self._active(list(range(batch)), guide, kinds, len(shapes))
        settled_at = [grid.detach().clone() for grid in grids]
        pending_loss: list[torch.Tensor] = []
        last_check = 0
        retention = torch.zeros(batch, device=self.problem.x.device)
        for step in range(1, schedule.max_steps + 1):
            loss, kept = self._loss_and_backward(grids, active)
            with record_function("medmdm.optimiser"):
                optimiser.step(active.rows)
            retention[active.rows] = kept
            pending_loss.append(loss)
            steps[active.images] += 1
            if step % schedule.check_every and step != schedule.max_steps:
                continue
            with record_function("medmdm.sync"):
                window = torch.stack(pending_loss).min(dim=0).values.cpu()
                moved = _moved(grids, settled_at, active.rows).cpu()
            pending_loss.clear()
            if self.progress is not None:
                self.progress(
                    ProgressEvent(
                        level, stage, step, schedule.max_steps, float(window.mean()), float(kept.mean())
                    )
                )
            active_t = torch.tensor(active.images)
            improved = window < best[active_t] - schedule.tolerance * best[active_t].abs().clamp_max(1e12)
            best[active_t] = torch.where(improved, window, best[active_t])
            span, last_check = step - last_check, step
            since_best[active_t] = torch.where(improved, 0, since_best[active_t] + span)
            stalled = since_best[active_t] >= schedule.patience
            settled = moved < schedule.settle_tolerance * schedule.lr * span
            done = (steps[active_t] >= schedule.min_steps) & (stalled | settled)
            if done.any():
                remaining = [i for i, stop in zip(active.images, done.tolist(), strict=True) if not stop]
                if not remaining:
                    break
                active = self._active(remaining, guide, kinds, len(shapes))
        with torch.no_grad():
            masks = self._masks(grids, torch.arange(batch, device=self.problem.x.device), guide)
        return StageResult(masks=masks.detach(), steps=steps, retention=retention.detach())

    def _loss_and_backward(
        self, grids: list[torch.Tensor], active: _Active
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image loss (A,) and keep retention (A,); gradients land on the grids.

        The masked images are composed outside autograd and each passes the model as a leaf; the
        gradient of the score losses reaches the masks as ``sum_c(dL/dinput * (x - baseline))``
        (negated for removal), and one backward pass takes it, with the mask terms, to the grids.
        Each image's samples pass the model on their own, in chunks of at most ``max_batch``, so
        its masks do not depend on the other images of the batch.
        """
        problem, objective = self.problem, self.objective
        with record_function("medmdm.masks"):
            masks = self._masks(grids, active.rows, active.guide)
            count, per_image = masks.shape[:2]
            with torch.no_grad():
                m = masks.detach()[:, :, None]
                kinds = [active.baseline + m * active.difference]
                if active.kind.shape[0] > count * per_image:
                    kinds.append(active.x - m * active.difference)
                inputs = torch.cat(kinds, dim=1).flatten(0, 1)

        score_loss = torch.empty(inputs.shape[0], device=inputs.device)
        keep_retention = torch.empty(inputs.shape[0], device=inputs.device)
        grads = []
        with record_function("medmdm.model"):
            for part in active.passes:
                leaf = inputs[part].requires_grad_(True)
                scores = self.scorer(leaf, problem.target[active.image[part]])
                losses = self._score_loss(scores, active.image[part], active.kind[part])
                if losses.requires_grad:  # not so for a model whose output ignores its input
                    losses.sum().backward()
                grads.append(leaf.grad if leaf.grad is not None else torch.zeros_like(leaf))
                score_loss[part] = losses.detach()
                keep_retention[part] = problem.retention(scores.detach(), active.image[part])

        with record_function("medmdm.loss"):
            grad = (grads[0] if len(grads) == 1 else torch.cat(grads)).view(
                count, len(kinds), per_image, *inputs.shape[1:]
            )
            mask_grad = (grad[:, 0] * active.difference).sum(2)
            if len(kinds) > 1:
                mask_grad = mask_grad - (grad[:, 1] * active.difference).sum(2)
            mask_loss = objective.area_weight * masks.flatten(2).mean(-1)
            if active.guide is not None and objective.guidance_weight > 0:
                g = active.guide
                mask_loss = mask_loss + objective.guidance_weight * (g * (g - masks) ** 2).flatten(2).mean(-1)
        with record_function("medmdm.masks"):
            ((masks * mask_grad).sum() + mask_loss.sum()).backward()

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


def _moved(grids: list[torch.Tensor], before: list[torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
    """(A,) largest change of the grid values of the images ``rows`` since ``before``, which is
    then updated."""
    with torch.no_grad():
        moved = []
        for grid, old in zip(grids, before, strict=True):
            moved.append((grid[rows] - old[rows]).flatten(1).abs().amax(1))
            old[rows] = grid[rows]
        return torch.stack(moved).amax(0)


class _GridAdam:
    """Adam, with ``torch.optim.Adam``'s defaults, on the rows of the grids that a step holds, each
    image with its own step count; values are clamped to [0, 1] after each step.

    Written out in plain element-wise operations: an image's update does not depend on which other
    images share the step (no fused or vectorised kernel whose rounding varies with the batch), and
    ``torch.optim`` (whose first use costs seconds of imports) is not needed.
    """

    betas = (0.9, 0.999)
    eps = 1e-8

    def __init__(self, grids: list[torch.Tensor], lr: float) -> None:
        self.grids = grids
        self.lr = lr
        self.first = [torch.zeros_like(grid) for grid in grids]
        self.second = [torch.zeros_like(grid) for grid in grids]
        self.count = torch.zeros(grids[0].shape[0], device=grids[0].device)

    @torch.no_grad()
    def step(self, rows: torch.Tensor) -> None:
        """Update the images ``rows`` from the gradients on the grids, and clear the gradients."""
        beta1, beta2 = self.betas
        self.count[rows] += 1
        count = self.count[rows]
        step_size = self.lr / (1 - beta1**count)
        correction = (1 - beta2**count).sqrt()
        for grid, first, second in zip(self.grids, self.first, self.second, strict=True):
            shape = (-1, *[1] * (grid.ndim - 1))
            grad = grid.grad[rows] if grid.grad is not None else torch.zeros_like(grid[rows])
            m = first[rows] * beta1 + grad * (1 - beta1)
            v = second[rows] * beta2 + grad * grad * (1 - beta2)
            first[rows], second[rows] = m, v
            update = step_size.view(shape) * m / (v.sqrt() / correction.view(shape) + self.eps)
            grid[rows] = (grid[rows] - update).clamp(0, 1)
            grid.grad = None


@dataclass
class _Active:
    """The images still optimising in a stage, and what their steps share.

    Attributes
    ----------
    images : list of int
        Their positions in the batch; ``rows`` the same on the device.
    x, baseline, difference : torch.Tensor
        (A, 1, C, *spatial) images, baselines and ``x - baseline``.
    guide : torch.Tensor, optional
        (A, 1, *spatial) guide of each image.
    image, kind : torch.Tensor
        (N,) batch position and kind (0: masked in, 1: masked out) of each model sample.
    passes : list of slice
        The model passes: samples of one image each, at most ``max_batch``.
    """

    images: list[int]
    rows: torch.Tensor
    x: torch.Tensor
    baseline: torch.Tensor
    difference: torch.Tensor
    guide: torch.Tensor | None
    image: torch.Tensor
    kind: torch.Tensor
    passes: list[slice]
