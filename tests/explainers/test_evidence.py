"""The removal cost in dm and hdm maps: it weights what the masks kept, and orders what they left equal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from medmdm import explainers
from medmdm.bundle import load_bundle
from medmdm.explainers.base import ModelScorer
from medmdm.explainers.one_shot import removal_cost
from medmdm.explainers.targets import ClassTarget
from medmdm.pipeline import prepare, read
from medmdm.testing import BoxModel, region_mask

REPOSITORY = Path(__file__).resolve().parents[2]
FAST = {"steps": 30, "min_steps": 10, "baseline": "constant"}


class TwoBoxLinear(nn.Module):
    """Class 1 = 4 x the mean of box A + 0.2 x the mean of box B: removing B costs a little, the rest
    of the image nothing."""

    def __init__(self, size: int = 48) -> None:
        super().__init__()
        self.a = torch.zeros(size, size)
        self.a[8:20, 8:20] = 1
        self.b = torch.zeros(size, size)
        self.b[30:42, 30:42] = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = x[:, 0]
        score = (
            4 * (image * self.a).mean((1, 2)) / self.a.mean()
            + 0.2 * (image * self.b).mean((1, 2)) / self.b.mean()
        )
        return torch.stack([-score, score], 1)


def test_removal_cost_is_the_linear_models_exact_attribution() -> None:
    model = TwoBoxLinear().eval()
    x = torch.rand(1, 1, 48, 48, generator=torch.Generator().manual_seed(0)) + 0.5
    scorer = ModelScorer(model, "logit")
    target = ClassTarget(1).bind(model(x), 1, "logit")
    for steps in (1, 8):
        cost = removal_cost(scorer, x, torch.zeros_like(x), target, steps)
        # a linear score: gradient times the difference, summed, is the score itself
        assert float(cost.sum()) == pytest.approx(float(model(x)[0, 1]), rel=1e-4)
        assert float(cost[0, 0, 0, 0]) == 0.0


def test_evidence_orders_what_the_masks_leave_at_zero() -> None:
    model = TwoBoxLinear().eval()
    x = torch.ones(1, 1, 48, 48)
    ordered = explainers.create("dm", model, **FAST)(x, target=1)[0, 0]
    raster = explainers.create("dm", model, evidence_order=False, evidence_weight=0.0, **FAST)(x, target=1)[
        0, 0
    ]
    background = torch.ones(48, 48, dtype=torch.bool)
    background[2:26, 2:26] = background[24:48, 24:48] = False  # 6 voxels or more from either box
    # box B, which the masks leave out, ranks above the background, which costs nothing to remove
    assert float(ordered[33:39, 33:39].min()) > float(ordered[background].max())
    assert float(raster[33:39, 33:39].max()) == 0.0  # without: B ties with the zeros of the background
    assert float(ordered[11:17, 11:17].min()) > float(ordered[33:39, 33:39].max())


def test_the_tie_order_carries_no_mass() -> None:
    model = TwoBoxLinear().eval()
    saliency = explainers.create("dm", model, **FAST)(torch.ones(1, 1, 48, 48), target=1)[0, 0]
    resolved = saliency >= 1e-3 * saliency.max()
    assert float(saliency[~resolved].max()) > 0.0  # ordered, not left tied at 0
    assert float(saliency[~resolved].sum()) < 1e-4 * float(saliency.sum())


def _tie_order(box: tuple, cost: torch.Tensor) -> torch.Tensor:
    """dm's order of a 64 x 64 image's voxels that its map leaves at 0, for a given removal cost,
    on a model whose score is the mean of ``box``."""
    model = BoxModel(box).eval()
    explainer = explainers.create("dm", model, baseline="constant")
    scorer = ModelScorer(model, "logit")
    x = torch.ones(1, 1, 64, 64)
    problem = explainer._problem(x, ClassTarget(1).bind(model(x), 1, "logit"), scorer, model(x)[:, 1])
    resolved = torch.zeros_like(x)
    return explainer._tie_order(problem, scorer, resolved, cost[None, None], torch.arange(1))[0, 0]


# (the score's box, the cost's box value, the region of the cost the model ignores, its value)
WIDE_EVIDENCE = (((8, 40), (8, 40)), 0.5, ((53, 60), (53, 60)), 1.0)
SMALL_EVIDENCE = (((8, 11), (8, 11)), 2.0, ((20, 60), (20, 60)), 0.2)


@pytest.mark.parametrize(
    ("case", "first", "after"),
    [
        # A 7 x 7 decoy at 1 beside a 32 x 32 box at 0.5: blurred by up to 1/24 of the side, the
        # decoy is removed first; by 1/12 or more, the box.
        (WIDE_EVIDENCE, (slice(12, 36), slice(12, 36)), (slice(53, 60), slice(53, 60))),
        # A 3 x 3 box at 2 beside a 40 x 40 region at 0.2: blurred by 1/12 of the side or more,
        # the box fades under the region; by 1/24 or less, it comes first.
        (SMALL_EVIDENCE, (slice(8, 11), slice(8, 11)), (slice(30, 50), slice(30, 50))),
    ],
    ids=["coarse-where-evidence-is-wide", "fine-where-evidence-is-small"],
)
def test_the_tie_order_takes_the_scale_the_model_rewards(case, first, after) -> None:
    box, box_cost, ignored, ignored_cost = case
    cost = box_cost * region_mask((64, 64), box).float()
    cost += ignored_cost * region_mask((64, 64), ignored).float()
    order = _tie_order(box, cost)
    assert float(order[first].min()) > float(order[after].max())


def test_a_map_whose_kept_voxels_cost_nothing_is_kept() -> None:
    model = TwoBoxLinear().eval()
    explainer = explainers.create("hdm", model)
    x = torch.ones(1, 1, 48, 48)
    problem = explainer._problem(  # the weighting step on its own
        x, ClassTarget(1).bind(model(x), 1, "logit"), ModelScorer(model, "logit"), model(x)[:, 1]
    )
    kept = torch.zeros(1, 1, 48, 48)
    kept[0, 0, 0:4, 44:48] = 1.0  # a corner no box reaches: removing it costs nothing
    cost = explainer._removal_costs(ModelScorer(model, "logit"), problem, torch.arange(1), 8)
    weighted = explainer._evidence_weighted(kept, cost)
    assert torch.equal(weighted, kept)


def test_3d_demo_map_is_compact_and_whole() -> None:
    """The shipped CT study: a nodule that the classifier reads only with the lung around it, so
    preservation masks keep a halo over the chest wall; the removal cost keeps the map on the nodule."""
    bundle = load_bundle(REPOSITORY / "sample_data" / "bundles" / "ct_nodule_3d")
    studies = REPOSITORY / "sample_data" / "studies"
    prepared = prepare(read(studies / "ct_nodule.nii.gz"), bundle)
    mask_input = prepare(read(studies / "ct_nodule_mask.nii.gz"), bundle).network_input[0, 0].numpy()
    nodule = mask_input > (mask_input.max() + mask_input.min()) / 2  # the window maps 0 and 1 apart
    x = prepared.network_input.as_tensor().float()
    saliency = explainers.create("hdm", bundle.network, **bundle.explain_options)(x, target=1)[0, 0].numpy()
    near = ndimage.binary_dilation(nodule, structure=np.ones((3, 3, 3)))
    _, pieces = ndimage.label(saliency > 0.2 * saliency.max(), structure=np.ones((3, 3, 3)))
    assert saliency[near].sum() / saliency.sum() >= 0.5
    assert pieces <= 2
