"""What to explain: one score per image, read from the model output by a small target object.

"How" (the explainer) and "what" (the target) are separate. Five kinds of target:

- :class:`ClassTarget`: a class logit or probability of a classifier (an ``int`` means this).
- :class:`PrototypeTarget`: the similarity of one prototype of a prototype network.
- :class:`RegionTarget`: the mean score of one channel of a segmentation output inside a region.
- :class:`DetectionTarget`: the highest score of one class over the anchors of a detector.
- :class:`CallableTarget`: any function from the model output to one score per sample.

:func:`as_target` turns every accepted form into one of these. :meth:`Target.bind` fixes a target
for one batch from the model output on the original images (the predicted class, the predicted
region); the :class:`BoundTarget` it returns scores any sample derived from those images.

Model outputs the targets read:

- a classifier returns logits (B, classes), or a mapping with ``"logits"`` (B, classes);
- a prototype network returns a mapping with ``"logits"`` (B, classes) and ``"prototypes"``
  (B, P), the similarity of each prototype to its closest part of the image (ProtoPNet's
  max-pooled similarity), so class and prototype targets both work on it;
- a segmentation network returns per-voxel logits (B, C, *spatial);
- a detector (MONAI's RetinaNet) returns a mapping with ``"classification"``: class logits per anchor,
  (B, anchors, classes), or one head output (B, A * classes, *spatial) per feature level, with
  ``"box_regression"`` (B, A * 2 * dims, *spatial) per level telling A.

References
----------
Chen, Li, Tao, Barnett, Su, Rudin. "This Looks Like That: Deep Learning for Interpretable Image
Recognition", NeurIPS 2019, arXiv:1806.10574.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import torch

from medmdm.errors import InputError, ModelError

ScoreKind = Literal["logit", "probability"]
SCORES: tuple[str, ...] = ("logit", "probability")

Index = int | Sequence[int] | torch.Tensor


class Target(ABC):
    """What to explain: one score per image, computed from the model output.

    A subclass sets ``kind`` and implements :meth:`bind`, :meth:`scores` and :meth:`description`.
    """

    kind: ClassVar[str] = ""

    @abstractmethod
    def bind(self, output: Any, batch: int, score: ScoreKind) -> BoundTarget:
        """Fix the target for a batch of ``batch`` images from ``output``, the model output on them.

        ``score`` is the explainer's ``score`` option, used where the target leaves it open.
        """

    @abstractmethod
    def scores(self, output: Any, bound: BoundTarget) -> torch.Tensor:
        """(N,) float scores of the N samples behind ``output``; ``bound`` holds their choices."""

    @abstractmethod
    def description(self, bound: BoundTarget) -> dict[str, Any]:
        """Plain-Python description of the bound target, for reports."""


@dataclass(frozen=True, eq=False)
class BoundTarget:
    """A target fixed for a batch: what is scored for each image (or each sample made from one).

    Attributes
    ----------
    target : Target
        The target, its score kind resolved.
    size : int
        Number of images (rows).
    index : torch.Tensor, optional
        (size,) long: the class, prototype or output channel of each row; None for a callable.
    region : torch.Tensor, optional
        (size, *spatial) bool region of each row in the output's grid (region targets).
    """

    target: Target
    size: int
    index: torch.Tensor | None = None
    region: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, rows: slice | Sequence[int] | torch.Tensor) -> BoundTarget:
        """The target of the samples ``rows``: a slice, or the row (image) of each sample."""
        size = len(range(self.size)[rows]) if isinstance(rows, slice) else len(rows)
        return BoundTarget(
            self.target,
            size,
            None if self.index is None else self.index[rows],
            None if self.region is None else self.region[rows],
        )

    def scores(self, output: Any) -> torch.Tensor:
        """(size,) score of each row from the model output of its samples."""
        return self.target.scores(output, self)

    def description(self) -> dict[str, Any]:
        """Plain-Python description (kind, index, score, ...) for reports."""
        return self.target.description(self)


def _check_score(score: Any) -> None:
    if score is not None and score not in SCORES:
        raise InputError(f"target score must be None, 'logit' or 'probability', got {score!r}")


def _as_index(value: Any) -> int | torch.Tensor:
    """An int, or a 1-D long tensor of one int per sample; InputError for anything else."""
    if isinstance(value, bool):
        raise InputError(f"target must be None, an int or one int per sample, got {value!r}")
    if isinstance(value, int):
        return value
    try:
        values = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"target must be None, an int or one int per sample: {error}") from None
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise InputError(f"target must hold integers, got {values.dtype}")
    if values.numel() == 0:
        raise InputError("target is empty: give one int, or one int per sample")
    return values.reshape(-1).long()


def _per_sample(value: int | torch.Tensor, batch: int, count: int, what: str, device: Any) -> torch.Tensor:
    """(batch,) indices from an int or per-sample tensor, checked to lie in [0, count)."""
    values = torch.full((batch,), value, dtype=torch.long) if isinstance(value, int) else value
    if values.numel() == 1:
        values = values.expand(batch).clone()
    elif values.numel() != batch:
        raise InputError(f"target has {values.numel()} entries for a batch of {batch}")
    if (values < 0).any() or (values >= count).any():
        raise InputError(f"target {values.tolist()} out of range for a model with {count} {what}")
    return values.to(device)


def _describe_index(bound: BoundTarget) -> list[int] | None:
    return None if bound.index is None else bound.index.tolist()


def class_logits(output: Any) -> torch.Tensor:
    """Class logits (B, classes) of a model output: the tensor itself or its ``"logits"`` entry.

    Raises
    ------
    ModelError
        If there are no float logits of shape (B, classes).
    """
    if isinstance(output, Mapping):
        if "logits" not in output:
            raise ModelError(
                f"the model returned a mapping with keys {sorted(map(str, output))}; a class target "
                "needs logits (B, classes), or a mapping with 'logits'"
            )
        output = output["logits"]
    if not isinstance(output, torch.Tensor):
        raise ModelError(
            f"the model returned {type(output).__name__}; expected a tensor of logits (B, classes)"
        )
    if output.ndim != 2:
        hint = (
            "; a segmentation output (B, C, *spatial) takes a region target (region:K)"
            if output.ndim > 2
            else ""
        )
        raise ModelError(
            f"the model returned shape {tuple(output.shape)}; expected logits (B, classes){hint}"
        )
    if not output.is_floating_point():
        raise ModelError(f"the model returned {output.dtype}; expected float logits")
    return output


def prototype_similarities(output: Any) -> torch.Tensor:
    """Prototype similarities (B, P): the ``"prototypes"`` entry of a mapping output.

    Raises
    ------
    ModelError
        If the output is not a mapping with float ``"prototypes"`` of shape (B, P).
    """
    similarities = output.get("prototypes") if isinstance(output, Mapping) else None
    if not isinstance(similarities, torch.Tensor):
        raise ModelError(
            f"the model returned {type(output).__name__}; a prototype target needs a mapping with "
            "'prototypes' (B, P), one similarity per prototype"
        )
    if similarities.ndim != 2 or not similarities.is_floating_point():
        raise ModelError(
            f"the model's 'prototypes' are {similarities.dtype} of shape {tuple(similarities.shape)}; "
            "expected float (B, P)"
        )
    return similarities


def segmentation_logits(output: Any) -> torch.Tensor:
    """Per-voxel logits (B, C, *spatial) of a segmentation output.

    Raises
    ------
    ModelError
        If the output is not a float tensor with at least one spatial axis.
    """
    if not isinstance(output, torch.Tensor) or output.ndim < 3 or not output.is_floating_point():
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise ModelError(
            f"the model returned {shape}; a region target needs a float segmentation output (B, C, *spatial)"
        )
    return output


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over axis 1, or the sigmoid of a single channel."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


@dataclass(frozen=True, eq=False)
class ClassTarget(Target):
    """A class of a classifier: its logit, or its softmax probability (sigmoid for one output).

    Parameters
    ----------
    index : int, sequence of int or tensor, optional
        The class, or one class per image; None: each image's predicted class.
    score : {"logit", "probability"}, optional
        Which score of the class; None: the explainer's ``score`` option.

    Examples
    --------
    >>> ClassTarget(1, score="probability").score
    'probability'
    """

    index: Index | None = None
    score: ScoreKind | None = None
    kind: ClassVar[str] = "class"

    def __post_init__(self) -> None:
        if self.index is not None:
            object.__setattr__(self, "index", _as_index(self.index))
        _check_score(self.score)

    def bind(self, output: Any, batch: int, score: ScoreKind) -> BoundTarget:
        logits = class_logits(output)
        classes = logits.shape[1]
        if self.index is None:
            index = logits.argmax(dim=1) if classes > 1 else torch.zeros_like(logits[:, 0], dtype=torch.long)
        else:
            index = _per_sample(self.index, batch, classes, "classes", logits.device)
        return BoundTarget(replace(self, score=self.score or score), batch, index=index)

    def scores(self, output: Any, bound: BoundTarget) -> torch.Tensor:
        logits = class_logits(output)
        values = _probabilities(logits) if self.score == "probability" else logits
        return values.gather(1, bound.index[:, None].to(values.device))[:, 0]

    def description(self, bound: BoundTarget) -> dict[str, Any]:
        return {"kind": self.kind, "index": _describe_index(bound), "score": self.score}


@dataclass(frozen=True, eq=False)
class PrototypeTarget(Target):
    """The similarity of a prototype to its closest part of the image (a prototype network).

    The model returns a mapping with ``"prototypes"`` (B, P) (see the module docstring); the
    score is entry ``index`` of it, whatever the explainer's ``score`` option.

    Parameters
    ----------
    index : int, sequence of int or tensor
        The prototype, or one prototype per image.
    """

    index: Index
    kind: ClassVar[str] = "prototype"

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _as_index(self.index))

    def bind(self, output: Any, batch: int, score: ScoreKind) -> BoundTarget:
        similarities = prototype_similarities(output)
        index = _per_sample(self.index, batch, similarities.shape[1], "prototypes", similarities.device)
        return BoundTarget(self, batch, index=index)

    def scores(self, output: Any, bound: BoundTarget) -> torch.Tensor:
        similarities = prototype_similarities(output)
        return similarities.gather(1, bound.index[:, None].to(similarities.device))[:, 0]

    def description(self, bound: BoundTarget) -> dict[str, Any]:
        return {"kind": self.kind, "index": _describe_index(bound), "score": "similarity"}


@dataclass(frozen=True, eq=False)
class RegionTarget(Target):
    """The mean score of one channel of a segmentation output (B, C, *spatial) inside a region.

    Parameters
    ----------
    label : int, sequence of int or tensor
        The output channel, or one per image.
    region : torch.Tensor, optional
        Where to average, in the output's grid: (*spatial) for every image or (B, *spatial), nonzero
        inside. None: the region the model predicts as ``label`` on the original image (argmax over
        channels; logit > 0 for a single channel), fixed once before explaining.
    score : {"logit", "probability"}, optional
        Per-voxel score averaged: the channel's logit or its softmax probability (sigmoid for one
        channel); None: the explainer's ``score`` option.
    source : str, optional
        Where the region came from, for reports (``"predicted"`` when a bundle's postprocessing made it);
        None: ``"predicted"`` without ``region``, ``"given"`` with one.

    Raises
    ------
    InputError
        When binding, if the region is empty for an image (predicted or given) or does not fit
        the output's grid.
    """

    label: Index
    region: torch.Tensor | None = None
    score: ScoreKind | None = None
    source: str | None = None
    kind: ClassVar[str] = "region"

    def __post_init__(self) -> None:
        object.__setattr__(self, "label", _as_index(self.label))
        if self.region is not None:
            try:
                region = torch.as_tensor(self.region)
            except (TypeError, ValueError, RuntimeError) as error:
                raise InputError(f"target region must be a tensor: {error}") from None
            if region.ndim == 0:
                raise InputError("target region must have the output's spatial shape, got a scalar")
            object.__setattr__(self, "region", region != 0)
        _check_score(self.score)

    def bind(self, output: Any, batch: int, score: ScoreKind) -> BoundTarget:
        logits = segmentation_logits(output)
        channels, spatial = logits.shape[1], tuple(logits.shape[2:])
        label = _per_sample(self.label, batch, channels, "output channels", logits.device)
        if self.region is None:
            foreground = logits[:, 0] > 0
            region = logits.argmax(1) == label.view(-1, *[1] * len(spatial)) if channels > 1 else foreground
            where = f"the model predicts no voxel of label {label.tolist()} in image(s)"
        else:
            region = self.region.to(logits.device)
            if tuple(region.shape) == spatial:
                region = region.expand(batch, *spatial)
            elif tuple(region.shape) != (batch, *spatial):
                raise InputError(
                    f"target region has shape {tuple(region.shape)}; expected the output's grid "
                    f"{spatial} or one region per image {(batch, *spatial)}"
                )
            where = "target region is empty for image(s)"
        empty = ~region.flatten(1).any(1)
        if empty.any():
            raise InputError(
                f"{where} {empty.nonzero()[:, 0].tolist()}; choose one with region= (--region-mask FILE)"
            )
        return BoundTarget(replace(self, score=self.score or score), batch, index=label, region=region)

    def scores(self, output: Any, bound: BoundTarget) -> torch.Tensor:
        logits = segmentation_logits(output)
        values = _probabilities(logits) if self.score == "probability" else logits
        channel = bound.index.to(values.device).view(-1, 1, *[1] * (values.ndim - 2))
        selected = values.gather(1, channel.expand(-1, 1, *values.shape[2:]))[:, 0]
        inside = bound.region.to(selected.device, selected.dtype)
        return (selected * inside).flatten(1).sum(1) / inside.flatten(1).sum(1)

    def description(self, bound: BoundTarget) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": _describe_index(bound),
            "score": self.score,
            "region": self.source or ("predicted" if self.region is None else "given"),
            "voxels": None if bound.region is None else bound.region.flatten(1).sum(1).tolist(),
        }


def anchor_logits(output: Any) -> torch.Tensor:
    """Class logits per anchor (B, anchors, classes) of a detector's output.

    Raises
    ------
    ModelError
        If the output is not a mapping with ``"classification"`` in a layout the module docstring lists.
    """
    heads = output.get("classification") if isinstance(output, Mapping) else None
    if isinstance(heads, torch.Tensor) and heads.ndim == 3 and heads.is_floating_point():
        return heads
    boxes = output.get("box_regression") if isinstance(output, Mapping) else None
    if isinstance(heads, list | tuple) and isinstance(boxes, list | tuple) and len(heads) == len(boxes) > 0:
        batch, dims = heads[0].shape[0], heads[0].ndim - 2
        anchors = boxes[0].shape[1] // (2 * dims)
        if anchors > 0 and all(h.shape[1] % anchors == 0 for h in heads):
            classes = heads[0].shape[1] // anchors
            levels = [h.reshape(batch, anchors, classes, -1).movedim(2, -1).flatten(1, 2) for h in heads]
            return torch.cat(levels, 1)
    kind = sorted(map(str, output)) if isinstance(output, Mapping) else type(output).__name__
    raise ModelError(
        f"the model returned {kind}; a detection target needs a mapping with 'classification' "
        "(B, anchors, classes) or per-level heads with 'box_regression'"
    )


@dataclass(frozen=True, eq=False)
class DetectionTarget(Target):
    """The highest logit (or sigmoid probability) of one class over a detector's anchors.

    Parameters
    ----------
    index : int, sequence of int or tensor
        The class, or one class per image.
    score : {"logit", "probability"}, optional
        The anchors' logit or its sigmoid (detectors score each class alone); None: the explainer's option.
    """

    index: Index
    score: ScoreKind | None = None
    kind: ClassVar[str] = "detection"

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _as_index(self.index))
        _check_score(self.score)

    def bind(self, output: Any, batch: int, score: ScoreKind) -> BoundTarget:
        logits = anchor_logits(output)
        index = _per_sample(self.index, batch, logits.shape[2], "classes", logits.device)
        return BoundTarget(replace(self, score=self.score or score), batch, index=index)

    def scores(self, output: Any, bound: BoundTarget) -> torch.Tensor:
        logits = anchor_logits(output)
        values = torch.sigmoid(logits) if self.score == "probability" else logits
        chosen = values.gather(2, bound.index.to(values.device).view(-1, 1, 1).expand(-1, values.shape[1], 1))
        return chosen[..., 0].amax(1)

    def description(self, bound: BoundTarget) -> dict[str, Any]:
        return {"kind": self.kind, "index": _describe_index(bound), "score": self.score}


@dataclass(frozen=True, eq=False)
class CallableTarget(Target):
    """Any function from the model output to one score per sample.

    Parameters
    ----------
    function : callable
        Receives the model output of N samples (floating tensors in it as float32) and returns
        an (N,) float tensor, differentiable for gradient and mask methods.

    Examples
    --------
    >>> margin = CallableTarget(lambda logits: logits[:, 1] - logits[:, 0])
    """

    function: Callable[[Any], torch.Tensor]
    kind: ClassVar[str] = "callable"

    def __post_init__(self) -> None:
        if not callable(self.function):
            raise InputError(f"target function must be callable, got {type(self.function).__name__}")

    @property
    def name(self) -> str:
        """The function's qualified name (its type's for a callable object)."""
        return getattr(self.function, "__qualname__", type(self.function).__name__)

    def bind(self, output: Any, batch: int, score: ScoreKind) -> BoundTarget:
        bound = BoundTarget(self, batch)
        self.scores(output, bound)
        return bound

    def scores(self, output: Any, bound: BoundTarget) -> torch.Tensor:
        try:
            values = self.function(output)
        except Exception as error:
            raise InputError(f"target function {self.name} failed on the model output: {error}") from error
        if not isinstance(values, torch.Tensor) or not values.is_floating_point():
            kind = values.dtype if isinstance(values, torch.Tensor) else type(values).__name__
            raise InputError(f"target function {self.name} returned {kind}; expected a float tensor (N,)")
        if tuple(values.shape) != (bound.size,):
            raise InputError(
                f"target function {self.name} returned shape {tuple(values.shape)} for {bound.size} "
                f"samples; expected ({bound.size},), one score per sample"
            )
        return values.float()

    def description(self, bound: BoundTarget) -> dict[str, Any]:
        return {"kind": self.kind, "index": None, "function": self.name}


TargetLike = Target | Index | str | Callable[[Any], torch.Tensor] | None

_NAMED: dict[str, Callable[[int], Target]] = {
    "class": ClassTarget,
    "prototype": PrototypeTarget,
    "region": RegionTarget,
    "detection": DetectionTarget,
}


def _parse(text: str) -> Target:
    kind, _, number = text.strip().rpartition(":")
    kind, number = kind.strip() or "class", number.strip()
    if kind not in _NAMED or not number.isdigit():
        raise InputError(
            f"target {text!r} is not understood; use K, class:K, prototype:K, region:K or detection:K "
            "with K an int >= 0"
        )
    return _NAMED[kind](int(number))


def as_target(target: TargetLike) -> Target:
    """Turn every accepted form of ``target`` into a :class:`Target`.

    Parameters
    ----------
    target : Target, None, int, sequence of int, tensor, str or callable
        A target object is returned as it is. None: the predicted class of each image; an int:
        that class; a sequence or tensor of ints: one class per image. A string ``"K"`` or
        ``"class:K"`` is class K, ``"prototype:K"`` prototype K, ``"region:K"`` the predicted
        region of label K, ``"detection:K"`` the best anchor of class K. Any other callable maps the
        model output to one score per sample.

    Raises
    ------
    InputError
        If ``target`` is none of these.

    Examples
    --------
    >>> as_target("prototype:3")
    PrototypeTarget(index=3)
    >>> as_target(None)
    ClassTarget(index=None, score=None)
    """
    if isinstance(target, Target):
        return target
    if target is None:
        return ClassTarget()
    if isinstance(target, str):
        return _parse(target)
    if callable(target):
        return CallableTarget(target)
    return ClassTarget(target)


def resolve_targets(target: TargetLike, logits: torch.Tensor) -> torch.Tensor:
    """One class index per sample for a class target (the form every metric explains).

    Parameters
    ----------
    target : None, int, sequence of int, tensor, ClassTarget or "class:K"
        None explains the predicted class of each sample; an int explains that class for all.
    logits : torch.Tensor
        (B, classes) model output on the original images.

    Returns
    -------
    torch.Tensor
        (B,) long tensor on the logits' device.

    Raises
    ------
    InputError
        If ``target`` is not a class target or is out of range.
    """
    wanted = as_target(target)
    if not isinstance(wanted, ClassTarget):
        raise InputError(f"target must be a class here, got a {wanted.kind} target")
    return wanted.bind(logits, logits.shape[0], "logit").index
