"""NIfTI output: a saliency map on its reference image's grid, and the reference image itself.

Both files carry the reference's RAS affine (``reference.meta["affine"]``) as sform and qform, with
code 1 (scanner/aligned), so a viewer (3D Slicer, ITK-SNAP, FSLeyes) shows the map over the image.
Axes follow ``medmdm.io``: a volume ``(C, X, Y, Z)`` is written ``(X, Y, Z)``; a 2D image
``(C, W, H)`` is written as one slice ``(W, H, 1)`` with the same 4x4 affine, whose third column is
the slice normal times the slice thickness. ``medmdm.io.load_study`` reads these files back.

The qform can only hold a rotation (with a possible flip), a voxel size and a shift: for an affine
with shear, nibabel stores the nearest such transform there, and the sform stays exact.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from medmdm.errors import InputError
from medmdm.writers.atomic import atomic_path
from medmdm.writers.checks import saliency_array

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SCANNER_CODE = 1  # NIfTI xform code "scanner" (aligned)


def write_nifti_overlay(saliency: torch.Tensor, reference: MetaTensor, path: str | Path) -> Path:
    """Write a saliency map as a float32 NIfTI on the reference image's grid.

    Parameters
    ----------
    saliency : torch.Tensor
        ``(1, *spatial)`` or ``(*spatial)`` float, finite, with the reference's spatial shape.
    reference : monai.data.MetaTensor
        ``(C, *spatial)`` image, 2D or 3D, whose ``meta["affine"]`` (4x4 RAS) is written.
    path : str or Path
        ``.nii`` or ``.nii.gz``; its folder must exist. Written atomically.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        Wrong extension, reference without a usable affine or not 2D/3D, saliency of another
        spatial shape or with non-finite values. Nothing is written then.
    """
    path = _check_path(path)
    spatial, affine = _geometry(reference)
    data = saliency_array(saliency, spatial, "reference grid").astype(np.float32)
    return _save(_as_volume(data), affine, path, "medmdm saliency")


def write_nifti_image(reference: MetaTensor, path: str | Path) -> Path:
    """Write the reference image itself as a float32 NIfTI, to load beside its saliency map.

    A single-channel image is written ``(X, Y, Z)`` (2D: ``(W, H, 1)``); a multi-channel one (RGB)
    keeps every channel as a 4th dimension, ``(X, Y, Z, C)`` (2D: ``(W, H, 1, C)``), which viewers
    show as a vector (colour) volume. The affine is the reference's, as in
    :func:`write_nifti_overlay`.

    Parameters
    ----------
    reference : monai.data.MetaTensor
        ``(C, *spatial)`` image, 2D or 3D, with ``meta["affine"]``.
    path : str or Path
        ``.nii`` or ``.nii.gz``; written atomically.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        Wrong extension, reference without a usable affine or not 2D/3D.
    """
    path = _check_path(path)
    _, affine = _geometry(reference)
    data = reference.detach().as_tensor().to(device="cpu", dtype=torch.float32).numpy()
    channels = [_as_volume(c) for c in data]
    volume = channels[0] if len(channels) == 1 else np.stack(channels, axis=-1)
    return _save(volume, affine, path, "medmdm image")


def _check_path(path: str | Path) -> Path:
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise InputError(f"{path}: a NIfTI file name must end with .nii or .nii.gz")
    return path


def _geometry(reference: MetaTensor) -> tuple[tuple[int, ...], np.ndarray]:
    """Spatial shape and 4x4 RAS affine (float64) of a ``(C, *spatial)`` reference."""
    if not isinstance(reference, MetaTensor):
        raise InputError(
            f"reference must be a monai MetaTensor carrying an affine, not {type(reference).__name__}"
        )
    spatial = tuple(int(s) for s in reference.shape[1:])
    if len(spatial) not in (2, 3):
        raise InputError(f"reference must be (C, W, H) or (C, X, Y, Z), got shape {tuple(reference.shape)}")
    affine = reference.meta.get("affine", reference.affine)
    affine = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)
    if affine.shape == (1, 4, 4):
        affine = affine[0]
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise InputError(f"reference affine must be a finite 4x4 matrix, got shape {affine.shape}")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError("reference affine is singular")
    return spatial, affine


def _as_volume(data: np.ndarray) -> np.ndarray:
    """A 2D ``(W, H)`` array as one slice ``(W, H, 1)``; 3D unchanged."""
    return data[..., None] if data.ndim == 2 else data


def _save(data: np.ndarray, affine: np.ndarray, path: Path, description: str) -> Path:
    img = nib.Nifti1Image(np.ascontiguousarray(data, dtype=np.float32), affine)
    img.set_sform(affine, code=SCANNER_CODE)
    img.set_qform(affine, code=SCANNER_CODE)
    header = img.header
    header.set_xyzt_units(xyz="mm")
    header["descrip"] = description.encode()[:79]
    if data.ndim == 4:
        header.set_intent("vector")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return path
