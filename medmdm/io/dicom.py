"""DICOM with pydicom: reading a file (with or without preamble), its frames and their geometry.

Everything here works in the DICOM patient coordinate system (LPS, millimetres). A file or a
series is turned into a list of :class:`Frame` (one 2D plane each, with its position, orientation,
pixel spacing and rescale), which :mod:`medmdm.io.reader` sorts along the slice normal, checks
and stacks. Pixel data is decoded by pydicom, so every transfer syntax that pydicom's handlers
(numpy, pylibjpeg, ...) know is read: JPEG baseline/lossless, JPEG-LS, JPEG 2000 and RLE.

What is read as other readers read it (MONAI's default DICOM reader is ITK's, which SimpleITK
shares; ``tests/test_corpus.py`` compares the geometry with SimpleITK's):

- **Files without preamble or file meta** (old archives, ACR-NEMA style): read with pydicom's
  ``force=True`` when they begin like a data set (group 0002 or 0008); the transfer syntax is
  inferred from the encoding pydicom detects (implicit or explicit VR, little or big endian). A
  folder scan finds them too; a file that does not parse as a data set holding pixel data is not
  taken for DICOM.
- **Colour**: YBR_* are converted to RGB (pydicom does it while decoding), PALETTE COLOR through
  its lookup table (``pydicom.pixels.apply_color_lut``); as ITK does, a 16-bit palette is kept to
  its high byte, so every colour image reads 0-255.
- **MONOCHROME1** is inverted as ITK inverts it, on the stored values before the rescale:
  ``2**BitsStored - 1 - v`` (unsigned), ``-v - 1`` (signed); high values are then bright, as in
  MONOCHROME2. (MONAI's ``PydicomReader`` keeps the stored values.)
- **Rescale** slope and intercept are applied per frame; the **VOI LUT** and window are not
  applied, as neither MONAI's readers nor SimpleITK apply them.
- **Pixel spacing**: PixelSpacing, else ImagerPixelSpacing, else 1 mm with a warning.
- **Pixel data** a little longer than Rows x Columns x frames x samples (padding after the last
  frame, less than a frame) is read, the excess ignored with a warning, as pydicom and ITK read it.

What is refused with an :class:`~medmdm.errors.InputError` naming the file: a header pydicom
cannot parse; PixelSpacing or ImagerPixelSpacing that is not two positive finite values;
ImageOrientationPatient that is not two perpendicular unit vectors (to
:data:`ORIENTATION_TOLERANCE`); pixel data shorter than the header says, or longer by a frame or
more; more than :data:`MAX_VALUES` values (checked before anything is allocated); NaN or
infinite values after the rescale; a cine (frames over time at one position).

Each file is parsed once: the folder scan (:mod:`medmdm.io.series`) keeps its datasets, whose
pixel data pydicom reads from the file when it is first used; :func:`drop_pixel_data` then leaves
the header that a study keeps for the DICOM writers.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from medmdm.errors import InputError, one_line

DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
PIXEL_DATA_TAGS = frozenset(Tag(k) for k in PIXEL_DATA_KEYWORDS)
# First two bytes of a data set without preamble: group 0002 (file meta) or 0008, either endianness.
DATASET_STARTS = (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08")
MAX_VALUES = 2**30  # values (pixels x frames x samples) of one file: 4 GiB as float32
ORIENTATION_TOLERANCE = 1e-3  # direction cosines: |norm - 1| and |row . column|
SHOWN_CHARACTERS = 80  # of an attribute's value quoted in a message
# FrameIncrementPointer targets that step frames through time (a cine), not space.
TEMPORAL_POINTERS = {Tag("FrameTime"): "FrameTime", Tag("FrameTimeVector"): "FrameTimeVector"}


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
    spacing_given : bool
        Whether the file gives the pixel spacing (else 1 mm was assumed).
    """

    pixels: np.ndarray
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: np.ndarray
    thickness: float
    file: Path
    sop_instance_uid: str
    frame_number: int
    spacing_given: bool = True

    @property
    def normal(self) -> np.ndarray:
        """(3,) unit slice normal, row cosines x column cosines."""
        return np.cross(self.orientation[:3], self.orientation[3:])


def read_dataset(path: Path, *, header_only: bool = False) -> Dataset:
    """Read one DICOM file, turning every failure into an :class:`InputError` naming the file.

    A file without the DICOM preamble and file meta is read with ``force=True`` when it begins
    like a data set, its transfer syntax inferred from the encoding pydicom detects. Every value
    of the header (but pixel data) is parsed here, so that a value pydicom cannot parse is
    refused now rather than met later.

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
    defer = "4 KB" if header_only else None
    try:
        try:
            ds = dcmread(path, defer_size=defer)
        except InvalidDicomError:
            if not _starts_like_dataset(path):
                raise
            ds = dcmread(path, defer_size=defer, force=True)
        _infer_transfer_syntax(ds)
        _parse_values(ds)
    except InvalidDicomError as e:
        raise InputError(
            f"{path}: neither DICOM nor NIfTI nor a PNG, JPEG or TIFF image ({one_line(e)})"
        ) from e
    except Exception as e:  # pydicom raises many types on a damaged file
        raise InputError(f"{path}: unreadable DICOM ({one_line(e)})") from e
    return ds


def _starts_like_dataset(path: Path) -> bool:
    """Whether a file without preamble begins like a DICOM data set (group 0002 or 0008)."""
    with path.open("rb") as f:
        return f.read(2) in DATASET_STARTS


def looks_like_dicom(path: Path) -> bool:
    """Whether a file carries the DICOM preamble or, without one, begins like a DICOM data set.

    The files a folder scan reads as DICOM (a file without preamble is then kept only if it parses
    and holds pixel data).
    """
    return is_dicom(path) or _starts_like_dataset(path)


def _infer_transfer_syntax(ds: Dataset) -> None:
    """Give a data set read without a transfer syntax (no file meta) the one pydicom detected."""
    if "TransferSyntaxUID" in ds.file_meta:
        return
    implicit, little = ds.original_encoding
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _parse_values(ds: Dataset) -> None:
    """Convert every raw value but pixel data, in nested sequences too (pydicom converts lazily)."""
    for tag in sorted(set(ds.keys()) - PIXEL_DATA_TAGS):
        element = ds[tag]
        if element.VR == "SQ":
            for item in element.value:
                _parse_values(item)


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


def _values(value: Any, count: int, keyword: str, path: Path) -> np.ndarray:
    """A multi-valued attribute as ``count`` finite floats, else InputError."""
    try:
        values = np.asarray(value, dtype=float).reshape(-1)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: {keyword} {_shown(value)} is not numeric ({one_line(e)})") from e
    if values.size != count or not np.isfinite(values).all():
        raise InputError(f"{path}: {keyword} {_shown(value)} is not {count} finite values")
    return values


def _shown(value: Any) -> str:
    """An attribute's value as DICOM writes it (``a\\b\\c``), quoted, printable and at most
    :data:`SHOWN_CHARACTERS` long."""
    text = (
        str(value) if isinstance(value, str) or not hasattr(value, "__iter__") else "\\".join(map(str, value))
    )
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
    return f"'{text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 3] + '...'}'"


def _pixel_spacing(value: Any, keyword: str, path: Path) -> np.ndarray:
    """(2,) spacing between rows, then columns: two positive finite values, else InputError."""
    spacing = _values(value, 2, keyword, path)
    if (spacing <= 0).any():
        raise InputError(f"{path}: {keyword} {_shown(value)} is not two positive values")
    return spacing


def _orientation(value: Any, path: Path) -> np.ndarray:
    """(6,) row then column direction cosines: two perpendicular unit vectors, else InputError."""
    cosines = _values(value, 6, "ImageOrientationPatient", path)
    row, column = cosines[:3], cosines[3:]
    norms = np.array([np.linalg.norm(row), np.linalg.norm(column)])
    if np.abs(norms - 1).max() > ORIENTATION_TOLERANCE or abs(float(row @ column)) > ORIENTATION_TOLERANCE:
        raise InputError(
            f"{path}: ImageOrientationPatient {_shown(value)} is not two perpendicular unit vectors "
            f"(norms {norms[0]:.4g} and {norms[1]:.4g}, dot product {float(row @ column):.4g})"
        )
    return cosines


def _number(value: Any, keyword: str, path: Path, default: float) -> float:
    """A numeric attribute's value, ``default`` when absent or empty, else InputError."""
    if value in (None, ""):
        return float(default)
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{path}: {keyword} {_shown(value)} is not a number") from e


def _integer(ds: Dataset, keyword: str, path: Path, default: int) -> int:
    """An integer attribute of ``ds``, ``default`` when absent or empty, else InputError."""
    value = _number(ds.get(keyword), keyword, path, default)
    if not value.is_integer():
        raise InputError(f"{path}: {keyword} {_shown(ds.get(keyword))} is not an integer")
    return int(value)


def _thickness(value: Any, keyword: str, path: Path) -> float | None:
    """A slice thickness or gap in mm; None when absent, zero or not finite."""
    thickness = abs(_number(value, keyword, path, 0.0))
    return thickness if np.isfinite(thickness) and thickness > 0 else None


def _plane_defaults(ds: Dataset, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """Position, orientation, pixel spacing (None if absent), thickness of a classic image, with defaults."""
    position = ds.get("ImagePositionPatient")
    position = np.zeros(3) if position in (None, "") else _values(position, 3, "ImagePositionPatient", path)
    orientation = ds.get("ImageOrientationPatient")
    orientation = (
        np.array([1.0, 0, 0, 0, 1, 0]) if orientation in (None, "") else _orientation(orientation, path)
    )
    spacing = None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if ds.get(keyword) not in (None, ""):
            spacing = _pixel_spacing(ds.get(keyword), keyword, path)
            break
    thickness = (
        _thickness(ds.get("SpacingBetweenSlices"), "SpacingBetweenSlices", path)
        or _thickness(ds.get("SliceThickness"), "SliceThickness", path)
        or 1.0
    )
    return position, orientation, spacing, thickness


def _check_pixel_data(ds: Dataset, path: Path) -> int:
    """The number of frames, once the header's image size is known to fit the stored pixel data.

    Checked before anything is decoded or allocated: the size is sane (at most :data:`MAX_VALUES`
    values) and, for uncompressed data, the bytes stored are what Rows x Columns x frames x samples
    x bits need (a shorter file is truncated; padding of less than a frame is ignored).
    """
    keyword = next((k for k in PIXEL_DATA_KEYWORDS if k in ds), None)
    if keyword is None:
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID", "?"))
        raise InputError(
            f"{path}: no pixel data (SOP class {_shown(sop)}, modality {_shown(ds.get('Modality', '?'))})"
        )
    rows, columns = _integer(ds, "Rows", path, 0), _integer(ds, "Columns", path, 0)
    frames, samples = _integer(ds, "NumberOfFrames", path, 1), _integer(ds, "SamplesPerPixel", path, 1)
    size = f"{rows} rows x {columns} columns x {frames} frames x {samples} samples"
    if min(rows, columns, frames) < 1 or samples not in (1, 3):
        raise InputError(f"{path}: unusable image size ({size})")
    if rows * columns * frames * samples > MAX_VALUES:
        raise InputError(f"{path}: image too large ({size}; medmdm reads at most {MAX_VALUES} values)")
    if keyword == "PixelData" and _is_compressed(ds, path):
        return frames
    try:
        expected = int(get_expected_length(ds, "bytes"))
    except Exception as e:  # pydicom raises several types on a missing or odd pixel description
        raise InputError(f"{path}: unusable pixel description ({one_line(e)})") from e
    element = ds.get_item(keyword, keep_deferred=True)
    deferred = isinstance(element, RawDataElement) and element.value is None
    stored = element.length if deferred else len(element.value or b"")
    excess = stored - expected - expected % 2  # an odd length is padded to even
    bits = _integer(ds, "BitsAllocated", path, 0)
    if stored < expected:
        raise InputError(
            f"{path}: truncated or undecodable pixel data ({stored} bytes stored, {expected} needed for "
            f"{size} of {bits} bits)"
        )
    if excess >= expected // frames:
        raise InputError(
            f"{path}: pixel data longer than the header says ({stored} bytes stored, {expected} needed "
            f"for {size} of {bits} bits)"
        )
    if excess > 0:
        warnings.warn(f"{path}: {excess} bytes of padding after the pixel data ignored", stacklevel=4)
    return frames


def _is_compressed(ds: Dataset, path: Path) -> bool:
    """Whether the file's transfer syntax compresses the pixel data; InputError for an unknown one."""
    syntax = ds.file_meta.TransferSyntaxUID
    if isinstance(syntax, UID):
        try:
            return syntax.is_compressed
        except ValueError:  # not a transfer syntax pydicom knows
            pass
    raise InputError(f"{path}: unknown transfer syntax {_shown(syntax)}")


def _temporal_pointer(ds: Dataset) -> str | None:
    """The attribute a classic multi-frame image steps its frames through time by, if any."""
    pointers = ds.get("FrameIncrementPointer")
    for pointer in pointers if isinstance(pointers, MultiValue) else [pointers]:
        if pointer is not None and Tag(pointer) in TEMPORAL_POINTERS:
            return TEMPORAL_POINTERS[Tag(pointer)]
    return None


def _decode(ds: Dataset, path: Path, frames: int) -> np.ndarray:
    """Decoded pixel data, ``(frames, rows, columns[, 3])``: colour as RGB, values as stored otherwise."""
    if ds.file_meta.TransferSyntaxUID == RLELossless:  # pylibjpeg-rle panics, printing, on bad data
        ds.pixel_array_options(decoding_plugin="pydicom")
    try:
        arr = ds.pixel_array
        if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
            arr = apply_color_lut(arr, ds)
            if arr.dtype.itemsize == 2:  # a 16-bit palette: its high byte, as ITK reads it
                arr = arr >> 8
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # decoders raise many types; those written in Rust panic (a BaseException)
        raise InputError(f"{path}: truncated or undecodable pixel data ({one_line(e)})") from e
    if frames == 1:
        arr = arr[None]
    if arr.shape[:3] != (frames, ds.Rows, ds.Columns) or arr.shape[3:] not in ((), (3,)):
        raise InputError(f"{path}: unexpected pixel array shape {arr.shape}")
    return arr


def _rescale(ds: Dataset, index: int, path: Path) -> tuple[float, float]:
    slope = _group_attr(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _group_attr(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
    slope = ds.get("RescaleSlope") if slope is None else slope
    intercept = ds.get("RescaleIntercept") if intercept is None else intercept
    return _number(slope, "RescaleSlope", path, 1.0), _number(intercept, "RescaleIntercept", path, 0.0)


def _monochrome1_inverse(ds: Dataset, path: Path) -> float | None:
    """``a`` such that ``a - v`` inverts a stored MONOCHROME1 value ``v`` as ITK does; None otherwise."""
    if ds.get("PhotometricInterpretation") != "MONOCHROME1":
        return None
    if _integer(ds, "PixelRepresentation", path, 0):
        return -1.0  # signed: -v - 1
    return float(2 ** _integer(ds, "BitsStored", path, _integer(ds, "BitsAllocated", path, 16)) - 1)


def read_frames(ds: Dataset, path: Path) -> list[Frame]:
    """The planes of one DICOM file, in file order, rescaled to float32.

    Single-frame images, enhanced multi-frame images (functional groups), RT dose grids
    (GridFrameOffsetVector, relative or absolute) and other multi-frame images (frames stacked
    along the normal at SpacingBetweenSlices or SliceThickness, else 1 mm) are understood.
    Colour images are RGB; MONOCHROME1 is inverted (see the module notes).

    Parameters
    ----------
    ds : pydicom.Dataset
        The file's dataset (pixel data read in full or deferred).
    path : Path
        The file, for messages.

    Returns
    -------
    list of Frame

    Raises
    ------
    InputError
        No or unusable pixel data, unusable geometry, a cine, NaN or infinite values.
    """
    n_frames = _check_pixel_data(ds, path)
    has_positions = _group_attr(ds, 0, "PlanePositionSequence", "ImagePositionPatient") is not None
    pointer = _temporal_pointer(ds)
    if n_frames > 1 and pointer is not None and not has_positions:
        raise InputError(
            f"{path}: a cine (a temporal series): {n_frames} frames at one position over time "
            f"(FrameIncrementPointer {pointer}); medmdm reads one frame per position (2D or 3D images)"
        )
    position, orientation, spacing, thickness = _plane_defaults(ds, path)
    arr = _decode(ds, path, n_frames)
    offsets = ds.get("GridFrameOffsetVector")
    offsets = (
        None
        if offsets is None or len(offsets) != n_frames
        else _values(offsets, n_frames, "GridFrameOffsetVector", path)
    )
    inverse = _monochrome1_inverse(ds, path) if arr.ndim == 3 else None
    sop = str(ds.get("SOPInstanceUID", ""))
    frames = []
    for i, plane in enumerate(arr):
        ori = _group_attr(ds, i, "PlaneOrientationSequence", "ImageOrientationPatient")
        pos = _group_attr(ds, i, "PlanePositionSequence", "ImagePositionPatient")
        pix = _group_attr(ds, i, "PixelMeasuresSequence", "PixelSpacing")
        thick = _thickness(
            _group_attr(ds, i, "PixelMeasuresSequence", "SpacingBetweenSlices"), "SpacingBetweenSlices", path
        ) or _thickness(_group_attr(ds, i, "PixelMeasuresSequence", "SliceThickness"), "SliceThickness", path)
        ori = orientation if ori is None else _orientation(ori, path)
        normal = np.cross(ori[:3], ori[3:])
        if pos is not None:
            pos = _values(pos, 3, "ImagePositionPatient", path)
        elif offsets is not None:  # relative offsets start at 0, absolute ones at the first frame's z
            pos = position + float(offsets[i] - offsets[0]) * normal
        else:
            pos = position + i * (thickness if thick is None else thick) * normal
        pix = spacing if pix is None else _pixel_spacing(pix, "PixelSpacing", path)
        pixels = plane.astype(np.float32)
        if inverse is not None:
            pixels = np.float32(inverse) - pixels
        slope, intercept = _rescale(ds, i, path) if arr.ndim == 3 else (1.0, 0.0)
        if (slope, intercept) != (1.0, 0.0):
            pixels = pixels * np.float32(slope) + np.float32(intercept)
        bad = int(np.count_nonzero(~np.isfinite(pixels)))
        if bad:
            raise InputError(f"{path}: {bad} NaN or infinite values in frame {i + 1} (after the rescale)")
        frames.append(
            Frame(
                pixels=pixels,
                position=pos,
                orientation=ori,
                pixel_spacing=np.ones(2) if pix is None else pix,
                thickness=thickness if thick is None else thick,
                file=path,
                sop_instance_uid=sop,
                frame_number=i + 1,
                spacing_given=pix is not None,
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
