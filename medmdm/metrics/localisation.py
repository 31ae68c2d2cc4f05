"""Localisation: how well a map agrees with a ground-truth region (no model involved).

Every function takes maps (B, 1, *spatial) and regions (B, *spatial) or (B, 1, *spatial), where a
nonzero region value means inside, and returns tensors on the maps' device.

References
----------
Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016 (pointing game; the
15-pixel tolerance at 224 follows TorchRay's benchmark). Wang et al., "Score-CAM: Score-Weighted
Visual Explanations for Convolutional Neural Networks", CVPR Workshops 2020 (energy-based pointing
game). The overlap protocol (percentile thresholds, Dice, IoU, precision, sensitivity) follows the
MDM code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medmdm.errors import InputError, OptionError
from medmdm.metrics._checks import check_percentiles, check_region, check_saliency

PERCENTILES: tuple[float, ...] = (80, 85, 90, 95, 99)


def default_tolerance(spatial: Sequence[int]) -> float:
    """Pointing-game tolerance in voxels: 15 at a longest side of 224, proportional to it."""
    return 15.0 * max(spatial) / 224.0


def pointing_game(
    saliency: torch.Tensor, region: torch.Tensor, tolerance: float | None = None
) -> torch.Tensor:
    """Whether the peak of each map lies within ``tolerance`` voxels of its region.

    The peak is the first voxel (in flat index order) holding the map's maximum. Distances are
    Euclidean, in voxel units, to the nearest voxel of the region; a peak inside the region is at
    distance 0.

    Parameters
    ----------
    saliency : torch.Tensor
        (B, 1, *spatial) maps.
    region : torch.Tensor
        (B, *spatial) or (B, 1, *spatial) ground truth, nonzero inside.
    tolerance : float, optional
        Largest distance that still counts as a hit; default :func:`default_tolerance` of the
        spatial shape (15 voxels at 224, 30 at 448).

    Returns
    -------
    torch.Tensor
        (B,) bool on the maps' device. A sample whose region is empty is a miss (False).

    Examples
    --------
    >>> saliency = torch.zeros(1, 1, 32, 32)
    >>> saliency[0, 0, 10, 3] = 1.0
    >>> region = torch.zeros(1, 32, 32, dtype=torch.bool)
    >>> region[0, 10:20, 6:12] = True
    >>> pointing_game(saliency, region, tolerance=3).tolist(), pointing_game(saliency, region, 2).tolist()
    ([True], [False])
    """
    saliency = check_saliency(saliency)
    region = check_region(region, saliency)
    batch, _, *spatial = saliency.shape
    if tolerance is None:
        tolerance = default_tolerance(spatial)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not tolerance >= 0:
        raise OptionError(f"tolerance must be a number >= 0 or None, got {tolerance!r}")
    peaks = torch.stack(torch.unravel_index(saliency.reshape(batch, -1).argmax(dim=1), spatial), dim=1)
    # squared distance from each sample's peak to every voxel, built one axis at a time
    distance = torch.zeros(batch, *spatial, device=saliency.device)
    for axis, size in enumerate(spatial):
        shape = [1] * (len(spatial) + 1)
        shape[axis + 1] = size
        coordinate = torch.arange(size, device=saliency.device).reshape(shape)
        distance = distance + (coordinate - peaks[:, axis].reshape(batch, *[1] * len(spatial))) ** 2
    nearest = distance.masked_fill(~region, math.inf).reshape(batch, -1).amin(dim=1)
    return nearest <= float(tolerance) ** 2


def energy_pointing_game(saliency: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Fraction of each map's mass that lies inside its region.

    Parameters
    ----------
    saliency : torch.Tensor
        (B, 1, *spatial) non-negative maps.
    region : torch.Tensor
        (B, *spatial) or (B, 1, *spatial) ground truth, nonzero inside.

    Returns
    -------
    torch.Tensor
        (B,) float32 in [0, 1] on the maps' device; 0 for a map that sums to 0.

    Raises
    ------
    InputError
        If a map holds negative values (the mass would not be a share).
    """
    saliency = check_saliency(saliency)
    region = check_region(region, saliency)
    if (saliency < 0).any():
        raise InputError("saliency must be non-negative for the energy pointing game")
    maps = saliency.reshape(saliency.shape[0], -1).float()
    total = maps.sum(dim=1)
    inside = (maps * region.reshape(maps.shape)).sum(dim=1)
    return torch.where(total > 0, inside / total.clamp(min=torch.finfo(total.dtype).tiny), 0.0)


@dataclass(frozen=True)
class Overlap:
    """Agreement of thresholded maps with their regions, one column per percentile.

    Attributes
    ----------
    percentiles : tuple of float
        The thresholds' percentiles, in the order of the columns.
    dice, iou, precision, sensitivity : torch.Tensor
        (B, len(percentiles)) float32. ``sensitivity`` is NaN for a sample whose region is empty
        (it has no positives to find); the others are always defined, since the voxels at the
        map's maximum are always positive.
    """

    percentiles: tuple[float, ...]
    dice: torch.Tensor
    iou: torch.Tensor
    precision: torch.Tensor
    sensitivity: torch.Tensor

    def as_dict(self) -> dict[str, torch.Tensor]:
        """The four scores by name."""
        return {
            "dice": self.dice,
            "iou": self.iou,
            "precision": self.precision,
            "sensitivity": self.sensitivity,
        }


def overlap(
    saliency: torch.Tensor, region: torch.Tensor, percentiles: Sequence[float] = PERCENTILES
) -> Overlap:
    """Dice, IoU, precision and sensitivity of each map thresholded at its own percentiles.

    For percentile ``p`` the threshold of a map is its ``p``-th percentile (linear interpolation
    between order statistics, as ``numpy.percentile``); voxels at or above it are positive.

    Parameters
    ----------
    saliency : torch.Tensor
        (B, 1, *spatial) maps.
    region : torch.Tensor
        (B, *spatial) or (B, 1, *spatial) ground truth, nonzero inside.
    percentiles : sequence of float
        Percentiles in [0, 100].

    Returns
    -------
    Overlap
        Scores (B, len(percentiles)), float32 on the maps' device.
    """
    saliency = check_saliency(saliency)
    region = check_region(region, saliency)
    values = check_percentiles(percentiles)
    maps = saliency.reshape(saliency.shape[0], -1).float()
    truth = region.reshape(maps.shape)
    counts = []  # (tp, fp, fn) per percentile, one column at a time to keep memory at (B, N)
    for threshold in _percentile(maps, values).T:
        positive = maps >= threshold[:, None]
        counts.append([(positive & truth).sum(1), (positive & ~truth).sum(1), (~positive & truth).sum(1)])
    tp, fp, fn = (torch.stack(column, dim=1).float() for column in zip(*counts, strict=True))
    return Overlap(
        percentiles=values,
        dice=2 * tp / (2 * tp + fp + fn),
        iou=tp / (tp + fp + fn),
        precision=tp / (tp + fp),
        sensitivity=tp / (tp + fn),
    )


def _percentile(maps: torch.Tensor, percentiles: tuple[float, ...]) -> torch.Tensor:
    """(B, P) percentiles of (B, N) values, linear interpolation (no size limit, unlike torch.quantile)."""
    ordered = maps.sort(dim=1).values
    position = torch.tensor(percentiles, dtype=torch.float64, device=maps.device) / 100 * (maps.shape[1] - 1)
    low = position.floor().long()
    high = position.ceil().long()
    weight = (position - low).float()
    return ordered[:, low] + weight * (ordered[:, high] - ordered[:, low])


__all__ = ["PERCENTILES", "Overlap", "default_tolerance", "energy_pointing_game", "overlap", "pointing_game"]
