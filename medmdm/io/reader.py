"""Reading a study (DICOM file, DICOM series folder, NIfTI, PNG/JPEG/TIFF, or several co-registered files
as its channels) into a MONAI MetaTensor.

Conventions, the same as ``monai.transforms.LoadImage(ensure_channel_first=True)`` with MONAI's
ITK reader:

- channel first, float32: ``(C, *spatial)`` with C = 1 for grey and 3 for RGB, the 4th axis of a 4D
  NIfTI, or the channels of several files read together (in the order given);
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
the pixels, so compressed transfer syntaxes go through pydicom's handlers; what is read and what
is refused is listed in :mod:`medmdm.io.dicom`) or from the NIfTI header (nibabel's ``affine``,
i.e. the sform, else the qform), rather than through a MONAI ``ImageReader``; ``tests/io`` and
``tests/test_corpus.py`` check the geometry against SimpleITK.

A series' slices must share their size, pixel spacing (to a relative 1e-3) and orientation (to
:data:`ORIENTATION_TOLERANCE` in each direction cosine: 1e-3, a tilt of 0.06 degrees, half a
millimetre across a 500 mm field of view, within what scanners write), and lie at distinct
positions along the normal. Several frames at one position (a 4D or temporal series) are refused,
naming how many per position. Slice gaps within 1% of the median gap (:data:`SPACING_TOLERANCE`)
are taken as one step, as before; beyond, up to :data:`MAX_GAP` median gaps (missing slices, an
irregular series), the series is resampled along the normal onto a regular grid of the median gap,
by linear interpolation between neighbouring slices, with a one-line warning; the study keeps
where its source slices lie (:attr:`Study.source_slice_positions`), which the DICOM writers use to
put their frames back on the source slices.

NIfTI: the header's size is checked against the file (and :data:`MAX_VALUES`) before anything is
allocated; an affine that is not finite or is singular (zero pixdim, all-zero sform) is refused,
as are NaN and infinite voxels (DICOM too), and a 4D image whose 4th axis is time (time units in
the header): a 4D image otherwise holds channels, as MONAI's ``NibabelReader`` reads it.

PNG, JPEG and TIFF images are read in pixel space (:mod:`medmdm.io.images`): no patient geometry,
1 mm pixels, kind ``"image"``.

Several files read together (BraTS' T1, T1c, T2 and FLAIR) are the channels of one study, in the order
given: they must share their spatial shape and their affine (to :data:`GRID_TOLERANCE` mm in every
entry); the study keeps the first file's identifiers and headers and lists the file of each channel
(:attr:`Study.channel_files`).
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from nibabel.openers import ImageOpener
from nibabel.orientations import aff2axcodes
from pydicom import Dataset

from medmdm.errors import InputError, one_line
from medmdm.io.dicom import (
    MAX_VALUES,
    ORIENTATION_TOLERANCE,
    Frame,
    drop_pixel_data,
    looks_like_dicom,
    read_dataset,
    read_frames,
)
from medmdm.io.images import PIXEL_SPACING, looks_like_image, read_image
from medmdm.io.series import is_link_loop, select_series

StudyKind = Literal["dicom-file", "dicom-series", "nifti", "image"]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SPACING_TOLERANCE = 0.01  # relative difference allowed between slice gaps without resampling
PIXEL_SPACING_TOLERANCE = 1e-3  # relative difference allowed between the slices' pixel spacings
POSITION_TOLERANCE = 1e-3  # mm: slices closer than this along the normal are at one position
MAX_GAP = 5.0  # largest slice gap resampled over, in median gaps
NIFTI_VECTOR_INTENT = 1007  # NIFTI_INTENT_VECTOR: the 4th axis holds channels
NIBABEL_LOGGER = "nibabel.global"
GRID_TOLERANCE = 1e-3  # mm: largest difference between the affines of files read as one study's channels


@dataclass
class Study:
    """An image with its geometry and identifiers.

    Attributes
    ----------
    image : monai.data.MetaTensor
        (C, *spatial) float32, C = 1 (grey), 3 (RGB), or the channels of a 4D NIfTI or of several files;
        2D as (C, W, H), 3D as (C, X, Y, Z).
    path : Path
        What was read (file or folder; the first of several files read as channels).
    kind : str
        ``"dicom-file"``, ``"dicom-series"``, ``"nifti"``, or ``"image"`` (PNG, JPEG or TIFF, in pixel
        space: no patient geometry). Of the first file when several were read.
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
    source_slice_positions : tuple of float
        When the source's slices were irregularly spaced and the image was resampled onto a
        regular grid: where each source slice lies along the image's third axis, in mm from the
        first slice of the image (``files``, ``sop_instance_uids``, ``headers`` and
        ``frame_numbers`` stay one per source slice). Empty when the image's slices are the
        source's.
    notes : tuple of str
        What reading assumed or changed (resampled slices, a default pixel spacing...), as warned;
        :func:`medmdm.pipeline.read` fills it so that the report says it too.
    channel_files : tuple of Path
        When several files were read as the study's channels: the file of each channel, in channel
        order (a 4D NIfTI is named once per channel it gives). Empty for a study of one file or folder.
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
    source_slice_positions: tuple[float, ...] = ()
    notes: tuple[str, ...] = ()
    channel_files: tuple[Path, ...] = ()

    @property
    def patient_geometry(self) -> bool:
        """Whether the affine places the image in a patient (False: pixel space, an ``"image"`` study)."""
        return self.kind != "image"

    @property
    def meta(self) -> dict[str, Any]:
        """The MetaTensor's meta dictionary (``affine``, ``original_affine``, ``spatial_shape``...)."""
        return self.image.meta

    @property
    def affine(self) -> torch.Tensor:
        """(4, 4) RAS affine of the image."""
        return self.image.affine


def load_study(path: str | Path | Sequence[str | Path], series_uid: str | None = None) -> Study:
    """Read a DICOM file, a DICOM series folder, a NIfTI file, a PNG/JPEG/TIFF image, or several of
    these as the channels of one study.

    Parameters
    ----------
    path : str, Path or sequence of them
        A ``.nii``/``.nii.gz`` file, a ``.png``/``.jpg``/``.jpeg``/``.tif``/``.tiff`` image, a DICOM
        file (single- or multi-frame) or a folder holding DICOM series (searched recursively; file
        names and InstanceNumber are not used). Several paths: the channels of one study, in order,
        on one grid.
    series_uid : str, optional
        The series to read from a folder holding several (from each folder, when several).

    Returns
    -------
    Study

    Raises
    ------
    InputError
        Missing, empty, unreadable or inconsistent input; several series and no ``series_uid``;
        several paths whose grids differ.
    """
    if not isinstance(path, str | Path):
        paths = [Path(p) for p in path]
        if not paths:
            raise InputError("no study to read: give one path, or one per channel")
        if len(paths) > 1:
            return _channels_study([load_study(p, series_uid) for p in paths])
        path = paths[0]
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: {_why_missing(path)}")
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
    if path.is_file() and looks_like_image(path) and not looks_like_dicom(path):  # a preamble may be TIFF
        return _load_image(path)
    ds = read_dataset(path)
    frames = read_frames(ds, path)
    return _dicom_study(frames, {path: drop_pixel_data(ds)}, path, "dicom-file")


def _channels_study(studies: list[Study]) -> Study:
    """Studies of one grid as the channels of one study, in order.

    Raises
    ------
    InputError
        A study whose spatial shape or affine (to :data:`GRID_TOLERANCE` mm) differs from the first's.
    """
    first = studies[0]
    for study in studies[1:]:
        if study.size != first.size:
            raise InputError(
                f"{study.path}: spatial shape {study.size} differs from {first.size} of {first.path}; "
                "files read together are the channels of one study, on one grid"
            )
        offset = float(np.abs(study.affine.numpy() - first.affine.numpy()).max())
        if offset > GRID_TOLERANCE:
            raise InputError(
                f"{study.path}: affine differs from that of {first.path} by up to {offset:.4g} mm; "
                "files read together are the channels of one study, on one grid"
            )
    meta = {**first.image.meta, "original_channel_dim": -1}
    image = MetaTensor(torch.cat([study.image.as_tensor() for study in studies]), meta=meta)
    channel_files = tuple(study.path for study in studies for _ in range(study.image.shape[0]))
    return replace(first, image=image, channel_files=channel_files)


def _load_image(path: Path) -> Study:
    """A PNG, JPEG or TIFF image in pixel space (see :mod:`medmdm.io.images`)."""
    data, kind = read_image(path)
    warnings.warn(
        f"{path}: a {kind} image has no patient geometry; read in pixel space "
        f"({PIXEL_SPACING:g} mm pixels), and outputs that need a patient are not written",
        stacklevel=3,
    )
    spacing = (PIXEL_SPACING, PIXEL_SPACING)
    affine = LPS_TO_RAS @ np.diag([*spacing, 1.0, 1.0])
    return _study(data, affine, path, "image", spacing, files=[path])


def _why_missing(path: Path) -> str:
    """Why a path that does not exist is missing: nothing there, a broken link, or a link loop."""
    if is_link_loop(path):
        return "symbolic link loop"
    return "broken symbolic link" if path.is_symlink() else "no such file or folder"


def interpolate_slices(volume: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A volume's values at fractional slice indices, by linear interpolation between neighbours.

    Parameters
    ----------
    volume : numpy.ndarray
        ``(..., Z)``, slices along the last axis.
    at : numpy.ndarray
        ``(N,)`` slice indices, clamped to ``[0, Z - 1]``.

    Returns
    -------
    numpy.ndarray
        ``(..., N)``, ``volume``'s dtype when it is floating, else float64.

    Examples
    --------
    >>> interpolate_slices(np.array([[0.0, 10.0, 30.0]]), np.array([0.0, 0.25, 1.75, 9.0]))
    array([[ 0. ,  2.5, 25. , 30. ]])
    """
    last = volume.shape[-1] - 1
    at = np.clip(np.asarray(at, dtype=float), 0, last)
    below = np.minimum(np.floor(at).astype(int), max(last - 1, 0))
    above = np.minimum(below + 1, last)
    weight = at - below
    dtype = volume.dtype if np.issubdtype(volume.dtype, np.floating) else np.float64
    low, high = np.take(volume, below, axis=-1), np.take(volume, above, axis=-1)
    return (low * (1 - weight) + high * weight).astype(dtype, copy=False)


def _check_and_sort(frames: list[Frame], path: Path) -> tuple[list[Frame], np.ndarray]:
    """Frames sorted along the normal, and their positions along it in mm.

    Raises
    ------
    InputError
        Frames of different sizes, pixel spacings or orientations; several frames at one position.
    """
    first = frames[0]
    for f in frames[1:]:
        if f.pixels.shape != first.pixels.shape:
            raise InputError(
                f"{f.file}: image size {f.pixels.shape} differs from {first.pixels.shape} "
                f"of {first.file} in the same series"
            )
        if np.abs(f.orientation - first.orientation).max() > ORIENTATION_TOLERANCE:
            raise InputError(f"{f.file}: orientation differs from {first.file} in the same series")
        if np.abs(f.pixel_spacing / first.pixel_spacing - 1).max() > PIXEL_SPACING_TOLERANCE:
            raise InputError(f"{f.file}: pixel spacing differs from {first.file} in the same series")
    normal = first.normal
    frames = sorted(frames, key=lambda f: float(f.position @ normal))
    along = np.array([float(f.position @ normal) for f in frames])
    same = np.flatnonzero(np.diff(along) < POSITION_TOLERANCE)
    if same.size:
        starts = np.concatenate([[0], np.flatnonzero(np.diff(along) >= POSITION_TOLERANCE) + 1])
        counts = np.diff(np.concatenate([starts, [len(frames)]]))
        if counts.min() == counts.max():
            raise InputError(
                f"{path}: {counts[0]} frames at each of {len(counts)} slice positions (a 4D or temporal "
                "series); medmdm reads one frame per position"
            )
        i = int(same[0])
        raise InputError(
            f"{frames[i + 1].file}: same slice position as {frames[i].file.name} (up to {counts.max()} "
            "frames at one position: a duplicate file, or a 4D series with frames missing)"
        )
    return frames, along


def _regular_grid(along: np.ndarray, where: Path) -> tuple[float, np.ndarray | None]:
    """The slice step in mm and, for irregular gaps, the fractional source slice of each grid slice.

    Gaps within :data:`SPACING_TOLERANCE` of the median are one step (None: no resampling); beyond,
    the grid steps by the median gap from the first slice to the last, with a warning.

    Raises
    ------
    InputError
        A gap over :data:`MAX_GAP` median gaps.
    """
    gaps = np.diff(along)
    typical = float(np.median(gaps))
    if np.abs(gaps - typical).max() <= SPACING_TOLERANCE * typical + POSITION_TOLERANCE:
        return float(along[-1] - along[0]) / (len(along) - 1), None
    if gaps.max() > MAX_GAP * typical:
        i = int(np.argmax(gaps))
        raise InputError(
            f"{where}: a gap of {gaps[i]:.4g} mm between slices {i + 1} and {i + 2} of {len(along)}, "
            f"over {MAX_GAP:g} times the median gap ({typical:.4g} mm): not one volume"
        )
    count = round(float(along[-1] - along[0]) / typical) + 1
    grid = along[0] + typical * np.arange(count)
    warnings.warn(
        f"{where}: irregular slice gaps ({gaps.min():.4g} to {gaps.max():.4g} mm, median {typical:.4g} mm); "
        f"resampled onto {count} slices {typical:.4g} mm apart",
        stacklevel=4,
    )
    return typical, np.interp(grid, along, np.arange(len(along)))


def _dicom_study(frames: list[Frame], headers: dict[Path, Dataset], path: Path, kind: StudyKind) -> Study:
    """The study of a file's or series' frames; ``headers`` by file, the first giving the identifiers."""
    frames, along = _check_and_sort(frames, path)
    ds = next(iter(headers.values()))
    first = frames[0]
    if not first.spacing_given:
        warnings.warn(f"{path}: no PixelSpacing or ImagerPixelSpacing; read with 1 mm pixels", stacklevel=3)
    step, at = (first.thickness, None) if len(frames) == 1 else _regular_grid(along, path)
    values = (len(frames) if at is None else len(at)) * first.pixels.size
    if values > MAX_VALUES:
        raise InputError(f"{path}: image too large ({values} values; medmdm reads at most {MAX_VALUES})")
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
    if at is not None:
        data = interpolate_slices(data, at)
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
        source_slice_positions=() if at is None else tuple(float(a) for a in along - along[0]),
    )


def _study(
    data: np.ndarray,
    affine: np.ndarray,
    path: Path,
    kind: StudyKind,
    spacing: tuple[float, ...],
    **fields: Any,
) -> Study:
    """Wrap a (C, *spatial) array and its RAS affine into a MetaTensor and a Study.

    Raises
    ------
    InputError
        An affine so far from invertible that no axis code can be given to an axis.
    """
    spatial = tuple(int(s) for s in data.shape[1:])
    codes = aff2axcodes(affine)[: len(spatial)]
    if None in codes:
        sizes = ", ".join(f"{v:.3g}" for v in np.linalg.norm(affine[:3, :3], axis=0))
        raise InputError(f"{path}: degenerate geometry (voxel sizes {sizes} mm): an axis has no direction")
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
    return Study(
        image=image,
        path=path,
        kind=kind,
        spacing=tuple(float(s) for s in spacing),
        size=spatial,
        orientation="".join(codes),
        **fields,
    )


def _load_nifti(path: Path) -> Study:
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        with _nibabel_quiet():
            img = nib.load(path)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise InputError(f"{path}: a {type(img).__name__}, not a NIfTI-1 or NIfTI-2 image")
        _check_nifti_header(img, path)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except InputError:
        raise
    except Exception as e:  # nibabel raises many types on a broken header or data
        raise InputError(f"{path}: unreadable NIfTI ({one_line(e)})") from e
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InputError(f"{path}: {bad} NaN or infinite voxel values")
    affine = np.asarray(img.affine, dtype=float)
    data = np.moveaxis(data, -1, 0) if data.ndim == 4 else data[None]  # (X, Y, Z, C): channels first
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]  # one slice: a 2D image, as a single-frame DICOM file reads
    spatial_rank = data.ndim - 1
    spacing = tuple(float(np.linalg.norm(affine[:3, i])) for i in range(spatial_rank))
    return _study(data, affine, path, "nifti", spacing, files=[path])


@contextlib.contextmanager
def _nibabel_quiet() -> Iterator[None]:
    """Keep nibabel from logging, on standard error, each header value it mends while it reads."""
    logger = logging.getLogger(NIBABEL_LOGGER)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_nifti_header(img: nib.spatialimages.SpatialImage, path: Path) -> None:
    """Refuse a NIfTI header whose shape, size or affine cannot be an image, before reading the data.

    Raises
    ------
    InputError
        Not 2D to 4D; more than :data:`MAX_VALUES` voxels or more bytes than the file holds; a
        zero pixdim where the affine comes from it (no sform; nibabel and ITK would read 1 mm); an
        affine that is not finite or singular; a 4D image over time.
    """
    header = img.header
    shape = tuple(int(n) for n in img.shape)
    if not 2 <= len(shape) <= 4 or min(shape) < 1:
        raise InputError(f"{path}: unsupported NIfTI shape {shape} (2D, 3D, or 3D with channels)")
    values = int(np.prod(shape))
    if values > MAX_VALUES:
        raise InputError(f"{path}: image too large ({shape}; medmdm reads at most {MAX_VALUES} values)")
    needed = int(img.dataobj.offset) + values * img.get_data_dtype().itemsize
    held = _nifti_bytes(path, needed)
    if held < needed:
        raise InputError(
            f"{path}: truncated NIfTI: the header's {shape} of {img.get_data_dtype()} needs {needed} "
            f"bytes, the file holds {held}"
        )
    with ImageOpener(path) as stream:  # nibabel's own header sets a zero pixdim to 1
        pixdims = type(header).from_fileobj(stream, check=False)["pixdim"][1 : min(len(shape), 3) + 1]
    pixdim = ", ".join(f"{float(v):g}" for v in pixdims)
    if header["sform_code"] == 0 and not (np.isfinite(pixdims) & (pixdims != 0)).all():
        raise InputError(f"{path}: NIfTI pixdim {pixdim} (no sform): voxel sizes must be finite and non-zero")
    affine = np.asarray(img.affine, dtype=float)
    if not np.isfinite(affine).all():
        raise InputError(f"{path}: NIfTI affine is not finite (pixdim {pixdim})")
    sizes = np.linalg.norm(affine[:3, :3], axis=0)
    if abs(float(np.linalg.det(affine[:3, :3]))) <= 1e-9 * max(float(np.prod(sizes)), 1e-300):
        shown = ", ".join(f"{v:g}" for v in sizes)
        raise InputError(f"{path}: NIfTI affine is singular (voxel sizes {shown} mm; pixdim {pixdim})")
    time_unit = header.get_xyzt_units()[1]
    if (
        len(shape) == 4
        and shape[3] > 1
        and time_unit != "unknown"
        and header["intent_code"] != NIFTI_VECTOR_INTENT
    ):
        raise InputError(
            f"{path}: {shape[3]} volumes over time (a 4D NIfTI in {time_unit}); medmdm reads one volume "
            "per position"
        )


def _nifti_bytes(path: Path, needed: int) -> int:
    """The bytes of a NIfTI file once uncompressed, counted up to ``needed``."""
    if not path.name.lower().endswith(".gz"):
        return path.stat().st_size
    with path.open("rb") as f:  # a gzip file ends with its uncompressed size modulo 2**32
        f.seek(-4, os.SEEK_END)
        tail_size = int.from_bytes(f.read(4), "little")
    if needed < 2**32 and tail_size >= needed:
        return tail_size
    held = 0  # several gzip members, or a file that is too short: count what decompresses
    with gzip.open(path) as stream:
        while held < needed and (chunk := stream.read(min(needed - held, 1 << 24))):
            held += len(chunk)
    return held
