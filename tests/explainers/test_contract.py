"""The explainer contract, for every registered dynamic-mask explainer, in 2D and 3D."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medmdm import InputError, ModelError, OptionError, explainers
from tests.conftest import Constant, Failing, Partly, box_case, mass_inside

FAST = {"steps": 20, "min_steps": 5}
NAMES = ["dm", "hdm", "mdm", "mdm-reference"]


def test_registry_lists_the_core_methods() -> None:
    assert {"dm", "mdm", "mdm-reference", "hdm"} <= set(explainers.available())
    for name in explainers.available():
        assert explainers.describe(name)


def test_unknown_name_and_option_are_clear_errors() -> None:
    model = box_case(2).model
    with pytest.raises(OptionError, match="unknown explainer 'nope'"):
        explainers.create("nope", model)
    with pytest.raises(OptionError, match="unknown option"):
        explainers.create("hdm", model, stepz=3)
    with pytest.raises(OptionError, match="baseline"):
        explainers.create("hdm", model, baseline="zero")
    with pytest.raises(OptionError, match="score"):
        explainers.create("dm", model, score="margin")
    with pytest.raises(ModelError, match=r"torch\.nn\.Module"):
        explainers.create("dm", lambda x: x)


@pytest.mark.parametrize("name", NAMES)
def test_shape_range_dtype_and_details(name: str, dims: int) -> None:
    case = box_case(dims, batch=2)
    explainer = explainers.create(name, case.model, **FAST)
    saliency = explainer(case.x)
    assert saliency.shape == (2, 1, *case.x.shape[2:])
    assert saliency.dtype == torch.float32 and saliency.device == case.x.device
    assert saliency.min() >= 0 and saliency.max() <= 1
    assert torch.allclose(saliency.flatten(1).max(1).values, torch.ones(2))
    last = explainer.last
    assert last.method == name
    assert last.map is saliency
    assert last.target.tolist() == [1, 1]
    assert last.samples > 0 and last.seconds > 0
    assert (last.steps > 0).all()
    assert len(last.levels) >= 1 and last.levels[0].map.shape == saliency.shape
    assert (last.score_masked > last.score_remaining).all()
    summary = last.summary()
    assert summary["method"] == name and summary["options"]["steps"] == 20


def test_every_option_is_recorded() -> None:
    case = box_case(2)
    explainer = explainers.create("hdm", case.model, levels=2, baseline="blur", steps=10, min_steps=2)
    explanation = explainer.explain(case.x)
    assert explanation.options["levels"] == 2
    assert explanation.options["baseline"] == "blur"
    assert {"score", "seed", "max_batch", "benchmark_sizes", "stop_fraction"} <= set(explanation.options)


@pytest.mark.parametrize(
    "target, expected",
    [(None, [1, 1, 1]), (0, [0, 0, 0]), ([1, 0, 1], [1, 0, 1]), (torch.tensor([0, 1, 0]), [0, 1, 0])],
)
def test_target_forms(target: object, expected: list[int]) -> None:
    case = box_case(2, batch=3)
    explainer = explainers.create("dm", case.model, **FAST)
    explainer(case.x, target)
    assert explainer.last.target.tolist() == expected


@pytest.mark.parametrize("target", [2, -1, [0, 1], 0.5, [0.0, 1.0, 1.0], True])
def test_bad_targets_are_input_errors(target: object) -> None:
    case = box_case(2, batch=3)
    with pytest.raises(InputError, match="target"):
        explainers.create("dm", case.model, **FAST)(case.x, target)


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_single_calls(name: str) -> None:
    case = box_case(2, batch=3)
    case.x[1] = torch.roll(case.x[1], shifts=3, dims=-1)
    case.x[2] *= 0.7
    explainer = explainers.create(name, case.model, **FAST)
    batch = explainer(case.x, [1, 0, 1])
    singles = torch.cat([explainer(case.x[i : i + 1], t) for i, t in enumerate([1, 0, 1])])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)


def test_same_seed_same_map_and_chunking_changes_nothing() -> None:
    case = box_case(3, batch=2)
    first = explainers.create("hdm", case.model, seed=3, **FAST)(case.x)
    again = explainers.create("hdm", case.model, seed=3, **FAST)(case.x)
    chunked = explainers.create("hdm", case.model, seed=3, max_batch=2, **FAST)(case.x)
    assert torch.equal(first, again)
    torch.testing.assert_close(first, chunked, atol=1e-5, rtol=0)


def test_chunking_bounds_the_model_batch() -> None:
    case = box_case(2)
    sizes: list[int] = []
    case.model.register_forward_pre_hook(lambda module, args: sizes.append(args[0].shape[0]))
    explainers.create("dm", case.model, max_batch=2, **FAST)(case.x)
    assert max(sizes) <= 2


@pytest.mark.parametrize("channels", [1, 3])
def test_one_and_three_channels(channels: int, dims: int) -> None:
    case = box_case(dims, channels=channels)
    saliency = explainers.create("hdm", case.model, **FAST)(case.x)
    assert saliency.shape == (1, 1, *case.x.shape[2:])


@pytest.mark.parametrize("baseline", ["mean", "blur", "constant"])
@pytest.mark.parametrize("score", ["logit", "probability"])
def test_baselines_and_scores(baseline: str, score: str) -> None:
    case = box_case(2)
    explainer = explainers.create("dm", case.model, baseline=baseline, score=score, blur_sigma=8.0, **FAST)
    saliency = explainer(case.x)
    assert saliency.max() == 1
    if score == "probability":
        assert 0 <= explainer.last.score_original.item() <= 1


def test_progress_callback_reports_each_stage() -> None:
    case = box_case(2)
    events: list[explainers.ProgressEvent] = []
    explainers.create("hdm", case.model, progress=events.append, **FAST)(case.x)
    assert {event.stage for event in events} == {"benchmark", "auxiliary"}
    assert all(event.level >= 1 and 0 < event.step <= event.max_steps for event in events)


def _model_state(model: nn.Module) -> tuple[list, list, list]:
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [p.detach().clone() for p in model.parameters()],
    )


def test_model_left_as_found() -> None:
    case = box_case(2)
    model = Partly(case.model).train()
    model.norm.eval()
    before = _model_state(model)
    explainers.create("hdm", model, **FAST)(case.x)
    after = _model_state(model)
    assert before[0] == after[0] and before[1] == after[1]
    assert all(torch.equal(a, b) for a, b in zip(before[2], after[2], strict=True))
    assert torch.equal(model.norm.bias.grad, torch.ones(1))
    assert all(p.grad is None for name, p in model.named_parameters() if name != "norm.bias")


def test_model_left_as_found_after_a_failure() -> None:
    case = box_case(2)
    model = Failing(case.model, fail_at=4).train()
    with pytest.raises(RuntimeError, match="boom"):
        explainers.create("dm", model, **FAST)(case.x)
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_wrong_rank_and_dtype_are_input_errors() -> None:
    case = box_case(2)
    explainer = explainers.create("dm", case.model, **FAST)
    with pytest.raises(InputError, match="shape"):
        explainer(case.x[0])
    with pytest.raises(InputError, match="floating-point"):
        explainer((case.x * 100).long())
    with pytest.raises(InputError, match=r"torch\.Tensor"):
        explainer(case.x.numpy())
    with pytest.raises(InputError, match="NaN"):
        explainer(case.x * float("nan"))


class Returns(nn.Module):
    def __init__(self, make: object) -> None:
        super().__init__()
        self.make = make
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> object:
        return self.make(x * self.weight)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda x: x.mean(dim=(1, 2, 3)), "shape"),
        (lambda x: x, "shape"),
        (lambda x: (x.flatten(1)[:, :2],), "tuple"),
        (lambda x: x.flatten(1)[:1, :2], "shape"),
        (lambda x: (x.flatten(1)[:, :2] > 0).long(), "float"),
        (lambda x: x.flatten(1)[:, :7].reshape(2, -1), "shape"),
    ],
)
def test_models_without_class_logits_are_model_errors(make: object, message: str) -> None:
    x = box_case(2, batch=1).x
    with pytest.raises(ModelError, match=message):
        explainers.create("hdm", Returns(make), **FAST)(x)


def test_a_failing_model_is_a_model_error() -> None:
    model = nn.Linear(3, 2)
    with pytest.raises(ModelError, match="failed on the input"):
        explainers.create("dm", model, **FAST)(box_case(2).x)


def test_map_returned_on_the_input_device_when_computing_elsewhere() -> None:
    case = box_case(2)
    explainer = explainers.create("dm", case.model, device="cpu", **FAST)
    assert explainer(case.x).device == case.x.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["dm", "hdm", "mdm"])
def test_cuda_matches_the_contract(name: str, dims: int) -> None:
    case = box_case(dims, batch=2)
    model = case.model.cuda()
    saliency = explainers.create(name, model)(case.x.cuda())
    assert saliency.device.type == "cuda" and saliency.shape == (2, 1, *case.x.shape[2:])
    assert next(model.parameters()).device.type == "cuda"
    assert mass_inside(saliency[:1].cpu(), case.regions[0]) >= 0.8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_cpu_model_explained_on_cuda_is_moved_back() -> None:
    case = box_case(2)
    saliency = explainers.create("dm", case.model, device="cuda", **FAST)(case.x)
    assert saliency.device.type == "cpu"
    assert next(case.model.parameters()).device.type == "cpu"


def test_a_baseline_that_removes_nothing_is_warned_about() -> None:
    case = box_case(2)
    inside = float(case.x[0, 0][case.regions[0]].mean())
    explainer = explainers.create("dm", case.model, baseline="constant", baseline_value=inside, **FAST)
    with pytest.warns(UserWarning, match="keeps almost all of the target score") as caught:
        explainer(case.x, target=0)
    assert caught[0].filename == __file__
    assert explainer.last.summary()["warnings"] == [str(caught[0].message)]


@pytest.mark.parametrize("name", NAMES)
def test_a_model_that_ignores_the_input_gives_an_empty_map_and_a_warning(name: str) -> None:
    x = box_case(2).x
    explainer = explainers.create(name, Constant(), **FAST)
    with pytest.warns(UserWarning, match="keeps almost all of the target score"):
        saliency = explainer(x)
    assert saliency.shape == (1, 1, *x.shape[2:]) and saliency.max() == 0


def test_a_monai_metatensor_is_accepted_and_a_plain_tensor_returned() -> None:
    from monai.data import MetaTensor

    case = box_case(3)
    x = MetaTensor(case.x, affine=torch.diag(torch.tensor([2.0, 2.0, 3.0, 1.0])))
    saliency = explainers.create("hdm", case.model, **FAST)(x)
    assert type(saliency) is torch.Tensor
    assert mass_inside(saliency, case.regions[0]) >= 0.8
