"""The ``auto`` baseline, and a ranking whenever the score depends on the input."""

from __future__ import annotations

import pytest
import torch

from medmdm import explainers
from medmdm.explainers.base import ModelScorer
from medmdm.explainers.perturbation import auto_candidates, choose_baseline
from medmdm.explainers.targets import BoundTarget, ClassTarget
from medmdm.testing import BoxModel

FAST = {"steps": 30, "min_steps": 10}


def half_image_case(batch: int = 1) -> tuple[BoxModel, torch.Tensor]:
    """Class 1 = the mean of the left half of a 0.5 + 0.1 noise image: the mean baseline keeps it."""
    x = 0.5 + 0.1 * torch.randn(batch, 1, 48, 48, generator=torch.Generator().manual_seed(0))
    return BoxModel([(0, 48), (0, 24)]).eval(), x


def left_share(saliency: torch.Tensor) -> torch.Tensor:
    """(B,) share of each map's mass in the left half."""
    return saliency[..., :24].flatten(1).sum(1) / saliency.flatten(1).sum(1)


@pytest.mark.parametrize("name", ["hdm", "dm"])
def test_auto_finds_the_half_that_the_mean_baseline_cannot_remove(name: str) -> None:
    model, x = half_image_case(2)
    explainer = explainers.create(name, model, **FAST)
    saliency = explainer(x, target=1)
    assert explainer.options.baseline == "auto"
    assert explainer.last.baselines == ["minimum", "minimum"]
    assert explainer.last.summary()["baselines"] == ["minimum", "minimum"]
    assert (saliency.flatten(1).amax(1) > 0).all()
    assert (left_share(saliency) > 0.9).all()


@pytest.mark.parametrize("name", ["hdm", "dm"])
def test_a_baseline_that_keeps_the_score_still_gives_a_ranking(name: str) -> None:
    model, x = half_image_case()
    explainer = explainers.create(name, model, baseline="mean", **FAST)
    with pytest.warns(UserWarning, match="gradient magnitude"):
        saliency = explainer(x, target=1)
    assert saliency.max() == 1 and float(left_share(saliency)) == pytest.approx(1.0)


def test_choose_baseline_takes_the_first_candidate_near_the_best_removal() -> None:
    model, x = half_image_case(2)
    x[1] = 0.5  # flat: every candidate is the image itself, so the first is kept
    scorer = ModelScorer(model, "logit")
    target = BoundTarget(ClassTarget(score="logit"), 2, index=torch.ones(2, dtype=torch.long))
    score = scorer.scores(x, target)
    candidates = auto_candidates(x)
    chosen = choose_baseline(candidates, scorer, target, score)
    assert list(candidates)[::3] == ["mean", "minimum"]
    assert chosen.names == ("minimum", "mean")
    torch.testing.assert_close(chosen.image[1], x[1])
    torch.testing.assert_close(chosen.score, scorer.scores(chosen.image, target))
    assert scorer.samples == 2 + 2 * len(candidates) + 2
