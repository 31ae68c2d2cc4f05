"""Cost and precision paths of the default HDM."""

from __future__ import annotations

from medmdm import explainers
from medmdm.testing import EitherRegionModel, box_image
from tests.conftest import box_case, mass_inside, peak_inside


def test_default_hdm_worst_case_stays_under_3000_samples_at_224() -> None:
    regions = [((20, 60), (20, 60)), ((120, 160), (30, 70)), ((60, 100), (150, 190))]
    model = EitherRegionModel(*regions)
    x = box_image((224, 224), *regions)
    explainer = explainers.create("hdm", model, min_steps=80)  # no early stopping: the worst case
    explainer(x)
    assert [bool(level.ran[0]) for level in explainer.last.levels] == [True, True, True]
    assert int(explainer.last.steps[0]) == 3 * 2 * 80
    assert explainer.last.samples <= 3000


def test_bf16_autocast_path_keeps_the_map_in_the_box() -> None:
    case = box_case(2)
    saliency = explainers.create("hdm", case.model, mixed_precision=True)(case.x)
    assert mass_inside(saliency, case.regions[0]) >= 0.8
    assert peak_inside(saliency, case.regions[0])


def test_deletion_term_keeps_the_map_in_the_box(dims: int) -> None:
    case = box_case(dims)
    saliency = explainers.create("hdm", case.model, deletion_weight=1.0)(case.x)
    assert mass_inside(saliency, case.regions[0]) >= 0.8
