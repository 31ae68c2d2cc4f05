"""Explainer options: one typed, frozen dataclass per method, valid once constructed.

Each explainer class declares its ``Options``, a subclass of :class:`ExplainerOptions` whose
fields are made with :func:`option` (a default, a line of doc, a range or choices). Constructing an
options object checks every field against its type hint, range and choices, so the command line,
configs and the Python API get the same :class:`~medmdm.errors.OptionError` for the same mistake.

Examples
--------
>>> from medmdm.explainers import HierarchicalDynamicMasks
>>> options = HierarchicalDynamicMasks.Options(steps=30, benchmark_sizes=[4, 8])
>>> options.steps, options.levels, options.benchmark_sizes
(30, 3, (4, 8))
>>> options.replace(levels=2).to_dict()["levels"]
2
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, get_args, get_origin

from medmdm.errors import OptionError
from medmdm.explainers.targets import SCORES

if TYPE_CHECKING:
    from typing_extensions import Self

_NO_MATCH = object()  # what _conform returns for a value that does not fit the hint
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune")  # the option ``compile``


@dataclass(frozen=True)
class Range:
    """The interval an option's numbers (a sequence option's items) must lie in; None: unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {opening}{self.low}, {self.high}{closing}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high}"
        return ""


def option(
    default: Any,
    doc: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: Sequence[Any] | None = None,
) -> Any:
    """A field of an options class: its default, a one-line doc, the range of its numbers or its
    choices.

    Parameters
    ----------
    default : object
        The default value (immutable: a tuple for a sequence).
    doc : str
        What the option does, in one line.
    low, high : float, optional
        Bounds of the value, or of each item of a sequence; None: unbounded.
    low_open, high_open : bool
        Whether ``low`` (``high``) itself is excluded.
    choices : sequence, optional
        The values the option may take.
    """
    metadata = {"doc": doc, "range": Range(low, high, low_open, high_open), "choices": choices}
    return field(default=default, metadata=metadata)


class OptionDescription(NamedTuple):
    """One option of a method, for listings (``medmdm methods <method>``)."""

    name: str
    type: str
    default: Any
    allowed: str
    doc: str

    def __str__(self) -> str:
        allowed = f", {self.allowed}" if self.allowed else ""
        return f"{self.name} ({self.type}, default {self.default!r}{allowed}): {self.doc}"


@dataclass(frozen=True)
class ExplainerOptions:
    """The options every explainer has; a method's ``Options`` subclass adds its own.

    Attributes
    ----------
    method : str
        Registry name of the method, named in error messages.

    Raises
    ------
    OptionError
        On construction: an unknown option name, or a value of the wrong type or out of range.
    """

    method: ClassVar[str] = ""

    score: str = option(
        "logit", "score of a class (or a region's channel) where the target does not say", choices=SCORES
    )
    seed: int = option(0, "seed of the method's random choices; the same seed gives the same map on CPU")
    mixed_precision: bool | None = option(
        None, "True: bf16 autocast; False: float32; None: on CUDA bf16 for 2D and TF32 for 3D, on CPU float32"
    )
    max_batch: int | None = option(
        None, "most samples passed through the model at once; None: no bound", low=1
    )
    compile: bool | str = option(
        False,
        'pass the model through torch.compile (True: "default"; "reduce-overhead" uses CUDA graphs on CUDA); '
        "the eager model, with a warning, where compiling fails",
        choices=COMPILE_MODES,
    )

    def __new__(cls, *args: Any, **values: Any) -> Self:
        cls._check_names(values)
        return super().__new__(cls)

    def __post_init__(self) -> None:
        hints = _type_hints(type(self))
        for item in fields(self):
            value, hint, choices = getattr(self, item.name), hints[item.name], item.metadata["choices"]
            conformed = _conform(value, hint)
            if (
                conformed is _NO_MATCH
                or not all(number in item.metadata["range"] for number in _numbers(conformed))
                or (choices is not None and conformed is not None and conformed not in choices)
            ):
                expected = _expected(hint, item.metadata["range"], choices)
                raise OptionError(f"{self.method} option {item.name} must be {expected}, got {value!r}")
            object.__setattr__(self, item.name, conformed)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(item.name for item in fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Self:
        """Options from a mapping of names to values (a config, a bundle's recommendations).

        Raises
        ------
        OptionError
            An unknown name (with the closest valid one), or an invalid value.
        """
        cls._check_names(values)
        return cls(**values)

    @classmethod
    def describe(cls) -> list[OptionDescription]:
        """Every option with its type, default, allowed values and doc."""
        hints = _type_hints(cls)
        return [
            OptionDescription(
                item.name,
                _type_name(hints[item.name]),
                item.default,
                _allowed(item.metadata["range"], item.metadata["choices"]),
                item.metadata["doc"],
            )
            for item in fields(cls)
        ]

    @classmethod
    def with_default(cls, name: str, default: Any) -> Any:
        """The field ``name`` with another default and the same doc, range and choices, for a
        subclass that changes a default: ``steps: int = Base.with_default("steps", 200)``."""
        (item,) = [item for item in fields(cls) if item.name == name]
        return field(default=default, metadata=item.metadata)

    def to_dict(self) -> dict[str, Any]:
        """Every option by name, JSON-ready (sequences as lists)."""
        values = {name: getattr(self, name) for name in self.names()}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` applied, validated again."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def _check_names(cls, values: Mapping[str, Any]) -> None:
        unknown = [name for name in values if name not in cls.names()]
        if unknown:
            raise OptionError(unknown_names(unknown, cls.names(), f"for {cls.method}"))


@functools.cache
def _type_hints(cls: type[ExplainerOptions]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (typing.Union, types.UnionType)


def _conform(value: Any, hint: Any) -> Any:
    """``value`` as a value of type ``hint`` (an int as a float, a list as a tuple), else _NO_MATCH.

    ``bool`` is not taken for ``int`` or ``float``; a sequence must hold at least one item.
    """
    if _is_union(hint):
        conformed = (_conform(value, arm) for arm in get_args(hint))
        return next((c for c in conformed if c is not _NO_MATCH), _NO_MATCH)
    if get_origin(hint) is tuple:
        if not isinstance(value, list | tuple) or not value:
            return _NO_MATCH
        items = tuple(_conform(item, get_args(hint)[0]) for item in value)
        return _NO_MATCH if _NO_MATCH in items else items
    if hint is float:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else _NO_MATCH
    if hint is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _NO_MATCH
    if hint in (bool, str, type(None)):
        return value if isinstance(value, hint) else _NO_MATCH
    raise TypeError(f"options of type {hint} are not supported")


def _numbers(value: Any) -> tuple[Any, ...]:
    """The numbers of a conformed value that its range applies to."""
    items = value if isinstance(value, tuple) else (value,)
    return tuple(item for item in items if isinstance(item, int | float) and not isinstance(item, bool))


_PHRASES = {bool: "a bool", int: "an int", float: "a number", str: "a string"}
_NAMES = {bool: "bool", int: "int", float: "float", str: "str", type(None): "None"}


def _expected(hint: Any, bounds: Range, choices: Sequence[Any] | None) -> str:
    """What a valid value is, as the end of "must be ...": ``an int in [1, 8]``."""
    arms = get_args(hint) if _is_union(hint) else (hint,)
    if choices is not None:
        text = f"one of {', '.join(map(repr, choices))}"
    else:
        phrases = [_phrase(arm) for arm in arms if arm is not type(None)]
        text = " or ".join(phrases) + (f" {bounds}" if str(bounds) else "")
    return text + (" or None" if type(None) in arms else "")


def _phrase(hint: Any) -> str:
    """A value of type ``hint`` in words: ``an int``, ``a non-empty sequence of ints``."""
    if get_origin(hint) is tuple:
        return f"a non-empty sequence of {_NAMES[get_args(hint)[0]]}s"
    return _PHRASES[hint]


def _type_name(hint: Any) -> str:
    """Short type text for listings: ``int | None``, ``sequence of int``."""
    if _is_union(hint):
        return " | ".join(_type_name(arm) for arm in get_args(hint))
    if get_origin(hint) is tuple:
        return f"sequence of {_NAMES[get_args(hint)[0]]}"
    return _NAMES[hint]


def _allowed(bounds: Range, choices: Sequence[Any] | None) -> str:
    """The choices of an option, or the range of its numbers ("" when unbounded)."""
    return f"one of {', '.join(map(repr, choices))}" if choices is not None else str(bounds)


def unknown_names(unknown: Sequence[str], valid: Sequence[str], owner: str, what: str = "option") -> str:
    """``unknown option 'stpes' for hdm (did you mean 'steps'?); valid options: ...``: the message of
    every misspelt name, options and settings alike."""
    close = [match for name in unknown for match in difflib.get_close_matches(str(name), list(valid), n=1)]
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    plural = "s" if len(unknown) > 1 else ""
    named = " ".join(filter(None, [f"unknown {what}{plural}", ", ".join(map(repr, unknown)), owner]))
    return f"{named}{hint}; valid {what}s: {', '.join(valid)}"
