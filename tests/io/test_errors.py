"""Bad input: each case raises InputError with a one-line message naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

from medmdm.errors import InputError
from medmdm.io import load_study


def _fails(path: Path, named: Path, match: str, **kwargs) -> None:
    with pytest.raises(InputError, match=match) as err:
        load_study(path, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    assert str(named) in message or named.name in message


def _rtstruct(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.StructureSetLabel = "empty"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_missing_path(tmp_path):
    _fails(tmp_path / "nothing.dcm", tmp_path / "nothing.dcm", "no such file")


@pytest.mark.parametrize("name", ["empty.dcm", "empty.nii.gz"])
def test_empty_file(tmp_path, name):
    path = tmp_path / name
    path.touch()
    _fails(path, path, "empty file")


def test_not_dicom_nor_nifti(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image at all\n" * 20)
    _fails(path, path, "neither DICOM nor NIfTI")


def test_truncated_dicom(ct_series, tmp_path):
    path = tmp_path / "cut.dcm"
    data = ct_series.files[0].read_bytes()
    path.write_bytes(data[: len(data) - 200])
    _fails(path, path, "truncated")


def test_bundled_truncated_dicom(tmp_path):
    path = Path(shutil.copy(get_testdata_file("MR_truncated.dcm"), tmp_path / "mr.dcm"))
    _fails(path, path, "pixel data")


def test_dicom_without_pixel_data(tmp_path):
    path = _rtstruct(tmp_path / "rs.dcm")
    _fails(path, path, "no pixel data .*RTSTRUCT")


def test_folder_without_dicom(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    _rtstruct(folder / "rs.dcm")  # DICOM, but no image
    _fails(folder, folder, "no DICOM image")


def test_inconsistent_slice_spacing(ct_series):
    ct_series.files[3].unlink()  # a missing slice leaves a double gap
    _fails(ct_series.folder, ct_series.files[4], "inconsistent slice spacing")


def test_mixed_image_sizes(ct_series, slice_builder):
    import pydicom

    ref = pydicom.dcmread(ct_series.files[0])
    odd = slice_builder(
        np.zeros((12, 20), np.int16),
        ct_series.positions[-1] + np.array([0, 0, 2.5]),
        ct_series.orientation,
        series_uid=ct_series.series_uid,
        study_uid=str(ref.StudyInstanceUID),
        for_uid=str(ref.FrameOfReferenceUID),
        instance=99,
    )
    path = ct_series.folder / "zz_odd"
    odd.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match="image size") as err:
        load_study(ct_series.folder)
    assert "zz_odd" in str(err.value) and "\n" not in str(err.value)


def test_duplicate_positions(ct_series):
    shutil.copy(ct_series.files[2], ct_series.folder / "copy")
    shutil.copy(ct_series.files[2], ct_series.folder / "copy2")
    with pytest.raises(InputError, match="same slice position"):
        load_study(ct_series.folder)


def test_broken_nifti_header(tmp_path):
    path = tmp_path / "bad.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
    data = bytearray(path.read_bytes())
    data[0:4] = b"\xff\xff\xff\x7f"  # sizeof_hdr
    data[344:348] = b"xxxx"  # magic
    path.write_bytes(bytes(data))
    _fails(path, path, "unreadable NIfTI")


def test_truncated_nifti(tmp_path):
    path = tmp_path / "cut.nii"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), path)
    path.write_bytes(path.read_bytes()[:600])
    _fails(path, path, "unreadable NIfTI")


def test_mixed_orientations(ct_series, slice_builder):
    import pydicom

    ref = pydicom.dcmread(ct_series.files[0])
    odd = slice_builder(
        np.zeros((16, 20), np.int16),
        ct_series.positions[-1] + np.array([0, 0, 2.5]),
        np.array([0.0, 1, 0, 0, 0, -1]),
        series_uid=ct_series.series_uid,
        study_uid=str(ref.StudyInstanceUID),
        for_uid=str(ref.FrameOfReferenceUID),
        instance=99,
    )
    odd.save_as(ct_series.folder / "zz_sagittal", enforce_file_format=True)
    _fails(ct_series.folder, ct_series.folder / "zz_sagittal", "orientation differs")
