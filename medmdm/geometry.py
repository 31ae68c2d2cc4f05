"""Mapping a saliency map from the network's input grid back onto the source image's grid.

A bundle's preprocessing (orientation, spacing, resizing, cropping, padding) changes the grid but MONAI
tracks it in the MetaTensor's affine, so the network input's affine still maps its voxels to the same RAS
millimetres as the source's. The map is resampled through the two affines: source voxel ``v`` takes the
map's value at network voxel ``inv(A_network) @ A_source @ v``, with linear interpolation, zero outside the
network's field of view. Output voxel (i, j, k) is therefore source voxel (i, j, k).
"""

from __future__ import annotations

import torch
from monai.data import MetaTensor
from monai.transforms import SpatialResample

from medmdm.errors import InputError


def map_to_source(saliency: torch.Tensor, network_input: MetaTensor, source: MetaTensor) -> torch.Tensor:
    """Resample a map on the network input's grid onto the source image's grid.

    Parameters
    ----------
    saliency : torch.Tensor
        ``(*spatial)`` or ``(1, *spatial)`` map with the network input's spatial shape.
    network_input : monai.data.MetaTensor
        ``(C, *spatial)`` or ``(1, C, *spatial)`` preprocessed image, whose affine the preprocessing kept.
    source : monai.data.MetaTensor
        ``(C, *source_spatial)`` source image with its affine.

    Returns
    -------
    torch.Tensor
        ``(*source_spatial)`` float32 map on the source grid, on the CPU.
    """
    spatial = tuple(network_input.shape[-(source.ndim - 1) :])
    values = saliency.detach().float().cpu().reshape(-1, *saliency.shape[-len(spatial) :])
    if tuple(values.shape[1:]) != spatial or values.shape[0] != 1:
        raise InputError(f"saliency of shape {tuple(saliency.shape)} does not fit the input grid {spatial}")
    network_affine = network_input.affine.detach().cpu().double()
    if network_affine.ndim == 3:
        network_affine = network_affine[0]
    moving = MetaTensor(values, affine=network_affine)
    resample = SpatialResample(mode="bilinear", padding_mode="zeros", align_corners=True, dtype=torch.float64)
    source_affine = source.affine.detach().cpu().double()
    out = resample(moving, dst_affine=source_affine, spatial_size=tuple(source.shape[1:]))
    return torch.as_tensor(out, dtype=torch.float32)[0].contiguous()
