"""The explainer contract: the base class, the registry, and what one explanation records.

Every explainer is called the same way::

    explainer = medmdm.explainers.create("hdm", model)
    saliency = explainer(x, target=None)        # (B, 1, *spatial), values in [0, 1]
    details = explainer.last                     # Explanation of that call

The base class does the shared work: input checks, target resolution, freezing the model and
restoring it afterwards, moving to the compute device and back, timing, and bookkeeping.
A method implements :meth:`Explainer._attribute` only.
"""

from __future__ import annotations

import inspect
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from medmdm.errors import InputError, ModelError, OptionError

Target = int | Sequence[int] | torch.Tensor | None
ScoreKind = Literal["logit", "probability"]


@dataclass(frozen=True)
class ProgressEvent:
    """What a progress callback receives, a few times per optimisation stage.

    Attributes
    ----------
    level : int
        Cascade level, starting at 1.
    stage : str
        ``"benchmark"``, ``"auxiliary"`` or ``"multiscale"``.
    step : int
        Steps run so far in this stage.
    max_steps : int
        The stage's step budget.
    loss : float
        Mean loss over the images still optimising.
    retention : float
        Mean fraction of the class score kept by the masked images (1 = all of it).
    """

    level: int
    stage: str
    step: int
    max_steps: int
    loss: float
    retention: float


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class LevelRecord:
    """One level of a cascade (a single-level method has one).

    Attributes
    ----------
    map : torch.Tensor
        (B, 1, *spatial) saliency found at this level, in [0, 1]; zeros where the level did not run.
    ran : torch.Tensor
        (B,) bool, whether the level ran for each image.
    weight : torch.Tensor
        (B,) weight of this level in the fused map.
    score_input : torch.Tensor
        (B,) class score of the image this level explained.
    score_masked : torch.Tensor
        (B,) class score of the original image with only this level's map kept.
    score_remaining : torch.Tensor
        (B,) class score of the image left after removing what this and earlier levels found.
    steps : torch.Tensor
        (B,) optimisation steps run for each image at this level.
    """

    map: torch.Tensor
    ran: torch.Tensor
    weight: torch.Tensor
    score_input: torch.Tensor
    score_masked: torch.Tensor
    score_remaining: torch.Tensor
    steps: torch.Tensor


@dataclass
class Explanation:
    """The result of one call, with everything a report needs.

    Attributes
    ----------
    map : torch.Tensor
        (B, 1, *spatial) saliency in [0, 1], 1 = most important, on the input's device.
    target : torch.Tensor
        (B,) class explained for each image.
    score_original : torch.Tensor
        (B,) class score of the original images.
    score_baseline : torch.Tensor
        (B,) class score of the baseline images (everything removed).
    score_masked : torch.Tensor
        (B,) class score of the original image with only the final map kept
        (``map * x + (1 - map) * baseline``).
    score_remaining : torch.Tensor
        (B,) class score of the original image with the final map removed.
    levels : list of LevelRecord
        Per-level maps and scores.
    steps : torch.Tensor
        (B,) optimisation steps run for each image, all levels and stages together.
    samples : int
        Samples passed through the model, all images together.
    seconds : float
        Wall-clock time of the call.
    method : str
        Registry name of the explainer.
    options : dict
        Every option of the explainer, as used.
    warnings : list of str
        What makes this explanation less trustworthy (also issued as Python warnings).
    """

    map: torch.Tensor
    target: torch.Tensor
    score_original: torch.Tensor
    score_baseline: torch.Tensor
    score_masked: torch.Tensor
    score_remaining: torch.Tensor
    levels: list[LevelRecord] = field(default_factory=list)
    steps: torch.Tensor | None = None
    samples: int = 0
    seconds: float = 0.0
    method: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Plain-Python summary (no maps) for JSON reports."""

        def values(t: torch.Tensor | None) -> list | None:
            return None if t is None else t.detach().cpu().tolist()

        return {
            "method": self.method,
            "options": {k: v for k, v in self.options.items() if _is_plain(v)},
            "target": values(self.target),
            "score_original": values(self.score_original),
            "score_baseline": values(self.score_baseline),
            "score_masked": values(self.score_masked),
            "score_remaining": values(self.score_remaining),
            "levels": [
                {
                    "ran": values(level.ran),
                    "weight": values(level.weight),
                    "score_input": values(level.score_input),
                    "score_masked": values(level.score_masked),
                    "score_remaining": values(level.score_remaining),
                    "steps": values(level.steps),
                }
                for level in self.levels
            ],
            "steps": values(self.steps),
            "samples": self.samples,
            "seconds": self.seconds,
            "warnings": list(self.warnings),
        }


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    return False


class ModelScorer:
    """Class scores of a frozen model, counting the samples it passes.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits of shape (B, classes).
    score : {"logit", "probability"}
        Score of the target class: its logit, or its softmax probability (sigmoid for one output).
    autocast_dtype : torch.dtype, optional
        Run the model under autocast with this dtype.
    max_batch : int, optional
        Most samples per pass in :meth:`scores`.
    """

    def __init__(
        self,
        model: nn.Module,
        score: ScoreKind,
        autocast_dtype: torch.dtype | None = None,
        max_batch: int | None = None,
    ):
        self.model = model
        self.score = score
        self.autocast_dtype = autocast_dtype
        self.max_batch = max_batch
        self.samples = 0

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Model output for ``x``, checked to be (N, classes) float logits."""
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
                out = self.model(x)
        else:
            out = self.model(x)
        self.samples += x.shape[0]
        if not isinstance(out, torch.Tensor):
            raise ModelError(
                f"the model returned {type(out).__name__}; expected a tensor of logits (B, classes)"
            )
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ModelError(
                f"the model returned shape {tuple(out.shape)} for a batch of {x.shape[0]}; "
                "expected logits (B, classes)"
            )
        if not out.is_floating_point():
            raise ModelError(f"the model returned {out.dtype}; expected float logits")
        return out.float()

    def scores_from_logits(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N,) score of class ``target[n]`` from (N, classes) logits."""
        if self.score == "probability":
            probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
            return probs.gather(1, target[:, None])[:, 0]
        return logits.gather(1, target[:, None])[:, 0]

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N,) score of class ``target[n]`` for each sample of ``x``."""
        return self.scores_from_logits(self.logits(x), target)

    def scores(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(N,) scores without gradients, in chunks of ``max_batch`` samples."""
        return self.scores_from_logits(self.all_logits(x), target)

    @torch.no_grad()
    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, classes) logits without gradients, in chunks of ``max_batch`` samples."""
        chunk = self.max_batch or x.shape[0]
        return torch.cat([self.logits(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


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


def resolve_targets(target: Target, logits: torch.Tensor) -> torch.Tensor:
    """Turn ``target`` into one class index per sample.

    Parameters
    ----------
    target : None, int, sequence of int or tensor
        None explains the predicted class of each sample; an int explains that class for all.
    logits : torch.Tensor
        (B, classes) model output on the original images.

    Returns
    -------
    torch.Tensor
        (B,) long tensor on the logits' device.
    """
    batch, classes = logits.shape
    if target is None:
        if classes == 1:
            return torch.zeros(batch, dtype=torch.long, device=logits.device)
        return logits.argmax(dim=1)
    if isinstance(target, bool):
        raise InputError(f"target must be None, an int or one int per sample, got {target!r}")
    if isinstance(target, int):
        values = torch.full((batch,), target, dtype=torch.long)
    else:
        try:
            values = torch.as_tensor(target)
        except (TypeError, ValueError) as error:
            raise InputError(f"target must be None, an int or one int per sample: {error}") from None
        if values.is_floating_point() or values.dtype == torch.bool:
            raise InputError(f"target must hold integers, got {values.dtype}")
        values = values.reshape(-1).long()
        if values.numel() == 1:
            values = values.expand(batch).clone()
        elif values.numel() != batch:
            raise InputError(f"target has {values.numel()} entries for a batch of {batch}")
    if (values < 0).any() or (values >= classes).any():
        raise InputError(f"target {values.tolist()} out of range for a model with {classes} classes")
    return values.to(logits.device)


_REGISTRY: dict[str, Callable[..., Explainer]] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register(name: str, factory: Callable[..., Explainer], description: str) -> None:
    """Add an explainer factory to the registry under ``name``."""
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


def create(name: str, model: nn.Module, **options: Any) -> Explainer:
    """Create the explainer registered as ``name`` for ``model``.

    Parameters
    ----------
    name : str
        One of :func:`available`.
    model : nn.Module
        Classifier returning logits (B, classes).
    **options
        Options of that explainer (see its class).

    Raises
    ------
    OptionError
        If the name is unknown, or an option is unknown or invalid.
    """
    _check_name(name)
    if not isinstance(model, nn.Module):
        raise ModelError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    factory = _REGISTRY[name]
    accepted = option_names(factory)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise OptionError(
            f"unknown option(s) {', '.join(unknown)} for {name!r}; valid options: {', '.join(accepted)}"
        )
    return factory(model, **options)


def option_names(factory: Callable[..., Any]) -> list[str]:
    """Keyword options a factory accepts, following ``**options`` up the class hierarchy."""
    owners = (
        [cls.__init__ for cls in factory.__mro__ if "__init__" in vars(cls)]
        if isinstance(factory, type)
        else [factory]
    )
    names: list[str] = []
    for function in owners:
        parameters = inspect.signature(function).parameters.values()
        names += [
            p.name
            for p in parameters
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "model", *names)
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return names


class Explainer(ABC):
    """Base class of all explainers.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits of shape (B, classes). Left as found after every call.
    score : {"logit", "probability"}
        Which score of the target class the method works with.
    device : str or torch.device, optional
        Where to compute; by default the model's device. The map is returned on ``x``'s device.
    seed : int
        Seed of the method's random choices; the same seed gives the same map on CPU.
    mixed_precision : bool, optional
        True: bf16 autocast (on any device). False: full float32. None chooses: on CUDA, bf16 for
        2D and TF32 for 3D (measured faster there); on CPU, float32.
    max_batch : int, optional
        Most samples passed through the model at once (bounds memory); None means no bound.
    progress : callable, optional
        Called with a :class:`ProgressEvent` during optimisation.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        model: nn.Module,
        *,
        score: ScoreKind = "logit",
        device: str | torch.device | None = None,
        seed: int = 0,
        mixed_precision: bool | None = None,
        max_batch: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        if score not in ("logit", "probability"):
            raise OptionError(f"score must be 'logit' or 'probability', got {score!r}")
        if max_batch is not None and (not isinstance(max_batch, int) or max_batch < 1):
            raise OptionError(f"max_batch must be a positive int or None, got {max_batch!r}")
        self.model = model
        self.score = score
        self.device = torch.device(device) if device is not None else None
        self.seed = int(seed)
        self.mixed_precision = mixed_precision
        self.max_batch = max_batch
        self.progress = progress
        self.last: Explanation | None = None

    def options(self) -> dict[str, Any]:
        """Every option of this explainer, by name."""
        return {name: getattr(self, name) for name in option_names(type(self))}

    def __call__(self, x: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Saliency of ``x`` for ``target``: (B, 1, *spatial) in [0, 1], on ``x``'s device."""
        return self._run(x, target).map

    def explain(self, x: torch.Tensor, target: Target = None) -> Explanation:
        """Explain ``x`` and return the :class:`Explanation`, also kept as ``self.last``."""
        return self._run(x, target)

    def _run(self, x: torch.Tensor, target: Target) -> Explanation:
        start = time.perf_counter()
        x = check_input(x)
        device = self.device or model_device(self.model) or x.device
        with frozen(self.model, device), self._precision(device, x.ndim - 2) as autocast_dtype:
            scorer = ModelScorer(self.model, self.score, autocast_dtype, self.max_batch)
            inputs = x.detach().to(device=device, dtype=torch.float32)
            try:
                logits = scorer.all_logits(inputs)
            except (ModelError, InputError):
                raise
            except Exception as error:
                raise ModelError(f"the model failed on the input: {error}") from error
            targets = resolve_targets(target, logits)
            explanation = self._attribute(inputs, targets, scorer, scorer.scores_from_logits(logits, targets))
        explanation.map = explanation.map.clamp(0, 1).to(x.device)
        explanation.method = self.name
        explanation.options = self.options()
        explanation.samples = scorer.samples
        explanation.seconds = time.perf_counter() - start
        self.last = explanation
        for note in explanation.warnings:
            warnings.warn(note, stacklevel=3)  # the caller of __call__ or explain
        return explanation

    @contextmanager
    def _precision(self, device: torch.device, spatial_dims: int) -> Iterator[torch.dtype | None]:
        cuda = device.type == "cuda"
        use_bf16 = self.mixed_precision or (self.mixed_precision is None and cuda and spatial_dims == 2)
        with tf32_enabled(cuda and self.mixed_precision is not False):
            yield torch.bfloat16 if use_bf16 else None

    @abstractmethod
    def _attribute(
        self, x: torch.Tensor, target: torch.Tensor, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        """Compute the explanation of ``x`` (on the compute device, float32) for ``target``."""
