"""Target objects: every accepted form, every kind on the explainers, with answers known by construction."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from medmdm import InputError, ModelError, explainers
from medmdm.explainers import (
    CallableTarget,
    ClassTarget,
    PrototypeTarget,
    RegionTarget,
    as_target,
)
from medmdm.explainers.gradcam import GradCAM, GradCAMpp
from medmdm.explainers.gradients import IntegratedGradients, Saliency
from medmdm.explainers.masks import normalise
from medmdm.explainers.occlusion import Occlusion
from medmdm.explainers.rise import RISE
from medmdm.testing import BoxModel, PrototypeNet, ThresholdSegmenter, box_image, region_mask
from tests.conftest import mass_inside, peak_inside

FAST = {"steps": 20, "min_steps": 5}
SPATIAL = {2: (32, 32), 3: (16, 16, 16)}
BOX = {2: ((8, 18), (12, 22)), 3: ((3, 11), (4, 12), (5, 13))}
TWO_BOXES = (((4, 12), (4, 12)), ((18, 28), (16, 26)))
PATCH_POSITION = {2: (10, 20), 3: (5, 9, 10)}


def margin(logits: torch.Tensor) -> torch.Tensor:
    """Class 1 minus class 0: twice the class-1 logit of the box model."""
    return logits[:, 1] - logits[:, 0]


def box_images(dims: int, batch: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with one bright box, and the box as a bool mask."""
    return box_image(SPATIAL[dims], BOX[dims], batch=batch), region_mask(SPATIAL[dims], BOX[dims])


def prototype_case(dims: int) -> tuple[PrototypeNet, torch.Tensor, torch.Tensor]:
    """A prototype network whose prototype 2 is the features at a known patch, a bright box there."""
    spatial = SPATIAL[dims]
    model = PrototypeNet(spatial_dims=dims)
    patch = model.receptive_field(PATCH_POSITION[dims], spatial)
    x = box_image(spatial, patch, seed=1)
    model.set_prototype(2, x, PATCH_POSITION[dims])
    return model, x, region_mask(spatial, patch)


# --- as_target: every accepted form ---------------------------------------------------------------


@pytest.mark.parametrize(
    "given, kind, index",
    [
        (None, ClassTarget, None),
        (1, ClassTarget, 1),
        ([1, 0], ClassTarget, [1, 0]),
        (torch.tensor([0, 1]), ClassTarget, [0, 1]),
        ("2", ClassTarget, 2),
        ("class:2", ClassTarget, 2),
        (" prototype : 3 ", PrototypeTarget, 3),
        ("region:1", RegionTarget, 1),
    ],
)
def test_as_target_forms(given: object, kind: type, index: object) -> None:
    target = as_target(given)
    assert type(target) is kind
    value = target.label if kind is RegionTarget else target.index
    assert (value.tolist() if isinstance(value, torch.Tensor) else value) == index


def test_as_target_keeps_objects_and_wraps_callables() -> None:
    region = RegionTarget(1, score="probability")
    assert as_target(region) is region
    target = as_target(margin)
    assert isinstance(target, CallableTarget) and target.function is margin and target.name == "margin"


@pytest.mark.parametrize(
    "given", [0.5, True, [0.5, 1.0], [], "foo", "class:", "class:-1", "pixel:2", "prototype:x", object()]
)
def test_bad_forms_are_input_errors(given: object) -> None:
    with pytest.raises(InputError, match="target"):
        as_target(given)


def test_bad_target_options_are_input_errors() -> None:
    with pytest.raises(InputError, match="score"):
        ClassTarget(1, score="margin")
    with pytest.raises(InputError, match="score"):
        RegionTarget(1, score="softmax")
    with pytest.raises(InputError, match="scalar"):
        RegionTarget(1, region=torch.tensor(1))
    with pytest.raises(InputError, match="callable"):
        CallableTarget(3)
    with pytest.raises(InputError, match="integers"):
        PrototypeTarget(1.5)


# --- binding to a model output ----------------------------------------------------------------------


def test_class_target_binds_the_predicted_or_given_class() -> None:
    logits = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert ClassTarget().bind(logits, 2, "logit").index.tolist() == [1, 0]
    bound = ClassTarget([2, 1], score="probability").bind({"logits": logits}, 2, "logit")
    assert bound.target.score == "probability"
    torch.testing.assert_close(bound.scores(logits), torch.softmax(logits, 1)[[0, 1], [2, 1]])
    assert ClassTarget(2).bind(logits, 2, "probability").target.score == "probability"
    with pytest.raises(InputError, match="out of range"):
        ClassTarget(3).bind(logits, 2, "logit")
    with pytest.raises(InputError, match="3 entries for a batch of 2"):
        ClassTarget([0, 1, 1]).bind(logits, 2, "logit")
    with pytest.raises(ModelError, match="'logits'"):
        ClassTarget(1).bind({"scores": logits}, 2, "logit")


def test_prototype_target_needs_prototype_similarities() -> None:
    similarities = torch.tensor([[0.5, 9.0], [2.0, 1.0]])
    output = {"logits": torch.zeros(2, 2), "prototypes": similarities}
    bound = PrototypeTarget([1, 0]).bind(output, 2, "logit")
    torch.testing.assert_close(bound.scores(output), torch.tensor([9.0, 2.0]))
    with pytest.raises(ModelError, match="'prototypes'"):
        PrototypeTarget(0).bind(torch.zeros(2, 2), 2, "logit")
    with pytest.raises(InputError, match="out of range for a model with 2 prototypes"):
        PrototypeTarget(2).bind(output, 2, "logit")


def test_region_target_predicted_and_given_regions() -> None:
    logits = torch.zeros(2, 3, 4, 4)
    logits[0, 1, :2, :2] = 5.0  # image 0 predicts label 1 in 4 voxels, image 1 nowhere
    logits[:, 2, 3, 3] = 5.0
    with pytest.raises(InputError, match=r"predicts no voxel of label \[1, 1\] in image\(s\) \[1\]"):
        RegionTarget(1).bind(logits, 2, "logit")
    bound = RegionTarget([1, 2]).bind(logits, 2, "probability")
    assert bound.region.flatten(1).sum(1).tolist() == [4, 1]
    probability = torch.softmax(torch.tensor([0.0, 5.0, 0.0]), 0)[1]
    torch.testing.assert_close(bound.scores(logits), torch.stack([probability, probability]))
    given = RegionTarget(1, region=torch.ones(4, 4)).bind(logits, 2, "logit")
    torch.testing.assert_close(given.scores(logits), torch.tensor([5.0 * 4 / 16, 0.0]))
    assert given.description()["region"] == "given"
    with pytest.raises(InputError, match=r"shape \(3, 3\)"):
        RegionTarget(1, region=torch.ones(3, 3)).bind(logits, 2, "logit")
    with pytest.raises(InputError, match=r"region is empty for image\(s\) \[0\]"):
        RegionTarget(1, region=torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])).bind(logits, 2, "logit")
    with pytest.raises(ModelError, match="segmentation output"):
        RegionTarget(1).bind(torch.zeros(2, 3), 2, "logit")


def test_single_channel_region_is_where_the_logit_is_positive() -> None:
    logits = torch.full((1, 1, 3, 3), -1.0)
    logits[0, 0, 1, 1] = 2.0
    bound = RegionTarget(0).bind(logits, 1, "probability")
    assert bound.region.sum() == 1
    torch.testing.assert_close(bound.scores(logits), torch.sigmoid(torch.tensor([2.0])))


def test_callable_target_checks_what_the_function_returns() -> None:
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    torch.testing.assert_close(
        as_target(margin).bind(logits, 2, "logit").scores(logits), torch.tensor([2.0, -1.0])
    )
    with pytest.raises(InputError, match=r"returned shape \(2, 1\) for 2 samples"):
        CallableTarget(lambda out: out[:, :1]).bind(logits, 2, "logit")
    with pytest.raises(InputError, match=r"returned torch\.int64"):
        CallableTarget(lambda out: out.argmax(1)).bind(logits, 2, "logit")
    with pytest.raises(InputError, match="failed on the model output"):
        CallableTarget(lambda out: out.no_such_attribute).bind(logits, 2, "logit")


def test_bound_target_rows() -> None:
    logits = torch.zeros(2, 2, 5, 5)
    logits[:, 1, 3:] = 1.0
    bound = RegionTarget([0, 1]).bind(logits, 2, "logit")
    assert bound.region.flatten(1).sum(1).tolist() == [15, 10]
    rows = bound[torch.tensor([1, 1, 0])]
    assert len(rows) == 3 and rows.index.tolist() == [1, 1, 0]
    assert torch.equal(rows.region[2], bound.region[0])
    assert len(bound[1:]) == 1 and bound[[0, 0]].index.tolist() == [0, 0]
    assert len(CallableTarget(margin).bind(torch.zeros(4, 2), 4, "logit")[:3]) == 3


# --- every kind on the dynamic-mask explainers ----------------------------------------------------


@pytest.mark.parametrize("name", ["dm", "hdm"])
def test_class_region_and_callable_targets_explain_the_box(name: str, dims: int) -> None:
    # The segmenter's mean channel-1 logit over the box it predicts equals the box model's class-1
    # logit, and the margin is twice that logit; the objective compares scores in units of the
    # image's evidence, so all three give the same map.
    x, box = box_images(dims)
    explainer = explainers.create(name, BoxModel(BOX[dims]), **FAST)
    by_class = explainer(x, ClassTarget(1))
    assert peak_inside(by_class, box) and mass_inside(by_class, box) >= 0.8
    by_margin = explainer(x, CallableTarget(margin))
    assert explainer.last.target_description["kind"] == "callable"
    torch.testing.assert_close(by_margin, by_class, atol=1e-5, rtol=0)
    explainer = explainers.create(name, ThresholdSegmenter(threshold=0.3), **FAST)
    by_region = explainer(x, RegionTarget(1))
    assert explainer.last.target_description["voxels"] == [int(box.sum())]
    torch.testing.assert_close(by_region, by_class, atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["dm", "hdm"])
def test_a_prototype_is_explained_at_its_patch(name: str, dims: int) -> None:
    model, x, patch = prototype_case(dims)
    explainer = explainers.create(name, model, **FAST)
    saliency = explainer(x, PrototypeTarget(2))
    assert explainer.last.score_original.item() == pytest.approx(torch.log(torch.tensor(1e4)).item())
    assert peak_inside(saliency, patch)
    assert mass_inside(saliency, patch) >= 0.4  # the patch is 2% (2D) and 3% (3D) of the image
    assert explainer.last.score_masked > explainer.last.score_remaining


def test_a_given_region_picks_one_of_two_boxes() -> None:
    x = box_image(SPATIAL[2], *TWO_BOXES)
    in_a, in_b = (region_mask(SPATIAL[2], box) for box in TWO_BOXES)
    explainer = explainers.create("dm", ThresholdSegmenter(), **FAST)
    predicted = explainer(x, RegionTarget(1))
    assert explainer.last.target_description["voxels"] == [int(in_a.sum() + in_b.sum())]
    # Both boxes carry a good share; the density weighting favours the one kept more densely.
    assert min(mass_inside(predicted, in_a), mass_inside(predicted, in_b)) >= 0.25
    chosen = explainer(x, RegionTarget(1, region=in_a))
    assert peak_inside(chosen, in_a) and mass_inside(chosen, in_a) >= 0.8


@pytest.mark.parametrize("name", ["dm", "hdm", "mdm"])
def test_batch_with_per_sample_regions_equals_single_calls(name: str) -> None:
    x = box_image(SPATIAL[2], *TWO_BOXES, batch=2)
    regions = torch.stack([region_mask(SPATIAL[2], box) for box in TWO_BOXES])
    explainer = explainers.create(name, ThresholdSegmenter(), **FAST)
    batch = explainer(x, RegionTarget(1, region=regions))
    assert explainer.last.target.tolist() == [1, 1]
    singles = torch.cat([explainer(x[i : i + 1], RegionTarget(1, region=regions[i])) for i in range(2)])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)
    assert all(peak_inside(batch[i : i + 1], regions[i]) for i in range(2))


def test_per_sample_prototypes_equal_single_calls() -> None:
    model, first, _ = prototype_case(2)
    spatial, position = SPATIAL[2], (22, 8)
    patch = region_mask(spatial, model.receptive_field(position, spatial))
    second = box_image(spatial, model.receptive_field(position, spatial), seed=2)
    model.set_prototype(0, second, position)
    x = torch.cat([first, second])
    explainer = explainers.create("hdm", model, **FAST)
    batch = explainer(x, PrototypeTarget([2, 0]))
    assert explainer.last.target.tolist() == [2, 0]
    singles = torch.cat([explainer(x[:1], "prototype:2"), explainer(x[1:], "prototype:0")])
    torch.testing.assert_close(batch, singles, atol=1e-5, rtol=0)
    assert peak_inside(batch[1:], patch)


class Pair(nn.Module):
    """Returns a tuple: the inner model's logits and their softmax."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.inner(x)
        return logits, logits.softmax(1)


def test_chunked_mapping_and_tuple_outputs_change_nothing() -> None:
    model, x, _ = prototype_case(2)
    whole = explainers.create("dm", model, **FAST)(x, "prototype:2")
    torch.testing.assert_close(whole, explainers.create("dm", model, max_batch=3, **FAST)(x, "prototype:2"))
    x, _ = box_images(2, batch=2)
    by_class = explainers.create("dm", BoxModel(BOX[2]), **FAST)(x, 1)
    by_tuple = explainers.create("dm", Pair(BoxModel(BOX[2])), max_batch=3, **FAST)(
        x, lambda out: out[0][:, 1]
    )
    torch.testing.assert_close(by_tuple, by_class, atol=1e-5, rtol=0)


def test_the_explanation_describes_the_target() -> None:
    x, box = box_images(2)
    model = ThresholdSegmenter()
    explainer = explainers.create("dm", model, score="probability", **FAST)
    explanation = explainer.explain(x, RegionTarget(1))
    expected = torch.sigmoid(2 * model.gain * (x[0, 0][box] - model.threshold)).mean()
    torch.testing.assert_close(explanation.score_original, expected.detach()[None])
    summary = explanation.summary()
    assert summary["target"] == [1]
    assert summary["target_description"] == {
        "kind": "region",
        "index": [1],
        "score": "probability",
        "region": "predicted",
        "voxels": [int(box.sum())],
    }
    json.dumps(summary)
    explainer = explainers.create("dm", BoxModel(BOX[2]), **FAST)
    assert explainer.explain(x, margin).target is None
    assert explainer.last.summary()["target_description"] == {
        "kind": "callable",
        "index": None,
        "function": "margin",
    }


def test_a_callable_sees_float32_under_mixed_precision() -> None:
    seen: set[torch.dtype] = set()

    def class_one(logits: torch.Tensor) -> torch.Tensor:
        seen.add(logits.dtype)
        return logits[:, 1]

    explainers.create("dm", BoxModel(BOX[2]), mixed_precision=True, **FAST)(box_images(2)[0], class_one)
    assert seen == {torch.float32}


class WrongBatch(nn.Module):
    """Logits for the batch, but prototype similarities for one sample only."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": x.flatten(1)[:, :2] * self.weight, "prototypes": torch.zeros(1, 3)}


def test_output_errors_name_the_problem() -> None:
    x, _ = box_images(2)
    box_model = BoxModel(BOX[2])
    with pytest.raises(ModelError, match="'prototypes'"):
        explainers.create("dm", box_model, **FAST)(x, "prototype:0")
    with pytest.raises(ModelError, match="segmentation output"):
        explainers.create("dm", box_model, **FAST)(x, "region:1")
    with pytest.raises(InputError, match="predicts no voxel"):
        explainers.create("dm", ThresholdSegmenter(threshold=5.0), **FAST)(x, "region:1")
    with pytest.raises(ModelError, match=r"shape \(1, 3\) for a batch of"):
        explainers.create("dm", WrongBatch(), **FAST)(box_images(2, batch=2)[0], 1)


# --- the baselines ------------------------------------------------------------------------------------


def test_gradients_of_a_region_target_match_the_analytic_answer() -> None:
    # The segmenter is linear: the mean channel-1 logit over the box has gradient gain / |box|
    # inside the box and 0 outside; integrated gradients from 0 are x times that.
    x, box = box_images(2)
    model = ThresholdSegmenter()
    torch.testing.assert_close(Saliency(model)(x, "region:1")[0, 0], box.float())
    integrated = IntegratedGradients(model, steps=4)(x, RegionTarget(1))
    torch.testing.assert_close(integrated, normalise(x * box, 2))


def test_saliency_of_an_exact_prototype_match_is_empty() -> None:
    # At distance 0 the similarity is at its maximum: its gradient is exactly 0.
    model, x, _ = prototype_case(2)
    with pytest.warns(UserWarning, match="saliency found no evidence"):
        assert Saliency(model)(x, "prototype:2").max() == 0


@pytest.mark.parametrize("method", [IntegratedGradients, Occlusion, RISE], ids=lambda m: m.name)
def test_perturbation_baselines_find_the_prototype_patch(method: type) -> None:
    options = {IntegratedGradients: {"steps": 8}, RISE: {"masks": 300}}.get(method, {})
    model, x, patch = prototype_case(2)
    assert peak_inside(method(model, **options)(x, "prototype:2"), patch)


@pytest.mark.parametrize("method", [Saliency, IntegratedGradients, Occlusion, RISE], ids=lambda m: m.name)
def test_baselines_explain_region_and_callable_targets(method: type) -> None:
    options = {IntegratedGradients: {"steps": 8}, RISE: {"masks": 300}}.get(method, {})
    x, box = box_images(2)
    assert peak_inside(method(ThresholdSegmenter(), **options)(x, "region:1"), box)
    explainer = method(BoxModel(BOX[2]), **options)
    assert peak_inside(explainer(x, margin), box)
    assert explainer.last.target is None


@pytest.mark.parametrize("method", [GradCAM, GradCAMpp], ids=lambda m: m.name)
def test_gradcam_explains_class_targets_only(method: type) -> None:
    model, x, _ = prototype_case(2)
    explainer = method(model)
    for target in ("prototype:2", RegionTarget(1), margin):
        with pytest.raises(InputError, match=f"{method.name} explains class targets only"):
            explainer(x, target)
    # A class of a model returning a mapping with "logits" is explained, and no hook is left.
    assert explainer(x, ClassTarget(1)).max() == 1
    assert explainer.last.target_description == {"kind": "class", "index": [1], "score": "logit"}
    assert not any(module._forward_hooks or module._backward_hooks for module in model.modules())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["region", "prototype"])
def test_targets_bound_on_cuda(kind: str) -> None:
    if kind == "prototype":
        model, x, evidence = prototype_case(2)
        target = PrototypeTarget(2)
    else:
        (x, evidence), model, target = box_images(2), ThresholdSegmenter(), RegionTarget(1)
    explainer = explainers.create("hdm", model.cuda(), mixed_precision=False, **FAST)
    saliency = explainer(x.cuda(), target)
    assert saliency.device.type == "cuda" and explainer.last.target.device.type == "cuda"
    assert peak_inside(saliency.cpu(), evidence)
