"""The analytic models depend on their regions only."""

from __future__ import annotations

import pytest
import torch

from medmdm.testing import BoxModel, EitherRegionModel, box_image, region_mask


def test_box_model_ignores_everything_outside_the_box() -> None:
    box = ((4, 8), (2, 6))
    model = BoxModel(box)
    x = box_image((12, 12), box)
    changed = x.clone()
    changed[~region_mask((12, 12), box)[None, None].expand_as(x)] = 5.0
    torch.testing.assert_close(model(x), model(changed))
    assert model(x)[0, 1] > 0 > model(torch.zeros_like(x))[0, 1]


def test_either_region_model_needs_only_one_region() -> None:
    a, b = ((0, 4), (0, 4), (0, 4)), ((6, 10), (6, 10), (6, 10))
    model = EitherRegionModel(a, b)
    both = box_image((10, 10, 10), a, b, noise=0.0)
    only_a = box_image((10, 10, 10), a, noise=0.0)
    torch.testing.assert_close(model(both), model(only_a))
    assert model(box_image((10, 10, 10)))[0, 1] < 0


def test_either_region_model_needs_two_regions() -> None:
    with pytest.raises(ValueError, match="two regions"):
        EitherRegionModel(((0, 4), (0, 4)))
