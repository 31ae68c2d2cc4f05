"""A segmentation model whose output at each voxel depends on that voxel only."""

from __future__ import annotations

import torch
from torch import nn


class ThresholdSegmenter(nn.Module):
    """Per-voxel logits (B, 2, *spatial): channel 1 = ``gain`` * (intensity - ``threshold``).

    Channel 0 is the negative of channel 1; the intensity is the mean over input channels.
    Bright voxels are predicted as label 1, and the mean channel-1 score inside any region
    depends on the input inside that region only, so a faithful map of a
    :class:`~medmdm.explainers.targets.RegionTarget` lies in its region.

    Parameters
    ----------
    threshold : float
        Intensity at which label 1 takes over.
    gain : float
        Scale of the logits.
    """

    def __init__(self, threshold: float = 0.3, gain: float = 8.0) -> None:
        super().__init__()
        self.threshold = threshold
        self.gain = nn.Parameter(torch.tensor(float(gain)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = self.gain * (x.mean(dim=1) - self.threshold)
        return torch.stack([-evidence, evidence], dim=1)
