"""Single DICOM files (bundled with pydicom, compressed included), multi-frame files and NIfTI."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
import torch
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset

from medmdm.io import load_study


@pytest.mark.parametrize(
    ("name", "shape", "modality"),
    [
        ("CT_small.dcm", (1, 128, 128), "CT"),
        ("MR_small.dcm", (1, 64, 64), "MR"),
        ("JPEG2000.dcm", (1, 256, 1024), "NM"),  # JPEG 2000, 1024 rows x 256 columns
        ("MR_small_RLE.dcm", (1, 64, 64), "MR"),
        ("SC_rgb_rle.dcm", (3, 100, 100), "OT"),
        ("SC_rgb_jpeg_dcmtk.dcm", (3, 100, 100), "OT"),
        ("rtdose.dcm", (1, 10, 10, 15), "RTDOSE"),  # multi-frame grid
        ("SC_rgb_rle_2frame.dcm", (3, 100, 100, 2), "OT"),
    ],
)
def test_bundled_files(name, shape, modality):
    path = get_testdata_file(name)
    study = load_study(path)
    assert tuple(study.image.shape) == shape
    assert study.modality == modality
    assert study.kind == "dicom-file"
    assert study.size == shape[1:]
    assert len(study.spacing) == len(shape) - 1
    assert study.meta["filename_or_obj"] == str(path)
    assert np.isfinite(study.image.numpy()).all()
    assert len(study.sop_instance_uids) == (shape[-1] if len(shape) == 4 else 1)


def test_ct_small_is_in_hu_and_transposed():
    path = get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    study = load_study(path)
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(study.image[0].numpy(), hu.T)  # (W, H)


def test_single_file_geometry_matches_simpleitk():
    path = get_testdata_file("CT_small.dcm")
    study = load_study(path)
    ref = sitk.ReadImage(path)
    affine = study.affine.numpy()
    np.testing.assert_allclose(np.diag([-1, -1, 1]) @ np.array(ref.GetOrigin()), affine[:3, 3], atol=1e-4)
    np.testing.assert_allclose(ref.GetSpacing()[:2], study.spacing, atol=1e-4)
    direction = np.diag([-1, -1, 1]) @ np.array(ref.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction[:, :2] * study.spacing, affine[:3, :2], atol=1e-4)
    assert study.orientation == "LP"


def test_rtdose_frames_follow_grid_offsets():
    study = load_study(get_testdata_file("rtdose.dcm"))
    np.testing.assert_allclose(study.spacing, (10.0, 10.0, 5.0))


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(6, 7, 5)).astype(np.float32)
    affine = np.array([[0.0, -0.8, 0.1, 10.0], [0.9, 0.0, 0.0, -20.0], [0.0, 0.05, 2.0, 5.5], [0, 0, 0, 1]])
    path = tmp_path / f"vol{suffix}"
    nib.save(nib.Nifti1Image(data, affine), path)
    study = load_study(path)
    assert study.kind == "nifti"
    assert tuple(study.image.shape) == (1, 6, 7, 5)
    np.testing.assert_array_equal(study.image[0].numpy(), data)
    np.testing.assert_allclose(study.affine.numpy(), affine, atol=1e-6)
    np.testing.assert_allclose(study.spacing, np.linalg.norm(affine[:3, :3], axis=0), atol=1e-6)
    assert study.files == [path]
    assert study.headers == () and study.frame_numbers == ()


def test_single_slice_nifti_is_a_2d_study_like_its_dicom(tmp_path):
    dicom = load_study(get_testdata_file("CT_small.dcm"))
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(dicom.image[0].numpy()[..., None], dicom.affine.numpy()), path)
    study = load_study(path)
    assert tuple(study.image.shape) == tuple(dicom.image.shape) == (1, 128, 128)
    np.testing.assert_array_equal(study.image.numpy(), dicom.image.numpy())
    np.testing.assert_allclose(study.affine.numpy(), dicom.affine.numpy(), atol=1e-5)
    assert study.size == (128, 128)


def test_nifti_from_a_series_reads_back(ct_series, tmp_path):
    study = load_study(ct_series.folder)
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(study.image[0].numpy(), study.affine.numpy()), path)
    back = load_study(path)
    np.testing.assert_allclose(back.affine.numpy(), study.affine.numpy(), atol=1e-5)
    np.testing.assert_array_equal(back.image.numpy(), study.image.numpy())
    assert back.orientation == study.orientation


@pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader")
@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_single_file_agrees_with_monai_pydicom_reader(name):
    from monai.data import PydicomReader
    from monai.transforms import LoadImage

    path = get_testdata_file(name)
    ref = LoadImage(image_only=True, ensure_channel_first=True, reader=PydicomReader())(path)
    study = load_study(path)
    assert ref.shape == study.image.shape
    np.testing.assert_allclose(ref.numpy(), study.image.numpy())
    # MONAI puts a unit slice normal in the third column of a 2D affine; SimpleITK and we use thickness
    np.testing.assert_allclose(
        ref.affine[:, [0, 1, 3]].numpy(), study.affine[:, [0, 1, 3]].numpy(), atol=1e-4
    )


def _enhanced_ct(path, stored, positions, orientation, slopes):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def item(**kw):
        ds = Dataset()
        for k, v in kw.items():
            setattr(ds, k, v)
        return ds

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID, ds.StudyInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.NumberOfFrames = len(stored)
    ds.Rows, ds.Columns = stored.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.SharedFunctionalGroupsSequence = [
        item(
            PlaneOrientationSequence=[item(ImageOrientationPatient=[float(v) for v in orientation])],
            PixelMeasuresSequence=[item(PixelSpacing=[0.7, 0.9], SliceThickness=3.0)],
        )
    ]
    ds.PerFrameFunctionalGroupsSequence = [
        item(
            PlanePositionSequence=[item(ImagePositionPatient=[float(v) for v in p])],
            PixelValueTransformationSequence=[item(RescaleSlope=s, RescaleIntercept=-1000.0)],
        )
        for p, s in zip(positions, slopes, strict=True)
    ]
    ds.PixelData = stored.astype("<i2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_enhanced_multiframe_sorted_by_position(tmp_path):
    rng = np.random.default_rng(4)
    stored = rng.integers(0, 1000, size=(5, 6, 4)).astype(np.int16)
    orientation = np.array([1.0, 0, 0, 0, 0, -1.0])  # coronal
    normal = np.cross(orientation[:3], orientation[3:])
    positions = np.array([3.0, -7.0, 11.0]) + np.arange(5)[:, None] * 3.0 * normal
    order = np.array([3, 0, 4, 1, 2])  # frames stored out of position order
    slopes = [1.0, 2.0, 0.5, 1.0, 4.0]  # per frame, in file order
    path = tmp_path / "enhanced.dcm"
    _enhanced_ct(path, stored[order], positions[order], orientation, slopes)
    study = load_study(path)
    assert tuple(study.image.shape) == (1, 4, 6, 5)
    np.testing.assert_allclose(study.spacing, (0.9, 0.7, 3.0), atol=1e-6)
    expected = np.empty((5, 6, 4), np.float32)
    for file_index, k in enumerate(order):
        expected[k] = stored[k] * slopes[file_index] - 1000.0
    np.testing.assert_allclose(study.image[0].numpy().transpose(2, 1, 0), expected)
    np.testing.assert_allclose(study.affine[:3, 3].numpy(), np.diag([-1, -1, 1]) @ positions[0], atol=1e-6)
    assert study.orientation == "LIP"  # normal = row x column = +y in LPS: posterior
    assert study.frame_numbers == (2, 4, 5, 1, 3)  # file frame of each slice: order's inverse, 1-based
    assert len(study.headers) == 1 and "PixelData" not in study.headers[0]
    assert study.headers[0].NumberOfFrames == 5


def test_series_keeps_its_headers_in_slice_order(ct_series):
    study = load_study(ct_series.folder)
    assert [h.SOPInstanceUID for h in study.headers] == ct_series.sop_uids == study.sop_instance_uids
    assert study.frame_numbers == (1,) * len(ct_series.files)
    assert not any("PixelData" in h for h in study.headers)


def test_kept_headers_do_not_need_their_files(ct_series):
    comments = "x" * 5000  # over the 4 KB that the folder scan leaves in the file
    ds = pydicom.dcmread(ct_series.files[0])
    ds.ImageComments = comments
    ds.save_as(ct_series.files[0])
    study = load_study(ct_series.folder)
    for f in ct_series.files:
        f.unlink()
    assert study.headers[0].ImageComments == comments


def test_radiograph_without_patient_geometry(tmp_path, slice_builder):
    from pydicom.uid import generate_uid

    stored = np.arange(12 * 9, dtype=np.int16).reshape(12, 9)
    ds = slice_builder(
        stored, np.zeros(3), np.array([1.0, 0, 0, 0, 1, 0]), series_uid=generate_uid(),
        study_uid=generate_uid(), for_uid=generate_uid(), instance=1, modality="DX", slope=1.0, intercept=0.0,
    )  # fmt: skip
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness"):
        delattr(ds, keyword)
    ds.ImagerPixelSpacing = [0.15, 0.2]
    path = tmp_path / "dx.dcm"
    ds.save_as(path, enforce_file_format=True)
    study = load_study(path)
    assert tuple(study.image.shape) == (1, 9, 12)  # (C, W, H)
    np.testing.assert_array_equal(study.image[0].numpy(), stored.T)
    np.testing.assert_allclose(study.spacing, (0.2, 0.15))
    np.testing.assert_allclose(study.affine.numpy(), np.diag([-0.2, -0.15, 1.0, 1.0]))
    assert study.modality == "DX" and study.orientation == "LP"


def test_rle_compressed_series_and_non_image_files_ignored(ct_series):
    import pydicom
    from pydicom.uid import RLELossless

    for f in ct_series.files[::2]:
        ds = pydicom.dcmread(f)
        ds.compress(RLELossless)
        ds.save_as(f, enforce_file_format=True)
    (ct_series.folder / "README").write_text("not DICOM")
    study = load_study(ct_series.folder)
    expected = ct_series.stored.astype(np.float32) * 2.0 - 1024.0
    np.testing.assert_array_equal(study.image[0].numpy().transpose(2, 1, 0), expected)


def _simpleitk_values(path) -> np.ndarray:
    """SimpleITK's array as ours: (C, W, H) for a 2D file."""
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0]  # (H, W[, 3])
    return (array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)).transpose(0, 2, 1)


@pytest.mark.parametrize(
    ("name", "tolerance"),
    [
        ("OT-PAL-8-face.dcm", 0),  # PALETTE COLOR, 16-bit palette, no file meta
        ("examples_palette.dcm", 0),
        ("SC_ybr_full_uncompressed.dcm", 1),  # YBR_FULL: the two conversions round differently
        ("SC_rgb.dcm", 0),
    ],
)
def test_colour_reads_as_simpleitk_reads_it(name, tolerance):
    path = get_testdata_file(name)
    study = load_study(path)
    assert study.image.shape[0] == 3
    np.testing.assert_allclose(study.image.numpy(), _simpleitk_values(path), atol=tolerance)


@pytest.mark.parametrize(("bits", "signed"), [(12, False), (16, True)])
def test_monochrome1_is_inverted_as_simpleitk_inverts_it(tmp_path, bits, signed):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    stored = np.random.default_rng(0).integers(
        0 if not signed else -2000, 2**bits // 2, (ds.Rows, ds.Columns)
    )
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, int(signed)
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = tmp_path / "mono1.dcm"
    ds.save_as(path)
    study = load_study(path)
    np.testing.assert_allclose(study.image.numpy(), _simpleitk_values(path))
    inverted = (2**bits - 1 - stored) if not signed else (-stored - 1)
    expected = inverted * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_allclose(study.image[0].numpy(), expected.T)


def test_file_without_preamble_or_file_meta_reads_as_with(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small_implicit.dcm"))
    ds.file_meta, ds.preamble = FileMetaDataset(), None
    path = tmp_path / "old"
    ds.save_as(path, enforce_file_format=False)
    assert path.read_bytes()[:2] == b"\x08\x00"
    study, reference = load_study(path), load_study(get_testdata_file("MR_small_implicit.dcm"))
    torch.testing.assert_close(study.image.as_tensor(), reference.image.as_tensor())
    torch.testing.assert_close(study.affine, reference.affine)


def test_radiograph_without_pixel_spacing_reads_with_1_mm_and_a_warning(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    del ds.PixelSpacing
    path = tmp_path / "no_spacing.dcm"
    ds.save_as(path)
    with pytest.warns(UserWarning) as caught:
        study = load_study(path)
    assert [str(w.message) for w in caught] == [
        f"{path}: no PixelSpacing or ImagerPixelSpacing; read with 1 mm pixels"
    ]
    assert study.spacing == (1.0, 1.0)


def test_rt_dose_with_absolute_grid_offsets(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    z = float(ds.ImagePositionPatient[2])
    relative = load_study(get_testdata_file("rtdose.dcm"))
    ds.GridFrameOffsetVector = [z + float(v) for v in ds.GridFrameOffsetVector]  # type b: first is the z
    path = tmp_path / "dose.dcm"
    ds.save_as(path)
    torch.testing.assert_close(load_study(path).affine, relative.affine)
