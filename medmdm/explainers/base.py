"""The explainer contract: the base class and the registry (what one explanation records is
:mod:`medmdm.explainers.explanation`).

Every explainer is called the same way::

    explainer = medmdm.explainers.create("hdm", model, steps=30)
    saliency = explainer(x, target=None)        # (B, 1, *spatial), values in [0, 1]
    details = explainer.last                     # Explanation of that call
    options = explainer.options                  # frozen HierarchicalDynamicMasks.Options, steps 30

The base class does the shared work: input checks, target resolution, freezing the model and
restoring it afterwards, moving to the compute device and back, timing, and bookkeeping.
A method declares its ``Options`` (see :mod:`medmdm.explainers.options`) and implements
:meth:`Explainer._attribute`, which reads ``self.options``. What is explained, ``target``, is
any form :func:`~medmdm.explainers.targets.as_target` accepts: a class, a prototype, a
segmentation region or a function of the model output; every score goes through the bound target.
"""

from __future__ import annotations

import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from medmdm.errors import InputError, ModelError, OptionError, one_line
from medmdm.explainers.explanation import Explanation, ProgressCallback
from medmdm.explainers.options import ExplainerOptions
from medmdm.explainers.targets import (
    BoundTarget,
    ClassTarget,
    ScoreKind,
    Target,
    TargetLike,
    as_target,
    class_logits,
)
from medmdm.explainers.targets import resolve_targets as resolve_targets


def _tensors(output: Any) -> list[torch.Tensor]:
    """Every tensor of a model output: a tensor, or tensors nested in mappings, tuples and lists."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for value in output.values() for t in _tensors(value)]
    if isinstance(output, tuple | list):
        return [t for value in output for t in _tensors(value)]
    return []


def _floats_mapped(output: Any, change: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """The output with ``change`` applied to every floating-point tensor in it (its structure kept)."""
    if isinstance(output, torch.Tensor):
        return change(output) if output.is_floating_point() else output
    if isinstance(output, Mapping):
        return {key: _floats_mapped(value, change) for key, value in output.items()}
    if isinstance(output, tuple | list):
        return type(output)(_floats_mapped(value, change) for value in output)
    return output


def compiled_model(model: nn.Module, mode: bool | str) -> Callable[[torch.Tensor], Any]:
    """``model`` through :func:`torch.compile` in ``mode`` (True: the default mode), for fixed shapes."""
    return torch.compile(model, mode=None if mode is True else mode, dynamic=False)


def _concatenate(parts: list[Any]) -> Any:
    """Join the outputs of consecutive chunks of a batch along the batch axis."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, Mapping):
        return {key: _concatenate([part[key] for part in parts]) for key in first}
    if isinstance(first, tuple | list):
        return type(first)(_concatenate(list(items)) for items in zip(*parts, strict=True))
    raise ModelError(
        f"the model returned {type(first).__name__}; outputs passed in chunks must be tensors, "
        "or mappings, tuples or lists of tensors"
    )


class ModelScorer:
    """Target scores of a frozen model, counting the samples it passes.

    Parameters
    ----------
    model : nn.Module
        The model; its output is read by the target (logits (B, classes) for a class target).
    score : {"logit", "probability"}
        Score of a class given as a tensor of class indices: its logit, or its softmax
        probability (sigmoid for one output). Bound targets carry their own.
    autocast_dtype : torch.dtype, optional
        Run the model under autocast with this dtype.
    max_batch : int, optional
        Most samples per pass in :meth:`scores` and :meth:`all_outputs`.
    compile : bool or str
        The option ``compile``: pass the model through :func:`compiled_model` in this mode (True: the
        default one); False: eagerly. Where compiling or a compiled pass fails, the scorer passes the
        model eagerly from then on and says why in ``notes``.

    Attributes
    ----------
    samples : int
        Samples passed through the model so far.
    notes : list of str
        Warnings for the explanation (a failed ``torch.compile``).
    """

    def __init__(
        self,
        model: nn.Module,
        score: ScoreKind,
        autocast_dtype: torch.dtype | None = None,
        max_batch: int | None = None,
        compile: bool | str = False,
    ):
        self.model = model
        self.score = score
        self.autocast_dtype = autocast_dtype
        self.max_batch = max_batch
        self.compile = compile
        self.samples = 0
        self.notes: list[str] = []
        self._compiled: Callable[[torch.Tensor], Any] | None = None

    def output(self, x: torch.Tensor) -> Any:
        """Model output for ``x``, its floating-point tensors as float32.

        Raises
        ------
        ModelError
            If a tensor of the output does not have the batch on its first axis.
        """
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
                out = self._forward(x)
        else:
            out = self._forward(x)
        self.samples += x.shape[0]
        for tensor in _tensors(out):
            if tensor.ndim == 0 or tensor.shape[0] != x.shape[0]:
                raise ModelError(
                    f"the model returned shape {tuple(tensor.shape)} for a batch of {x.shape[0]}; "
                    "expected the batch on the first axis, as in logits (B, classes)"
                )
        return _floats_mapped(out, torch.Tensor.float)

    def _forward(self, x: torch.Tensor) -> Any:
        """The model's output for ``x``: compiled while compiling works, else eager."""
        if self.compile is False:
            return self.model(x)
        try:
            if self._compiled is None:
                self._compiled = compiled_model(self.model, self.compile)
            # A copy: CUDA graphs (mode "reduce-overhead") reuse their output memory in the next pass.
            return _floats_mapped(self._compiled(x), torch.Tensor.clone)
        except Exception as error:  # the eager model's own failure is raised by the eager pass below
            cause = one_line(error)[:300]  # dynamo's messages go on for pages
            self.notes.append(
                f"torch.compile (mode {self.compile!r}) failed, so the model ran eagerly: {cause}"
            )
            self.compile = False
            return self.model(x)

    def _bound(self, target: BoundTarget | torch.Tensor) -> BoundTarget:
        if isinstance(target, BoundTarget):
            return target
        return BoundTarget(ClassTarget(score=self.score), len(target), index=target)

    def scores_from_logits(self, logits: torch.Tensor, target: BoundTarget | torch.Tensor) -> torch.Tensor:
        """(N,) score of each sample from its model output (logits, for class indices)."""
        return self._bound(target).scores(logits)

    def __call__(self, x: torch.Tensor, target: BoundTarget | torch.Tensor) -> torch.Tensor:
        """(N,) score of ``target`` (bound, or class indices) for each sample of ``x``."""
        return self._bound(target).scores(self.output(x))

    @torch.no_grad()
    def scores(
        self, x: torch.Tensor, target: BoundTarget | torch.Tensor, owner: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(N,) scores without gradients, in chunks of ``max_batch`` samples.

        With ``owner``, (N,) the image each sample was made from, a pass holds the samples of one
        image only, in their order: each image's scores are those it gets when explained alone (a
        model's numerics may depend on the batch it shares).
        """
        chunk = self.max_batch or x.shape[0]
        if owner is None:
            return torch.cat(
                [self(x[i : i + chunk], target[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
            )
        out = torch.empty(x.shape[0], device=x.device)
        owner = owner.to(x.device)
        for image in owner.unique():
            for rows in (owner == image).nonzero()[:, 0].split(chunk):
                out[rows] = self(x[rows], target[rows])
        return out

    @torch.no_grad()
    def all_outputs(self, x: torch.Tensor) -> Any:
        """Model output for ``x`` without gradients, passed in chunks of ``max_batch`` samples."""
        chunk = self.max_batch or x.shape[0]
        return _concatenate([self.output(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])

    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, classes) logits without gradients, in chunks of ``max_batch`` samples."""
        return class_logits(self.all_outputs(x))


@contextmanager
def frozen(model: nn.Module, device: torch.device | None = None) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with frozen parameters, on ``device``; restore all on exit.

    The ``training`` flag of every submodule, every parameter's ``requires_grad`` flag and the
    model's device are restored, also when the body raises.
    """
    training = [(module, module.training) for module in model.modules()]
    grad_flags = [(param, param.requires_grad) for param in model.parameters()]
    original_device = model_device(model)
    moved = device is not None and original_device is not None and original_device != device
    try:
        if moved:
            model.to(device)
        model.eval()
        for param, _ in grad_flags:
            param.requires_grad_(False)
        yield model
    finally:
        if moved:
            model.to(original_device)
        for module, flag in training:
            module.training = flag
        for param, flag in grad_flags:
            param.requires_grad_(flag)


def model_device(model: nn.Module) -> torch.device | None:
    """Device of the model's first parameter (or buffer); None for a model with neither."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return None


@contextmanager
def tf32_enabled(enabled: bool) -> Iterator[None]:
    """Allow TF32 matmuls and convolutions inside the block; restore the global flags after."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        if enabled:
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def check_input(x: Any, name: str = "x") -> torch.Tensor:
    """Validate an image batch (or a map of one) and return it as a plain tensor.

    Raises
    ------
    InputError
        If ``x`` is not a floating-point tensor of shape (B, C, H, W) or (B, C, D, H, W),
        is empty, or holds NaN or infinite values; the message calls it ``name``.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim not in (4, 5):
        raise InputError(
            f"{name} must have shape (B, C, H, W) or (B, C, D, H, W); "
            f"got {x.ndim} dimensions {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise InputError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.numel() == 0:
        raise InputError(f"{name} is empty: shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise InputError(f"{name} holds NaN or infinite values")
    return x.as_subclass(torch.Tensor) if type(x) is not torch.Tensor else x


_REGISTRY: dict[str, type[Explainer]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(name: str, factory: type[Explainer], description: str) -> None:
    """Add an explainer class to the registry under ``name``."""
    if name in _REGISTRY:
        raise OptionError(f"an explainer named {name!r} is already registered")
    _REGISTRY[name] = factory
    _DESCRIPTIONS[name] = description


def available() -> list[str]:
    """Names of the registered explainers, sorted."""
    return sorted(_REGISTRY)


def describe(name: str) -> str:
    """One-line description of a registered explainer."""
    _check_name(name)
    return _DESCRIPTIONS[name]


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise OptionError(f"unknown explainer {name!r}; available: {', '.join(available())}")


def options_class(name: str) -> type[ExplainerOptions]:
    """The options class of the explainer registered as ``name``.

    Raises
    ------
    OptionError
        If the name is unknown.
    """
    _check_name(name)
    return _REGISTRY[name].Options


def make_options(name: str, values: Mapping[str, Any]) -> ExplainerOptions:
    """The options of the explainer registered as ``name`` from a mapping of option names to values.

    Raises
    ------
    OptionError
        If the name is unknown, or an option is unknown or invalid.
    """
    return options_class(name).from_mapping(values)


def create(
    name: str,
    model: nn.Module,
    options: ExplainerOptions | Mapping[str, Any] | None = None,
    *,
    device: str | torch.device | None = None,
    progress: ProgressCallback | None = None,
    **overrides: Any,
) -> Explainer:
    """Create the explainer registered as ``name`` for ``model``.

    Parameters
    ----------
    name : str
        One of :func:`available`.
    model : nn.Module
        Classifier returning logits (B, classes).
    options : ExplainerOptions or mapping, optional
        The explainer's options (:func:`options_class`), or a mapping of option names to values.
    device, progress
        Runtime arguments of :class:`Explainer`.
    **overrides
        Options by name, over ``options``.

    Raises
    ------
    OptionError
        If the name is unknown, or an option is unknown or invalid.
    """
    _check_name(name)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return _REGISTRY[name](model, options, device=device, progress=progress, **overrides)


def accepted_options(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are options of the explainer registered as ``name``.

    Options meant for several methods (a bundle's ``baseline``, a run's ``steps``) are applied this
    way to the methods that have them, and left out for the others.
    """
    names = options_class(name).names()
    return {key: value for key, value in values.items() if key in names}


class Explainer(ABC):
    """Base class of all explainers.

    Parameters
    ----------
    model : nn.Module
        The model; left as found after every call. Its output is read by the target: logits
        (B, classes) for a class target (see :mod:`medmdm.explainers.targets` for the others).
    options : ExplainerOptions or mapping, optional
        The method's options: an instance of its ``Options`` class, or a mapping of option names
        to values; None takes the defaults.
    device : str or torch.device, optional
        Where to compute; by default the model's device. The map is returned on ``x``'s device.
    progress : callable, optional
        Called with a :class:`ProgressEvent` during optimisation.
    **overrides
        Options by name, over ``options``.

    Attributes
    ----------
    Options : type
        The method's frozen options class; the base :class:`ExplainerOptions` holds those every
        method has (``score``, ``seed``, ``mixed_precision``, ``max_batch``, ``compile``).
    options : ExplainerOptions
        This explainer's options, an instance of ``Options``.
    name : str
        Registry name of the method, ``Options.method``.
    target_types : tuple of type
        The target kinds the method explains; any other is an :class:`InputError`.

    Raises
    ------
    OptionError
        An unknown option (naming the closest valid one) or an invalid value.
    """

    Options: ClassVar[type[ExplainerOptions]] = ExplainerOptions
    name: ClassVar[str] = ""
    target_types: ClassVar[tuple[type[Target], ...]] = (Target,)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = cls.Options.method

    def __init__(
        self,
        model: nn.Module,
        options: ExplainerOptions | Mapping[str, Any] | None = None,
        *,
        device: str | torch.device | None = None,
        progress: ProgressCallback | None = None,
        **overrides: Any,
    ) -> None:
        self.model = model
        self.options = self._options_from(options, overrides)
        self.device = torch.device(device) if device is not None else None
        self.progress = progress
        self.last: Explanation | None = None

    @classmethod
    def _options_from(
        cls, options: ExplainerOptions | Mapping[str, Any] | None, overrides: Mapping[str, Any]
    ) -> ExplainerOptions:
        if options is None or isinstance(options, Mapping):
            return cls.Options.from_mapping({**(options or {}), **overrides})
        if type(options) is not cls.Options:
            given = type(options).__qualname__
            raise OptionError(f"{cls.name} takes {cls.__name__}.Options or a mapping as options, got {given}")
        return options.replace(**overrides)

    def __call__(self, x: torch.Tensor, target: TargetLike = None) -> torch.Tensor:
        """Saliency of ``x`` for ``target``: (B, 1, *spatial) in [0, 1], on ``x``'s device.

        ``target`` is anything :func:`~medmdm.explainers.targets.as_target` accepts; None
        explains the predicted class of each image.
        """
        return self._run(x, target).map

    def explain(self, x: torch.Tensor, target: TargetLike = None) -> Explanation:
        """Explain ``x`` and return the :class:`Explanation`, also kept as ``self.last``."""
        return self._run(x, target)

    def _run(self, x: torch.Tensor, target: TargetLike) -> Explanation:
        start = time.perf_counter()
        x = check_input(x)
        wanted = as_target(target)
        if not isinstance(wanted, self.target_types):
            kinds = " and ".join(kind.kind for kind in self.target_types)
            raise InputError(f"{self.name} explains {kinds} targets only; got a {wanted.kind} target")
        device = self.device or model_device(self.model) or x.device
        with frozen(self.model, device), self._precision(device, x.ndim - 2) as autocast_dtype:
            scorer = ModelScorer(
                self.model, self.options.score, autocast_dtype, self.options.max_batch, self.options.compile
            )
            inputs = x.detach().to(device=device, dtype=torch.float32)
            try:
                # One image a pass: its map then does not depend on the others of the batch.
                outputs = _concatenate([scorer.all_outputs(image[None]) for image in inputs])
            except (ModelError, InputError):
                raise
            except Exception as error:
                raise ModelError(f"the model failed on the input: {error}") from error
            bound = wanted.bind(outputs, x.shape[0], self.options.score)
            explanation = self._attribute(inputs, bound, scorer, bound.scores(outputs))
        explanation.map = explanation.map.clamp(0, 1).to(x.device)
        explanation.warnings = [*scorer.notes, *explanation.warnings]
        explanation.target_description = bound.description()
        explanation.method = self.name
        explanation.options = self.options.to_dict()
        explanation.samples = scorer.samples
        explanation.seconds = time.perf_counter() - start
        self.last = explanation
        for note in explanation.warnings:
            warnings.warn(note, stacklevel=3)  # the caller of __call__ or explain
        return explanation

    @contextmanager
    def _precision(self, device: torch.device, spatial_dims: int) -> Iterator[torch.dtype | None]:
        cuda = device.type == "cuda"
        mixed = self.options.mixed_precision
        use_bf16 = mixed or (mixed is None and cuda and spatial_dims == 2)
        with tf32_enabled(cuda and mixed is not False):
            yield torch.bfloat16 if use_bf16 else None

    @abstractmethod
    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        """Compute the explanation of ``x`` (on the compute device, float32) for ``target``.

        ``target`` scores any sample made from image ``b`` as ``target[rows]`` does, with ``b`` in
        ``rows``; ``score_original`` is its (B,) score on ``x``.
        """
