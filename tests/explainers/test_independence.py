"""Each image's map does not depend on the other images of its batch.

A convolutional network's numerics depend on the batch size (the CPU and cuDNN kernels block the
batch differently), and the optimisation amplifies such rounding differences: before each image's
samples passed the model on their own, maps of a batch differed from the same images explained one
by one by up to 0.69.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DenseNet

from medmdm import explainers
from medmdm.testing import lesion_images

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _batch_of_three() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = DenseNet(
        spatial_dims=2,
        in_channels=1,
        out_channels=2,
        init_features=8,
        growth_rate=8,
        block_config=(2, 2),
        bn_size=2,
    ).eval()
    x, _, _ = lesion_images(3, 48)
    x[1] = torch.flip(x[1], dims=[-1]) * 0.8  # three different images
    return model, x


@pytest.mark.parametrize(
    ("device", "max_batch"), [("cpu", 2), pytest.param("cuda", None, marks=[CUDA, pytest.mark.gpu])]
)
def test_three_images_batched_give_the_maps_they_get_alone(device: str, max_batch: int | None) -> None:
    model, x = _batch_of_three()
    explainer = explainers.create("hdm", model, device=device, max_batch=max_batch, steps=20, min_steps=5)
    targets = [1, 0, 1]
    batched = explainer.explain(x, targets)
    alone = [explainer.explain(x[i : i + 1], t) for i, t in enumerate(targets)]
    torch.testing.assert_close(batched.map, torch.cat([a.map for a in alone]), atol=1e-5, rtol=0)
    assert batched.steps.tolist() == [int(a.steps) for a in alone]
