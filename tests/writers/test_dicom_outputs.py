"""DICOM writers: Parametric Map, Secondary Capture and Segmentation on every kind of source.

Each object is read back (pydicom, highdicom) and compared with the map and the source: values
on the right voxel, frames at the source's positions, identifiers, labels; and checked by
``dciodvfy`` (dicom3tools), which must report no error.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from medmdm import __version__
from medmdm.errors import InputError
from medmdm.io import load_study
from medmdm.testing.internal.dicom_validation import dciodvfy_available, validate_dicom
from medmdm.writers.dicom_common import frames_in_ascending_order, orientation_letters
from medmdm.writers.parametric_map import write_parametric_map
from medmdm.writers.secondary_capture import write_secondary_capture
from medmdm.writers.segmentation import top_region, write_segmentation

needs_dciodvfy = pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy (dicom3tools) not installed")
NOTICE = "research only, not for diagnosis"
POSITION_TOLERANCE = 1e-4  # mm


def hot_voxel(shape: tuple[int, ...], index: tuple[int, ...], background: float = 0.1) -> np.ndarray:
    data = np.full(shape, background, dtype=np.float32)
    data[index] = 1.0
    return data


def ramp(shape: tuple[int, ...]) -> np.ndarray:
    """Distinct values rising fastest along axis 0, slowest along the last: the top is in the last slice."""
    size = int(np.prod(shape))
    return ((np.arange(size).reshape(shape[::-1]).T + 1) / size).astype(np.float32)


def frame_index(ds: pydicom.Dataset, position: np.ndarray) -> int:
    """The index of the one frame of a multi-frame object at ``position``."""
    found = [
        i
        for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence)
        if np.abs(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float) - position).max()
        < POSITION_TOLERANCE
    ]
    assert len(found) == 1, f"{len(found)} frames at {position}"
    return found[0]


def frame_source(ds: pydicom.Dataset, index: int) -> tuple[str, int | None]:
    """SOPInstanceUID and frame number a frame of a multi-frame object was derived from."""
    item = ds.PerFrameFunctionalGroupsSequence[index].DerivationImageSequence[0].SourceImageSequence[0]
    number = item.get("ReferencedFrameNumber")
    return str(item.ReferencedSOPInstanceUID), None if number is None else int(number)


def referenced_uids(ds: pydicom.Dataset) -> set[str]:
    found: set[str] = set()

    def visit(dataset: pydicom.Dataset, element: pydicom.DataElement) -> None:
        if element.keyword == "ReferencedSOPInstanceUID":
            found.add(str(element.value))

    ds.walk(visit)
    return found


def slice_of(data: np.ndarray, k: int) -> np.ndarray:
    """Slice ``k`` of a ``(W, H)`` or ``(X, Y, Z)`` map as ``(rows, cols)``."""
    return (data if data.ndim == 2 else data[..., k]).T


def slice_count(source) -> int:
    return source.study.size[2] if len(source.study.size) == 3 else 1


def check_same_study(ds: pydicom.Dataset, source) -> None:
    assert ds.StudyInstanceUID == source.study.study_uid
    assert ds.SeriesInstanceUID != source.study.series_uid
    assert ds.Manufacturer == "medmdm"
    assert __version__ in ds.SoftwareVersions
    assert NOTICE in ds.SeriesDescription and len(ds.SeriesDescription) <= 64


# Parametric Map


def test_parametric_map_values_positions_and_labels(tmp_path: Path, source) -> None:
    data = ramp(source.study.size)
    out = write_parametric_map(data, source.study, tmp_path / "pm.dcm", method="hdm", target_label="nodule")
    assert out == tmp_path / "pm.dcm"
    assert [p.name for p in tmp_path.iterdir()] == ["pm.dcm"]  # no temporary file left
    ds = pydicom.dcmread(out)
    pm = hd.pm.ParametricMap.from_dataset(ds)
    check_same_study(ds, source)
    assert ds.SeriesDescription == "medmdm hdm saliency - research only, not for diagnosis"
    assert ds.ContentQualification == "RESEARCH"
    assert "nodule" in ds.ContentDescription
    assert ds.BitsAllocated == 32 and "FloatPixelData" in ds
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    quantity = mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
    assert (quantity.CodeValue, quantity.CodingSchemeDesignator) == ("130402", "DCM")
    assert quantity.CodeMeaning == "Class activation"
    assert (mapping.RealWorldValueSlope, mapping.RealWorldValueIntercept) == (1.0, 0.0)
    assert referenced_uids(ds) >= set(source.sop_uids)
    pixels = pm.pixel_array.reshape(-1, *pm.pixel_array.shape[-2:])
    assert pixels.dtype == np.float32 and len(pixels) == slice_count(source)
    if source.positions is None:  # a radiograph: a frame of reference of its own
        assert ds.FrameOfReferenceUID and ds.FrameOfReferenceUID != source.study.frame_of_reference_uid
        np.testing.assert_array_equal(pixels[0], slice_of(data, 0))
        assert frame_source(ds, 0) == (source.sop_uids[0], None)
        return
    assert ds.FrameOfReferenceUID == source.study.frame_of_reference_uid
    for k, position in enumerate(source.positions):
        index = frame_index(ds, position)
        np.testing.assert_array_equal(pixels[index], slice_of(data, k))
        frame = source.frame_numbers[k] if source.frame_numbers else None
        assert frame_source(ds, index) == (source.sop_uids[k], frame)
    # frames in ascending order along the row x column normal, as dcmqi stacks them
    orientation = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    normal = np.cross(*np.asarray(orientation, float).reshape(2, 3))
    along = [
        normal @ np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        for item in ds.PerFrameFunctionalGroupsSequence
    ]
    assert (np.diff(along) > 0).all()


def frames_at(positions: list[float], pixels: np.ndarray, bits: int) -> pydicom.Dataset:
    """A multi-frame image of axial frames (``pixels``: (frames, rows, cols)) at heights ``positions``."""
    ds = pydicom.Dataset()
    ds.Rows, ds.Columns = pixels.shape[1:]
    ds.BitsAllocated = bits
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    orientation = pydicom.Dataset()
    orientation.PlaneOrientationSequence = [pydicom.Dataset()]
    orientation.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SharedFunctionalGroupsSequence = [orientation]
    ds.PerFrameFunctionalGroupsSequence = []
    for z in positions:
        item = pydicom.Dataset()
        item.PlanePositionSequence = [pydicom.Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [0, 0, z]
        ds.PerFrameFunctionalGroupsSequence.append(item)
    ds.PixelData = pixels.tobytes()
    return ds


def test_frames_in_ascending_order_moves_pixels_and_functional_groups() -> None:
    heights = [2.0, -1.0, 5.0, 0.5]
    pixels = np.stack([np.full((2, 3), k, dtype=np.uint16) for k in range(len(heights))])
    ds = frames_at(heights, pixels, 16)
    frames_in_ascending_order(ds)
    order = np.argsort(heights)
    placed = [
        float(item.PlanePositionSequence[0].ImagePositionPatient[2])
        for item in ds.PerFrameFunctionalGroupsSequence
    ]
    assert placed == sorted(heights)
    np.testing.assert_array_equal(np.frombuffer(ds.PixelData, np.uint16).reshape(pixels.shape), pixels[order])
    one_bit = frames_at(heights, pixels, 1)
    with pytest.raises(ValueError, match="1 bits allocated"):
        frames_in_ascending_order(one_bit)


def test_parametric_map_hot_voxel_lands_on_its_slice_row_and_column(tmp_path: Path, series) -> None:
    i, j, k = 17, 3, 2  # column, row, slice: the grid is 20 columns x 16 rows x 5 slices
    data = hot_voxel(series.study.size, (i, j, k))
    ds = pydicom.dcmread(
        write_parametric_map(torch.from_numpy(data)[None], series.study, tmp_path / "pm.dcm", method="hdm")
    )
    pixels = hd.pm.ParametricMap.from_dataset(ds).pixel_array
    hot = np.argwhere(pixels == 1.0)
    assert len(hot) == 1
    frame, row, column = hot[0]
    assert (row, column) == (j, i)
    position = ds.PerFrameFunctionalGroupsSequence[frame].PlanePositionSequence[0].ImagePositionPatient
    np.testing.assert_allclose(np.asarray(position, float), series.positions[k], atol=POSITION_TOLERANCE)
    assert frame_source(ds, frame)[0] == series.sop_uids[k]
    assert np.count_nonzero(pixels == np.float32(0.1)) == pixels.size - 1


def test_parametric_map_keeps_values_outside_zero_one(tmp_path: Path, ct_small) -> None:
    data = np.linspace(-3.5, 250.0, np.prod(ct_small.study.size)).reshape(ct_small.study.size)
    ds = pydicom.dcmread(write_parametric_map(data, ct_small.study, tmp_path / "pm.dcm", method="rise"))
    pixels = hd.pm.ParametricMap.from_dataset(ds).pixel_array.reshape(data.T.shape)
    np.testing.assert_allclose(pixels, data.T, rtol=1e-6)
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.DoubleFloatRealWorldValueFirstValueMapped == pytest.approx(-3.5)
    assert mapping.DoubleFloatRealWorldValueLastValueMapped == pytest.approx(250.0)


def test_parametric_map_series_description(tmp_path: Path, ct_small) -> None:
    data = np.zeros(ct_small.study.size)
    out = write_parametric_map(
        data, ct_small.study, tmp_path / "a.dcm", method="hdm", series_description="mine"
    )
    assert pydicom.dcmread(out).SeriesDescription == "mine"
    long_method = "integrated_gradients_with_a_very_long_name"
    out = write_parametric_map(data, ct_small.study, tmp_path / "b.dcm", method=long_method)
    description = pydicom.dcmread(out).SeriesDescription
    assert len(description) == 64 and description.endswith(NOTICE) and description.startswith("medmdm integ")
    with pytest.raises(InputError, match="at most 64 characters"):
        write_parametric_map(
            data, ct_small.study, tmp_path / "c.dcm", method="hdm", series_description="x" * 65
        )
    assert not (tmp_path / "c.dcm").exists()


# Segmentation


def test_top_region_known_answers() -> None:
    data = np.arange(100.0).reshape(10, 10)
    np.testing.assert_array_equal(np.flatnonzero(top_region(data, 0.05)), [95, 96, 97, 98, 99])
    np.testing.assert_array_equal(np.flatnonzero(top_region(data, 0.001)), [99])  # at least one voxel
    tied = np.zeros((4, 5))
    tied[0, :3] = 2.0  # three voxels tied for the top: all kept
    assert top_region(tied, 0.05).sum() == 3
    assert top_region(tied, 1.0).sum() == 3  # never the minimum
    with pytest.raises(InputError, match="flat"):
        top_region(np.full((3, 3), 0.5), 0.05)
    for fraction in (0.0, -0.1, 1.5):
        with pytest.raises(InputError, match="top_fraction"):
            top_region(data, fraction)


def test_segmentation_top_region_positions_and_labels(tmp_path: Path, source) -> None:
    data = ramp(source.study.size)
    out = write_segmentation(data, source.study, tmp_path / "seg.dcm", method="hdm", top_fraction=0.05)
    assert [p.name for p in tmp_path.iterdir()] == ["seg.dcm"]
    ds = pydicom.dcmread(out)
    check_same_study(ds, source)
    assert ds.SegmentationType == "BINARY"
    assert ds.SeriesDescription == "medmdm hdm saliency top 5% - research only, not for diagnosis"
    (segment,) = ds.SegmentSequence
    assert segment.SegmentLabel == "Saliency top 5%"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("medmdm/hdm", __version__)
    assert algorithm.AlgorithmParameters == "top_fraction=0.05"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "130404"  # DCM Saliency
    expected = top_region(data, 0.05)
    frames = hd.seg.Segmentation.from_dataset(ds).pixel_array.reshape(-1, *expected.T.shape[-2:])
    if source.positions is None:
        assert "FrameOfReferenceUID" not in ds
        assert list(ds.PatientOrientation) == ["R", "F"]
        np.testing.assert_array_equal(frames[0], slice_of(expected, 0))
        return
    assert ds.FrameOfReferenceUID == source.study.frame_of_reference_uid
    marked = 0
    for k, position in enumerate(source.positions):
        if not slice_of(expected, k).any():
            continue  # empty frames are left out
        index = frame_index(ds, position)
        np.testing.assert_array_equal(frames[index], slice_of(expected, k))
        assert frame_source(ds, index)[0] == source.sop_uids[k]
        marked += 1
    assert marked == len(frames)


def test_segmentation_of_a_flat_map_is_refused(tmp_path: Path, ct_small) -> None:
    with pytest.raises(InputError, match="flat"):
        write_segmentation(np.zeros(ct_small.study.size), ct_small.study, tmp_path / "seg.dcm", method="hdm")
    assert list(tmp_path.iterdir()) == []


# Secondary Capture: tests/writers/test_secondary_capture.py


# Shared pieces


@pytest.mark.parametrize(
    ("direction", "letters"),
    [((1, 0, 0), "L"), ((0, -1, 0), "A"), ((0, 0, -2), "F"), ((0.8, -0.6, 0), "LA"), ((0, 0.6, -0.8), "FP")],
)
def test_orientation_letters(direction: tuple[float, ...], letters: str) -> None:
    assert orientation_letters(np.asarray(direction, float)) == letters


# Input errors shared by the three writers


WRITERS = {
    "parametric_map": lambda s, study, out: write_parametric_map(s, study, out / "pm.dcm", method="hdm"),
    "secondary_capture": lambda s, study, out: write_secondary_capture(s, study, out / "sc", method="hdm"),
    "segmentation": lambda s, study, out: write_segmentation(s, study, out / "seg.dcm", method="hdm"),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_nifti_study_is_refused(tmp_path: Path, writer: str) -> None:
    path = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), np.eye(4)), path)
    study = load_study(path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError) as error:
        WRITERS[writer](np.zeros(study.size), study, out)
    assert str(error.value) == f"{path}: DICOM outputs need a DICOM source; this study is NIfTI"
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("writer", WRITERS)
def test_map_of_another_shape_or_not_finite_is_refused(tmp_path: Path, ct_small, writer: str) -> None:
    with pytest.raises(InputError, match="does not match"):
        WRITERS[writer](np.zeros((64, 64)), ct_small.study, tmp_path)
    bad = np.zeros(ct_small.study.size)
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        WRITERS[writer](bad, ct_small.study, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rtdose.dcm", r"rtdose\.dcm: a Parametric Map is derived from images; this source is an RT Dose"),
        ("emri_small.dcm", r"emri_small\.dcm: a Parametric Map needs single-frame images or an enhanced"),
    ],
)
def test_multiframe_source_without_plane_positions_is_refused(tmp_path: Path, name: str, message: str):
    study = load_study(get_testdata_file(name))
    with pytest.raises(InputError, match=message):
        write_parametric_map(np.zeros(study.size), study, tmp_path / "pm.dcm", method="hdm")
    assert list(tmp_path.iterdir()) == []


# Validation by dciodvfy


@needs_dciodvfy
@pytest.mark.parametrize("writer", WRITERS)
def test_dciodvfy_finds_no_error(tmp_path: Path, source, writer: str) -> None:
    data = ramp(source.study.size)
    written = WRITERS[writer](data, source.study, tmp_path)
    for path in written if isinstance(written, list) else [written]:
        assert validate_dicom(path) == [], f"{source.kind}: {path.name}"


@needs_dciodvfy
def test_validate_dicom_reports_errors_not_warnings(tmp_path: Path, ct_small) -> None:
    valid = write_parametric_map(
        np.zeros(ct_small.study.size), ct_small.study, tmp_path / "pm.dcm", method="hdm"
    )
    report = subprocess.run(["dciodvfy", str(valid)], capture_output=True, text=True, check=False)
    assert "Warning - " in report.stdout + report.stderr  # an empty Laterality, for one
    assert validate_dicom(valid) == []
    broken = pydicom.dcmread(valid)
    del broken.SeriesInstanceUID
    broken.save_as(tmp_path / "broken.dcm")
    errors = validate_dicom(tmp_path / "broken.dcm")
    assert errors and all(e.startswith("Error") for e in errors)
    assert any("SeriesInstanceUID" in e for e in errors)
    not_dicom = tmp_path / "text.dcm"
    not_dicom.write_text("not DICOM")
    assert validate_dicom(not_dicom)


def test_validator_without_dciodvfy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert not dciodvfy_available()
    with pytest.raises(FileNotFoundError, match="dciodvfy"):
        validate_dicom(tmp_path / "any.dcm")
