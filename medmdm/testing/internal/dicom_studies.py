"""Phantom cases written as DICOM: a CR radiograph file and an axial CT series folder.

What is written reads back through :func:`medmdm.io.load_study` as exactly ``case.image``: the
pixel array of a radiograph is ``case.image.T`` and slice ``k`` of a CT series holds
``case.image[:, :, k].T``. :func:`study_image` builds that same MetaTensor (values and RAS affine)
without writing anything, for training and tests.

Headers are plausible and deterministic: explicit VR little endian, UIDs derived from ``seed``
with :func:`pydicom.uid.generate_uid`, an anonymous patient ``ANON^MEDMDM`` and no real
identifiers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComputedRadiographyImageStorage, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medmdm import __version__
from medmdm.errors import InputError
from medmdm.testing.internal.phantoms import CT_RANGE, RADIOGRAPH_MAX, Case
from medmdm.writers.atomic import atomic_path

PATIENT_NAME = "ANON^MEDMDM"
CONTENT_DATE, CONTENT_TIME = "20000101", "120000"
CT_RESCALE_INTERCEPT = -1024.0
CT_WINDOW = (-600.0, 1500.0)  # lung window: centre, width
RADIOGRAPH_WINDOW = (2048.0, 4096.0)
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class StudyIdentity:
    """The identifiers and boilerplate shared by every file of one synthetic study.

    Attributes
    ----------
    seed : int
        What the UIDs are derived from.
    kind : str
        ``"radiograph"`` or ``"ct"``; studies of different kinds never share a UID.
    """

    seed: int
    kind: str

    def uid(self, role: str, index: int = 0) -> str:
        """A deterministic UID for ``role`` (``"study"``, ``"series"``, ``"instance"``...)."""
        return str(generate_uid(entropy_srcs=["medmdm", self.kind, str(self.seed), role, str(index)]))

    def dataset(self, sop_class: str, index: int) -> Dataset:
        """A dataset holding the patient, study, series, equipment and SOP common attributes."""
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = self.uid("instance", index)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.InstanceCreationDate, ds.InstanceCreationTime = CONTENT_DATE, CONTENT_TIME
        ds.PatientName = PATIENT_NAME
        ds.PatientID = f"MEDMDM-{self.kind.upper()}-{self.seed}"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "synthetic phantom, no patient"
        ds.StudyInstanceUID = self.uid("study")
        ds.StudyDate, ds.StudyTime = CONTENT_DATE, CONTENT_TIME
        ds.SeriesDate, ds.SeriesTime = CONTENT_DATE, CONTENT_TIME
        ds.ContentDate, ds.ContentTime = CONTENT_DATE, CONTENT_TIME
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.StudyDescription = "medmdm synthetic phantom"
        ds.SeriesInstanceUID = self.uid("series")
        ds.SeriesNumber = 1
        ds.Manufacturer = "medmdm"
        ds.ManufacturerModelName = "phantom"
        ds.SoftwareVersions = __version__
        ds.BurnedInAnnotation = "NO"
        return ds


def write_radiograph_dicom(case: Case, path: str | Path, *, seed: int = 0) -> Path:
    """Write a 2D case as a single-frame CR image (MONOCHROME2, 12 bits in uint16).

    Parameters
    ----------
    case : Case
        A radiograph from :func:`medmdm.testing.internal.phantoms.radiograph_case`: ``(W, H)`` integer counts.
    path : str or Path
        The file to write (atomically); its folder must exist.
    seed : int
        Source of the UIDs.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        The image is not 2D or holds values that 12-bit counts cannot store.
    """
    path = Path(path)
    stored = _stored(case, path, dims=2, low=0.0, high=RADIOGRAPH_MAX)
    ds = StudyIdentity(seed, "radiograph").dataset(ComputedRadiographyImageStorage, 0)
    ds.Modality = "CR"
    ds.SeriesDescription = "synthetic chest PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"]
    ds.ImagerPixelSpacing = _pixel_spacing(case)
    ds.PixelSpacing = _pixel_spacing(case)
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "synthetic phantom: spacing at the patient"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter, ds.WindowWidth = RADIOGRAPH_WINDOW
    _set_pixels(ds, stored.T)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def write_ct_series(case: Case, folder: str | Path, *, seed: int = 0, shuffle: bool = True) -> Path:
    """Write a 3D case as an axial CT series, one file per slice.

    Slice ``k`` lies at ``z = origin + k * spacing[2]`` mm (head first, supine). With ``shuffle``,
    neither the file names nor the InstanceNumbers follow the slice order.

    Parameters
    ----------
    case : Case
        A volume from :func:`medmdm.testing.internal.phantoms.ct_case`: ``(X, Y, Z)`` integer HU.
    folder : str or Path
        Created if absent; must hold no file.
    seed : int
        Source of the UIDs and of the shuffles.
    shuffle : bool
        Shuffle file names and InstanceNumbers.

    Returns
    -------
    Path
        ``folder``.

    Raises
    ------
    InputError
        The image is not 3D, holds values outside -1024..3071 HU or non-integers, or the folder
        is not empty.
    """
    folder = Path(folder)
    stored = _stored(case, folder, dims=3, low=CT_RANGE[0], high=CT_RANGE[1]) - CT_RESCALE_INTERCEPT
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder}: the folder for a new series must be empty")
    folder.mkdir(parents=True, exist_ok=True)
    slices = stored.shape[2]
    names, numbers = np.arange(slices), np.arange(slices)
    if shuffle and slices > 1:
        rng = np.random.default_rng([seed, 1])
        names, numbers = (_derangement(rng, slices) for _ in range(2))
    identity = StudyIdentity(seed, "ct")
    affine = study_affine(case)
    for k in range(slices):
        ds = identity.dataset(CTImageStorage, k)
        ds.Modality = "CT"
        ds.SeriesDescription = "synthetic chest CT"
        ds.BodyPartExamined = "CHEST"
        ds.PatientPosition = "HFS"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.FrameOfReferenceUID = identity.uid("frame of reference")
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = int(numbers[k]) + 1
        ds.AcquisitionNumber = 1
        ds.KVP = 120
        position = (LPS_TO_RAS @ affine @ [0, 0, k, 1])[:3]  # the flip is its own inverse
        ds.ImagePositionPatient = [_ds(p) for p in position]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = _ds(position[2])
        ds.PixelSpacing = _pixel_spacing(case)
        ds.SliceThickness = _ds(case.spacing[2])
        ds.RescaleIntercept = CT_RESCALE_INTERCEPT
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = CT_WINDOW
        _set_pixels(ds, stored[:, :, k].T)
        with atomic_path(folder / f"IM{int(names[k]) + 1:04d}.dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    return folder


def study_affine(case: Case) -> np.ndarray:
    """The 4x4 RAS affine :func:`medmdm.io.load_study` gives the DICOM written from ``case``.

    A CT volume is centred on the scanner's origin, rows along +x (patient left) and columns
    along +y (posterior) in LPS, slices towards the head. A radiograph has no position or
    orientation, so it gets the reader's defaults: origin 0, axial orientation, 1 mm thickness.
    """
    spacing = np.asarray(case.spacing, dtype=float)
    lps = np.eye(4)
    lps[[0, 1], [0, 1]] = spacing[:2]
    if case.image.ndim == 3:
        lps[2, 2] = spacing[2]
        lps[:3, 3] = -(np.asarray(case.image.shape) - 1) * spacing / 2
    return LPS_TO_RAS @ lps


def study_image(case: Case) -> MetaTensor:
    """The ``(1, *spatial)`` float32 MetaTensor that ``load_study`` returns for the written DICOM.

    ``meta`` holds ``affine`` (RAS, :func:`study_affine`), ``original_affine``, ``spatial_shape``
    and ``space``, as :mod:`medmdm.io` sets them; a bundle's preprocessing sees the same input
    whether it comes from here or from the files.
    """
    affine = torch.as_tensor(study_affine(case), dtype=torch.float64)
    meta = {
        "affine": affine.clone(),
        "original_affine": affine.clone(),
        "spatial_shape": np.asarray(case.image.shape),
        "space": "RAS",
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))[None], meta=meta)


def _stored(case: Case, path: Path, *, dims: int, low: float, high: float) -> np.ndarray:
    """The case's image as uint16-ready integers, after checking rank, range and integrality."""
    image = np.asarray(case.image)
    if image.ndim != dims:
        raise InputError(f"{path}: expected a {dims}D case image, got shape {image.shape}")
    if not np.isfinite(image).all() or image.min() < low or image.max() > high:
        raise InputError(f"{path}: image values must lie in [{low:g}, {high:g}]")
    if not np.array_equal(image, np.round(image)):
        raise InputError(f"{path}: image values must be integers to be stored exactly")
    return image.astype(np.float64)


def _set_pixels(ds: Dataset, pixels: np.ndarray) -> None:
    """Image pixel module: MONOCHROME2, 16 bits allocated, 12 stored, unsigned."""
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()


def _pixel_spacing(case: Case) -> list[str]:
    """DICOM PixelSpacing: between rows (along axis 1), then between columns (along axis 0)."""
    return [_ds(case.spacing[1]), _ds(case.spacing[0])]


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters that reads back as ``value`` to 1e-9 mm."""
    text = f"{value:.10g}"
    if len(text) > 16 or abs(float(text) - value) > 1e-9:
        raise InputError(f"{value!r} mm cannot be written exactly as a DICOM decimal string")
    return text


def _derangement(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation of ``range(n)`` with no fixed point, so no file keeps its slice rank."""
    while True:
        order = rng.permutation(n)
        if not (order == np.arange(n)).any():
            return order
