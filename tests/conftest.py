"""Shared fixtures: small synthetic 2D and 3D cases with known evidence regions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from medmdm.testing import BoxModel, EitherRegionModel, Region, box_image, region_mask


@dataclass
class Case:
    """A model, an image batch and where the model's evidence lies."""

    model: torch.nn.Module
    x: torch.Tensor
    regions: list[torch.Tensor]


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, share the cores among the workers instead of oversubscribing them."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


BOX = {2: ((14, 30), (18, 34)), 3: ((6, 16), (8, 18), (10, 20))}
SPATIAL = {2: (48, 48), 3: (24, 24, 24)}
TWO_REGIONS = {
    2: (((6, 18), (6, 18)), ((30, 42), (28, 40))),
    3: (((2, 10), (2, 10), (2, 10)), ((14, 22), (14, 22), (14, 22))),
}


def box_case(dims: int, batch: int = 1, channels: int = 1) -> Case:
    box: Region = BOX[dims]
    x = box_image(SPATIAL[dims], box, batch=batch, channels=channels)
    return Case(BoxModel(box), x, [region_mask(SPATIAL[dims], box)])


def two_region_case(dims: int) -> Case:
    a, b = TWO_REGIONS[dims]
    x = box_image(SPATIAL[dims], a, b)
    return Case(EitherRegionModel(a, b), x, [region_mask(SPATIAL[dims], a), region_mask(SPATIAL[dims], b)])


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def dims(request: pytest.FixtureRequest) -> int:
    return request.param


def mass_inside(saliency: torch.Tensor, region: torch.Tensor) -> float:
    """Share of the saliency mass of a (1, 1, *spatial) map inside a bool region."""
    saliency = saliency[0, 0]
    return float((saliency * region).sum() / saliency.sum())


def peak_inside(saliency: torch.Tensor, region: torch.Tensor) -> bool:
    return bool(region.flatten()[saliency[0, 0].flatten().argmax()])


class Failing(nn.Module):
    """Fails on its n-th call."""

    def __init__(self, inner: nn.Module, fail_at: int) -> None:
        super().__init__()
        self.inner, self.calls, self.fail_at = inner, 0, fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return self.inner(x)


class Partly(nn.Module):
    """Mixed training and requires_grad flags, a kept gradient: all must come back as they were."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.norm = nn.BatchNorm2d(1)
        self.norm.eval()
        self.norm.weight.requires_grad_(False)
        self.norm.bias.grad = torch.ones_like(self.norm.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.norm(x))


class Constant(nn.Module):
    """Logits that ignore the input."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.5, 2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], 2)
