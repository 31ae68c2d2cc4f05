"""Checks shared by the writers."""

from __future__ import annotations

import numpy as np
import torch

from medmdm.errors import InputError


def saliency_array(saliency: torch.Tensor, spatial: tuple[int, ...], grid: str) -> np.ndarray:
    """A ``(1, *spatial)`` or ``(*spatial)`` map as a finite float64 ``(*spatial)`` array.

    Raises
    ------
    InputError
        If the map is not on the ``spatial`` grid (called ``grid`` in the message) or holds
        non-finite values.
    """
    values = saliency.detach()
    if values.ndim == len(spatial) + 1 and values.shape[0] == 1:
        values = values[0]
    if tuple(values.shape) != spatial:
        raise InputError(
            f"saliency shape {tuple(saliency.shape)} does not match the {grid}: expected "
            f"{(1, *spatial)} or {spatial}"
        )
    data = values.to(device="cpu", dtype=torch.float64).numpy()
    if not np.isfinite(data).all():
        raise InputError(f"saliency holds {int((~np.isfinite(data)).sum())} non-finite values")
    return data
