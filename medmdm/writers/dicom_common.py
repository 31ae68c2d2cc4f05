"""What the DICOM writers share: the source of a study, the map in frame layout, the new series.

The DICOM writers (:mod:`medmdm.writers.parametric_map`, :mod:`medmdm.writers.secondary_capture`,
:mod:`medmdm.writers.segmentation`) take a map on the grid of a :class:`medmdm.io.Study` read from
DICOM and write objects in the source's study (and frame of reference, where the source has
one), in a new series labelled as a research result, not for diagnosis.

Layouts: a study's map is ``(W, H)`` (2D) or ``(X, Y, Z)`` (3D) with axis 0 the DICOM column
index, axis 1 the row index and axis 2 the slice (sorted along the slice normal); highdicom wants
frames ``(frames, rows, columns)`` in the order of the source's frames: slice order for
single-frame images, the file's frame order for a multi-frame image. A study read from an
irregularly spaced series lies on a regular grid of its own
(:attr:`medmdm.io.Study.source_slice_positions`): its map is first resampled back onto the source
slices (linear interpolation between neighbouring grid slices), one frame per source slice.

Sources (:func:`dicom_output_problem` says, before anything runs, whether a study can carry an
output, and each writer asks it first): single-frame images (a series, or one file) and enhanced
multi-frame images (frames placed by functional groups in a frame of reference, one orientation
shared by all) for every writer; other multi-frame images (RT dose, ultrasound, NM frames) and RT
Dose grids for the Secondary Capture only, as highdicom derives a Parametric Map or a Segmentation
from a multi-frame source through its functional groups only. An image without a frame of
reference (a projection radiograph, CR/DX) has no place in patient space: each writer says how
it deals with that; a Segmentation needs the frame of reference where the source's IOD requires
one. Every output needs the source's StudyInstanceUID, SOPClassUID and SOPInstanceUID.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydicom import Dataset
from pydicom.uid import ParametricMapStorage, RTDoseStorage, generate_uid
from pydicom.valuerep import DS

from medmdm import __version__
from medmdm.errors import InputError, one_line
from medmdm.io import Study, interpolate_slices
from medmdm.writers.checks import saliency_array

MANUFACTURER = "medmdm"
RESEARCH_NOTICE = "research only, not for diagnosis"
LONG_STRING = 64  # characters in a DICOM LO value (SeriesDescription, ContentDescription...)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])  # its own inverse: RAS to LPS too
# Patient and General Study attributes that are type 2 (present, maybe empty) in every IOD written
# here; highdicom copies them from the source, which may lack them.
TYPE_2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
LATERALITIES = ("R", "L")
FRAME_LATERALITIES = ("R", "L", "B", "U")  # FrameLaterality: right, left, both, unpaired
# The Frame Anatomy of a map whose source names no anatomic region (CID 4031).
ENTIRE_BODY = ("38266002", "SCT", "Entire body")
# PatientOrientation letters of the +/- LPS axes.
ORIENTATION_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))
ORIENTATION_TOLERANCE = 1e-3  # direction cosines below this add no letter
DECIMAL_STRING = 16  # characters in a DICOM DS value
OUTPUT_KINDS = {
    "dicom-pm": "a Parametric Map",
    "dicom-sc": "a Secondary Capture",
    "dicom-seg": "a Segmentation",
    "dicom-pr": "a colour presentation state of a Parametric Map",
}
REFERENCED_IDENTIFIERS = ("StudyInstanceUID", "SOPClassUID", "SOPInstanceUID")
# Separators of old (ACR-NEMA) dates and times, which highdicom refuses: 2001.01.31, 14:04:38.
OLD_SEPARATORS = {"DA": ".", "TM": ":"}


def dicom_output_problem(study: Study, kind: str) -> str | None:
    """Why a study cannot carry a DICOM output, or None when it can; the writers' first check.

    Parameters
    ----------
    study : medmdm.io.Study
        The study the map lies on.
    kind : str
        ``"dicom-pm"``, ``"dicom-sc"``, ``"dicom-seg"`` or ``"dicom-pr"`` (the Parametric Map's colour
        presentation state, which a source can carry where it can carry the map).

    Returns
    -------
    str or None
        One line, without the study's path: a NIfTI study or one without DICOM headers; a source
        without the identifiers the output references; for a Parametric Map or a Segmentation, an
        RT Dose grid, a retired SOP class, or a multi-frame image whose frames are not placed by
        functional groups in a frame of reference with one shared orientation; for a
        Segmentation, a source placed in patient space without a frame of reference (its IOD
        requires one; a radiograph, whose IOD has none, is fine). None when the writer can write
        it (the map itself is checked by the writer).

    Raises
    ------
    InputError
        An unknown ``kind``.
    """
    if kind not in OUTPUT_KINDS:
        raise InputError(f"unknown DICOM output {kind!r}; one of {', '.join(OUTPUT_KINDS)}")
    if study.kind == "nifti":
        return "DICOM outputs need a DICOM source; this study is NIfTI"
    if not study.patient_geometry:
        return "DICOM outputs need a DICOM source; this study is an image in pixel space (no patient axes)"
    if not study.headers:
        return (
            "DICOM outputs need a DICOM source; this study has no DICOM headers "
            "(read it with medmdm.io.load_study)"
        )
    first = study.headers[0]
    missing = [keyword for keyword in REFERENCED_IDENTIFIERS if not first.get(keyword)]
    if missing:
        return f"DICOM outputs reference the source's {' and '.join(missing)}, which it lacks"
    if kind == "dicom-sc":
        return None
    what, sop = OUTPUT_KINDS[kind], sop_class_name(first)
    if first.SOPClassUID == RTDoseStorage:
        return f"{what} is derived from images; this source is an RT Dose grid"
    if first.SOPClassUID.is_retired:
        return f"{what} cannot be derived from a retired SOP class ({sop}), which highdicom does not know"
    if is_multiframe(first) and not has_patient_geometry(first):
        return (
            f"{what} needs single-frame images or an enhanced multi-frame image (frames placed by "
            f"functional groups in a frame of reference, one orientation for all); this file is {sop}"
        )
    if kind == "dicom-seg" and "FrameOfReferenceUID" not in first and "ImagePositionPatient" in first:
        return (
            f"{what} copies the source's frame of reference; this {sop} file places its image in patient "
            "space (ImagePositionPatient) without the FrameOfReferenceUID its IOD requires"
        )
    return None


def sop_class_name(dataset: Dataset) -> str:
    """The name of a header's SOP class (its UID when unknown, ``"?"`` when absent)."""
    uid = dataset.get("SOPClassUID")
    return str(getattr(uid, "name", uid or "?"))


def is_multiframe(dataset: Dataset) -> bool:
    """Whether a header is a multi-frame image: NumberOfFrames over 1, or functional groups.

    A classic image holding one frame (NumberOfFrames 1, no functional groups) is single-frame,
    as :func:`DicomSource.of` makes it for highdicom.
    """
    return "PerFrameFunctionalGroupsSequence" in dataset or int(dataset.get("NumberOfFrames") or 1) > 1


def has_patient_geometry(dataset: Dataset) -> bool:
    """Whether a header places its frames in patient space as highdicom reads them.

    A frame of reference, and: position and orientation (single-frame); one functional group per
    frame, plane positions, one plane orientation shared by all frames, and pixel measures in the
    functional groups (multi-frame).
    """
    if "FrameOfReferenceUID" not in dataset:
        return False
    if not is_multiframe(dataset):
        return "ImagePositionPatient" in dataset and "ImageOrientationPatient" in dataset
    shared = dataset.get("SharedFunctionalGroupsSequence")
    per_frame = dataset.get("PerFrameFunctionalGroupsSequence")
    if not (shared and per_frame) or len(per_frame) != int(dataset.get("NumberOfFrames") or 1):
        return False
    return (
        "PlaneOrientationSequence" in shared[0]
        and ("PlanePositionSequence" in per_frame[0] or "PlanePositionSequence" in shared[0])
        and ("PixelMeasuresSequence" in per_frame[0] or "PixelMeasuresSequence" in shared[0])
    )


@dataclass(frozen=True)
class NewSeries:
    """Identity of a new series of derived objects, and of the software that writes it.

    Attributes
    ----------
    series_uid : str
        A new SeriesInstanceUID.
    series_number : int
        SeriesNumber: the source's plus an offset per kind of output (the offset alone when the
        source has none), so that the outputs of one study do not share a number.
    description : str
        SeriesDescription, at most 64 characters.
    manufacturer, model_name, device_serial_number : str
        ``"medmdm"``.
    software_versions : str
        ``medmdm.__version__``.
    """

    series_uid: str
    series_number: int
    description: str
    manufacturer: str = MANUFACTURER
    model_name: str = MANUFACTURER
    device_serial_number: str = MANUFACTURER
    software_versions: str = __version__

    @classmethod
    def derived_from(cls, source: Dataset, offset: int, description: str) -> NewSeries:
        """A new series for objects derived from ``source``, numbered ``source's + offset``."""
        number = source.get("SeriesNumber")
        return cls(
            series_uid=generate_uid(),
            series_number=(int(number) if number not in (None, "") else 0) + offset,
            description=long_string(description, "series description"),
        )


@dataclass
class DicomSource:
    """The DICOM files a study was read from, as the writers need them.

    Attributes
    ----------
    study : medmdm.io.Study
        The study.
    datasets : list of pydicom.Dataset
        Copies of the study's headers (:attr:`medmdm.io.Study.headers`), one per file, in slice
        order, made fit for highdicom, which copies from them: see :func:`_prepare_header`.
    """

    study: Study
    datasets: list[Dataset]

    @classmethod
    def of(cls, study: Study, kind: str) -> DicomSource:
        """The source of a study for an output ``kind``, from the headers the study kept when it was
        read; the study is left as is.

        Raises
        ------
        InputError
            What :func:`dicom_output_problem` finds, named with the study's path.
        """
        problem = dicom_output_problem(study, kind)
        if problem is not None:
            raise InputError(f"{study.path}: {problem}")
        thickness = float(np.linalg.norm(np.asarray(study.affine, dtype=float)[:3, 2]))
        datasets = [copy.deepcopy(header) for header in study.headers]
        for ds in datasets:
            _prepare_header(ds, thickness)
        return cls(study, datasets)

    @property
    def path(self) -> Path:
        """The study's file or folder, for messages."""
        return self.study.path

    @property
    def is_multiframe(self) -> bool:
        """Whether the study is the frames of one multi-frame file (enhanced, or several frames)."""
        return is_multiframe(self.datasets[0])

    @property
    def has_patient_geometry(self) -> bool:
        """Whether the source places its frames in patient space (frame of reference and planes)."""
        return has_patient_geometry(self.datasets[0])

    @property
    def slice_count(self) -> int:
        """The number of source slices (frames): the study's, before any resampling."""
        return len(self.study.sop_instance_uids)

    def on_source_slices(self, data: np.ndarray) -> np.ndarray:
        """A ``(..., W, H)`` or ``(..., X, Y, Z)`` array on the study's grid, on the source's slices.

        The study's own slices unless the study was resampled from an irregular series: then
        linearly interpolated between neighbouring grid slices at each source slice's position.
        """
        positions = self.study.source_slice_positions
        if not positions:
            return data
        step = float(self.study.spacing[2])
        return interpolate_slices(data, np.asarray(positions) / step)

    def dataset_of_slice(self, k: int) -> Dataset:
        """The header of the file holding slice ``k``."""
        return self.datasets[0] if self.is_multiframe else self.datasets[k]

    def frames(self, data: np.ndarray) -> np.ndarray:
        """A ``(W, H)`` or ``(X, Y, Z)`` map on the source's slices (see :func:`study_map`) as
        ``(frames, rows, cols)`` in the source's frame order."""
        frames = slices_to_frames(data)
        if not self.is_multiframe:
            return frames
        in_file_order = np.empty_like(frames)
        in_file_order[np.asarray(self.study.frame_numbers) - 1] = frames
        return in_file_order

    def source_reference(self, k: int) -> Dataset:
        """A Source Image Sequence item referencing slice ``k`` (and its frame, in a multi-frame file)."""
        ds = self.dataset_of_slice(k)
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        if self.is_multiframe:
            item.ReferencedFrameNumber = self.study.frame_numbers[k]
        return item

    def patient_orientation(self) -> list[str]:
        """PatientOrientation of the study's rows and columns: from the geometry, else the source's.

        Empty (``[]``) when neither tells; a value is a string of letters (``"LP"``, ``"F"``).
        """
        if self.has_patient_geometry:
            affine = np.asarray(self.study.affine, dtype=float)
            return [orientation_letters(LPS_TO_RAS @ affine[:3, axis]) for axis in (0, 1)]
        given = self.datasets[0].get("PatientOrientation")
        return [str(v) for v in given] if given and len(given) == 2 else []


@contextlib.contextmanager
def derivation_errors(source: DicomSource, what: str) -> Iterator[None]:
    """Turn highdicom's refusal of a source (ValueError, AttributeError, KeyError) into an
    :class:`InputError`.

    highdicom checks the source while it builds a derived object and raises on what it cannot
    use (an attribute the source's IOD requires but lacks, geometry it cannot read, a SOP class
    it does not know).
    """
    try:
        yield
    except (ValueError, AttributeError, KeyError) as e:
        raise InputError(f"{source.path}: cannot derive {what} from this source ({one_line(e)})") from e


def study_map(saliency: torch.Tensor | np.ndarray, source: DicomSource) -> np.ndarray:
    """A map on the study's grid as a finite float64 array on the source's slices: ``(W, H)`` or
    ``(X, Y, N)`` with N the source's slices (:meth:`DicomSource.on_source_slices`).

    Raises
    ------
    InputError
        A map of another spatial shape than the study's or with non-finite values.
    """
    values = saliency if isinstance(saliency, torch.Tensor) else torch.as_tensor(np.asarray(saliency))
    return source.on_source_slices(saliency_array(values, tuple(source.study.size), f"grid of {source.path}"))


def slices_to_frames(data: np.ndarray) -> np.ndarray:
    """A ``(W, H)`` or ``(X, Y, Z)`` array as frames ``(1, rows, cols)`` or ``(Z, rows, cols)``."""
    volume = data[..., None] if data.ndim == 2 else data
    return np.ascontiguousarray(volume.transpose(2, 1, 0))


def orientation_letters(direction: np.ndarray) -> str:
    """The PatientOrientation value of an LPS direction: its axes' letters by decreasing share."""
    unit = direction / np.linalg.norm(direction)
    order = np.argsort(-np.abs(unit), kind="stable")
    return "".join(
        ORIENTATION_LETTERS[axis][0 if unit[axis] > 0 else 1]
        for axis in order
        if abs(unit[axis]) > ORIENTATION_TOLERANCE
    )


def series_description(method: str, content: str) -> str:
    """``"medmdm <method> <content> - research only, not for diagnosis"``, cut to 64 characters.

    The notice is always whole; a long method name is shortened to make room.
    """
    notice = f" - {RESEARCH_NOTICE}"
    head = f"medmdm {method} {content}"
    return head[: LONG_STRING - len(notice)].rstrip() + notice


def long_string(value: str, name: str) -> str:
    """``value`` if it fits a DICOM LO value (64 characters, no backslash), else InputError."""
    if len(value) > LONG_STRING or "\\" in value:
        raise InputError(f"{name} must be at most {LONG_STRING} characters without '\\', got {value!r}")
    return value


def copy_laterality(derived: Dataset, source: Dataset) -> None:
    """Laterality (General Series, type 2C) of the derived object: the source's, else empty; in a
    Parametric Map, the Frame Anatomy functional group instead (:func:`frame_anatomy`), whose Frame
    Laterality makes the series' Laterality one that must not be sent.

    Empty means unknown; an unpaired body part would want it absent, which the source does not
    tell, so validators warn about the empty value.
    """
    if derived.SOPClassUID == ParametricMapStorage:
        derived.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [frame_anatomy(source)]
        if "Laterality" in derived:
            del derived.Laterality
        return
    value = source.get("Laterality")
    derived.Laterality = value if value in LATERALITIES else None


def frame_anatomy(source: Dataset) -> Dataset:
    """The Frame Anatomy functional group item of a map derived from ``source``.

    The Parametric Map IOD requires it, and dcmqi (``paramap2itkimage``, 3D Slicer's reader of
    Parametric Maps) fails without it. The anatomic region is the source's (its own
    AnatomicRegionSequence, else its frames' Frame Anatomy), else the entire body; the laterality is
    the source's (FrameLaterality, ImageLaterality, Laterality), else ``U`` (unpaired).
    """
    groups = source.get("SharedFunctionalGroupsSequence") or [Dataset()]
    given = (groups[0].get("FrameAnatomySequence") or [Dataset()])[0]
    region = source.get("AnatomicRegionSequence") or given.get("AnatomicRegionSequence")
    if not region:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = ENTIRE_BODY
        region = [code]
    sides = (given.get("FrameLaterality"), source.get("ImageLaterality"), source.get("Laterality"))
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [copy.deepcopy(item) for item in region]
    anatomy.FrameLaterality = next((side for side in sides if side in FRAME_LATERALITIES), "U")
    return anatomy


def frames_in_ascending_order(derived: Dataset) -> None:
    """Put a derived multi-frame image's frames in ascending order along its slice normal, in place.

    The normal is the row x column cross product of the image orientation (shared or first
    per-frame Plane Orientation); each frame's place along it is its Plane Position. The frames of
    the pixel data (FloatPixelData, DoubleFloatPixelData or native PixelData of whole bytes) and
    the PerFrameFunctionalGroupsSequence items move together (a stable sort: frames at one position
    keep their order); each item keeps its own Dimension Index Values. Readers that stack frames in
    file order (dcmqi's ``paramap2itkimage``, 3D Slicer's reader of Parametric Maps) then get the
    slices in the order of their positions. An image of one frame, or without plane positions, is
    left as is.

    Parameters
    ----------
    derived : pydicom.Dataset
        A multi-frame image with functional groups (a highdicom ``ParametricMap``...).

    Raises
    ------
    ValueError
        Pixel data that is encapsulated (compressed) or not of whole bytes per sample.
    """
    per_frame = derived.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) < 2 or any("PlanePositionSequence" not in item for item in per_frame):
        return
    groups = derived.SharedFunctionalGroupsSequence[0]
    oriented = groups if "PlaneOrientationSequence" in groups else per_frame[0]
    cosines = np.asarray(oriented.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(cosines[:3], cosines[3:])
    along = [
        float(normal @ np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, dtype=float))
        for item in per_frame
    ]
    order = np.argsort(along, kind="stable")
    if (order == np.arange(len(order))).all():
        return
    keyword = next(k for k in ("FloatPixelData", "DoubleFloatPixelData", "PixelData") if k in derived)
    bits = int(derived.BitsAllocated)
    if bits % 8 or (keyword == "PixelData" and derived.file_meta.TransferSyntaxUID.is_compressed):
        raise ValueError(
            f"cannot reorder the frames of {keyword} ({bits} bits allocated, encapsulated or not)"
        )
    frame_bytes = (
        int(derived.Rows) * int(derived.Columns) * int(derived.get("SamplesPerPixel", 1)) * bits // 8
    )
    frames = np.frombuffer(derived[keyword].value, dtype=np.uint8, count=frame_bytes * len(per_frame))
    derived[keyword].value = frames.reshape(len(per_frame), frame_bytes)[order].tobytes()
    derived.PerFrameFunctionalGroupsSequence = [per_frame[int(k)] for k in order]


def _prepare_header(dataset: Dataset, thickness: float) -> None:
    """Make a source header fit for highdicom, which copies patient, study and geometry from it.

    Type 2 patient and study attributes it lacks are added empty; a classic image holding one
    frame (NumberOfFrames 1, no functional groups) is made a plain single-frame image; a missing
    SliceThickness of a single-frame image becomes ``thickness`` (the study's slice step); decimal
    strings longer than DICOM allows (16 characters; some writers store ``repr(float)``) are
    rounded to fit; old (ACR-NEMA) dates and times (``2001.01.31``, ``14:04:38``) lose their
    separators.
    """
    for keyword in TYPE_2_PATIENT_STUDY:
        if keyword not in dataset:
            setattr(dataset, keyword, None)
    if int(dataset.get("NumberOfFrames") or 0) == 1 and "PerFrameFunctionalGroupsSequence" not in dataset:
        del dataset.NumberOfFrames
    if "NumberOfFrames" not in dataset and dataset.get("SliceThickness") in (None, ""):
        dataset.SliceThickness = thickness
    _conform_values(dataset)


def _conform_values(dataset: Dataset) -> None:
    """Make values conform where highdicom copies them, in nested sequences too: DS values over 16
    characters rounded to fit, old date and time separators removed."""
    for tag in list(dataset.keys()):
        element = dataset[tag]
        if element.VR == "SQ":
            for item in element.value:
                _conform_values(item)
        elif element.VR in OLD_SEPARATORS and isinstance(element.value, str):
            element.value = element.value.replace(OLD_SEPARATORS[element.VR], "")
        elif element.VR == "DS" and element.VM > 0:
            values = list(element.value) if element.VM > 1 else [element.value]
            if any(len(str(v)) > DECIMAL_STRING for v in values):
                shortened = [DS(float(v), auto_format=True) for v in values]
                element.value = shortened if element.VM > 1 else shortened[0]
