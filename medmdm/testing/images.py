"""Synthetic images: bright boxes on a noisy background."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medmdm.testing.models import Region


def region_mask(spatial: Sequence[int], *regions: Region) -> torch.Tensor:
    """Bool tensor of shape ``spatial``, True inside any of ``regions``."""
    mask = torch.zeros(tuple(spatial), dtype=torch.bool)
    for region in regions:
        mask[tuple(slice(start, stop) for start, stop in region)] = True
    return mask


def box_image(
    spatial: Sequence[int],
    *regions: Region,
    channels: int = 1,
    batch: int = 1,
    brightness: float = 1.0,
    noise: float = 0.1,
    seed: int = 0,
) -> torch.Tensor:
    """(batch, channels, *spatial) images: noise in [0, ``noise``], plus ``brightness`` in the regions."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand((batch, channels, *spatial), generator=generator) * noise
    return image + brightness * region_mask(spatial, *regions).float()
