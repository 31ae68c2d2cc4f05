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
    for own, single in zip(batched.split(), alone, strict=True):  # each image's explanation, as if alone
        own_summary, single_summary = own.summary(), single.summary()
        for key in ("score_original", "score_baseline", "score_masked", "score_remaining"):
            assert own_summary[key] == pytest.approx(single_summary[key], abs=1e-4), key
        torch.testing.assert_close(own.map, single.map, atol=1e-5, rtol=0)
        assert own.warnings == single.warnings and own.baselines == single.baselines
        assert own_summary["target_description"] == single_summary["target_description"]
        assert [level["steps"] for level in own_summary["levels"]] == [
            level["steps"] for level in single_summary["levels"]
        ]
    assert sum(own.samples for own in batched.split()) == batched.samples


def test_a_split_keeps_the_warnings_about_each_image() -> None:
    scores = torch.zeros(3)
    explanation = explainers.Explanation(
        map=torch.zeros(3, 1, 4, 4),
        target=torch.tensor([1, 0, 1]),
        score_original=scores,
        score_baseline=scores,
        score_masked=scores,
        score_remaining=scores,
        samples=10,
        seconds=3.0,
        warnings=["the masks of image(s) [0, 2] kept nothing; their map ranks voxels", "a note on all"],
        target_description={"kind": "class", "index": [1, 0, 1], "score": "logit"},
        baselines=["mean", "blur", "minimum"],
    )
    first, second, third = explanation.split()
    assert (
        first.warnings
        == third.warnings
        == ["the masks of image(s) [0] kept nothing; their map ranks voxels", "a note on all"]
    )
    assert second.warnings == ["a note on all"]
    assert second.target_description == {"kind": "class", "index": [0], "score": "logit"}
    assert second.baselines == ["blur"] and second.target.tolist() == [0] and second.map.shape == (1, 1, 4, 4)
    assert [e.samples for e in (first, second, third)] == [4, 3, 3] and second.seconds == 1.0
