"""DICOM series: slice order from positions, geometry of the affine, agreement with SimpleITK."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from medmdm.io import Study, load_study

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _expected_affine(spec) -> np.ndarray:
    row, col = spec.orientation[:3], spec.orientation[3:]
    normal = np.cross(row, col)
    step = float((spec.positions[1] - spec.positions[0]) @ normal)
    lps = np.eye(4)
    lps[:3, 0] = row * spec.pixel_spacing[1]
    lps[:3, 1] = col * spec.pixel_spacing[0]
    lps[:3, 2] = normal * step
    lps[:3, 3] = spec.positions[0]
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def test_series_is_a_metatensor_with_meta(ct_series):
    study = load_study(ct_series.folder)
    assert isinstance(study, Study)
    assert isinstance(study.image, MetaTensor)
    assert study.kind == "dicom-series"
    assert study.image.dtype == torch.float32
    assert tuple(study.image.shape) == (1, 20, 16, 8)
    assert study.size == (20, 16, 8)
    for key in ("affine", "original_affine", "spatial_shape", "filename_or_obj"):
        assert key in study.meta
    assert tuple(study.meta["spatial_shape"]) == (20, 16, 8)
    assert study.modality == "CT"
    assert study.series_uid == ct_series.series_uid
    assert study.orientation == "LPS"
    assert study.description == "synthetic"
    assert study.frame_of_reference_uid and study.study_uid


def test_order_by_position_not_file_or_instance_number(ct_series):
    study = load_study(ct_series.folder)
    assert study.files == ct_series.files
    assert study.sop_instance_uids == ct_series.sop_uids
    expected = ct_series.stored.astype(np.float32) * 2.0 - 1024.0  # slope 2, intercept -1024 (HU)
    got = study.image[0].numpy().transpose(2, 1, 0)  # (X, Y, Z) -> (Z, rows, cols)
    np.testing.assert_array_equal(got, expected)


def test_shuffles_give_the_same_volume(tmp_path, series_writer):
    a = load_study(series_writer(tmp_path / "a", seed=1, shuffle=True).folder)
    b = load_study(series_writer(tmp_path / "b", seed=1, shuffle=False).folder)
    torch.testing.assert_close(a.image.as_tensor(), b.image.as_tensor())
    torch.testing.assert_close(a.affine, b.affine)


def test_oblique_affine_matches_direction_cosines(oblique_series):
    study = load_study(oblique_series.folder)
    affine = study.affine.numpy()
    np.testing.assert_allclose(affine, _expected_affine(oblique_series), atol=1e-4)
    np.testing.assert_allclose(study.spacing, (0.9, 0.7, 2.5), atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), (0.9, 0.7, 2.5), atol=1e-4)
    np.testing.assert_allclose(affine[:3, 3], LPS_TO_RAS @ oblique_series.positions[0], atol=1e-4)
    torch.testing.assert_close(study.meta["original_affine"], study.affine)


def test_simpleitk_reads_the_same_geometry(oblique_series):
    study = load_study(oblique_series.folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(oblique_series.folder)))
    ref = reader.Execute()
    direction = np.array(ref.GetDirection()).reshape(3, 3)
    affine = study.affine.numpy()
    np.testing.assert_allclose(ref.GetSpacing(), study.spacing, atol=1e-4)
    np.testing.assert_allclose(LPS_TO_RAS @ np.array(ref.GetOrigin()), affine[:3, 3], atol=1e-4)
    np.testing.assert_allclose(LPS_TO_RAS @ direction * np.array(study.spacing), affine[:3, :3], atol=1e-4)
    # SimpleITK's array is (Z, Y, X); ours is (C, X, Y, Z)
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(ref).astype(np.float32), study.image[0].numpy().transpose(2, 1, 0)
    )


def test_nifti_written_from_the_metatensor_agrees_with_simpleitk(oblique_series, tmp_path: Path):
    study = load_study(oblique_series.folder)
    out = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(study.image[0].numpy(), study.affine.numpy()), out)
    ref = sitk.ReadImage(str(out))
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(oblique_series.folder)))
    dicom = reader.Execute()
    np.testing.assert_allclose(ref.GetOrigin(), dicom.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ref.GetSpacing(), dicom.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(ref.GetDirection(), dicom.GetDirection(), atol=1e-4)


def test_two_series_need_a_choice(tmp_path, series_writer):
    import pytest

    from medmdm.errors import InputError
    from medmdm.io import list_series

    ct = series_writer(tmp_path / "study" / "ct", seed=2, description="chest")
    mr = series_writer(tmp_path / "study" / "mr", seed=3, modality="MR", n_slices=5, description="t1")
    infos = list_series(tmp_path / "study")
    assert {(s.series_uid, s.modality, s.n_images) for s in infos} == {
        (ct.series_uid, "CT", 8),
        (mr.series_uid, "MR", 5),
    }
    with pytest.raises(InputError) as err:
        load_study(tmp_path / "study")
    message = str(err.value)
    assert "\n" not in message
    for s in (ct, mr):
        assert s.series_uid in message
    assert "chest" in message and "t1" in message and "8 images" in message and "5 images" in message
    chosen = load_study(tmp_path / "study", series_uid=mr.series_uid)
    assert chosen.modality == "MR" and chosen.size == (20, 16, 5)
    with pytest.raises(InputError, match=r"no series 1\.2\.3"):
        load_study(tmp_path / "study", series_uid="1.2.3")
