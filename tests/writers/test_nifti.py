"""NIfTI writers: round trips through nibabel and SimpleITK keep values and geometry."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from medmdm.errors import InputError
from medmdm.io import load_study
from medmdm.writers import write_nifti_image, write_nifti_overlay

LPS = np.diag([-1.0, -1.0, 1.0])


def oblique_affine() -> np.ndarray:
    """A rotated grid with non-square spacing, as a RAS 4x4 affine."""
    a, b = math.radians(20), math.radians(-35)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.7, 1.3, 2.5])
    affine[:3, 3] = [-12.5, 40.0, 7.25]
    return affine


@pytest.fixture
def volume() -> MetaTensor:
    torch.manual_seed(0)
    return MetaTensor(torch.rand(1, 12, 10, 8), affine=torch.as_tensor(oblique_affine()))


@pytest.fixture(scope="module")
def ct_small() -> MetaTensor:
    return load_study(pydicom.data.get_testdata_file("CT_small.dcm")).image


def check_geometry(path: Path, affine: np.ndarray, shape: tuple[int, ...]) -> None:
    """nibabel and SimpleITK both read ``affine`` and ``shape`` back."""
    img = nib.load(path)
    assert img.shape == shape
    np.testing.assert_allclose(img.get_sform(), affine, atol=1e-4)
    np.testing.assert_allclose(img.get_qform(), affine, atol=1e-4)
    np.testing.assert_allclose(img.get_sform(), img.get_qform(), atol=1e-4)
    assert int(img.header["sform_code"]) == 1
    assert int(img.header["qform_code"]) == 1
    assert img.get_data_dtype() == np.float32

    itk = sitk.ReadImage(str(path))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    assert itk.GetSize()[:3] == shape[:3]
    np.testing.assert_allclose(itk.GetSpacing()[:3], spacing, atol=1e-4)
    np.testing.assert_allclose(itk.GetOrigin()[:3], LPS @ affine[:3, 3], atol=1e-4)
    direction = np.array(itk.GetDirection()).reshape(itk.GetDimension(), itk.GetDimension())[:3, :3]
    np.testing.assert_allclose(direction, LPS @ affine[:3, :3] / spacing, atol=1e-4)


def test_overlay_3d_round_trip(tmp_path: Path, volume: MetaTensor) -> None:
    saliency = torch.rand(1, 12, 10, 8)
    out = write_nifti_overlay(saliency, volume, tmp_path / "map.nii.gz")
    assert out == tmp_path / "map.nii.gz"
    check_geometry(out, oblique_affine(), (12, 10, 8))
    np.testing.assert_array_equal(nib.load(out).get_fdata(dtype=np.float32), saliency[0].numpy())
    itk_values = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))  # (Z, Y, X)
    np.testing.assert_array_equal(itk_values.transpose(2, 1, 0), saliency[0].numpy())
    back = load_study(out)
    np.testing.assert_allclose(back.affine.numpy(), oblique_affine(), atol=1e-4)


def test_overlay_accepts_map_without_channel(tmp_path: Path, volume: MetaTensor) -> None:
    saliency = torch.rand(12, 10, 8, dtype=torch.float64)
    out = write_nifti_overlay(saliency, volume, tmp_path / "map.nii")
    np.testing.assert_allclose(nib.load(out).get_fdata(), saliency.numpy(), rtol=1e-6)


def test_overlay_2d_round_trip(tmp_path: Path, ct_small: MetaTensor) -> None:
    affine = ct_small.affine.numpy()
    w, h = ct_small.shape[1:]
    saliency = torch.rand(w, h)
    out = write_nifti_overlay(saliency, ct_small, tmp_path / "map.nii.gz")
    check_geometry(out, affine, (w, h, 1))
    np.testing.assert_array_equal(nib.load(out).get_fdata(dtype=np.float32)[..., 0], saliency.numpy())
    itk_values = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))  # (1, H, W)
    np.testing.assert_array_equal(itk_values[0].T, saliency.numpy())


def test_overlay_2d_synthetic_keeps_affine(tmp_path: Path) -> None:
    affine = oblique_affine()
    reference = MetaTensor(torch.rand(1, 9, 7), affine=torch.as_tensor(affine))
    out = write_nifti_overlay(torch.rand(1, 9, 7), reference, tmp_path / "map.nii.gz")
    check_geometry(out, affine, (9, 7, 1))


def test_image_round_trip(tmp_path: Path, volume: MetaTensor, ct_small: MetaTensor) -> None:
    out = write_nifti_image(volume, tmp_path / "image.nii.gz")
    check_geometry(out, oblique_affine(), (12, 10, 8))
    np.testing.assert_array_equal(nib.load(out).get_fdata(dtype=np.float32), volume[0].numpy())
    out2d = write_nifti_image(ct_small, tmp_path / "ct.nii.gz")
    check_geometry(out2d, ct_small.affine.numpy(), (*ct_small.shape[1:], 1))
    np.testing.assert_array_equal(nib.load(out2d).get_fdata(dtype=np.float32)[..., 0], ct_small[0].numpy())


def test_image_rgb_as_fourth_dimension(tmp_path: Path) -> None:
    rgb = MetaTensor(torch.rand(3, 9, 7), affine=torch.as_tensor(oblique_affine()))
    out = write_nifti_image(rgb, tmp_path / "rgb.nii.gz")
    img = nib.load(out)
    assert img.shape == (9, 7, 1, 3)
    np.testing.assert_allclose(img.get_sform(), oblique_affine(), atol=1e-4)
    np.testing.assert_array_equal(img.get_fdata(dtype=np.float32)[:, :, 0, :], rgb.numpy().transpose(1, 2, 0))


@pytest.mark.parametrize("shape", [(1, 12, 10), (2, 12, 10, 8), (12, 10, 7), (1, 1, 12, 10, 8)])
def test_shape_mismatch_is_input_error(tmp_path: Path, volume: MetaTensor, shape: tuple[int, ...]) -> None:
    with pytest.raises(InputError, match="does not match") as info:
        write_nifti_overlay(torch.rand(shape), volume, tmp_path / "map.nii.gz")
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_other_input_errors(tmp_path: Path, volume: MetaTensor) -> None:
    with pytest.raises(InputError, match="MetaTensor"):
        write_nifti_overlay(torch.rand(12, 10, 8), torch.rand(1, 12, 10, 8), tmp_path / "a.nii")
    with pytest.raises(InputError, match=r"\.nii"):
        write_nifti_overlay(torch.rand(12, 10, 8), volume, tmp_path / "a.png")
    bad = torch.rand(12, 10, 8)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        write_nifti_overlay(bad, volume, tmp_path / "a.nii")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_replaced(tmp_path: Path, volume: MetaTensor) -> None:
    path = tmp_path / "map.nii.gz"
    write_nifti_overlay(torch.zeros(12, 10, 8), volume, path)
    write_nifti_overlay(torch.ones(12, 10, 8), volume, path)
    assert nib.load(path).get_fdata().min() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["map.nii.gz"]
