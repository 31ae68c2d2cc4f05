"""Shape and value checks shared by the metrics (private: import the metrics, not this)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from medmdm.errors import InputError, OptionError
from medmdm.explainers.base import check_input


def check_saliency(saliency: Any, like: torch.Tensor | None = None) -> torch.Tensor:
    """Validate a saliency batch (B, 1, *spatial) and return it as a plain tensor.

    Parameters
    ----------
    saliency : Any
        The map to check.
    like : torch.Tensor, optional
        (B, C, *spatial) images the map must match in batch size and spatial shape.

    Raises
    ------
    InputError
        If ``saliency`` is not a finite floating-point tensor of shape (B, 1, H, W) or
        (B, 1, D, H, W), or does not match ``like``.
    """
    saliency = check_input(saliency, "saliency")
    shape = tuple(saliency.shape)
    if shape[1] != 1:
        raise InputError(f"saliency must have shape (B, 1, H, W) or (B, 1, D, H, W); got {shape}")
    if like is not None and (
        saliency.ndim != like.ndim or shape[0] != like.shape[0] or shape[2:] != like.shape[2:]
    ):
        expected = (like.shape[0], 1, *like.shape[2:])
        raise InputError(
            f"saliency has shape {shape}; expected {expected} to match x of shape {tuple(like.shape)}"
        )
    return saliency


def check_region(region: Any, saliency: torch.Tensor) -> torch.Tensor:
    """Validate a region mask (B, *spatial) or (B, 1, *spatial); return it as (B, *spatial) bool.

    Nonzero values count as inside the region.

    Raises
    ------
    InputError
        If ``region`` is not a tensor of one of those shapes, matching ``saliency`` (B, 1, *spatial).
    """
    if not isinstance(region, torch.Tensor):
        raise InputError(f"region must be a torch.Tensor, got {type(region).__name__}")
    batch, _, *spatial = saliency.shape
    shapes = ((batch, *spatial), (batch, 1, *spatial))
    if tuple(region.shape) not in shapes:
        raise InputError(
            f"region has shape {tuple(region.shape)}; expected {shapes[0]} or {shapes[1]} to match "
            f"saliency of shape {tuple(saliency.shape)}"
        )
    region = region.as_subclass(torch.Tensor) if type(region) is not torch.Tensor else region
    return region.reshape(batch, *spatial).to(saliency.device) != 0


def check_positive_int(value: Any, name: str, allow_none: bool = False) -> None:
    """Raise :class:`OptionError` unless ``value`` is a positive int (or None when allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        expected = "a positive int or None" if allow_none else "a positive int"
        raise OptionError(f"{name} must be {expected}, got {value!r}")


def check_percentiles(percentiles: Sequence[float]) -> tuple[float, ...]:
    """Percentiles as a non-empty tuple of floats in [0, 100]; :class:`OptionError` otherwise."""
    try:
        values = tuple(float(p) for p in percentiles)
    except (TypeError, ValueError):
        raise OptionError(f"percentiles must be a sequence of numbers, got {percentiles!r}") from None
    if not values or any(not 0 <= p <= 100 for p in values):
        raise OptionError(
            f"percentiles must be a non-empty sequence of values in [0, 100], got {percentiles!r}"
        )
    return values
