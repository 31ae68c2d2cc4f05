"""Phantoms: deterministic per seed, nodules inside the lungs, labels decided by the nodules only."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from medmdm.errors import InputError
from medmdm.testing.internal.phantoms import Case, ct_case, radiograph_case

PHANTOMS = {"radiograph": radiograph_case, "ct": ct_case}


@pytest.fixture(params=sorted(PHANTOMS))
def phantom(request: pytest.FixtureRequest):
    return PHANTOMS[request.param]


def components(mask: np.ndarray) -> int:
    """Number of face-connected components of a binary mask."""
    labelled = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)), False)
    return int(sitk.GetArrayFromImage(labelled).max())


def test_same_seed_same_case_other_seed_other_case(phantom) -> None:
    a, b, other = phantom(5), phantom(5), phantom(6)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert (a.label, a.lesions, a.spacing) == (b.label, b.lesions, b.spacing)
    assert not np.array_equal(a.image, other.image)


def test_types_shapes_and_spacing() -> None:
    radiograph, ct = radiograph_case(0), ct_case(0)
    assert radiograph.image.shape == radiograph.mask.shape == radiograph.lungs.shape == (256, 256)
    assert ct.image.shape == ct.mask.shape == ct.lungs.shape == (96, 96, 48)
    for case in (radiograph, ct):
        assert case.image.dtype == np.float32 and case.mask.dtype == np.uint8
        np.testing.assert_array_equal(case.image, np.round(case.image))
    assert radiograph.spacing == (1.5, 1.5)
    assert ct.spacing == (3.4375, 3.4375, 5.0)
    assert radiograph_case(0, size=(128, 192)).image.shape == (128, 192)
    assert radiograph_case(0, size=(128, 192)).spacing == (2.0, 2.0)
    assert ct_case(0, size=(64, 64, 24)).image.shape == (64, 64, 24)


@pytest.mark.parametrize("lesions", [0, 1, 2])
def test_mask_label_and_components_follow_the_lesion_count(phantom, lesions: int) -> None:
    for seed in range(3):
        case = phantom(seed, lesions=lesions)
        assert case.lesions == lesions
        assert case.label == int(lesions > 0)
        assert bool(case.mask.any()) == bool(lesions)
        assert components(case.mask) == lesions


def test_drawn_counts_give_about_half_negatives() -> None:
    counts = [radiograph_case(seed).lesions for seed in range(60)]
    assert set(counts) == {0, 1, 2}
    assert 0.35 < counts.count(0) / len(counts) < 0.65
    for seed, count in enumerate(counts[:10]):
        case = radiograph_case(seed)
        assert case.label == int(count > 0) and bool(case.mask.any()) == (count > 0)


def test_nodules_lie_inside_the_lungs(phantom) -> None:
    for seed in range(6):
        case = phantom(seed, lesions=2)
        assert case.mask.sum() > 0
        assert not (case.mask & (1 - case.lungs)).any()


def test_the_nodule_is_the_only_difference_between_positive_and_negative(phantom) -> None:
    """Same seed, with and without a nodule: anatomy, distractors and noise are the same."""
    negative, positive = phantom(11, lesions=0), phantom(11, lesions=1)
    inside = positive.mask.astype(bool)
    np.testing.assert_array_equal(positive.image[~inside], negative.image[~inside])
    assert positive.image[inside].mean() > negative.image[inside].mean() + 100


def test_radiograph_values_look_like_a_chest_radiograph() -> None:
    case = radiograph_case(3, lesions=0)
    image, lungs = case.image, case.lungs.astype(bool)
    assert image.min() >= 0 and image.max() <= 4095
    corner = np.median(image[:8, 120:136])  # left edge, at mid height: outside the body
    mediastinum = np.median(image[120:136, 60:100])
    assert corner < 400
    assert np.median(image[lungs]) < mediastinum - 500
    assert 1000 < mediastinum < 3500
    assert 0.08 < lungs.mean() < 0.35
    # the lungs are two fields, one on each side of the midline
    assert components(case.lungs) == 2
    assert lungs[:128].any() and lungs[128:].any() and not lungs[126:130].any()


def test_ct_values_look_like_a_chest_ct() -> None:
    case = ct_case(3, lesions=0)
    image, lungs = case.image, case.lungs.astype(bool)
    assert image.min() >= -1024 and image.max() <= 3071
    assert abs(np.median(image[:6, :6, :]) + 1000) < 30  # air around the patient
    assert -900 < np.median(image[lungs]) < -750
    body = np.abs(image[40:56, 60:66, 10:40])  # between lungs and spine
    assert np.median(body) < 150
    assert image.max() > 500  # bone
    assert components(case.lungs) == 2
    assert lungs[:48].any() and lungs[48:].any()


def test_distractors_are_outside_the_lungs_in_negatives_too() -> None:
    """Bright objects (markers, electrodes, calcifications) appear without any nodule."""
    bright = 0
    for seed in range(8):
        case = radiograph_case(seed, lesions=0)
        outside = ~case.lungs.astype(bool)
        assert case.image[case.lungs.astype(bool)].max() < 3400
        bright += int(case.image[outside].max() > 3400)
    assert 0 < bright < 8


def test_nodules_vary_in_size_and_shape() -> None:
    areas, elongations = [], []
    for seed in range(12):
        mask = radiograph_case(seed, lesions=1).mask
        points = np.argwhere(mask).astype(float)
        eigenvalues = np.linalg.eigvalsh(np.cov(points.T))
        areas.append(len(points))
        elongations.append(np.sqrt(eigenvalues[1] / eigenvalues[0]))
    assert max(areas) > 3 * min(areas)
    assert max(elongations) > 1.2 and min(elongations) < 1.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 0, "lesions": 3}, "lesions"),
        ({"seed": 0, "size": (8, 8)}, "size"),
        ({"seed": 0, "size": (64, 64, 64)}, "size"),
    ],
)
def test_bad_arguments_are_input_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        radiograph_case(**kwargs)


def test_case_is_the_documented_dataclass() -> None:
    case = radiograph_case(0, lesions=1)
    assert isinstance(case, Case)
    assert set(case.__dataclass_fields__) == {"image", "mask", "label", "lesions", "spacing", "lungs"}
