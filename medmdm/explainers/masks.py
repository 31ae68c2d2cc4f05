"""Mask grids: sizes derived from the input, upsampling to the input, normalisation; connected
regions of a map."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from medmdm.errors import OptionError

GridShape = tuple[int, ...]

# Benchmark (coarse) grid sizes as fractions of the longest side. For a 224 image the 2D fractions
# give 4, 7, 11 and 16 cells; for a 96^3 volume the 3D ones give 3, 4, 6 and 8.
_BENCHMARK_FRACTIONS = {2: (1 / 56, 1 / 32, 1 / 20, 1 / 14), 3: (1 / 32, 1 / 24, 1 / 16, 1 / 12)}
_AUXILIARY_FRACTIONS = (1 / 4, 1 / 2, 1)
_MIN_CELLS = 3


def default_benchmark_sizes(spatial: Sequence[int]) -> list[int]:
    """Coarse grid sizes (cells along the longest side) for an input of shape ``spatial``."""
    longest = max(spatial)
    fractions = _BENCHMARK_FRACTIONS[3 if len(spatial) >= 3 else 2]
    sizes = sorted({min(longest, max(_MIN_CELLS, round(longest * f))) for f in fractions})
    return sizes


def default_auxiliary_sizes(spatial: Sequence[int]) -> list[int]:
    """Fine grid sizes (cells along the longest side) for an input of shape ``spatial``."""
    longest = max(spatial)
    coarsest_fine = max(default_benchmark_sizes(spatial)) + 1
    return sorted({min(longest, max(coarsest_fine, round(longest * f))) for f in _AUXILIARY_FRACTIONS})


def grid_shape(size: int, spatial: Sequence[int]) -> GridShape:
    """Grid with ``size`` cells along the longest side and proportionally fewer along the others."""
    if size < 2:
        raise OptionError(f"grid sizes must be at least 2, got {size}")
    longest = max(spatial)
    return tuple(max(2, min(n, round(size * n / longest))) if n > 1 else 1 for n in spatial)


def upsample(grid: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """(N, 1, *grid) -> (N, 1, *spatial), (bi|tri)linear with aligned corners.

    Computed as one matrix product per axis (linear interpolation is separable), which is several
    times faster than ``F.interpolate`` on a CPU, backward pass included; the matrices are cached.
    """
    out = grid
    last = grid.ndim - 1
    for dim, size in enumerate(spatial, start=2):
        matrix = _interpolation_matrix(out.shape[dim], size, grid.device, grid.dtype)
        out = out @ matrix.T if dim == last else (matrix @ out.movedim(dim, -2)).movedim(-2, dim)
    return out


@functools.lru_cache(maxsize=64)
def _interpolation_matrix(cells: int, size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(size, cells) weights of linear interpolation from ``cells`` to ``size`` points, corners aligned."""
    position = torch.arange(size, dtype=torch.float64) * ((cells - 1) / (size - 1) if size > 1 else 0.0)
    low = position.floor().long().clamp(max=cells - 1)
    high = (low + 1).clamp(max=cells - 1)
    fraction = position - low
    matrix = torch.zeros(size, cells, dtype=torch.float64)
    rows = torch.arange(size)
    matrix.index_put_((rows, low), 1 - fraction, accumulate=True)
    matrix.index_put_((rows, high), fraction, accumulate=True)
    return matrix.to(device=device, dtype=dtype)


def normalise(maps: torch.Tensor, dims: int) -> torch.Tensor:
    """Min-max normalise each map over its last ``dims`` dimensions to [0, 1].

    A constant map becomes all zeros: it ranks nothing above anything else. So does a map whose
    spread is float rounding (below 1e-4 of its magnitude), which normalising would blow up.
    """
    flat = maps.flatten(-dims)
    low = flat.min(dim=-1, keepdim=True).values
    high = flat.max(dim=-1, keepdim=True).values
    span = high - low
    meaningful = span > 1e-4 * torch.maximum(high.abs(), low.abs()) + 1e-12
    scaled = torch.where(meaningful, (flat - low) / span.clamp_min(1e-12), torch.zeros_like(flat))
    return scaled.view_as(maps)


def combine_scales(masks: torch.Tensor, sizes: Sequence[int], exponent: float) -> torch.Tensor:
    """Weighted sum of per-size masks, each min-max normalised, normalised again.

    Parameters
    ----------
    masks : torch.Tensor
        (B, M, *spatial), one mask per grid size.
    sizes : sequence of int
        The M grid sizes.
    exponent : float
        Each mask is weighted by ``size ** exponent``: 0 weighs all sizes equally (the MDM
        authors' sum); 2 lets fine masks carry the detail, since coarse grids spread saliency
        about one cell past the edges of what they found.

    Returns
    -------
    torch.Tensor
        (B, 1, *spatial) in [0, 1].
    """
    dims = masks.ndim - 2
    weights = torch.tensor([float(k) ** exponent for k in sizes], device=masks.device)
    weights = (weights / weights.sum()).view(1, -1, *[1] * dims)
    return normalise((normalise(masks, dims) * weights).sum(1, keepdim=True), dims)


def connected_regions(mask: torch.Tensor) -> tuple[np.ndarray, int]:
    """Connected components of a ``(*spatial)`` mask (corners connect), and how many there are.

    Returns
    -------
    labels : numpy.ndarray
        int32, 0 outside the regions and 1 ... n inside.
    n : int
        Number of regions.
    """
    array = mask.detach().cpu().numpy() != 0
    labels, count = ndimage.label(array, structure=np.ones((3,) * array.ndim, dtype=bool))
    return labels.astype(np.int32), int(count)
