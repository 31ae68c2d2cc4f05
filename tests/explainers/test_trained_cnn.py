"""Maps of a small trained CNN land on the lesions that decide its label."""

from __future__ import annotations

import pytest
import torch

from medmdm import explainers
from medmdm.testing import lesion_images, train_lesion_cnn


@pytest.fixture(scope="module")
def trained() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = train_lesion_cnn()
    images, labels, masks = lesion_images(200, seed=1)
    accuracy = (model(images).argmax(1) == labels).float().mean()
    assert accuracy >= 0.95, f"the test model trained badly: accuracy {accuracy:.2f}"
    positive = labels.nonzero()[:12, 0]
    return model, images[positive], masks[positive]


def gradient_energy(model: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor) -> float:
    x = x.clone().requires_grad_(True)
    model(x)[:, 1].sum().backward()
    saliency = x.grad.abs()[:, 0]
    return float(((saliency * masks).flatten(1).sum(1) / saliency.flatten(1).sum(1)).mean())


@pytest.mark.parametrize("name", ["dm", "hdm"])
def test_maps_peak_on_the_lesion_and_beat_plain_gradients(trained: tuple, name: str) -> None:
    model, x, masks = trained
    saliency = explainers.create(name, model)(x, target=1)[:, 0]
    peaks = masks.flatten(1).gather(1, saliency.flatten(1).argmax(1, keepdim=True))
    energy = (saliency * masks).flatten(1).sum(1) / saliency.flatten(1).sum(1)
    assert peaks.float().mean() >= 0.9
    assert energy.mean() >= 0.7
    assert energy.mean() > gradient_energy(model, x, masks)
