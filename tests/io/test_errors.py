"""Bad input: each case raises InputError with a one-line message naming the file."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import nibabel.openers
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid

import medmdm.io.dicom
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


def test_series_in_two_parts(tmp_path, series_writer):
    spec = series_writer(tmp_path / "ct", n_slices=14)
    for f in spec.files[3:11]:  # a gap of 9 slice steps
        f.unlink()
    _fails(
        spec.folder, spec.folder, r"a gap of 22\.5 mm between slices 3 and 4 of 6, over 5 times the median"
    )


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
    with pytest.raises(InputError, match=r"same slice position .*up to 3 frames at one position"):
        load_study(ct_series.folder)


def test_4d_series_says_how_many_frames_per_position(ct_series):
    for k, f in enumerate(ct_series.files):
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(ct_series.folder / f"phase2_{k}")
    _fails(ct_series.folder, ct_series.folder, "2 frames at each of 8 slice positions .*4D or temporal")


def test_cine_is_refused_before_decoding(monkeypatch):
    path = get_testdata_file("examples_ybr_color.dcm")
    monkeypatch.setattr(medmdm.io.dicom, "_decode", None)  # a cine is refused from its header
    _fails(
        path,
        Path(path),
        r"a cine \(a temporal series\): 30 frames at one position over time \(FrameIncrementPointer Frame",
    )


def _patched(ct_series, **attributes) -> Path:
    ds = pydicom.dcmread(ct_series.files[0])
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    path = ct_series.folder.parent / "patched.dcm"
    ds.save_as(path)
    return path


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["0", "0.9"], r"PixelSpacing '0\\0.9' is not two positive values"),
        (["-0.7", "0.9"], "is not two positive values"),
        (["NaN", "0.9"], r"PixelSpacing 'NaN\\0.9' is not 2 finite values"),
        (["0.7", "Inf"], "is not 2 finite values"),
        (["0.7"], r"PixelSpacing '0.7' is not 2 finite values"),
    ],
)
def test_degenerate_pixel_spacing(ct_series, value, message):
    path = _patched(ct_series, PixelSpacing=value)
    _fails(path, path, message)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["0"] * 6, r"norms 0 and 0"),
        (["NaN", "0", "0", "0", "1", "0"], "is not 6 finite values"),
        (["1", "0", "0", "0", "1.01", "0"], "norms 1 and 1.01"),
        (["1", "0", "0", "1", "0", "0"], "dot product 1"),
    ],
)
def test_degenerate_orientation(ct_series, value, message):
    path = _patched(ct_series, ImageOrientationPatient=value)
    _fails(path, path, "ImageOrientationPatient .*" + message)


def test_pixel_data_shorter_or_longer_than_the_header_says(ct_series):
    stored = pydicom.dcmread(ct_series.files[0]).PixelData
    short = _patched(ct_series, PixelData=stored[:-2])
    _fails(
        short,
        short,
        r"truncated or undecodable pixel data \(638 bytes stored, 640 needed for 16 rows x 20 columns",
    )
    long = _patched(ct_series, PixelData=stored * 2)
    _fails(long, long, r"pixel data longer than the header says \(1280 bytes stored, 640 needed")


def test_padding_after_the_pixel_data_is_ignored_with_a_warning(ct_series):
    stored = pydicom.dcmread(ct_series.files[0]).PixelData
    padded = _patched(ct_series, PixelData=stored + bytes(40))  # less than a frame
    with pytest.warns(UserWarning, match="40 bytes of padding after the pixel data ignored"):
        study = load_study(padded)
    np.testing.assert_array_equal(study.image[0].numpy().T, ct_series.stored[0] * 2.0 - 1024)


def test_absurd_dicom_size_is_refused_before_decoding(ct_series, monkeypatch):
    monkeypatch.setattr(medmdm.io.dicom, "_decode", None)
    path = _patched(ct_series, Rows=65535, Columns=65535, NumberOfFrames=1000)
    _fails(path, path, "image too large .*65535 rows x 65535 columns x 1000 frames")


@pytest.mark.parametrize(
    ("header_class", "suffix"), [(nib.Nifti1Header, ".nii"), (nib.Nifti2Header, ".nii.gz")]
)
def test_absurd_nifti_size_is_refused_before_reading(tmp_path, header_class, suffix):
    header = header_class()
    header.set_data_shape((30000, 30000, 30000))
    header.set_data_dtype(np.int16)
    header.set_data_offset(header.single_vox_offset)
    raw = header.binaryblock + bytes(int(header.single_vox_offset) - header.sizeof_hdr) + bytes(100)
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix == ".nii.gz" else raw)
    _fails(path, path, r"image too large \(\(30000, 30000, 30000\)")


def test_infinite_voxels(ct_series):
    path = _patched(ct_series, RescaleSlope="1e+39")
    _fails(path, path, r"320 NaN or infinite values in frame 1 \(after the rescale\)")


@pytest.mark.parametrize(
    ("affine", "message"),
    [
        (np.zeros((4, 4)), "NIfTI affine is singular"),
        (np.diag([np.nan, 1.0, 1.0, 1.0]), "NIfTI affine is not finite"),
        (np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]), "NIfTI affine is singular"),
    ],
)
def test_unusable_nifti_affine(tmp_path, affine, message):
    header = nib.Nifti1Header()
    header.set_data_shape((4, 4, 4))
    header.set_data_dtype(np.float32)
    header["srow_x"], header["srow_y"], header["srow_z"] = affine[:3]
    header["sform_code"], header["qform_code"] = 1, 0
    header.set_data_offset(352)
    path = tmp_path / "bad_affine.nii"
    path.write_bytes(header.binaryblock + bytes(4) + np.ones((4, 4, 4), np.float32).tobytes())
    _fails(path, path, message)


def test_nifti_over_time_is_refused(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 4, 4, 3), np.float32), np.eye(4))
    img.header.set_xyzt_units("mm", "sec")
    path = tmp_path / "fmri.nii.gz"
    nib.save(img, path)
    _fails(path, path, "3 volumes over time")


def test_unknown_vr(tmp_path):
    data = bytearray(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    at = data.index(b"CS", 132)
    data[at : at + 2] = b"ZZ"
    path = tmp_path / "zz.dcm"
    path.write_bytes(bytes(data))
    _fails(path, path, "unreadable DICOM .*Unknown Value Representation 'ZZ'")


def test_symbolic_link_loops(ct_series, tmp_path):
    (ct_series.folder / "sub").mkdir()
    (ct_series.folder / "sub" / "up").symlink_to(ct_series.folder)
    _fails(ct_series.folder, ct_series.folder / "sub" / "up", "symbolic link loop")
    (ct_series.folder / "sub" / "up").unlink()
    (ct_series.folder / "self").symlink_to(ct_series.folder / "self")
    _fails(ct_series.folder, ct_series.folder / "self", "symbolic link loop")
    _fails(ct_series.folder / "self", ct_series.folder / "self", "symbolic link loop")


def test_broken_nifti_header(tmp_path):
    path = tmp_path / "bad.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), path)
    data = bytearray(path.read_bytes())
    data[0:4] = b"\xff\xff\xff\x7f"  # sizeof_hdr
    data[344:348] = b"xxxx"  # magic
    path.write_bytes(bytes(data))
    _fails(path, path, "unreadable NIfTI")


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)), path)
    whole = nib.openers.ImageOpener(path).read() if suffix == ".nii.gz" else path.read_bytes()
    cut = whole[:600]
    path.write_bytes(gzip.compress(cut) if suffix == ".nii.gz" else cut)
    _fails(
        path,
        path,
        r"truncated NIfTI: the header's \(8, 8, 8\) of float32 needs 2400 bytes, the file holds 600",
    )


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
