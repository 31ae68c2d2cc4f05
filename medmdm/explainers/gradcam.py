"""Grad-CAM and Grad-CAM++ through ``monai.visualize``, made safe to call on a model you keep.

MONAI's CAM classes are used for the maps; around them this module fixes what makes them unsafe
or wrong behind our contract:

- ``ModelWithHooks`` registers a forward and a full backward hook on the target layer and keeps
  no handle: they stay on the model for good. Here every hook added is removed after each call,
  also after a failure, and the module's backward-hook kind is restored.
- A full backward hook fails when a later in-place operation (``ReLU(inplace=True)``) modifies the
  hooked output, and MONAI switches ``inplace`` off only on the target layer itself (and never
  back). Here every module's ``inplace`` flag is off during the call and restored after.
- ``class_idx`` as a tensor selects ``logits[:, idx]``, a (B, B) block, and back-propagates the
  sum of every class over every sample; Grad-CAM++ also broadcasts its (B,) scores against the
  last spatial axis. Here each call gets one int class: images are grouped by target class, and
  Grad-CAM++ runs one image at a time.
- The default ``postprocessing`` maps the maximum to 0; here the raw map is normalised per image
  so that 1 = most important.
- ``ModelWithHooks`` calls ``model.zero_grad()``, dropping gradients the caller kept; here they
  are restored.
- With frozen parameters no gradient reaches an inner layer; here the input requires grad.

References
----------
Selvaraju et al. "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
ICCV 2017, arXiv:1610.02391.
Chattopadhay, Sarkar, Howlader, Balasubramanian. "Grad-CAM++: Improved Visual Explanations for Deep
Convolutional Networks", WACV 2018, arXiv:1710.11063.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import monai.visualize
import torch
from torch import nn

from medmdm.errors import ModelError, OptionError
from medmdm.explainers.base import Explainer, ModelScorer
from medmdm.explainers.explanation import Explanation
from medmdm.explainers.masks import normalise
from medmdm.explainers.one_shot import single_level_explanation
from medmdm.explainers.options import ExplainerOptions, option
from medmdm.explainers.targets import BoundTarget, ClassTarget, class_logits


def last_conv_layer(model: nn.Module) -> str:
    """Name of the last ``Conv2d`` or ``Conv3d`` module of ``model`` (in registration order).

    Raises
    ------
    ModelError
        If the model has none.
    """
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d | nn.Conv3d)]
    if not names:
        raise ModelError(
            f"{type(model).__name__} has no Conv2d or Conv3d layer for Grad-CAM; pass target_layer, "
            "the name of a layer with spatial output (see model.named_modules())"
        )
    return names[-1]


@contextmanager
def restored(model: nn.Module, layer: nn.Module) -> Iterator[None]:
    """Undo what MONAI's hooks do to ``model``: hooks on ``layer``, ``inplace`` flags, gradients.

    Inside the block every module's ``inplace`` flag is False (a full backward hook cannot see an
    output modified in place).
    """
    forward = set(layer._forward_hooks)
    backward = set(layer._backward_hooks)
    full_backward = layer._is_full_backward_hook
    inplace = [(m, m.inplace) for m in model.modules() if isinstance(getattr(m, "inplace", None), bool)]
    grads = [(p, p.grad) for p in model.parameters()]
    try:
        for module, _ in inplace:
            module.inplace = False
        yield
    finally:
        for key in set(layer._forward_hooks) - forward:
            del layer._forward_hooks[key]
            layer._forward_hooks_with_kwargs.pop(key, None)
            layer._forward_hooks_always_called.pop(key, None)
        for key in set(layer._backward_hooks) - backward:
            del layer._backward_hooks[key]
        layer._is_full_backward_hook = full_backward
        for module, flag in inplace:
            module.inplace = flag
        for param, grad in grads:
            param.grad = grad


@contextmanager
def logits_only(model: nn.Module) -> Iterator[None]:
    """Inside the block ``model`` returns its class logits, the tensor MONAI's CAM indexes.

    A mapping output gives its ``"logits"`` entry; an output without (B, classes) logits is a
    :class:`ModelError`. The hook is removed on exit, also after a failure.
    """
    handle = model.register_forward_hook(lambda module, args, output: class_logits(output))
    try:
        yield
    finally:
        handle.remove()


def _identity(maps: torch.Tensor) -> torch.Tensor:
    return maps


class GradCAM(Explainer):
    """Gradient-weighted class activation map of a convolutional layer (``monai.visualize.GradCAM``).

    The layer's activations weighted by the spatial mean of the class logit's gradient, summed
    over channels, ReLU, upsampled (bi/trilinear) to the input and normalised per image. The
    logit is differentiated whatever ``score`` is (``score`` sets the recorded scores). Cost: one
    forward and backward pass per image (plus 3 scoring samples). The map's resolution is the
    layer's; a layer deep in the network gives a coarse map. Explains class targets only. The
    model may also return a mapping with ``"logits"``. ``options.target_layer`` holds the name of
    the layer used, also when it was chosen.

    Raises
    ------
    OptionError
        If ``target_layer`` names no module of the model.
    ModelError
        If ``target_layer`` is None and the model has no convolution.
    """

    @dataclass(frozen=True)
    class Options(ExplainerOptions):
        """Options of ``gradcam``."""

        method = "gradcam"

        target_layer: str | None = option(
            None, "name of the layer to explain, as in model.named_modules(); None: the last Conv2d/Conv3d"
        )

    target_types = (ClassTarget,)
    _cam: ClassVar[type] = monai.visualize.GradCAM
    _images_per_call: ClassVar[int | None] = None

    def __init__(
        self, model: nn.Module, options: ExplainerOptions | Mapping[str, Any] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model, options, **kwargs)
        layer = self.options.target_layer
        if layer is None:
            self.options = self.options.replace(target_layer=last_conv_layer(model))
        elif layer not in dict(model.named_modules()) or not layer:
            raise OptionError(
                f"target_layer {layer!r} is not a layer of {type(model).__name__}; see model.named_modules()"
            )

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        target_layer = self.options.target_layer
        layer = dict(self.model.named_modules())[target_layer]
        maps = torch.zeros_like(x[:, :1])
        chunk = self._images_per_call or self.options.max_batch or x.shape[0]
        autocast = (
            torch.autocast(device_type=x.device.type, dtype=scorer.autocast_dtype)
            if scorer.autocast_dtype is not None
            else nullcontext()
        )
        with (
            restored(self.model, layer),
            logits_only(self.model),
            torch.enable_grad(),
            autocast,
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("error", message="Backward hook for", category=UserWarning)
            cam = self._cam(self.model, target_layer, postprocessing=_identity)
            for cls in target.index.unique().tolist():
                for index in (target.index == cls).nonzero()[:, 0].split(chunk):
                    maps[index] = self._call(cam, x[index], cls).detach().float()
                    scorer.samples += len(index)
        saliency = normalise(maps, x.ndim - 2)
        return single_level_explanation(self.name, x, target, scorer, score_original, saliency)

    def _call(self, cam: Any, x: torch.Tensor, cls: int) -> torch.Tensor:
        hooked = cam.nn_module
        hooked.activations.clear()
        hooked.gradients.clear()
        try:
            return cam(x.detach().clone().requires_grad_(True), class_idx=cls)
        except (KeyError, UserWarning, ValueError) as error:
            problem = self._layer_problem(hooked, x, error)
            if problem is None:
                raise
            raise ModelError(f"target_layer {self.options.target_layer!r}: {problem}") from error

    def _layer_problem(self, hooked: Any, x: torch.Tensor, error: Exception) -> str | None:
        """What MONAI's error says about the target layer, if it is about the layer."""
        activation = hooked.activations.get(self.options.target_layer)
        if isinstance(error, KeyError) and activation is None:
            return "the forward pass did not reach it; choose a layer that the output depends on"
        if isinstance(error, UserWarning):
            return "the gradient did not reach it; choose a layer that the class logit depends on"
        if isinstance(error, ValueError) and activation is not None and activation.ndim != x.ndim:
            return (
                f"its output has shape {tuple(activation.shape)}, not (N, C, *spatial) with "
                f"{x.ndim - 2} spatial axes; choose a convolutional layer"
            )
        return None


class GradCAMpp(GradCAM):
    """Grad-CAM++ (``monai.visualize.GradCAMpp``): channel weights from higher-order gradient terms.

    Same options, cost and layer choice as :class:`GradCAM`; runs one image per model call
    (MONAI's Grad-CAM++ mixes up images of a batch).
    """

    @dataclass(frozen=True)
    class Options(GradCAM.Options):
        """Options of ``gradcampp``."""

        method = "gradcampp"

    _cam: ClassVar[type] = monai.visualize.GradCAMpp
    _images_per_call: ClassVar[int | None] = 1
