"""Every method's options: a typed, frozen object with a doc and a range per field, validated once."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from medmdm import OptionError, explainers
from medmdm.explainers import (
    RISE,
    DynamicMasks,
    GradCAM,
    HierarchicalDynamicMasks,
    MDMReference,
    MultipleDynamicMasks,
    Occlusion,
)
from tests.conftest import box_case

METHODS = explainers.available()
BUNDLES = Path(__file__).parents[2] / "sample_data" / "bundles"


def conv_model() -> nn.Module:
    """A model every method can be made for (Grad-CAM needs a convolution)."""
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())


@pytest.mark.parametrize("name", METHODS)
def test_every_field_has_a_doc_and_defaults_that_validate(name: str) -> None:
    options_class = explainers.options_class(name)
    assert options_class.method == name
    assert options_class is explainers.create(name, conv_model()).Options
    defaults = options_class()
    assert defaults == options_class.from_mapping({})
    assert {"score", "seed", "mixed_precision", "max_batch"} <= set(options_class.names())
    for item in options_class.describe():
        assert item.doc and "\n" not in item.doc and item.type
        assert getattr(defaults, item.name) == item.default
        assert str(item).startswith(f"{item.name} (")


@pytest.mark.parametrize(
    "name, option, value",
    [
        ("hdm", "levels", 0),
        ("hdm", "levels", 9),
        ("hdm", "levels", 2.0),
        ("hdm", "levels", True),
        ("hdm", "stop_fraction", 1.5),
        ("hdm", "verify_threshold", 1.0),
        ("hdm", "removal_threshold", 0),
        ("hdm", "fill_width", -1),
        ("hdm", "steps", None),
        ("dm", "steps", 0),
        ("dm", "lr", 0),
        ("dm", "area_weight", -0.5),
        ("dm", "density_sigma", float("nan")),
        ("dm", "guide_saturation", 0.0),
        ("dm", "blur_sigma", 0),
        ("dm", "baseline", "zero"),
        ("dm", "benchmark_sizes", [1, 4]),
        ("dm", "benchmark_sizes", []),
        ("dm", "benchmark_sizes", 4),
        ("dm", "benchmark_sizes", "48"),
        ("mdm", "sizes", [4, 8.0]),
        ("saliency", "score", "margin"),
        ("saliency", "seed", "1"),
        ("saliency", "max_batch", 0),
        ("saliency", "mixed_precision", 1),
        ("integrated_gradients", "steps", 1),
        ("occlusion", "window", 0),
        ("occlusion", "window", (4, 0)),
        ("occlusion", "stride", "2"),
        ("rise", "masks", 0),
        ("rise", "cells", 1),
        ("rise", "keep_probability", 1.0),
        ("gradcam", "target_layer", 2),
    ],
)
def test_out_of_range_and_wrong_type_values_name_the_option(name: str, option: str, value: object) -> None:
    with pytest.raises(OptionError, match=f"^{name} option {option} must be .*, got ") as raised:
        explainers.make_options(name, {option: value})
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    "name, option, value, expected",
    [
        ("hdm", "levels", 0, "an int in [1, 8]"),
        ("hdm", "verify_threshold", 1, "a number in [0, 1)"),
        ("dm", "baseline", "zero", "one of 'auto', 'mean', 'blur', 'constant', 'minimum'"),
        ("dm", "max_batch", 0, "an int >= 1 or None"),
        ("dm", "benchmark_sizes", [4, 1], "a non-empty sequence of ints >= 2 or None"),
        ("occlusion", "window", "4", "an int or a non-empty sequence of ints >= 1 or None"),
        ("rise", "keep_probability", 0, "a number in (0, 1)"),
    ],
)
def test_messages_say_what_is_valid(name: str, option: str, value: object, expected: str) -> None:
    with pytest.raises(OptionError) as raised:
        explainers.make_options(name, {option: value})
    assert str(raised.value) == f"{name} option {option} must be {expected}, got {value!r}"


def test_a_misspelt_option_is_the_same_error_everywhere() -> None:
    model = box_case(2).model
    makers = [
        lambda: explainers.create("hdm", model, stpes=30),
        lambda: explainers.create("hdm", model, {"stpes": 30}),
        lambda: explainers.make_options("hdm", {"stpes": 30}),
        lambda: HierarchicalDynamicMasks(model, stpes=30),
        lambda: HierarchicalDynamicMasks.Options(stpes=30),
        lambda: HierarchicalDynamicMasks.Options.from_mapping({"stpes": 30}),
        lambda: HierarchicalDynamicMasks.Options().replace(stpes=30),
    ]
    messages = set()
    for make in makers:
        with pytest.raises(OptionError) as raised:
            make()
        messages.add(str(raised.value))
    (message,) = messages
    assert message.startswith("unknown option 'stpes' for hdm (did you mean 'steps'?); valid options: score,")
    several = r"unknown options 'stpes', 'xyz' for dm \(did you mean 'steps'\?\)"
    with pytest.raises(OptionError, match=several):
        explainers.make_options("dm", {"stpes": 1, "xyz": 2})


def test_options_are_frozen_and_replace_validates_again() -> None:
    options = DynamicMasks.Options(steps=30)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.steps = 40  # type: ignore[misc]
    assert options.replace(steps=40).steps == 40 and options.steps == 30
    with pytest.raises(OptionError, match="dm option steps"):
        options.replace(steps=0)


@pytest.mark.parametrize("name", METHODS)
def test_to_dict_is_json_ready_and_round_trips(name: str) -> None:
    options_class = explainers.options_class(name)
    changed = {"seed": 5, "max_batch": 7}
    if "benchmark_sizes" in options_class.names():
        changed["benchmark_sizes"] = (3, 5)
    if "window" in options_class.names():
        changed["window"] = (4, 6)
    options = options_class.from_mapping(changed)
    values = options.to_dict()
    assert json.loads(json.dumps(values)) == values
    assert list(values) == list(options_class.names())
    assert options_class.from_mapping(values) == options


def test_sequences_become_tuples_and_ints_floats() -> None:
    options = HierarchicalDynamicMasks.Options(benchmark_sizes=[4, 8], lr=1, baseline_value=0)
    assert options.benchmark_sizes == (4, 8) and options.to_dict()["benchmark_sizes"] == [4, 8]
    assert isinstance(options.lr, float) and isinstance(options.baseline_value, float)
    assert Occlusion.Options(window=[4, 5], stride=2).window == (4, 5)
    assert MultipleDynamicMasks.Options(sizes=(3,)).sizes == (3,)


def test_methods_keep_their_own_defaults() -> None:
    reference = MDMReference.Options()
    assert (reference.baseline, reference.steps, reference.min_steps) == ("constant", 20000, 2000)
    assert (reference.patience, reference.lr, reference.init_jitter) == (200, 3e-3, 0.0)
    assert MultipleDynamicMasks.Options().steps == 80 and MultipleDynamicMasks.Options().baseline == "auto"
    assert RISE.Options().score == "probability" and DynamicMasks.Options().score == "logit"
    assert explainers.options_class("integrated_gradients")().baseline == "constant"
    assert [item.doc for item in MDMReference.Options.describe() if item.name == "steps"] == [
        "most optimisation steps per stage"
    ]


def test_the_explainer_holds_its_options_object() -> None:
    case = box_case(2)
    given = DynamicMasks.Options(steps=4, min_steps=2)
    explainer = DynamicMasks(case.model, given, seed=3, device="cpu")
    assert explainer.options == given.replace(seed=3)
    assert explainer.device == torch.device("cpu") and explainer.progress is None
    mapped = explainers.create("dm", case.model, {"steps": 4, "min_steps": 2}, seed=3)
    assert mapped.options == explainer.options
    with pytest.raises(OptionError, match=r"dm takes DynamicMasks\.Options or a mapping"):
        DynamicMasks(case.model, HierarchicalDynamicMasks.Options())
    explanation = explainer.explain(case.x)
    assert explanation.options == explainer.options.to_dict()
    assert explanation.summary()["options"] == explanation.options
    assert "device" not in explanation.options and "progress" not in explanation.options


def test_gradcam_records_the_layer_it_chose() -> None:
    explainer = GradCAM(conv_model())
    assert explainer.options.target_layer == "0"
    with pytest.raises(OptionError, match="is not a layer"):
        GradCAM(conv_model(), target_layer="")


def test_accepted_options_keeps_the_options_a_method_has() -> None:
    recommended = {"baseline": "blur", "steps": 5, "levels": 2, "seed": 1}
    assert explainers.accepted_options("saliency", recommended) == {"seed": 1}
    assert explainers.accepted_options("integrated_gradients", recommended) == {
        "baseline": "blur",
        "steps": 5,
        "seed": 1,
    }
    assert explainers.accepted_options("hdm", recommended) == recommended
    with pytest.raises(OptionError, match="unknown explainer"):
        explainers.accepted_options("nope", recommended)


def test_the_sample_bundles_recommend_valid_options() -> None:
    metadata = sorted(BUNDLES.glob("*/configs/metadata.json"))
    assert metadata
    for path in metadata:
        recommended = json.loads(path.read_text())["medmdm"]["explain_options"]
        for name in METHODS:
            explainers.make_options(name, explainers.accepted_options(name, recommended))
