"""The option ``compile``: the model passes through ``torch.compile``, the maps stay those of the eager
model, and a model that cannot be compiled (or whose compiled pass fails) runs eagerly with one warning.

Inductor compiles slowly on a small CPU, so most tests compile with ``backend="aot_eager"`` (dynamo and
AOT autograd, without code generation) through a patched ``torch.compile``; the one inductor test is slow.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from medmdm import explainers
from medmdm.errors import ModelError, OptionError
from medmdm.explainers import base
from medmdm.testing import lesion_images

FAST = {"steps": 10, "min_steps": 5, "max_batch": 8, "levels": 1}


def tiny_cnn() -> nn.Module:
    """A lesion detector: the class-1 logit grows with the brightest 5x5 mean of the image."""
    model = nn.Sequential(
        nn.Conv2d(1, 1, 5, padding=2, bias=False), nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(1, 2)
    )
    with torch.no_grad():
        model[0].weight.fill_(1 / 25)
        model[3].weight.copy_(torch.tensor([[-8.0], [8.0]]))
        model[3].bias.copy_(torch.tensor([2.0, -2.0]))
    return model.eval()


@pytest.fixture(scope="module")
def case() -> tuple[nn.Module, torch.Tensor]:
    x, _, _ = lesion_images(2, 24)
    return tiny_cnn(), x


@pytest.fixture
def aot_eager(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """``torch.compile`` with the ``aot_eager`` backend; the modes it was asked for."""
    modes: list[str | None] = []
    real = torch.compile

    def compile_(model: nn.Module, *, mode: str | None = None, dynamic: bool | None = None) -> nn.Module:
        modes.append(mode)
        return real(model, backend="aot_eager", dynamic=dynamic)

    monkeypatch.setattr(torch, "compile", compile_)
    torch._dynamo.reset()
    return modes


def _explain(model: nn.Module, x: torch.Tensor, method: str = "hdm", **options: object):
    fast = explainers.accepted_options(method, FAST)
    return explainers.create(method, model, **fast, **options).explain(x, 1)


@pytest.mark.parametrize("method", ["hdm", "saliency"])
def test_compiled_maps_equal_the_eager_ones(case, aot_eager, method: str) -> None:
    model, x = case
    eager = _explain(model, x, method)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compiled = _explain(model, x, method, compile=True)
    assert not [w for w in caught if "torch.compile" in str(w.message)]  # the compiled model ran
    assert aot_eager == [None] and compiled.warnings == eager.warnings
    torch.testing.assert_close(compiled.map, eager.map, atol=1e-5, rtol=0)
    torch.testing.assert_close(compiled.score_masked, eager.score_masked, atol=1e-4, rtol=1e-4)
    assert compiled.options["compile"] is True and compiled.samples == eager.samples


def test_the_mode_is_passed_on(case, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[dict] = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: asked.append(kwargs) or model)
    _explain(*case, "saliency", compile="reduce-overhead")
    assert asked == [{"mode": "reduce-overhead", "dynamic": False}]


def _fails_to_compile(model: nn.Module, **kwargs: object) -> nn.Module:
    raise RuntimeError("no compiler\nfor this platform")


class _BrokenWhenCompiled(nn.Module):
    """What a compiled pass that raises looks like to the scorer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise torch._dynamo.exc.Unsupported("graph break in a custom op")


@pytest.mark.parametrize(
    ("compile_", "cause"),
    [
        (_fails_to_compile, "RuntimeError: no compiler for this platform"),
        (lambda model, **kwargs: _BrokenWhenCompiled(model), "Unsupported: graph break in a custom op"),
    ],
)
def test_a_model_that_does_not_compile_runs_eagerly_with_one_warning(
    case, monkeypatch: pytest.MonkeyPatch, compile_, cause: str
) -> None:
    model, x = case
    eager = _explain(model, x)
    calls = []
    monkeypatch.setattr(torch, "compile", lambda model, **kw: calls.append(kw) or compile_(model, **kw))
    with pytest.warns(UserWarning, match="torch.compile") as caught:
        fallen_back = _explain(model, x, compile="max-autotune")
    notes = [w for w in fallen_back.warnings if "torch.compile" in w]
    assert notes == [f"torch.compile (mode 'max-autotune') failed, so the model ran eagerly: {cause}"]
    assert len([w for w in caught if "torch.compile" in str(w.message)]) == 1 and len(calls) == 1
    torch.testing.assert_close(fallen_back.map, eager.map, atol=1e-6, rtol=0)
    assert fallen_back.samples == eager.samples


def test_an_eager_failure_is_still_the_model_s_error(case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", _fails_to_compile)
    with pytest.raises(ModelError, match="expected input"):
        _explain(case[0], torch.rand(2, 3, 24, 24), compile=True)


@pytest.mark.parametrize("value", ["fast", 1, None, "REDUCE-OVERHEAD"])
def test_bad_values_are_option_errors(case, value: object) -> None:
    with pytest.raises(OptionError, match="option compile must be one of False, True, 'default'"):
        explainers.create("hdm", case[0], compile=value)


def test_the_option_is_every_method_s(case) -> None:
    for name in explainers.available():
        assert explainers.options_class(name)().compile is False


@pytest.mark.slow
def test_inductor_gives_the_eager_map(case) -> None:
    model, x = case
    torch._dynamo.reset()
    eager = _explain(model, x, "hdm")
    compiled = _explain(model, x, "hdm", compile=True)
    assert not [w for w in compiled.warnings if "torch.compile" in w]
    torch.testing.assert_close(compiled.map, eager.map, atol=1e-4, rtol=0)


def test_compiled_model_is_torch_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    asked = []
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: asked.append(kwargs) or model)
    model = nn.Identity()
    assert base.compiled_model(model, True) is model and base.compiled_model(model, "default") is model
    assert asked == [{"mode": None, "dynamic": False}, {"mode": "default", "dynamic": False}]
