"""Reading a study (DICOM file, DICOM series folder, NIfTI) into a MONAI MetaTensor.

Conventions, the same as ``monai.transforms.LoadImage(ensure_channel_first=True)`` with MONAI's
ITK reader:

- channel first, float32: ``(C, *spatial)`` with C = 1 for grey and 3 for RGB;
- the first spatial axis runs along a DICOM row (column index), the second down a column (row
  index), the third (volumes) along the slice normal, slices sorted by
  ``ImagePositionPatient . (row cosines x column cosines)``. A 2D image is therefore
  ``(C, W, H)`` (columns, rows), the transpose of ``pydicom``'s ``(rows, columns)`` array, and a
  volume ``(C, X, Y, Z)``;
- ``meta["affine"]`` is 4x4 in RAS millimetres for 2D and 3D alike: column *i* is the step of
  spatial axis *i* (direction cosines x spacing, LPS converted to RAS by negating x and y), the
  last column the centre of the first voxel. For a 2D image the third column is the slice normal
  times the slice thickness.

The MetaTensor is built here from geometry computed from the DICOM attributes (pydicom decodes
the pixels, so compressed transfer syntaxes go through pydicom's handlers) or from the NIfTI
header (nibabel's ``affine``, i.e. the sform, else the qform), rather than through a MONAI
``ImageReader``; ``tests/io`` checks the geometry against SimpleITK.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from nibabel.orientations import aff2axcodes
from pydicom import Dataset

from medmdm.errors import InputError, one_line
from medmdm.io.dicom import Frame, drop_pixel_data, read_dataset, read_frames, select_series

StudyKind = Literal["dicom-file", "dicom-series", "nifti"]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SPACING_TOLERANCE = 0.01  # relative difference allowed between slice gaps
ORIENTATION_TOLERANCE = 1e-4


@dataclass
class Study:
    """An image with its geometry and identifiers.

    Attributes
    ----------
    image : monai.data.MetaTensor
        (C, *spatial) float32, C = 1 (grey) or 3 (RGB); 2D as (C, W, H), 3D as (C, X, Y, Z).
    path : Path
        What was read (file or folder).
    kind : str
        ``"dicom-file"``, ``"dicom-series"`` or ``"nifti"``.
    modality, series_uid, study_uid, frame_of_reference_uid, description : str
        DICOM identifiers, ``""`` when absent (always for NIfTI).
    sop_instance_uids : list of str
        SOPInstanceUID of each slice, in slice order (one per frame for a multi-frame file).
    files : list of Path
        Source file of each slice, in slice order.
    spacing : tuple of float
        Voxel size in mm along each spatial axis.
    size : tuple of int
        Spatial shape.
    orientation : str
        Axis code of the spatial axes (``"RAS"``, ``"LPS"``, ``"RA"``...), from the affine.
    headers : tuple of pydicom.Dataset
        The source files' headers, read with the image (pixel data removed), one per file, in
        slice order: what the DICOM writers derive their objects from. Empty for NIfTI.
    frame_numbers : tuple of int
        For each slice, in slice order, its 1-based frame number in its file (1 for single-frame
        files). Empty for NIfTI.
    """

    image: MetaTensor
    path: Path
    kind: StudyKind
    modality: str = ""
    series_uid: str = ""
    study_uid: str = ""
    frame_of_reference_uid: str = ""
    sop_instance_uids: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    spacing: tuple[float, ...] = ()
    size: tuple[int, ...] = ()
    orientation: str = ""
    description: str = ""
    headers: tuple[Dataset, ...] = field(default=(), repr=False)
    frame_numbers: tuple[int, ...] = ()

    @property
    def meta(self) -> dict[str, Any]:
        """The MetaTensor's meta dictionary (``affine``, ``original_affine``, ``spatial_shape``...)."""
        return self.image.meta

    @property
    def affine(self) -> torch.Tensor:
        """(4, 4) RAS affine of the image."""
        return self.image.affine


def load_study(path: str | Path, series_uid: str | None = None) -> Study:
    """Read a DICOM file, a DICOM series folder or a NIfTI file.

    Parameters
    ----------
    path : str or Path
        A ``.nii``/``.nii.gz`` file, a DICOM file (single- or multi-frame) or a folder holding
        DICOM series (searched recursively; file names and InstanceNumber are not used).
    series_uid : str, optional
        The series to read from a folder holding several.

    Returns
    -------
    Study

    Raises
    ------
    InputError
        Missing, empty, unreadable or inconsistent input; several series and no ``series_uid``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        info = select_series(path, series_uid)
        frames: list[Frame] = []
        headers: dict[Path, Dataset] = {}
        for f, ds in zip(info.files, info.datasets, strict=True):
            frames.extend(read_frames(ds, f))
            headers[f] = drop_pixel_data(ds)
        return _dicom_study(frames, headers, path, "dicom-series")
    if path.name.lower().endswith(NIFTI_SUFFIXES):
        return _load_nifti(path)
    ds = read_dataset(path)
    frames = read_frames(ds, path)
    return _dicom_study(frames, {path: drop_pixel_data(ds)}, path, "dicom-file")


def _check_and_sort(frames: list[Frame]) -> tuple[list[Frame], float]:
    """Frames sorted along the normal, and the slice step in mm (thickness for one frame)."""
    first = frames[0]
    for f in frames[1:]:
        if f.pixels.shape != first.pixels.shape:
            raise InputError(
                f"{f.file}: image size {f.pixels.shape} differs from {first.pixels.shape} "
                f"of {first.file} in the same series"
            )
        if np.abs(f.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise InputError(f"{f.file}: orientation differs from {first.file} in the same series")
        if np.abs(f.pixel_spacing - first.pixel_spacing).max() > ORIENTATION_TOLERANCE:
            raise InputError(f"{f.file}: pixel spacing differs from {first.file} in the same series")
    if len(frames) == 1:
        return frames, first.thickness
    normal = first.normal
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    along = np.array([f.position @ normal for f in frames])
    gaps = np.diff(along)
    step = float(along[-1] - along[0]) / (len(frames) - 1)
    same = np.flatnonzero(gaps < ORIENTATION_TOLERANCE)
    if same.size:
        i = int(same[0])
        raise InputError(f"{frames[i + 1].file}: same slice position as {frames[i].file.name} in the series")
    typical = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - typical) > SPACING_TOLERANCE * typical + ORIENTATION_TOLERANCE)
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"{frames[i + 1].file}: inconsistent slice spacing, gap {gaps[i]:.4g} mm "
            f"from the previous slice ({frames[i].file.name}) while the median gap is {typical:.4g} mm"
        )
    return frames, step


def _dicom_study(frames: list[Frame], headers: dict[Path, Dataset], path: Path, kind: StudyKind) -> Study:
    """The study of a file's or series' frames; ``headers`` by file, the first giving the identifiers."""
    frames, step = _check_and_sort(frames)
    ds = next(iter(headers.values()))
    first = frames[0]
    row_cos, col_cos = first.orientation[:3], first.orientation[3:]
    row_spacing, col_spacing = (float(s) for s in first.pixel_spacing)
    lps = np.eye(4)
    lps[:3, 0] = row_cos * col_spacing  # axis 0: along a row (column index)
    lps[:3, 1] = col_cos * row_spacing  # axis 1: down a column (row index)
    lps[:3, 2] = first.normal * step
    lps[:3, 3] = first.position
    stack = np.stack([f.pixels for f in frames])  # (Z, rows, cols[, 3])
    if stack.ndim == 3:
        stack = stack[..., None]
    data = stack.transpose(3, 2, 1, 0)  # (C, cols, rows, Z)
    spacing: tuple[float, ...] = (col_spacing, row_spacing, step)
    if len(frames) == 1:
        data, spacing = data[..., 0], spacing[:2]
    return _study(
        data,
        LPS_TO_RAS @ lps,
        path,
        kind,
        spacing,
        modality=str(ds.get("Modality", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        study_uid=str(ds.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
        description=str(ds.get("SeriesDescription", "")),
        sop_instance_uids=[f.sop_instance_uid for f in frames],
        files=[f.file for f in frames],
        headers=tuple(headers[file] for file in dict.fromkeys(f.file for f in frames)),
        frame_numbers=tuple(f.frame_number for f in frames),
    )


def _study(
    data: np.ndarray,
    affine: np.ndarray,
    path: Path,
    kind: StudyKind,
    spacing: tuple[float, ...],
    **fields: Any,
) -> Study:
    """Wrap a (C, *spatial) array and its RAS affine into a MetaTensor and a Study."""
    spatial = tuple(int(s) for s in data.shape[1:])
    affine_t = torch.as_tensor(affine, dtype=torch.float64)
    meta = {
        "affine": affine_t.clone(),
        "original_affine": affine_t.clone(),
        "spatial_shape": np.asarray(spatial),
        "original_channel_dim": -1 if data.shape[0] > 1 else float("nan"),  # as MONAI's readers
        "filename_or_obj": str(path),
        "space": "RAS",
    }
    image = MetaTensor(torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32)), meta=meta)
    code = "".join(aff2axcodes(affine)[: len(spatial)])
    return Study(
        image=image,
        path=path,
        kind=kind,
        spacing=tuple(float(s) for s in spacing),
        size=spatial,
        orientation=code,
        **fields,
    )


def _load_nifti(path: Path) -> Study:
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        img = nib.load(path)
        data = np.asarray(img.dataobj, dtype=np.float32)
        affine = np.asarray(img.affine, dtype=float)
    except Exception as e:  # nibabel raises many types on a broken header or data
        raise InputError(f"{path}: unreadable NIfTI ({one_line(e)})") from e
    if data.ndim < 2 or data.ndim > 4 or not np.isfinite(affine).all():
        raise InputError(
            f"{path}: unsupported NIfTI (shape {data.shape}, affine finite: {np.isfinite(affine).all()})"
        )
    data = np.moveaxis(data, -1, 0) if data.ndim == 4 else data[None]  # (X, Y, Z, C): channels first
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]  # one slice: a 2D image, as a single-frame DICOM file reads
    spatial_rank = data.ndim - 1
    spacing = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(spatial_rank))
    return _study(data, affine, path, "nifti", spacing, files=[path])
