"""Phantoms written as DICOM read back through medmdm.io as exactly the case, files out of order."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom import dcmread

from medmdm.errors import InputError
from medmdm.io import load_study
from medmdm.testing.internal.dicom_studies import (
    PATIENT_NAME,
    study_affine,
    study_image,
    write_ct_series,
    write_radiograph_dicom,
)
from medmdm.testing.internal.dicom_validation import dciodvfy_available, validate_dicom
from medmdm.testing.internal.phantoms import ct_case, radiograph_case
from medmdm.writers import write_nifti_image, write_nifti_overlay


@pytest.fixture(scope="module")
def radiograph():
    return radiograph_case(4, lesions=1)


@pytest.fixture(scope="module")
def ct():
    return ct_case(4, lesions=2, size=(64, 64, 24))


def test_radiograph_reads_back_as_the_case(tmp_path: Path, radiograph) -> None:
    path = write_radiograph_dicom(radiograph, tmp_path / "cr.dcm", seed=4)
    study = load_study(path)
    assert study.kind == "dicom-file" and study.modality == "CR"
    np.testing.assert_array_equal(study.image[0].numpy(), radiograph.image)
    assert study.spacing == radiograph.spacing
    np.testing.assert_array_equal(study.affine.numpy(), study_affine(radiograph))
    ds = dcmread(path)
    np.testing.assert_array_equal(ds.pixel_array, radiograph.image.T)  # rows x columns
    assert ds.pixel_array.dtype == np.uint16 and ds.PhotometricInterpretation == "MONOCHROME2"
    assert str(ds.PatientName) == PATIENT_NAME and ds.PatientIdentityRemoved == "YES"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"  # explicit VR little endian


def test_ct_series_reads_back_as_the_case_from_shuffled_files(tmp_path: Path, ct) -> None:
    folder = write_ct_series(ct, tmp_path / "ct", seed=4)
    study = load_study(folder)
    assert study.kind == "dicom-series" and study.modality == "CT" and study.orientation == "LPS"
    np.testing.assert_array_equal(study.image[0].numpy(), ct.image)
    assert study.spacing == ct.spacing
    np.testing.assert_allclose(study.affine.numpy(), study_affine(ct), atol=1e-9)
    names = [f.name for f in study.files]  # in slice order
    numbers = [int(dcmread(f, stop_before_pixels=True).InstanceNumber) for f in study.files]
    assert len(names) == ct.image.shape[2] == len(set(names))
    assert all(name != wanted for name, wanted in zip(names, sorted(names), strict=True))
    assert all(n != k + 1 for k, n in enumerate(numbers))
    ds = dcmread(study.files[0])
    assert (ds.RescaleSlope, ds.RescaleIntercept) == (1, -1024)
    np.testing.assert_array_equal(ds.pixel_array.astype(float) - 1024, ct.image[:, :, 0].T)
    assert ds.FrameOfReferenceUID == study.frame_of_reference_uid


def test_unshuffled_series_keeps_names_in_slice_order(tmp_path: Path, ct) -> None:
    study = load_study(write_ct_series(ct, tmp_path / "ct", seed=4, shuffle=False))
    names = [f.name for f in study.files]
    assert names == sorted(names)
    np.testing.assert_array_equal(study.image[0].numpy(), ct.image)


def test_study_image_is_what_load_study_returns(tmp_path: Path, radiograph, ct) -> None:
    for case, study in (
        (radiograph, load_study(write_radiograph_dicom(radiograph, tmp_path / "cr.dcm"))),
        (ct, load_study(write_ct_series(ct, tmp_path / "ct"))),
    ):
        built = study_image(case)
        torch.testing.assert_close(built.as_tensor(), study.image.as_tensor(), rtol=0, atol=0)
        torch.testing.assert_close(built.affine, study.affine, rtol=0, atol=1e-9)


def test_mask_written_as_nifti_aligns_with_the_study(tmp_path: Path, radiograph, ct) -> None:
    for case, study in (
        (radiograph, load_study(write_radiograph_dicom(radiograph, tmp_path / "cr.dcm"))),
        (ct, load_study(write_ct_series(ct, tmp_path / "ct"))),
    ):
        mask_path = write_nifti_overlay(torch.from_numpy(case.mask), study.image, tmp_path / "mask.nii.gz")
        image_path = write_nifti_image(study.image, tmp_path / "image.nii.gz")
        mask, image = load_study(mask_path), load_study(image_path)
        np.testing.assert_array_equal(mask.image[0].numpy(), case.mask)
        np.testing.assert_array_equal(image.image[0].numpy(), case.image)
        torch.testing.assert_close(mask.affine, study.affine, rtol=0, atol=1e-6)
        torch.testing.assert_close(image.affine, study.affine, rtol=0, atol=1e-6)


def test_uids_are_deterministic_per_seed(tmp_path: Path, radiograph) -> None:
    a = dcmread(write_radiograph_dicom(radiograph, tmp_path / "a.dcm", seed=1))
    b = dcmread(write_radiograph_dicom(radiograph, tmp_path / "b.dcm", seed=1))
    c = dcmread(write_radiograph_dicom(radiograph, tmp_path / "c.dcm", seed=2))
    assert (tmp_path / "a.dcm").read_bytes() == (tmp_path / "b.dcm").read_bytes()
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert a[keyword].value == b[keyword].value != c[keyword].value


@pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy (dicom3tools) is not installed")
def test_dciodvfy_finds_no_error(tmp_path: Path, radiograph, ct) -> None:
    assert validate_dicom(write_radiograph_dicom(radiograph, tmp_path / "cr.dcm")) == []
    folder = write_ct_series(ct, tmp_path / "ct")
    assert validate_dicom(sorted(folder.iterdir())[0]) == []


def test_bad_cases_are_input_errors_naming_the_file(tmp_path: Path, radiograph, ct) -> None:
    with pytest.raises(InputError, match=r"cr\.dcm.*integers"):
        write_radiograph_dicom(replace(radiograph, image=radiograph.image + 0.5), tmp_path / "cr.dcm")
    with pytest.raises(InputError, match=r"cr\.dcm.*2D"):
        write_radiograph_dicom(ct, tmp_path / "cr.dcm")
    with pytest.raises(InputError, match=r"ct: image values must lie in \[-1024, 3071\]"):
        write_ct_series(replace(ct, image=ct.image - 2000), tmp_path / "ct")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "other.dcm").write_bytes(b"")
    with pytest.raises(InputError, match=r"full: the folder for a new series must be empty"):
        write_ct_series(ct, tmp_path / "full")
    assert not (tmp_path / "cr.dcm").exists() and not (tmp_path / "ct").exists()
