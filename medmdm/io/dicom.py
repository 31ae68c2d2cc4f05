"""DICOM with pydicom: finding the series in a folder, choosing one, and the frames' geometry.

Everything here works in the DICOM patient coordinate system (LPS, millimetres). A file or a
series is turned into a list of :class:`Frame` (one 2D plane each, with its position, orientation,
pixel spacing and rescale), which :mod:`medmdm.io.reader` sorts along the slice normal, checks
and stacks. Pixel data is decoded by pydicom, so every transfer syntax that pydicom's handlers
(numpy, pylibjpeg, ...) know is read: JPEG baseline/lossless, JPEG-LS, JPEG 2000 and RLE.

Each file is parsed once: the folder scan keeps its datasets (:attr:`SeriesInfo.datasets`), whose
pixel data pydicom reads from the file when it is first used; :func:`drop_pixel_data` then leaves
the header that a study keeps for the DICOM writers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError

from medmdm.errors import InputError, one_line

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder.

    Attributes
    ----------
    series_uid : str
        SeriesInstanceUID.
    modality : str
        Modality (``"CT"``, ``"MR"``, ...), ``""`` when absent.
    description : str
        SeriesDescription, ``""`` when absent.
    study_uid : str
        StudyInstanceUID, ``""`` when absent.
    files : tuple of Path
        The series' image files, sorted by name (not slice order).
    datasets : tuple of pydicom.Dataset
        The files' datasets as the scan read them, in the order of ``files``: values over 4 KB
        (pixel data) are left in the file and read from it when first used.
    """

    series_uid: str
    modality: str
    description: str
    study_uid: str
    files: tuple[Path, ...] = field(default_factory=tuple)
    datasets: tuple[Dataset, ...] = field(default_factory=tuple, repr=False, compare=False)

    @property
    def n_images(self) -> int:
        """Number of image files in the series."""
        return len(self.files)

    def summary(self) -> str:
        """One-line description: UID, modality, description and number of images."""
        return f"{self.series_uid} ({self.modality or '?'}, '{self.description}', {self.n_images} images)"


@dataclass
class Frame:
    """One 2D plane of a DICOM image with its geometry, in LPS millimetres.

    Attributes
    ----------
    pixels : numpy.ndarray
        (rows, columns) or (rows, columns, 3) stored values, already rescaled, float32.
    position : numpy.ndarray
        (3,) ImagePositionPatient: centre of the first transmitted pixel.
    orientation : numpy.ndarray
        (6,) ImageOrientationPatient: row direction cosines, then column direction cosines.
    pixel_spacing : numpy.ndarray
        (2,) PixelSpacing: spacing between rows, then between columns.
    thickness : float
        Slice thickness (or spacing between slices); used for a single plane only.
    file : Path
        Source file.
    sop_instance_uid : str
        SOPInstanceUID of the source file.
    frame_number : int
        1-based number of the frame in its file (1 for a single-frame file).
    """

    pixels: np.ndarray
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray
    thickness: float
    file: Path
    sop_instance_uid: str
    frame_number: int

    @property
    def normal(self) -> np.ndarray:
        """(3,) unit slice normal, row cosines x column cosines."""
        return np.cross(self.orientation[:3], self.orientation[3:])


def read_dataset(path: Path, *, header_only: bool = False) -> Dataset:
    """Read one DICOM file, turning every failure into an :class:`InputError` naming the file.

    Parameters
    ----------
    path : Path
        The file.
    header_only : bool
        Defer reading values over 4 KB (pixel data) until they are used; the presence of
        ``PixelData`` is still known.

    Returns
    -------
    pydicom.Dataset
    """
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        return dcmread(path, defer_size="4 KB" if header_only else None)
    except InvalidDicomError as e:
        raise InputError(f"{path}: neither DICOM nor NIfTI ({one_line(e)})") from e
    except Exception as e:  # pydicom raises many types on a damaged file
        raise InputError(f"{path}: unreadable DICOM ({one_line(e)})") from e


def _is_dicom(path: Path) -> bool:
    """Whether the file carries the DICOM preamble ('DICM' at byte 128)."""
    with path.open("rb") as f:
        head = f.read(132)
    return len(head) == 132 and head[128:132] == b"DICM"


def _iter_files(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.startswith("."):
            yield p


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """The DICOM image series in a folder (searched recursively).

    Files without the DICOM preamble, DICOMDIR files and DICOM files without pixel data (SR,
    RTSTRUCT, ...) are left out.

    Parameters
    ----------
    folder : str or Path
        The folder.

    Returns
    -------
    list of SeriesInfo
        Sorted by modality, description, then UID.

    Raises
    ------
    InputError
        The folder does not exist or a DICOM file in it cannot be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for p in _iter_files(folder):
        if not _is_dicom(p):
            continue
        ds = read_dataset(p, header_only=True)
        if ds.file_meta.get("MediaStorageSOPClassUID", "") == DICOMDIR_SOP_CLASS or "PixelData" not in ds:
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    infos = []
    for uid, members in groups.items():
        first = members[0][1]
        infos.append(
            SeriesInfo(
                series_uid=uid,
                modality=str(first.get("Modality", "")),
                description=str(first.get("SeriesDescription", "")),
                study_uid=str(first.get("StudyInstanceUID", "")),
                files=tuple(p for p, _ in members),
                datasets=tuple(ds for _, ds in members),
            )
        )
    return sorted(infos, key=lambda s: (s.modality, s.description, s.series_uid))


def select_series(folder: Path, series_uid: str | None) -> SeriesInfo:
    """The one series to read from a folder.

    Raises
    ------
    InputError
        No DICOM image in the folder; ``series_uid`` not found; several series and no ``series_uid``.
    """
    series = list_series(folder)
    if not series:
        raise InputError(f"{folder}: no DICOM image found in the folder")
    listing = "; ".join(s.summary() for s in series)
    if series_uid is not None:
        for s in series:
            if s.series_uid == series_uid:
                return s
        raise InputError(f"{folder}: no series {series_uid}; found {listing}")
    if len(series) > 1:
        raise InputError(f"{folder}: {len(series)} series; choose one with --series UID: {listing}")
    return series[0]


def _group_attr(ds: Dataset, index: int, sequence: str, keyword: str) -> Any:
    """An enhanced multi-frame attribute: the per-frame functional group, else the shared one."""
    for groups, i in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is None or len(items) <= i:
            continue
        seq = items[i].get(sequence)
        if seq and keyword in seq[0]:
            return seq[0].get(keyword)
    return None


def _plane_defaults(ds: Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Position, orientation, pixel spacing, thickness of a classic image, with defaults."""
    position = np.asarray(ds.get("ImagePositionPatient") or [0.0, 0.0, 0.0], dtype=float)
    orientation = np.asarray(ds.get("ImageOrientationPatient") or [1, 0, 0, 0, 1, 0], dtype=float)
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing") or [1.0, 1.0]
    thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0
    return position, orientation, np.asarray(spacing, dtype=float), float(thickness)


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """Decoded pixel data, (frames, rows, columns[, 3]) as stored (before rescale)."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "?"))
        raise InputError(f"{path}: no pixel data (SOP class {sop}, modality {ds.get('Modality', '?')})")
    try:
        arr = ds.pixel_array
    except Exception as e:  # decoders raise many types on truncated or undecodable data
        raise InputError(f"{path}: truncated or undecodable pixel data ({one_line(e)})") from e
    n_frames = int(ds.get("NumberOfFrames") or 1)
    rgb = int(ds.get("SamplesPerPixel") or 1) > 1
    if n_frames == 1:
        arr = arr[None]
    if arr.ndim != (4 if rgb else 3):
        raise InputError(f"{path}: unexpected pixel array shape {arr.shape}")
    return arr


def _rescale(ds: Dataset, index: int) -> tuple[float, float]:
    slope = _group_attr(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _group_attr(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
    slope = ds.get("RescaleSlope") if slope is None else slope
    intercept = ds.get("RescaleIntercept") if intercept is None else intercept
    return float(1.0 if slope is None else slope), float(0.0 if intercept is None else intercept)


def read_frames(ds: Dataset, path: Path) -> list[Frame]:
    """The planes of one DICOM file, in file order, rescaled to float32.

    Single-frame images, enhanced multi-frame images (functional groups), RT dose grids
    (GridFrameOffsetVector) and other multi-frame images (frames stacked along the normal at
    SpacingBetweenSlices or SliceThickness, else 1 mm) are understood.

    Parameters
    ----------
    ds : pydicom.Dataset
        The file's dataset (pixel data read in full or deferred).
    path : Path
        The file, for messages.

    Returns
    -------
    list of Frame
    """
    arr = _decode(ds, path)
    position, orientation, spacing, thickness = _plane_defaults(ds)
    offsets = ds.get("GridFrameOffsetVector")
    sop = str(ds.get("SOPInstanceUID", ""))
    frames = []
    for i, plane in enumerate(arr):
        ori = _group_attr(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient")
        pos = _group_attr(ds, i, "PlanePositionSequence", "ImagePositionPatient")
        pix = _group_attr(ds, i, "PixelMeasuresSequence", "PixelSpacing")
        thick = _group_attr(ds, i, "PixelMeasuresSequence", "SpacingBetweenSlices") or _group_attr(
            ds, i, "PixelMeasuresSequence", "SliceThickness"
        )
        ori = orientation if ori is None else np.asarray(ori, dtype=float)
        normal = np.cross(ori[:3], ori[3:])
        if pos is not None:
            pos = np.asarray(pos, dtype=float)
        elif offsets is not None and len(offsets) == len(arr):
            pos = position + float(offsets[i]) * normal
        else:
            pos = position + i * (thickness if thick is None else float(thick)) * normal
        slope, intercept = _rescale(ds, i)
        pixels = plane.astype(np.float32)
        if (slope, intercept) != (1.0, 0.0):
            pixels = pixels * np.float32(slope) + np.float32(intercept)
        frames.append(
            Frame(
                pixels=pixels,
                position=pos,
                orientation=ori,
                pixel_spacing=spacing if pix is None else np.asarray(pix, dtype=float),
                thickness=thickness if thick is None else float(thick),
                file=path,
                sop_instance_uid=sop,
                frame_number=i + 1,
            )
        )
    return frames


def drop_pixel_data(ds: Dataset) -> Dataset:
    """``ds`` made a header, in place: pixel data removed, every deferred value read.

    Removing the pixel data frees its bytes and pydicom's decoded array; reading the values that
    a header-only read deferred lets the header outlive its file.

    Parameters
    ----------
    ds : pydicom.Dataset
        A dataset whose pixels are decoded already (or not wanted).

    Returns
    -------
    pydicom.Dataset
        ``ds``.
    """
    for keyword in PIXEL_DATA_KEYWORDS:
        if keyword in ds:
            delattr(ds, keyword)
    for _ in ds:  # iterating a Dataset reads each deferred (top-level) value from the file
        pass
    return ds
