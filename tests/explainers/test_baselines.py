"""Baseline explainers (gradients, occlusion, RISE, Grad-CAM) through the contract, in 2D and 3D."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medmdm import InputError, ModelError, OptionError
from medmdm.explainers.base import Explainer
from medmdm.explainers.gradcam import GradCAM, GradCAMpp
from medmdm.explainers.gradients import IntegratedGradients, Saliency
from medmdm.explainers.masks import normalise
from medmdm.explainers.occlusion import Occlusion, window_starts
from medmdm.explainers.rise import RISE
from tests.conftest import Constant, Failing, Partly, box_case, mass_inside, peak_inside

# Images whose maps are empty (a class the CNN sees no evidence for) are warned about.
pytestmark = pytest.mark.filterwarnings("ignore:.*found no evidence:UserWarning")

FAST: dict[type[Explainer], dict] = {
    Saliency: {},
    IntegratedGradients: {"steps": 8},
    Occlusion: {},
    RISE: {"masks": 200},
    GradCAM: {},
    GradCAMpp: {},
}
METHODS = list(FAST)
CAMS = (GradCAM, GradCAMpp)
PERTURBATION = [m for m in METHODS if m not in CAMS]
IDS = [m.name for m in METHODS]


def small_cnn(dims: int, channels: int = 1, width: int = 8, inplace: bool = False) -> nn.Sequential:
    """conv, relu, conv, relu, global average pooling, linear: two classes."""
    conv = (nn.Conv2d, nn.Conv3d)[dims - 2]
    pool = (nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[dims - 2]
    return nn.Sequential(
        conv(channels, width, 3, padding=1),
        nn.ReLU(inplace=inplace),
        conv(width, width, 3, padding=1),
        nn.ReLU(inplace=inplace),
        pool(1),
        nn.Flatten(),
        nn.Linear(width, 2),
    )


def box_data(dims: int, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images, each with one box anywhere: bright for class 1, dim for class 0."""
    size, side = {2: (32, 8), 3: (16, 6)}[dims]
    x = torch.rand((count, 1, *[size] * dims), generator=generator) * 0.1
    y = torch.randint(0, 2, (count,), generator=generator)
    for i in range(count):
        start = torch.randint(0, size - side + 1, (dims,), generator=generator).tolist()
        x[(i, 0, *[slice(s, s + side) for s in start])] += 1.0 if y[i] else 0.3
    return x, y


_TRAINED: dict[int, nn.Module] = {}


def trained_cnn(dims: int) -> nn.Module:
    """A :func:`small_cnn` trained (in about a second) to tell a bright box from a dim one."""
    if dims not in _TRAINED:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        model = small_cnn(dims)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(100):
            x, y = box_data(dims, 16 if dims == 2 else 8, generator)
            loss = nn.functional.cross_entropy(model(x), y)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        x, y = box_data(dims, 100, generator)
        with torch.no_grad():
            accuracy = (model(x).argmax(1) == y).float().mean()
        assert accuracy >= 0.95, f"the test CNN trained badly: accuracy {accuracy:.2f}"
        _TRAINED[dims] = model.eval()
    return _TRAINED[dims]


def model_for(method: type[Explainer], dims: int, channels: int = 1) -> nn.Module:
    """The box model for perturbation methods; a CNN (trained for one channel) for Grad-CAM."""
    if method not in CAMS:
        return box_case(dims).model
    if channels == 1:
        return copy.deepcopy(trained_cnn(dims))
    torch.manual_seed(1)
    return small_cnn(dims, channels).eval()


def samples_per_image(explainer: Explainer, spatial: tuple[int, ...]) -> int:
    """Model samples one explanation of one image costs: the method's, plus 1 + 3 bookkeeping."""
    method = {
        Saliency: lambda: 1,
        IntegratedGradients: lambda: explainer.options.steps,
        Occlusion: lambda: len(window_starts(spatial, *explainer.geometry(spatial))),
        RISE: lambda: explainer.options.masks,
        GradCAM: lambda: 1,
        GradCAMpp: lambda: 1,
    }[type(explainer)]()
    return method + 4


def hooks(model: nn.Module) -> list:
    return [
        hook
        for module in model.modules()
        for hook in (*module._forward_hooks.values(), *module._backward_hooks.values())
    ]


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_shape_range_dtype_and_details(method: type[Explainer], dims: int) -> None:
    case = box_case(dims, batch=2)
    explainer = method(model_for(method, dims), **FAST[method])
    saliency = explainer(case.x)
    assert saliency.shape == (2, 1, *case.x.shape[2:])
    assert saliency.dtype == torch.float32 and saliency.device == case.x.device
    assert saliency.min() >= 0 and saliency.max() <= 1
    assert torch.allclose(saliency.flatten(1).amax(1), torch.ones(2))
    last = explainer.last
    assert last.method == method.name and last.map is saliency
    assert last.target.tolist() == [1, 1]
    assert len(last.levels) == 1 and last.levels[0].map.shape == saliency.shape
    assert (last.score_masked > last.score_remaining).all()
    assert last.samples == 2 * samples_per_image(explainer, tuple(case.x.shape[2:]))
    summary = last.summary()
    assert summary["method"] == method.name and "max_batch" in summary["options"]


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_every_model_pass_is_counted(method: type[Explainer]) -> None:
    case = box_case(2, batch=2)
    model = model_for(method, 2)
    seen: list[int] = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    try:
        explainer = method(model, max_batch=64, **FAST[method])
        explainer(case.x)
    finally:
        handle.remove()
    assert explainer.last.samples == sum(seen)
    assert max(seen) <= 64


@pytest.mark.parametrize("method", METHODS, ids=IDS)
@pytest.mark.parametrize(
    "target, expected",
    [(None, [1, 1, 1]), (0, [0, 0, 0]), ([1, 0, 1], [1, 0, 1]), (torch.tensor([0, 1, 0]), [0, 1, 0])],
)
def test_target_forms(method: type[Explainer], target: object, expected: list[int]) -> None:
    case = box_case(2, batch=3)
    explainer = method(model_for(method, 2), **FAST[method])
    explainer(case.x, target)
    assert explainer.last.target.tolist() == expected


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_batch_equals_single_calls(method: type[Explainer], dims: int) -> None:
    case = box_case(dims, batch=3)
    case.x[1] = torch.roll(case.x[1], shifts=3, dims=-1)
    case.x[2] *= 0.7
    explainer = method(model_for(method, dims), **FAST[method])
    batch = explainer(case.x, [1, 0, 1])
    singles = torch.cat([explainer(case.x[i : i + 1], t) for i, t in enumerate([1, 0, 1])])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS, ids=IDS)
@pytest.mark.parametrize("channels", [1, 3])
def test_one_and_three_channels(method: type[Explainer], channels: int, dims: int) -> None:
    case = box_case(dims, channels=channels)
    saliency = method(model_for(method, dims, channels), **FAST[method])(case.x)
    assert saliency.shape == (1, 1, *case.x.shape[2:])
    assert saliency.min() >= 0 and saliency.max() <= 1


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_model_left_as_found(method: type[Explainer]) -> None:
    model = Partly(model_for(method, 2)).train()
    model.norm.eval()
    training = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    values = [p.detach().clone() for p in model.parameters()]
    method(model, **FAST[method])(box_case(2).x)
    assert training == [m.training for m in model.modules()]
    assert flags == [p.requires_grad for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(values, model.parameters(), strict=True))
    assert torch.equal(model.norm.bias.grad, torch.ones(1))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "norm.bias")
    assert hooks(model) == []


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_model_left_as_found_after_a_failure(method: type[Explainer]) -> None:
    inner = small_cnn(2, inplace=True) if method in CAMS else box_case(2).model
    model = Failing(inner, fail_at=2).train()
    with pytest.raises(RuntimeError, match="boom"):
        method(model, **FAST[method])(box_case(2).x)
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert hooks(model) == []
    if method in CAMS:
        assert inner[1].inplace and inner[3].inplace
        assert inner[2]._is_full_backward_hook is None


@pytest.mark.parametrize("method", [m for m in METHODS if m is not RISE], ids=lambda m: m.name)
def test_faithful_on_the_box_model(method: type[Explainer], dims: int) -> None:
    case = box_case(dims)
    saliency = method(model_for(method, dims), **FAST[method])(case.x, target=1)
    assert peak_inside(saliency, case.regions[0])
    assert mass_inside(saliency, case.regions[0]) >= 0.6


def test_rise_peaks_in_the_box_but_spreads(dims: int) -> None:
    # RISE's maps are smooth over about two mask cells, and the paper's estimator carries the
    # mean score times the per-voxel mask count: even 20,000 masks keep only about half of the
    # mass inside this box. The logit keeps that mean term small; the probability saturates.
    case = box_case(dims)
    saliency = RISE(case.model, masks=2000 if dims == 2 else 1000, score="logit")(case.x)
    share = float(case.regions[0].float().mean())
    assert peak_inside(saliency, case.regions[0])
    assert mass_inside(saliency, case.regions[0]) >= 1.5 * share


def test_gradients_match_the_analytic_answer() -> None:
    # The box model is linear: its gradient is constant inside the box and 0 outside, and
    # integrated gradients from 0 are x times that gradient.
    case = box_case(2, channels=3)
    region = case.regions[0].float()
    saliency = Saliency(case.model)(case.x)
    torch.testing.assert_close(saliency[0, 0], region)
    integrated = IntegratedGradients(case.model, steps=4)(case.x)
    torch.testing.assert_close(integrated, normalise(case.x.sum(1, keepdim=True) * region, 2))


def test_integrated_gradients_baseline_and_chunking() -> None:
    case = box_case(3, batch=2)
    whole = IntegratedGradients(case.model, steps=6, baseline="mean")(case.x)
    chunked = IntegratedGradients(case.model, steps=6, baseline="mean", max_batch=5)(case.x)
    torch.testing.assert_close(whole, chunked, atol=1e-5, rtol=0)


def test_rise_is_seeded_and_chunking_changes_nothing() -> None:
    case = box_case(2)
    first = RISE(case.model, masks=300, seed=3)(case.x)
    assert torch.equal(first, RISE(case.model, masks=300, seed=3)(case.x))
    assert not torch.equal(first, RISE(case.model, masks=300, seed=4)(case.x))
    torch.testing.assert_close(
        first, RISE(case.model, masks=300, seed=3, max_batch=7)(case.x), atol=1e-5, rtol=0
    )


def test_rise_default_masks_and_score() -> None:
    for dims, masks in [(2, 2000), (3, 1000)]:
        case = box_case(dims)
        explainer = RISE(case.model, cells=4)
        explainer(case.x)
        assert explainer.last.samples == masks + 4 and explainer.options.score == "probability"


def test_occlusion_windows_cover_every_voxel() -> None:
    explainer = Occlusion(box_case(2).model)
    assert explainer.geometry((48, 48)) == ([6, 6], [3, 3])
    assert explainer.geometry((24, 20, 9)) == ([3, 3, 3], [2, 2, 2])
    starts = window_starts((10, 7), [4, 3], [3, 3])
    assert sorted({row[0] for row in starts.tolist()}) == [0, 3, 6]
    assert sorted({row[1] for row in starts.tolist()}) == [0, 3, 4]
    case = box_case(3)
    saliency = Occlusion(case.model, window=(4, 5, 6), stride=(4, 3, 2))(case.x)
    assert peak_inside(saliency, case.regions[0])


@pytest.mark.parametrize("method", CAMS, ids=lambda m: m.name)
def test_gradcam_needs_no_trainable_parameters_and_survives_inplace_relu(method: type[Explainer]) -> None:
    model = small_cnn(2, inplace=True)
    model.load_state_dict(trained_cnn(2).state_dict())
    model.requires_grad_(False)
    case = box_case(2)
    saliency = method(model)(case.x, target=1)
    assert peak_inside(saliency, case.regions[0])
    assert model[1].inplace and model[3].inplace
    assert hooks(model) == [] and not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("method", CAMS, ids=lambda m: m.name)
def test_gradcam_explains_the_requested_class(method: type[Explainer]) -> None:
    case = box_case(2, batch=2)
    explainer = method(trained_cnn(2))
    saliency = explainer(case.x, [1, 0])
    assert saliency[0].max() == 1 and not torch.equal(saliency[0], saliency[1])
    assert explainer.options.target_layer == "2"


class TwoBranches(nn.Module):
    """A CNN with a convolution that the output does not use."""

    def __init__(self) -> None:
        super().__init__()
        self.used = small_cnn(2)
        self.unused = nn.Conv2d(1, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_gradcam_layer_errors() -> None:
    with pytest.raises(ModelError, match="no Conv2d or Conv3d"):
        GradCAM(box_case(2).model)
    with pytest.raises(OptionError, match="not a layer"):
        GradCAM(small_cnn(2), target_layer="nope")
    with pytest.raises(OptionError, match="target_layer must be a string or None"):
        GradCAMpp(small_cnn(2), target_layer=2)
    model = TwoBranches()
    with pytest.raises(ModelError, match="'unused': the forward pass did not reach it"):
        GradCAM(model, target_layer="unused")(box_case(2).x)
    assert hooks(model) == []
    with pytest.raises(ModelError, match=r"'used\.6': its output has shape \(1, 2\)"):
        GradCAMpp(model, target_layer="used.6")(box_case(2).x)
    assert hooks(model) == []


@pytest.mark.parametrize(
    "method, options, message",
    [
        (IntegratedGradients, {"steps": 1}, "steps"),
        (IntegratedGradients, {"baseline": "zero"}, "baseline"),
        (Occlusion, {"window": 0}, "window"),
        (Occlusion, {"stride": "2"}, "stride"),
        (Occlusion, {"baseline": "noise"}, "baseline"),
        (RISE, {"masks": 0}, "masks"),
        (RISE, {"cells": 1}, "cells"),
        (RISE, {"keep_probability": 1.0}, "keep_probability"),
        (Saliency, {"score": "margin"}, "score"),
    ],
)
def test_bad_options_are_option_errors(method: type[Explainer], options: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message):
        method(box_case(2).model, **options)


def test_occlusion_geometry_that_does_not_fit_the_image() -> None:
    case = box_case(2)
    with pytest.raises(InputError, match="larger than the image"):
        Occlusion(case.model, window=64)(case.x)
    with pytest.raises(InputError, match="has 3 axes"):
        Occlusion(case.model, window=(4, 4, 4))(case.x)
    with pytest.raises(OptionError, match="skipped"):
        Occlusion(case.model, window=4, stride=5)(case.x)


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_bad_inputs_and_targets_are_input_errors(method: type[Explainer]) -> None:
    case = box_case(2, batch=2)
    explainer = method(model_for(method, 2), **FAST[method])
    with pytest.raises(InputError, match="shape"):
        explainer(case.x[0])
    with pytest.raises(InputError, match="target"):
        explainer(case.x, [0, 1, 1])


@pytest.mark.parametrize("method", PERTURBATION, ids=lambda m: m.name)
def test_a_model_that_ignores_the_input_gives_an_empty_map_and_a_warning(method: type[Explainer]) -> None:
    x = box_case(2).x
    with pytest.warns(UserWarning, match="found no evidence in image"):
        saliency = method(Constant(), **FAST[method])(x)
    assert saliency.shape == (1, 1, *x.shape[2:]) and saliency.max() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_cuda_matches_the_contract(method: type[Explainer], dims: int) -> None:
    case = box_case(dims, batch=2)
    model = model_for(method, dims).cuda()
    saliency = method(model, **FAST[method])(case.x.cuda())
    cpu = method(model, device="cpu", **FAST[method])(case.x)
    assert saliency.device.type == "cuda" and saliency.shape == (2, 1, *case.x.shape[2:])
    assert cpu.device.type == "cpu" and next(model.parameters()).device.type == "cuda"
    assert torch.corrcoef(torch.stack([saliency.cpu().flatten(), cpu.flatten()]))[0, 1] > 0.9
