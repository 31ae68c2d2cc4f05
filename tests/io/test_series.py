"""DICOM series: slice order from positions, geometry of the affine, agreement with SimpleITK."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from pydicom.dataset import FileMetaDataset
from pydicom.valuerep import DSfloat

from medmdm.errors import InputError
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


def _move(spec, shifts: dict[int, float]) -> None:
    """Move slices of a written series along their normal by ``shifts[k]`` mm."""
    normal = np.cross(spec.orientation[:3], spec.orientation[3:])
    for k, shift in shifts.items():
        ds = pydicom.dcmread(spec.files[k])
        ds.ImagePositionPatient = [
            DSfloat(float(v), auto_format=True) for v in spec.positions[k] + shift * normal
        ]
        ds.save_as(spec.files[k])


def test_jitter_within_one_percent_is_one_step(ct_series, recwarn):
    _move(ct_series, {k: 0.005 * (-1) ** k for k in range(8)})  # gaps 2.49 and 2.51 mm: within 1%
    study = load_study(ct_series.folder)
    assert study.size == (20, 16, 8) and study.source_slice_positions == ()
    assert not [w for w in recwarn if "slice gaps" in str(w.message)]
    np.testing.assert_allclose(study.spacing[2], 2.5, atol=0.02)


def test_a_missing_slice_is_resampled_onto_a_regular_grid(ct_series):
    ct_series.files[3].unlink()
    with pytest.warns(UserWarning) as caught:
        study = load_study(ct_series.folder)
    (message,) = [str(w.message) for w in caught if "slice gaps" in str(w.message)]
    assert "\n" not in message
    assert message == f"{ct_series.folder}: irregular slice gaps (2.5 to 5 mm, median 2.5 mm); " + (
        "resampled onto 8 slices 2.5 mm apart"
    )
    assert study.size == (20, 16, 8) and study.spacing[2] == pytest.approx(2.5)
    np.testing.assert_allclose(study.affine.numpy(), _expected_affine(ct_series), atol=1e-4)
    hu = ct_series.stored.astype(np.float32).transpose(2, 1, 0) * 2.0 - 1024.0  # (X, Y, Z)
    got = study.image[0].numpy()
    kept = [0, 1, 2, 4, 5, 6, 7]
    np.testing.assert_allclose(got[..., kept], hu[..., kept], atol=1e-3)
    np.testing.assert_allclose(got[..., 3], (hu[..., 2] + hu[..., 4]) / 2, atol=1e-3)  # between neighbours
    assert study.source_slice_positions == pytest.approx([2.5 * k for k in kept])
    assert study.files == [ct_series.files[k] for k in kept] and len(study.headers) == 7


def test_irregular_gaps_are_resampled_at_the_median_gap(ct_series):
    _move(ct_series, dict.fromkeys(range(4, 8), 1.0))  # at 0, 2.5, 5, 7.5, 11, 13.5, 16, 18.5 mm
    with pytest.warns(UserWarning, match=r"irregular slice gaps \(2\.5 to 3\.5 mm, median 2\.5 mm\)"):
        study = load_study(ct_series.folder)
    assert study.size[2] == 8  # 0 to 17.5 mm, 2.5 mm apart: the nearest grid to 18.5 mm
    hu = ct_series.stored.astype(np.float32).transpose(2, 1, 0) * 2.0 - 1024.0
    got = study.image[0].numpy()
    np.testing.assert_allclose(got[..., 4], hu[..., 3] * (1 / 3.5) + hu[..., 4] * (2.5 / 3.5), atol=1e-3)
    np.testing.assert_allclose(got[..., 7], hu[..., 6] * 0.4 + hu[..., 7] * 0.6, atol=1e-3)
    assert study.source_slice_positions == pytest.approx([0, 2.5, 5, 7.5, 11, 13.5, 16, 18.5])


def test_orientation_tolerance(ct_series):
    def turned(angle: float) -> list[float]:
        cos, sin = float(np.cos(angle)), float(np.sin(angle))
        return [cos, sin, 0.0, -sin, cos, 0.0]

    ds = pydicom.dcmread(ct_series.files[5])
    ds.ImageOrientationPatient = turned(5e-4)  # cosines within 1e-3 of the others'
    ds.save_as(ct_series.files[5])
    assert load_study(ct_series.folder).size == (20, 16, 8)
    ds.ImageOrientationPatient = turned(2e-3)
    ds.save_as(ct_series.files[5])
    with pytest.raises(InputError, match="orientation differs"):
        load_study(ct_series.folder)


def test_files_without_preamble_or_file_meta_are_found(ct_series):
    reference = load_study(ct_series.folder)
    for f in ct_series.files:
        ds = pydicom.dcmread(f)
        ds.file_meta, ds.preamble = FileMetaDataset(), None
        ds.save_as(f, enforce_file_format=False)
    (ct_series.folder / "notes.txt").write_text("not an image\n")
    (ct_series.folder / "junk").write_bytes(b"\x08\x00" + bytes(range(256)) * 3)  # begins like a data set
    study = load_study(ct_series.folder)
    torch.testing.assert_close(study.image.as_tensor(), reference.image.as_tensor())
    torch.testing.assert_close(study.affine, reference.affine)


def test_a_folder_linked_twice_is_read_once(ct_series, tmp_path):
    top = tmp_path / "archive"
    top.mkdir()
    (top / "a").symlink_to(ct_series.folder)
    (top / "b").symlink_to(ct_series.folder)
    assert load_study(top).size == (20, 16, 8)


def test_a_series_counts_the_frames_of_its_files(tmp_path):
    from pydicom.data import get_testdata_file

    from medmdm.io import list_series

    shutil.copy(get_testdata_file("emri_small.dcm"), tmp_path / "cine.dcm")  # one file, 10 frames
    (info,) = list_series(tmp_path)
    assert (info.n_images, len(info.files)) == (10, 1)
    assert info.summary().endswith("10 images in 1 file)")
