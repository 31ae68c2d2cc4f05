"""The prototype network: its output protocol, a prototype set to a patch, and the patch it sees."""

from __future__ import annotations

import math

import pytest
import torch

from medmdm.testing import PrototypeNet, box_image, region_mask


@pytest.mark.parametrize("dims", [2, 3])
def test_a_prototype_set_to_a_patch_matches_it_exactly_there(dims: int) -> None:
    spatial, position = {2: ((20, 20), (6, 13)), 3: ((10, 10, 10), (3, 6, 5))}[dims]
    model = PrototypeNet(spatial_dims=dims, prototypes=6, classes=3, eps=1e-3)
    x = box_image(spatial, model.receptive_field(position, spatial), batch=2)
    model.set_prototype(4, x[:1], position)
    distances = model.distances(x)[0, 4].detach()
    assert distances[position] < 1e-9
    distances[position] = float("inf")
    assert distances.min() > 1e-3  # nowhere else is close
    output = model(x)
    assert output["logits"].shape == (2, 3) and output["prototypes"].shape == (2, 6)
    assert output["prototypes"][0, 4].item() == pytest.approx(math.log(1 / 1e-3))
    torch.testing.assert_close(output["logits"], output["prototypes"] @ model.last_layer.weight.T)


def test_each_class_is_connected_to_its_own_prototypes() -> None:
    model = PrototypeNet(prototypes=4, classes=2)
    assert model.prototype_classes.tolist() == [0, 0, 1, 1]
    expected = torch.tensor([[1.0, 1.0, -0.5, -0.5], [-0.5, -0.5, 1.0, 1.0]])
    torch.testing.assert_close(model.last_layer.weight, expected)


def test_the_features_at_a_position_see_its_receptive_field_only() -> None:
    spatial, position = (16, 16), (3, 8)
    model = PrototypeNet()
    field = model.receptive_field(position, spatial)
    assert field == [(1, 6), (6, 11)]
    assert model.receptive_field((0, 15), spatial) == [(0, 3), (13, 16)]
    x = box_image(spatial)
    inside = region_mask(spatial, field)
    changed_outside = torch.where(inside, x, 5.0)
    changed_inside = torch.where(inside, 5.0, x)
    at = (slice(None), slice(None), *position)
    features = model.features(x)[at]
    torch.testing.assert_close(model.features(changed_outside)[at], features)
    assert not torch.allclose(model.features(changed_inside)[at], features)


def test_the_seed_decides_the_weights_and_leaves_the_global_generator_alone() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    first = PrototypeNet(seed=1)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(first.prototype_vectors, PrototypeNet(seed=1).prototype_vectors)
    assert not torch.equal(first.prototype_vectors, PrototypeNet(seed=2).prototype_vectors)


def test_bad_shapes_are_value_errors() -> None:
    with pytest.raises(ValueError, match="spatial_dims"):
        PrototypeNet(spatial_dims=1)
    with pytest.raises(ValueError, match="one prototype per class"):
        PrototypeNet(prototypes=2, classes=3)


def test_downsampling_stages_stride_and_widen_the_receptive_field() -> None:
    spatial, position = (32, 32), (3, 5)
    model = PrototypeNet(channels=(4, 4)).eval()
    assert model.features(box_image(spatial)).shape[2:] == (8, 8)
    field = model.receptive_field(position, spatial)
    assert field == [(1, 27), (9, 32)]  # 26 pixels wide, 4 apart, clipped to the image
    x = box_image(spatial)
    inside = region_mask(spatial, field)
    at = (slice(None), slice(None), *position)
    features = model.features(x)[at]
    torch.testing.assert_close(model.features(torch.where(inside, x, 5.0))[at], features)
    assert not torch.allclose(model.features(torch.where(inside, 5.0, x))[at], features)


def test_push_makes_each_prototype_a_patch_of_an_image_of_its_class() -> None:
    model = PrototypeNet(prototypes=4, classes=2, channels=(4,))
    x = torch.rand((6, 1, 16, 16), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    where = model.push(x, labels, batch=4)
    assert model.training  # the mode is restored
    model.eval()
    for index, (image, spot) in enumerate(where):
        own = labels == model.prototype_classes[index]
        assert own[image]
        distances = model.distances(x[own])[:, index].detach()
        assert model.distances(x[image : image + 1])[(0, index, *spot)] < 1e-9
        assert distances.min() < 1e-9
    with pytest.raises(ValueError, match=r"class\(es\) \[1\]"):
        model.push(x[labels == 0], labels[labels == 0])
