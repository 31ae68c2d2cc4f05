"""Grid sizes, upsampling, normalisation and baselines."""

from __future__ import annotations

import pytest
import torch

from medmdm import OptionError
from medmdm.explainers.masks import (
    combine_scales,
    default_auxiliary_sizes,
    default_benchmark_sizes,
    grid_shape,
    normalise,
    upsample,
)
from medmdm.explainers.mdm import reference_sizes
from medmdm.explainers.perturbation import baseline_image, keep, remove


def test_default_sizes_scale_with_the_input() -> None:
    assert default_benchmark_sizes((224, 224)) == [4, 7, 11, 16]
    assert default_auxiliary_sizes((224, 224)) == [56, 112, 224]
    assert default_benchmark_sizes((96, 96, 96)) == [3, 4, 6, 8]
    assert default_auxiliary_sizes((96, 96, 96)) == [24, 48, 96]
    small = (16, 16)
    assert max(default_benchmark_sizes(small)) < min(default_auxiliary_sizes(small))
    assert max(default_auxiliary_sizes(small)) <= 16


def test_reference_sizes_are_the_authors() -> None:
    assert reference_sizes((224, 224)) == [*range(6, 33), 56, 112]
    assert reference_sizes((20, 20)) == list(range(6, 21))


def test_grid_shape_follows_the_aspect_ratio() -> None:
    assert grid_shape(16, (96, 96, 48)) == (16, 16, 8)
    assert grid_shape(4, (100, 10)) == (4, 2)
    assert grid_shape(8, (1, 64, 64)) == (1, 8, 8)
    with pytest.raises(OptionError):
        grid_shape(1, (10, 10))


def test_upsample_keeps_corners_and_range() -> None:
    grid = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])
    up = upsample(grid, (5, 7))
    assert up.shape == (1, 1, 5, 7)
    assert up[0, 0, 0, 0] == 0 and up[0, 0, 0, -1] == 1 and up.min() >= 0 and up.max() <= 1


def test_normalise_maps_each_map_to_unit_range_and_constants_to_zero() -> None:
    maps = torch.stack([torch.linspace(2, 4, 9).view(3, 3), torch.full((3, 3), 0.44)])[:, None]
    maps[1, 0, 0, 0] += 1e-7  # rounding noise, not signal
    out = normalise(maps, 2)
    assert out[0].min() == 0 and out[0].max() == 1
    assert torch.equal(out[1], torch.zeros_like(out[1]))


def test_combine_scales_weights_fine_masks_more() -> None:
    coarse = torch.zeros(1, 1, 4, 4)
    coarse[..., :2] = 1
    fine = torch.zeros(1, 1, 4, 4)
    fine[..., 2:] = 1
    masks = torch.cat([coarse, fine], dim=1)
    equal = combine_scales(masks, [2, 4], exponent=0)
    weighted = combine_scales(masks, [2, 4], exponent=2)
    assert torch.equal(equal, torch.zeros_like(equal))  # equal weights: a tie ranks nothing
    assert (weighted[..., 2:] == 1).all() and (weighted[..., :2] == 0).all()


@pytest.mark.parametrize("kind", ["mean", "blur", "constant"])
def test_baselines_have_the_image_shape(kind: str) -> None:
    x = torch.rand(2, 3, 8, 9, 10)
    base = baseline_image(x, kind, value=0.25)
    assert base.shape == x.shape
    if kind == "mean":
        torch.testing.assert_close(base[:, :, 0, 0, 0], x.mean(dim=(2, 3, 4)))
    if kind == "constant":
        assert (base == 0.25).all()
    if kind == "blur":
        assert base.std() < x.std()
    with pytest.raises(OptionError):
        baseline_image(x, "zeros")  # type: ignore[arg-type]


def test_keep_and_remove_are_complements() -> None:
    x, base, mask = torch.rand(1, 1, 6, 6), torch.zeros(1, 1, 6, 6), torch.rand(1, 1, 6, 6)
    torch.testing.assert_close(keep(x, base, mask) + remove(x, base, mask), x + base)
    torch.testing.assert_close(keep(x, base, torch.ones_like(mask)), x)
    torch.testing.assert_close(remove(x, base, torch.ones_like(mask)), base)
