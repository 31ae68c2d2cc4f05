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
    rank = source.ndim - 1
    spatial = tuple(network_input.shape[-rank:])
    values = saliency.detach().float().cpu().reshape(-1, *saliency.shape[-len(spatial) :])
    if tuple(values.shape[1:]) != spatial or values.shape[0] != 1:
        raise InputError(f"saliency of shape {tuple(saliency.shape)} does not fit the input grid {spatial}")
    source_to_network = voxel_map(network_input.affine, source.affine, rank)
    return _resampled(values, torch.linalg.inv(source_to_network), tuple(source.shape[1:]))


def map_to_network(values: torch.Tensor, network_input: MetaTensor, source: MetaTensor) -> torch.Tensor:
    """Resample ``(*source_spatial)`` values on the source grid (a lesion mask) onto the network input's
    grid: the inverse of :func:`map_to_source`, with linear interpolation, zero outside the source.

    Returns
    -------
    torch.Tensor
        ``(*spatial)`` float32 values on the network input's grid, on the CPU.
    """
    rank = source.ndim - 1
    moving = values.detach().float().cpu().reshape(1, *source.shape[1:])
    spatial = tuple(network_input.shape[-rank:])
    return _resampled(moving, voxel_map(network_input.affine, source.affine, rank), spatial)


def _resampled(values: torch.Tensor, to_output: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """``(1, *in_spatial)`` values resampled onto an output voxel grid of shape ``spatial``, where
    ``to_output`` maps input voxels to output voxels: ``(*spatial)`` float32."""
    moving = MetaTensor(values, affine=to_output)
    resample = SpatialResample(mode="bilinear", padding_mode="zeros", align_corners=True, dtype=torch.float64)
    identity = torch.eye(len(spatial) + 1, dtype=torch.float64)
    out = resample(moving, dst_affine=identity, spatial_size=spatial)
    return torch.as_tensor(out, dtype=torch.float32)[0].contiguous()


def voxel_map(network_affine: torch.Tensor, source_affine: torch.Tensor, rank: int) -> torch.Tensor:
    """The ``(rank + 1, rank + 1)`` map from source voxels to network-input voxels,
    ``inv(A_network) @ A_source``.

    Both affines are 4x4 in RAS millimetres. For a 2D image the third column is the slice normal, so the
    product is taken in 3D and its in-plane part kept: this holds for any plane, sagittal and coronal ones
    too, whose in-plane axes have no 2D affine of their own in RAS.

    Raises
    ------
    InputError
        A singular affine, or (2D) a network grid that does not lie in the source's plane.
    """
    network = network_affine.detach().cpu().double()
    network = network[0] if network.ndim == 3 else network
    source = source_affine.detach().cpu().double()
    if abs(float(torch.linalg.det(network))) < 1e-12 or abs(float(torch.linalg.det(source))) < 1e-12:
        raise InputError("the network input's or the source's affine is singular; cannot map the map back")
    full = torch.linalg.solve(network, source)
    if rank == 3:
        return full
    if float(full[2, :2].abs().max()) > 1e-3:
        raise InputError(
            "the network input does not lie in the source image's plane; cannot map the map back"
        )
    keep = [0, 1, 3]
    return full[keep][:, keep]
