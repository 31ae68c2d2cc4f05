"""Pointing game, energy pointing game and overlap on maps whose answers are known."""

from __future__ import annotations

import pytest
import torch

from medmdm.metrics import default_tolerance, energy_pointing_game, overlap, pointing_game
from medmdm.testing import region_mask
from tests.conftest import BOX, SPATIAL


def truth(dims: int, batch: int = 1) -> torch.Tensor:
    """(batch, *spatial) bool: the box of the shared fixtures."""
    return region_mask(SPATIAL[dims], BOX[dims]).expand(batch, *SPATIAL[dims]).clone()


def peak_map(spatial: tuple[int, ...], peak: tuple[int, ...]) -> torch.Tensor:
    """(1, 1, *spatial) map: a faint ramp with its maximum at ``peak``."""
    saliency = torch.linspace(0, 0.5, torch.Size(spatial).numel()).reshape(1, 1, *spatial)
    saliency[(0, 0, *peak)] = 1.0
    return saliency


def test_the_region_itself_is_a_hit_with_all_its_energy(dims: int) -> None:
    region = truth(dims, batch=2)
    saliency = region[:, None].float()
    assert pointing_game(saliency, region).tolist() == [True, True]
    assert pointing_game(saliency, region[:, None]).tolist() == [True, True]  # (B, 1, *spatial) region
    energy = energy_pointing_game(saliency, region)
    assert energy.dtype == torch.float32
    torch.testing.assert_close(energy, torch.ones(2))


def test_a_map_outside_the_region_is_a_miss_with_no_energy(dims: int) -> None:
    region = truth(dims)
    saliency = (~region)[:, None].float()
    saliency[(0, 0, *[0] * dims)] = 2.0  # the peak in the corner, far from the box
    assert pointing_game(saliency, region).tolist() == [False]
    assert energy_pointing_game(saliency, region).tolist() == [0.0]


def test_tolerance_decides_a_peak_three_voxels_away(dims: int) -> None:
    region = truth(dims)
    box = BOX[dims]
    peak = (box[0][0] - 3, *[start for start, _ in box[1:]])  # 3 voxels before the box on axis 0
    saliency = peak_map(SPATIAL[dims], peak)
    assert pointing_game(saliency, region, tolerance=4).tolist() == [True]
    assert pointing_game(saliency, region, tolerance=3).tolist() == [True]
    assert pointing_game(saliency, region, tolerance=2).tolist() == [False]


@pytest.mark.parametrize("side", [224, 448])
def test_default_tolerance_is_15_voxels_at_224_and_scales_with_size(side: int) -> None:
    assert default_tolerance((side, side)) == pytest.approx(15 * side / 224)
    region = torch.zeros(1, side, side, dtype=torch.bool)
    region[0, side // 2 :, :] = True
    tolerance = 15 * side // 224
    near = peak_map((side, side), (side // 2 - tolerance + 1, 5))
    far = peak_map((side, side), (side // 2 - tolerance - 1, 5))
    assert pointing_game(near, region).tolist() == [True]
    assert pointing_game(far, region).tolist() == [False]


def test_default_tolerance_uses_the_longest_side_in_3d() -> None:
    assert default_tolerance((8, 112, 56)) == pytest.approx(7.5)


def test_empty_region_is_a_miss_and_zero_map_has_no_energy(dims: int) -> None:
    region = truth(dims, batch=2)
    region[1] = False
    saliency = region[:, None].float()
    saliency[1] = 1.0
    assert pointing_game(saliency, region, tolerance=1000).tolist() == [True, False]
    assert energy_pointing_game(torch.zeros_like(saliency), region).tolist() == [0.0, 0.0]


def test_overlap_of_a_region_of_5_percent_is_perfect_at_the_95th_percentile(dims: int) -> None:
    spatial = (20, 20) if dims == 2 else (10, 10, 8)
    region = torch.zeros(1, *spatial, dtype=torch.bool)
    flat = region.view(1, -1)
    flat[
        0, torch.randperm(flat.shape[1], generator=torch.Generator().manual_seed(0))[: flat.shape[1] // 20]
    ] = True
    scores = overlap(region[:, None].float(), region)
    assert scores.percentiles == (80, 85, 90, 95, 99)
    for value in scores.as_dict().values():
        assert value.shape == (1, 5)
        assert value.dtype == torch.float32
    for name in ("dice", "iou", "precision", "sensitivity"):
        assert getattr(scores, name)[0, 3].item() == pytest.approx(1.0)
    # a binary map's 80th percentile is 0: every voxel is positive
    assert scores.precision[0, 0].item() == pytest.approx(0.05)
    assert scores.sensitivity[0, 0].item() == pytest.approx(1.0)
    assert scores.dice[0, 0].item() == pytest.approx(2 * 0.05 / 1.05)


def test_overlap_precision_and_sensitivity_on_a_constructed_case(dims: int) -> None:
    spatial = (10, 10) if dims == 2 else (4, 5, 5)
    values = torch.arange(100.0).reshape(1, 1, *spatial)  # distinct values 0 ... 99
    region = ((values >= 85) & (values <= 94))[:, 0]
    scores = overlap(values, region, percentiles=(80, 90))
    # 80th: positives 80 ... 99 (tp 10, fp 10, fn 0); 90th: positives 90 ... 99 (tp 5, fp 5, fn 5)
    torch.testing.assert_close(scores.precision, torch.tensor([[0.5, 0.5]]))
    torch.testing.assert_close(scores.sensitivity, torch.tensor([[1.0, 0.5]]))
    torch.testing.assert_close(scores.dice, torch.tensor([[2 / 3, 0.5]]))
    torch.testing.assert_close(scores.iou, torch.tensor([[0.5, 1 / 3]]))


def test_overlap_sensitivity_is_nan_for_an_empty_region() -> None:
    scores = overlap(torch.rand(1, 1, 8, 8), torch.zeros(1, 8, 8, dtype=torch.bool))
    assert torch.isnan(scores.sensitivity).all()
    assert (scores.dice == 0).all() and (scores.precision == 0).all()
