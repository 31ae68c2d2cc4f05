"""Analytic classifiers whose evidence lies in known regions.

Both return logits (B, 2): class 1 grows with the mean intensity inside a region, class 0 is its
negative. Nothing outside the regions changes the output, so a faithful map lies inside them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

Region = Sequence[tuple[int, int]]


def _region_mean(x: torch.Tensor, region: Region) -> torch.Tensor:
    """(B,) mean over channels and the box ``region`` ((start, stop) per spatial axis)."""
    if len(region) != x.ndim - 2:
        raise ValueError(f"region has {len(region)} axes for an input of {x.ndim - 2} spatial dims")
    index = (slice(None), slice(None), *[slice(start, stop) for start, stop in region])
    return x[index].mean(dim=tuple(range(1, x.ndim)))


class BoxModel(nn.Module):
    """Class-1 logit = ``gain`` * (mean intensity inside ``box`` - ``offset``); class 0 = its negative.

    Parameters
    ----------
    box : sequence of (start, stop)
        One half-open interval per spatial axis.
    gain, offset : float
        Scale and shift of the logit.
    """

    def __init__(self, box: Region, gain: float = 8.0, offset: float = 0.3) -> None:
        super().__init__()
        self.box = [tuple(axis) for axis in box]
        self.gain = nn.Parameter(torch.tensor(float(gain)))
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = self.gain * (_region_mean(x, self.box) - self.offset)
        return torch.stack([-evidence, evidence], dim=1)


class EitherRegionModel(nn.Module):
    """Class-1 logit from the largest of the evidence in two (or more) regions.

    Any region alone is enough for the class: a map that keeps only one of them keeps the score.

    Parameters
    ----------
    *regions : sequence of (start, stop)
        Two or more boxes.
    gain, offset : float
        Scale and shift of the logit, as in :class:`BoxModel`.
    """

    def __init__(self, *regions: Region, gain: float = 8.0, offset: float = 0.3) -> None:
        super().__init__()
        if len(regions) < 2:
            raise ValueError("EitherRegionModel needs at least two regions")
        self.regions = [[tuple(axis) for axis in region] for region in regions]
        self.gain = nn.Parameter(torch.tensor(float(gain)))
        self.offset = offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = torch.stack([_region_mean(x, region) for region in self.regions], dim=1)
        evidence = self.gain * (means.amax(dim=1) - self.offset)
        return torch.stack([-evidence, evidence], dim=1)
