"""Builders of small synthetic DICOM series, written with pydicom into ``tmp_path``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

ROWS, COLS, N_SLICES = 16, 20, 8
PIXEL_SPACING = (0.7, 0.9)  # (between rows, between columns)
SLICE_STEP = 2.5


@dataclass
class SeriesSpec:
    """What a synthetic CT series holds, to compare against."""

    folder: Path
    files: list[Path]  # in slice order (increasing position along the normal)
    stored: np.ndarray  # (N, rows, cols) int16, in slice order
    positions: np.ndarray  # (N, 3) ImagePositionPatient, in slice order
    orientation: np.ndarray  # (6,)
    pixel_spacing: tuple[float, float] = PIXEL_SPACING
    slope: float = 2.0
    intercept: float = -1024.0
    series_uid: str = ""
    sop_uids: list[str] = field(default_factory=list)


def ct_slice(
    pixels: np.ndarray,
    position: np.ndarray,
    orientation: np.ndarray,
    *,
    series_uid: str,
    study_uid: str,
    for_uid: str,
    instance: int,
    pixel_spacing: tuple[float, float] = PIXEL_SPACING,
    slope: float = 2.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    description: str = "synthetic",
) -> Dataset:
    """One uncompressed CT image dataset."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = for_uid
    ds.Modality = modality
    ds.SeriesDescription = description
    ds.PatientName = "Synthetic^Patient"
    ds.PatientID = "SYN001"
    ds.InstanceNumber = instance
    # auto_format keeps each decimal string within DICOM's 16 characters
    ds.ImagePositionPatient = [DSfloat(float(v), auto_format=True) for v in position]
    ds.ImageOrientationPatient = [DSfloat(float(v), auto_format=True) for v in orientation]
    ds.PixelSpacing = list(pixel_spacing)
    ds.SliceThickness = SLICE_STEP
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = pixels.astype("<i2").tobytes()
    return ds


def oblique_orientation() -> np.ndarray:
    """Row and column cosines rotated about two axes (orthonormal)."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    r = rx @ rz
    return np.concatenate([r[:, 0], r[:, 1]])


def write_series(
    folder: Path,
    *,
    orientation: np.ndarray | None = None,
    origin: tuple[float, float, float] = (-12.5, 30.25, -80.0),
    n_slices: int = N_SLICES,
    step: float = SLICE_STEP,
    shuffle: bool = True,
    seed: int = 0,
    modality: str = "CT",
    description: str = "synthetic",
) -> SeriesSpec:
    """Write a small CT series: files in shuffled order with shuffled names and InstanceNumbers."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    orientation = np.array([1.0, 0, 0, 0, 1.0, 0]) if orientation is None else orientation
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array(origin) + np.arange(n_slices)[:, None] * step * normal
    stored = rng.integers(-500, 1500, size=(n_slices, ROWS, COLS)).astype(np.int16)
    order = rng.permutation(n_slices) if shuffle else np.arange(n_slices)
    instances = rng.permutation(n_slices) + 1 if shuffle else np.arange(n_slices) + 1
    series_uid, study_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    files: list[Path | None] = [None] * n_slices
    sops: list[str] = [""] * n_slices
    for rank, k in enumerate(order):
        ds = ct_slice(
            stored[k],
            positions[k],
            orientation,
            series_uid=series_uid,
            study_uid=study_uid,
            for_uid=for_uid,
            instance=int(instances[rank]),
            modality=modality,
            description=description,
        )
        f = folder / f"img_{rng.integers(1e9):09d}"
        ds.save_as(f, enforce_file_format=True)
        files[k], sops[k] = f, str(ds.SOPInstanceUID)
    return SeriesSpec(
        folder=folder,
        files=[f for f in files if f is not None],
        stored=stored,
        positions=positions,
        orientation=orientation,
        series_uid=series_uid,
        sop_uids=sops,
    )


@pytest.fixture
def ct_series(tmp_path: Path) -> SeriesSpec:
    """An axial 8-slice CT series of 16x20, shuffled."""
    return write_series(tmp_path / "ct")


@pytest.fixture
def oblique_series(tmp_path: Path) -> SeriesSpec:
    """An oblique 8-slice CT series of 16x20, shuffled."""
    return write_series(tmp_path / "oblique", orientation=oblique_orientation())


@pytest.fixture
def series_writer():
    """The :func:`write_series` builder (conftest modules cannot be imported under importlib mode)."""
    return write_series


@pytest.fixture
def slice_builder():
    """The :func:`ct_slice` builder."""
    return ct_slice
