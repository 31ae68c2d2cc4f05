"""Maps of models whose right answer is known by construction."""

from __future__ import annotations

import pytest

from medmdm import explainers
from tests.conftest import box_case, mass_inside, peak_inside, two_region_case

# The reference preset runs at least 2,000 steps of 27 masks; in the default run it is checked
# with a shorter budget on the 2D case, and at its own settings in the slow run.
FAST_OPTIONS = {"dm": {}, "hdm": {}, "mdm": {}, "mdm-reference": {"steps": 400, "min_steps": 400}}


@pytest.mark.parametrize("name", ["dm", "hdm", "mdm", "mdm-reference"])
def test_box_model_map_lies_in_the_box(name: str, dims: int) -> None:
    if name == "mdm-reference" and dims == 3:
        pytest.skip("3D reference run is in the slow suite")
    case = box_case(dims)
    saliency = explainers.create(name, case.model, **FAST_OPTIONS[name])(case.x)
    assert mass_inside(saliency, case.regions[0]) >= 0.8
    assert peak_inside(saliency, case.regions[0])


@pytest.mark.slow
@pytest.mark.parametrize("dims_", [2, 3])
def test_hdm_at_least_as_faithful_as_the_reference(dims_: int) -> None:
    case = box_case(dims_)
    reference = explainers.create("mdm-reference", case.model)
    hdm = explainers.create("hdm", case.model)
    reference_map, hdm_map = reference(case.x), hdm(case.x)
    assert reference.last.samples > 30 * hdm.last.samples
    assert mass_inside(hdm_map, case.regions[0]) >= mass_inside(reference_map, case.regions[0])
    assert peak_inside(reference_map, case.regions[0])


def test_hdm_finds_both_sufficient_regions(dims: int) -> None:
    case = two_region_case(dims)
    explainer = explainers.create("hdm", case.model)
    saliency = explainer(case.x)
    shares = [mass_inside(saliency, region) for region in case.regions]
    assert min(shares) >= 0.25, shares
    assert sum(bool(level.ran[0]) for level in explainer.last.levels) >= 2


def test_single_dm_level_concentrates_on_one_region(dims: int) -> None:
    case = two_region_case(dims)
    saliency = explainers.create("dm", case.model)(case.x)
    shares = sorted(mass_inside(saliency, region) for region in case.regions)
    assert shares[0] < 0.25 and shares[1] >= 0.75, shares


def test_hdm_with_one_level_stops_after_the_first_region(dims: int) -> None:
    case = two_region_case(dims)
    explainer = explainers.create("hdm", case.model, levels=1)
    saliency = explainer(case.x)
    shares = sorted(mass_inside(saliency, region) for region in case.regions)
    assert shares[0] < 0.25
    assert len(explainer.last.levels) == 1


def test_hdm_stops_when_nothing_is_left(dims: int) -> None:
    case = box_case(dims)
    explainer = explainers.create("hdm", case.model, levels=3)
    explainer(case.x)
    ran = [bool(level.ran[0]) for level in explainer.last.levels]
    assert ran == [True]
    assert explainer.last.levels[0].score_remaining[0] < 0.5 * explainer.last.score_original[0]
