"""HDM's fusion of its levels and the verification of the fused map's regions."""

from __future__ import annotations

import pytest
import torch

from medmdm import explainers
from medmdm.explainers.base import ModelScorer
from medmdm.explainers.hdm import _shapley_values
from medmdm.explainers.targets import as_target
from medmdm.testing import BoxModel, box_image, region_mask
from tests.conftest import Case, box_case, mass_inside, peak_inside, two_region_case


def test_shapley_values_split_redundant_evidence_equally() -> None:
    # Coalitions 0, {0}, {1}, {0, 1}: removing either region alone loses nothing, both everything.
    either = torch.tensor([[0.0], [0.0], [0.0], [1.0]])
    assert torch.allclose(_shapley_values(either), torch.tensor([[0.5, 0.5]]))


def test_shapley_values_of_additive_and_idle_players() -> None:
    # Three players: 0 brings 0.6, 1 brings 0.4, 2 brings nothing, whatever the others.
    worth = torch.tensor([0.6, 0.4, 0.0])
    value = torch.tensor([[sum(worth[p] for p in range(3) if s >> p & 1)] for s in range(8)])
    assert torch.allclose(_shapley_values(value), worth[None], atol=1e-6)


def _hdm_problem(case, **options) -> tuple:
    """hdm made with ``options`` for the case's model, its scorer and the case's problem."""
    explainer = explainers.create("hdm", case.model, **options)
    scorer = ModelScorer(case.model, "logit")
    target = as_target(1).bind(scorer.all_outputs(case.x), 1, "logit")
    return (
        explainer,
        scorer,
        explainer._problem(case.x, target, scorer, target.scores(scorer.all_outputs(case.x))),
    )


def _verified(case, saliency: torch.Tensor, with_cost: bool = False, **options) -> torch.Tensor:
    explainer, scorer, problem = _hdm_problem(case, **options)
    images = torch.arange(case.x.shape[0])
    steps = explainer.options.evidence_steps
    cost = explainer._removal_costs(scorer, problem, images, steps) if with_cost else None
    return explainer._verified(problem, scorer, saliency, cost)


def test_verification_lowers_a_region_the_decision_does_not_need() -> None:
    box = ((20, 36), (20, 36))
    case = Case(BoxModel(box), box_image((96, 96), box), [region_mask((96, 96), box)])
    decoy = torch.zeros_like(case.regions[0])
    decoy[70:80, 70:80] = True
    saliency = (case.regions[0] | decoy).float()[None, None]
    verified = _verified(case, saliency)[0, 0]
    assert verified[case.regions[0]].min() == 1
    assert verified[decoy].max() <= 0.1 + 1e-6


def test_verification_keeps_regions_that_are_each_enough_alike() -> None:
    case = two_region_case(2)
    saliency = (case.regions[0] | case.regions[1]).float()[None, None]
    verified = _verified(case, saliency)[0, 0]
    assert verified[case.regions[0]].min() == verified[case.regions[1]].min() == 1


class _SumOfBoxes(torch.nn.Module):
    """Class-1 logit: the summed intensity of two boxes over the larger box's area, minus 0.3."""

    def __init__(self, *boxes) -> None:
        super().__init__()
        self.boxes = boxes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = sum(x[:, :, slice(*rows), slice(*cols)].sum((1, 2, 3)) for rows, cols in self.boxes)
        evidence = 8 * (total / 256 - 0.3)
        return torch.stack([-evidence, evidence], dim=1)


def _two_boxes(small: tuple, small_intensity: float) -> Case:
    """A 16 x 16 box at 0.5 and a ``small`` box at ``small_intensity`` in a 96 x 96 image, the
    score their summed intensity (:class:`_SumOfBoxes`)."""
    large = ((10, 26), (10, 26))
    x = torch.zeros(1, 1, 96, 96)
    x[0, 0, slice(*large[0]), slice(*large[1])] = 0.5
    x[0, 0, slice(*small[0]), slice(*small[1])] = small_intensity
    regions = [region_mask((96, 96), large), region_mask((96, 96), small)]
    return Case(_SumOfBoxes(large, small), x, regions)


@pytest.mark.parametrize("small_intensity", [8.0, 1.0])
def test_verification_gives_each_needed_region_its_share_of_the_evidence(small_intensity: float) -> None:
    # A 16 x 16 box at 0.5 and a 4 x 4 box: at 8, both hold half the evidence, the small one in
    # 1/16 of the area (weighting voxels by the loss would leave it 1/17 of the map's mass); at 1,
    # the small box holds 1/9 of it, under the floor of 0.1 of the evidence but not of the larger
    # box's loss, so it is a needed region all the same.
    case = _two_boxes(((60, 64), (60, 64)), small_intensity)
    regions = case.regions
    verified = _verified(case, (regions[0] | regions[1]).float()[None, None], baseline="mean")
    evidence = 16 * small_intensity / (128 + 16 * small_intensity)
    assert mass_inside(verified, regions[1]) == pytest.approx(evidence, abs=0.03)
    assert mass_inside(verified, regions[0]) + mass_inside(verified, regions[1]) > 0.99


def test_verification_gives_a_lesion_no_level_kept_its_share_of_the_evidence() -> None:
    # The cascade kept the 16 x 16 box only (a level stops once the rest of the image keeps too
    # little evidence); the 8 x 8 box, where the first-order removal cost peaks outside the map,
    # holds a third of the evidence: more than the least a region of the cost must lose to join
    # the map (cost_regions, 0.15 by default), less than a bar of 0.4.
    case = _two_boxes(((60, 68), (60, 68)), 1.0)
    regions = case.regions
    kept = regions[0].float()[None, None]
    near_small = region_mask((96, 96), ((58, 70), (58, 70)))
    verified = _verified(case, kept, with_cost=True, baseline="mean")
    assert mass_inside(verified, near_small) == pytest.approx(1 / 3, abs=0.04)
    assert mass_inside(verified, regions[0]) + mass_inside(verified, near_small) > 0.99
    for left_out in (
        _verified(case, kept, with_cost=True, baseline="mean", cost_regions=0.4),
        _verified(case, kept, with_cost=True, baseline="mean", cost_regions=0),
        _verified(case, kept, with_cost=False, baseline="mean"),
    ):
        assert mass_inside(left_out, near_small) == 0


class _BoxAndEvenDecoy(torch.nn.Module):
    """Class-1 logit: a box's summed intensity, plus ``(mean of the decoy - centre)**2``, where the
    centre lies halfway between the decoy's intensity and the image's mean: the decoy has a
    first-order removal cost, but replacing it by the mean baseline changes nothing."""

    def __init__(self, box, decoy, centre: float) -> None:
        super().__init__()
        self.box, self.decoy, self.centre = box, decoy, centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        box = x[:, :, slice(*self.box[0]), slice(*self.box[1])].sum((1, 2, 3)) / 256
        decoy = x[:, :, slice(*self.decoy[0]), slice(*self.decoy[1])].mean((1, 2, 3))
        evidence = 8 * (box - 0.3) + 8 * (decoy - self.centre) ** 2
        return torch.stack([-evidence, evidence], dim=1)


def test_verification_leaves_out_a_cost_peak_whose_removal_loses_nothing() -> None:
    box, decoy = ((10, 26), (10, 26)), ((60, 68), (60, 68))
    x = torch.zeros(1, 1, 96, 96)
    x[0, 0, 10:26, 10:26] = 0.5
    x[0, 0, 60:68, 60:68] = 1.0
    model = _BoxAndEvenDecoy(box, decoy, centre=(1.0 + float(x.mean())) / 2)
    case = Case(model, x, [region_mask((96, 96), box)])
    verified = _verified(case, case.regions[0].float()[None, None], with_cost=True, baseline="mean")
    assert mass_inside(verified, case.regions[0]) == 1.0


def _checked(case, saliency: torch.Tensor, **options) -> torch.Tensor:
    explainer, scorer, problem = _hdm_problem(case, **options)
    return explainer._checked_peaks(problem, scorer, saliency)


def test_peak_check_lowers_a_peak_the_decision_does_not_need() -> None:
    # One found region can join the evidence and a higher peak beside it that costs nothing.
    box = ((20, 36), (20, 36))
    case = Case(BoxModel(box), box_image((96, 96), box), [region_mask((96, 96), box)])
    beside = region_mask((96, 96), ((40, 46), (40, 46)))
    saliency = (0.8 * case.regions[0] + 1.0 * beside).float()[None, None]
    checked = _checked(case, saliency)[0, 0]
    assert float(checked[case.regions[0]].min()) == 1.0
    assert float(checked[beside].max()) == pytest.approx(0.1 / 0.8)


def test_peak_check_keeps_peaks_that_are_each_enough_or_each_needed() -> None:
    either = two_region_case(2)  # removing either region alone loses nothing, both everything
    saliency = (either.regions[0] + 0.9 * either.regions[1]).float()[None, None]
    assert torch.equal(_checked(either, saliency), saliency)
    # a 4 x 4 box holding 1/9 of the evidence beside a 16 x 16 box holding 8/9: 1/8 of the
    # larger value, above min_weight (0.1)
    added = _two_boxes(((60, 64), (60, 64)), 1.0)
    saliency = (added.regions[0] + 0.9 * added.regions[1]).float()[None, None]
    assert torch.equal(_checked(added, saliency, baseline="mean"), saliency)


def test_hdm_without_verification_and_hole_filling_is_the_fused_levels(dims: int) -> None:
    case = box_case(dims)
    explainer = explainers.create("hdm", case.model, verify_threshold=0.0, fill_width=0, evidence_order=False)
    saliency = explainer(case.x)
    level = explainer.last.levels[0]
    assert [bool(record.ran[0]) for record in explainer.last.levels] == [True]
    assert torch.allclose(saliency, level.map / level.map.max())


def test_hole_filling_ranks_gaps_inside_a_found_region_above_the_background() -> None:
    box = ((20, 36), (20, 36))
    case = Case(BoxModel(box), box_image((96, 96), box), [region_mask((96, 96), box)])
    explainer = explainers.create("hdm", case.model)
    # A map that keeps every other voxel of the box, as fine masks do, and one far voxel.
    scattered = torch.zeros(1, 1, 96, 96)
    scattered[0, 0, 20:36:2, 20:36:2] = 1.0
    scattered[0, 0, 80, 80] = 1.0
    closed = explainer._closed_regions(scattered)
    inside = torch.zeros_like(case.regions[0])
    inside[20:35, 20:35] = True
    inside[20:35:2, 20:35:2] = False  # the gaps between the kept voxels
    assert closed[0, 0][inside].min() == 1.0
    assert closed[0, 0, 70:90, 70:90].sum() == 1.0  # an isolated voxel is not grown
    assert closed[0, 0][~case.regions[0]].sum() <= 1.0 + 1e-6  # nothing past the box's edges


def test_default_hdm_keeps_the_box_model_map_in_the_box(dims: int) -> None:
    case = box_case(dims)
    saliency = explainers.create("hdm", case.model)(case.x)
    assert mass_inside(saliency, case.regions[0]) >= 0.8


def test_a_cascade_that_missed_ranks_by_removal_cost() -> None:
    # Image 0's regions lost 10% of the evidence, image 1's 60%: only image 0's map (a decoy far
    # from the box) is replaced, by a ranking that peaks in the box the model reads.
    box = ((20, 36), (20, 36))
    x = box_image((96, 96), box).repeat(2, 1, 1, 1)
    case = Case(BoxModel(box), x, [region_mask((96, 96), box)])
    explainer = explainers.create("hdm", case.model, baseline="mean")
    scorer = ModelScorer(case.model, "logit")
    target = as_target(1).bind(scorer.all_outputs(x), 2, "logit")
    problem = explainer._problem(x, target, scorer, target.scores(scorer.all_outputs(x)))
    decoy = torch.zeros(2, 1, 96, 96)
    decoy[:, :, 70:80, 70:80] = 1.0
    ranked, notes = explainer._unless_missed(problem, scorer, decoy, torch.tensor([0.1, 0.6]), None)
    assert peak_inside(ranked[:1], case.regions[0])
    assert mass_inside(ranked[:1], case.regions[0]) > 0.5
    assert torch.equal(ranked[1], decoy[1])
    assert len(notes) == 1 and "image(s) [0]" in notes[0]
    cost = explainer._removal_costs(scorer, problem, torch.arange(2), explainer.options.evidence_steps)
    given, _ = explainer._unless_missed(problem, scorer, decoy, torch.tensor([0.1, 0.6]), cost)
    assert torch.allclose(given, ranked)  # the cost the first level computed, reused
    off = explainers.create("hdm", case.model, baseline="mean", min_found_loss=0.0)
    unchanged, notes = off._unless_missed(problem, scorer, decoy, torch.tensor([0.1, 0.6]), None)
    assert torch.equal(unchanged, decoy) and notes == []
