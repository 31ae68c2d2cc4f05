"""Baseline images and how a mask perturbs an image towards them.

A mask ``m`` (1 = keep) turns an image ``x`` into ``m * x + (1 - m) * b``, where ``b`` is the
baseline: what the image looks like with its content removed. :class:`BaselineOptions` are the
options of the methods that perturb towards a baseline.

No one baseline removes the evidence of every model: a model that scores the mean intensity of a
region keeps its score on the ``mean`` baseline, one that scores texture keeps it on a coarse blur.
The ``auto`` baseline tries the candidates of :func:`auto_candidates` with one forward pass each and
keeps, per image, the one that removes the most of the target score.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from monai.networks.layers import GaussianFilter

from medmdm.errors import OptionError
from medmdm.explainers.options import ExplainerOptions, option

if TYPE_CHECKING:
    from medmdm.explainers.base import ModelScorer
    from medmdm.explainers.targets import BoundTarget

BaselineKind = Literal["mean", "blur", "constant", "minimum"]
BASELINES: tuple[str, ...] = ("auto", "mean", "blur", "constant", "minimum")

# A candidate within this share of the best removal is as good: the earlier one is kept, so that
# ``mean`` stays the baseline wherever it removes the evidence about as well as any.
_AUTO_TOLERANCE = 0.05


def baseline_image(
    x: torch.Tensor,
    kind: BaselineKind = "mean",
    *,
    value: float = 0.0,
    blur_sigma: float | None = None,
) -> torch.Tensor:
    """Baseline image for each sample of ``x``.

    Parameters
    ----------
    x : torch.Tensor
        (B, C, *spatial) images.
    kind : {"mean", "blur", "constant", "minimum"}
        ``mean``: each channel's mean intensity; ``blur``: a Gaussian blur of the image (weights
        renormalised at the borders);
        ``constant``: ``value`` everywhere; ``minimum``: each channel's minimum intensity.
    value : float
        The constant of the ``constant`` baseline.
    blur_sigma : float, optional
        Standard deviation of the ``blur`` baseline in voxels; default 1/20 of the longest side.

    Returns
    -------
    torch.Tensor
        (B, C, *spatial) baseline, same dtype and device as ``x``.
    """
    if kind == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x).clone()
    if kind == "minimum":
        return x.amin(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x).clone()
    if kind == "constant":
        return torch.full_like(x, float(value))
    if kind == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(x.shape[2:]) / 20
        if sigma <= 0:
            raise OptionError(f"blur_sigma must be positive, got {sigma}")
        # Divided by the blur of ones: zero padding would darken the borders, a content of its own.
        return gaussian_blur(x, sigma) / gaussian_blur(torch.ones_like(x[:1, :1]), sigma)
    if kind == "auto":
        raise OptionError("the auto baseline is chosen with the model: use BaselineOptions.baseline")
    raise OptionError(f"baseline must be one of {', '.join(BASELINES)}; got {kind!r}")


def auto_candidates(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The baselines ``auto`` chooses from, in order of preference, by name.

    The channel mean, a Gaussian blur at 1/20 and at 1/6 of the longest side (fine structure
    removed, then all but the coarsest shading), and the channel minimum (the image's background).
    """
    longest = max(x.shape[2:])
    candidates = {"mean": baseline_image(x, "mean")}
    for fraction in (20, 6):
        sigma = longest / fraction
        candidates[f"blur (sigma {sigma:.3g} voxels)"] = baseline_image(x, "blur", blur_sigma=sigma)
    candidates["minimum"] = baseline_image(x, "minimum")
    return candidates


@dataclass(frozen=True)
class ChosenBaseline:
    """The baseline of each image of a batch and its target score.

    Attributes
    ----------
    image : torch.Tensor
        (B, C, *spatial) baselines.
    names : tuple of str
        What each image's baseline is (``"mean"``, ``"blur (sigma 3.2 voxels)"``, ...).
    score : torch.Tensor or None
        (B,) target score of each baseline, where choosing it took one.
    """

    image: torch.Tensor
    names: tuple[str, ...]
    score: torch.Tensor | None = None


def choose_baseline(
    candidates: dict[str, torch.Tensor],
    scorer: ModelScorer,
    target: BoundTarget,
    score_original: torch.Tensor,
) -> ChosenBaseline:
    """Per image, the candidate baseline that removes the most of the target score.

    Parameters
    ----------
    candidates : dict of str to torch.Tensor
        (B, C, *spatial) baselines by name, in order of preference: a candidate within 5% of the
        best removal wins over later ones.
    scorer : ModelScorer
        Scores all candidates of all images in one call (chunked by its ``max_batch``).
    target : BoundTarget
        The target of each image.
    score_original : torch.Tensor
        (B,) target score of the original images.

    Returns
    -------
    ChosenBaseline
    """
    names = list(candidates)
    stacked = torch.stack([candidates[name] for name in names], dim=1)  # (B, K, C, *spatial)
    batch, count = stacked.shape[:2]
    owners = torch.arange(batch).repeat_interleave(count)
    scores = scorer.scores(stacked.flatten(0, 1), target[owners], owners).view(batch, count)
    removal = score_original.view(batch, 1).to(scores) - scores
    best = removal.amax(1, keepdim=True)
    good_enough = removal >= best - _AUTO_TOLERANCE * best.abs()
    choice = good_enough.to(torch.uint8).argmax(1)  # the first candidate close to the best
    rows = torch.arange(batch, device=choice.device)
    return ChosenBaseline(
        image=stacked[rows, choice],
        names=tuple(names[int(k)] for k in choice.tolist()),
        score=scores[rows, choice],
    )


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of each channel of ``x`` (B, C, *spatial), standard deviation ``sigma`` voxels.

    No gradient flows through it.
    """
    blur = GaussianFilter(x.ndim - 2, sigma=float(sigma)).to(x.device)
    with torch.no_grad():
        return blur(x)


def keep(x: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask`` is 1, ``baseline`` where it is 0 (the masked-in image)."""
    return baseline + mask * (x - baseline)


def remove(x: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``baseline`` where ``mask`` is 1, ``x`` where it is 0 (the masked-out image)."""
    return x + mask * (baseline - x)


@dataclass(frozen=True)
class BaselineOptions(ExplainerOptions):
    """The options of a method that perturbs images towards a baseline image."""

    baseline: str = option(
        "mean",
        "what removed content is replaced with; auto: per image, the candidate (mean, blur at two "
        "scales, minimum) that removes the most of the target score",
        choices=BASELINES,
    )
    baseline_value: float = option(0.0, "value of the constant baseline")
    blur_sigma: float | None = option(
        None, "sigma of the blur baseline in voxels; None: longest side / 20", low=0, low_open=True
    )

    def baseline_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) baseline of each image of ``x`` (see :func:`baseline_image`); not ``auto``."""
        return baseline_image(x, self.baseline, value=self.baseline_value, blur_sigma=self.blur_sigma)

    def baseline_for(
        self, x: torch.Tensor, scorer: ModelScorer, target: BoundTarget, score_original: torch.Tensor
    ) -> ChosenBaseline:
        """The baseline of each image of ``x``; ``auto`` chooses it with the model.

        Parameters
        ----------
        x : torch.Tensor
            (B, C, *spatial) images.
        scorer : ModelScorer
            The frozen model's scores.
        target : BoundTarget
            The target of each image.
        score_original : torch.Tensor
            (B,) target score of ``x``.
        """
        if self.baseline == "auto":
            return choose_baseline(auto_candidates(x), scorer, target, score_original)
        return ChosenBaseline(self.baseline_image(x), (self.baseline,) * x.shape[0])
