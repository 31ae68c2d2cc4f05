"""Any study a hospital archive holds: damaged and odd inputs through ``medmdm info`` and ``explain``.

Each input is built in a temporary folder from the project's sample studies and from the files that
pydicom, pydicom-data and nibabel ship. For each, in process: ``medmdm info PATH`` and ``medmdm explain
PATH --method saliency``. A run either succeeds (exit 0, the outputs written, the NIfTI overlay on the
grid ``load_study`` gives) or is refused (exit 2, exactly one line ``medmdm: error: ...`` on standard
error naming the input, no traceback, nothing left beside the output folder); it never fails inside
(exit 1). Then seeded byte flips and truncations of a small DICOM file and a small NIfTI file go
through ``info``, and the geometry of every real file that SimpleITK reads is compared with SimpleITK's.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import nibabel.testing
import numpy as np
import pydicom
import pydicom.data
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from pydicom.data.data_manager import external_data_sources
from pydicom.dataset import FileMetaDataset
from pydicom.uid import generate_uid
from pydicom.valuerep import DSfloat

from medmdm.cli.main import main
from medmdm.io import load_study

STUDIES = Path(__file__).resolve().parents[1] / "sample_data" / "studies"
CR = STUDIES / "cr_lesion.dcm"  # a 2D grey radiograph (MONOCHROME2, no frame of reference)
CT = STUDIES / "ct_nodule"  # a 48-slice CT series, 5 mm apart
CT_NIFTI = STUDIES / "ct_nodule.nii.gz"
CR_NIFTI = STUDIES / "cr_lesion.nii.gz"
READ = "read"
RGB = "rgb"  # read; explained grey, or refused for its 3 channels by the 1-channel demo network
CHANNELS = r"channel"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
FUZZ_VARIANTS = 150  # per source file
FUZZ_EXPLAINED = 3  # fuzzed variants that read and are explained too, per source


# Running the command line


@dataclass
class Run:
    """What one ``main(argv)`` call did."""

    code: int
    out: str
    err: str
    warnings: list[str]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> Run:
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    out, err = capsys.readouterr()
    return Run(code, out, err, [str(w.message) for w in caught])


def assert_refused(result: Run, path: Path, pattern: str) -> None:
    """Exit 2, one line ``medmdm: error: ...`` naming ``path`` (or a file in it), matching ``pattern``."""
    assert result.code == 2, f"exit {result.code}: {result.err}"
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("medmdm: error: "), result.err
    assert "Traceback" not in result.err
    assert str(path) in lines[0] or path.name in lines[0], lines[0]
    assert re.search(pattern, lines[0]), lines[0]


def assert_one_line_warnings(result: Run) -> None:
    for message in result.warnings:
        assert "\n" not in message.strip(), message


def read_quietly(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_study(path)


def check_info(path: Path, expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    result = run(["info", str(path)], capsys)
    assert_one_line_warnings(result)
    if expect in (READ, RGB):
        assert result.code == 0, result.err
        assert "size" in result.out
    else:
        assert_refused(result, path, expect)


def check_explain(path: Path, expect: str, folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent = folder / "outputs"
    parent.mkdir()
    out = parent / "result"
    result = run(["explain", str(path), "--out", str(out), "--method", "saliency", "--quiet"], capsys)
    assert_one_line_warnings(result)
    if expect not in (READ, RGB) or (expect == RGB and result.code != 0):
        assert_refused(result, path, CHANNELS if expect == RGB else expect)
        assert list(parent.iterdir()) == []
        return
    assert result.code == 0, result.err
    assert (out / "report.json").is_file()
    study = read_quietly(path)
    overlay = nib.load(out / "saliency.nii.gz")
    assert overlay.shape == (study.size if len(study.size) == 3 else (*study.size, 1))
    np.testing.assert_allclose(overlay.affine, study.affine.numpy(), atol=1e-3)
    if (out / "saliency_pm.dcm").exists():  # one frame per source slice, resampled series included
        frames = int(pydicom.dcmread(out / "saliency_pm.dcm", stop_before_pixels=True).NumberOfFrames)
        assert frames == len(study.sop_instance_uids)


# Building the corpus


@dataclass(frozen=True)
class Case:
    """How to build an input in a folder, and what is expected of it: READ, RGB or a refusal pattern."""

    build: Callable[[Path], Path]
    expect: str


CASES: dict[str, Case] = {}


def case(expect: str) -> Callable[[Callable[[Path], Path]], Callable[[Path], Path]]:
    def register(build: Callable[[Path], Path]) -> Callable[[Path], Path]:
        CASES[build.__name__] = Case(build, expect)
        return build

    return register


def patched(source: Path, path: Path, **attributes: object) -> Path:
    """``source`` saved as ``path`` with attributes set (``None`` deletes one)."""
    ds = pydicom.dcmread(source)
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    ds.save_as(path)
    return path


def ds_values(*values: float) -> list[DSfloat]:
    return [DSfloat(v, auto_format=True) for v in values]


def ct_copy(folder: Path) -> tuple[Path, list[Path]]:
    """A copy of the CT series, and its files in slice order (bottom to top)."""
    shutil.copytree(CT, folder)
    files = sorted(
        folder.iterdir(),
        key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    return folder, files


def move_slices(files: list[Path], shifts: dict[int, float]) -> None:
    """Move slices along z by ``shifts[k]`` mm."""
    for k, shift in shifts.items():
        ds = pydicom.dcmread(files[k])
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = ds_values(x, y, z + shift)
        ds.save_as(files[k])


def sample(name: str) -> Path:
    return Path(get_testdata_file(name))


# What reads


@case(READ)
def sample_radiograph(folder: Path) -> Path:
    return CR


@case(READ)
def sample_ct_series(folder: Path) -> Path:
    return CT


@case(READ)
def sample_ct_nifti(folder: Path) -> Path:
    return CT_NIFTI


@case(READ)
def sample_radiograph_nifti(folder: Path) -> Path:
    return CR_NIFTI


@case(READ)
def ct_nifti_2(folder: Path) -> Path:
    img = nib.load(CT_NIFTI)
    path = folder / "ct_nifti2.nii.gz"
    nib.save(nib.Nifti2Image(np.asarray(img.dataobj), img.affine), path)
    return path


@case(READ)
def ct_small_without_file_meta(folder: Path) -> Path:
    ds = pydicom.dcmread(sample("CT_small.dcm"))
    ds.file_meta, ds.preamble = FileMetaDataset(), None
    path = folder / "ct_small_no_meta.dcm"
    ds.save_as(path, enforce_file_format=False)  # as written: no preamble, no file meta
    return path


@case(READ)
def series_without_file_meta_beside_junk(folder: Path) -> Path:
    series, files = ct_copy(folder / "old_archive")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.file_meta, ds.preamble = FileMetaDataset(), None
        ds.save_as(f, enforce_file_format=False)
    (series / "notes.txt").write_text("scanned 2004\n")
    (series / "junk.bin").write_bytes(b"\x08\x00" + np.random.default_rng(0).bytes(300))  # begins like one
    return series


@case(READ)
def series_with_slice_jitter(folder: Path) -> Path:
    series, files = ct_copy(folder / "jitter")
    rng = np.random.default_rng(1)
    move_slices(files, {k: float(rng.uniform(-0.02, 0.02)) for k in range(len(files))})  # 0.4% of 5 mm
    return series


@case(READ)
def series_with_a_missing_slice(folder: Path) -> Path:
    series, files = ct_copy(folder / "missing_slice")
    files[20].unlink()
    return series


@case(READ)
def series_with_irregular_gaps(folder: Path) -> Path:
    series, files = ct_copy(folder / "irregular")
    move_slices(files, dict.fromkeys(range(10, 20), 1.5))
    return series


@case(READ)
def series_with_orientation_jitter(folder: Path) -> Path:
    series, files = ct_copy(folder / "tilted")
    for k, f in enumerate(files):
        ds = pydicom.dcmread(f)
        tilt = 4e-4 * (k % 3)
        ds.ImageOrientationPatient = ds_values(1, 0, tilt, 0, 1, 0)
        ds.save_as(f)
    return series


@case(READ)
def sagittal_mr(folder: Path) -> Path:
    return sample("MR2_UNCI.dcm")


@case(READ)
def monochrome1_radiograph(folder: Path) -> Path:
    return patched(CR, folder / "cr_monochrome1.dcm", PhotometricInterpretation="MONOCHROME1")


@case(READ)
def radiograph_without_pixel_spacing(folder: Path) -> Path:
    return patched(CR, folder / "cr_no_spacing.dcm", PixelSpacing=None, ImagerPixelSpacing=None)


@case(READ)
def padded_pixel_data(folder: Path) -> Path:
    return sample("MR_small_padded.dcm")


@case(READ)
def with_a_voi_lut(folder: Path) -> Path:
    return sample("vlut_04.dcm")


@case(READ)
def enhanced_multiframe(folder: Path) -> Path:
    return sample("emri_small.dcm")


@case(READ)
def rt_dose_grid(folder: Path) -> Path:
    return sample("rtdose.dcm")


@case(RGB)
def rgb(folder: Path) -> Path:
    return sample("SC_rgb.dcm")


@case(RGB)
def ybr_full(folder: Path) -> Path:
    return sample("SC_ybr_full_uncompressed.dcm")


@case(RGB)
def palette_without_file_meta(folder: Path) -> Path:
    return sample("OT-PAL-8-face.dcm")


# What is refused


def _spacing_case(name: str, value: object) -> None:
    def build(folder: Path) -> Path:
        return patched(CR, folder / f"{name}.dcm", PixelSpacing=value)

    build.__name__ = name
    case("PixelSpacing")(build)


for _name, _value in {
    "pixel_spacing_zero": ["0", "0"],
    "pixel_spacing_negative": ["-1.5", "1.5"],
    "pixel_spacing_nan": ["NaN", "1.5"],
    "pixel_spacing_inf": ["Inf", "1.5"],
    "pixel_spacing_one_value": ["1.5"],
}.items():
    _spacing_case(_name, _value)


def _orientation_case(name: str, value: list[str]) -> None:
    def build(folder: Path) -> Path:
        return patched(sample("CT_small.dcm"), folder / f"{name}.dcm", ImageOrientationPatient=value)

    build.__name__ = name
    case("ImageOrientationPatient")(build)


for _name, _value in {
    "orientation_all_zero": ["0"] * 6,
    "orientation_nan": ["NaN", "0", "0", "0", "1", "0"],
    "orientation_not_unit": ["2", "0", "0", "0", "1", "0"],
    "orientation_row_parallel_to_column": ["1", "0", "0", "1", "0", "0"],
}.items():
    _orientation_case(_name, _value)


@case("truncated or undecodable pixel data")
def pixel_data_too_short(folder: Path) -> Path:
    ds = pydicom.dcmread(CR)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    path = folder / "short_pixels.dcm"
    ds.save_as(path)
    return path


@case("pixel data longer")
def pixel_data_too_long(folder: Path) -> Path:
    ds = pydicom.dcmread(CR)
    ds.PixelData = ds.PixelData * 2
    path = folder / "long_pixels.dcm"
    ds.save_as(path)
    return path


@case("too large")
def dicom_header_of_absurd_size(folder: Path) -> Path:
    return patched(CR, folder / "huge.dcm", Rows=65535, Columns=65535, NumberOfFrames=100000)


@case("truncated or undecodable pixel data")
def dicom_header_larger_than_its_data(folder: Path) -> Path:
    return patched(CR, folder / "large.dcm", Rows=8192, Columns=8192)


@case("unreadable DICOM")
def unknown_vr(folder: Path) -> Path:
    data = bytearray(sample("CT_small.dcm").read_bytes())
    at = data.index(b"CS", 132)  # the first explicit VR after the file meta
    data[at : at + 2] = b"ZZ"
    path = folder / "unknown_vr.dcm"
    path.write_bytes(bytes(data))
    return path


@case("NaN or infinite")
def infinite_voxels(folder: Path) -> Path:
    return patched(sample("CT_small.dcm"), folder / "inf.dcm", RescaleSlope="1e+39")


@case("NaN or infinite")
def nifti_with_nan_and_inf(folder: Path) -> Path:
    data = np.ones((8, 8, 4), np.float32)
    data[1, 2, 3], data[4, 4, 0] = np.nan, np.inf
    path = folder / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def raw_nifti(path: Path, header: nib.Nifti1Header, data: np.ndarray) -> Path:
    """A NIfTI file of exactly ``header`` and ``data`` (nibabel's writer would mend the header)."""
    header.set_data_offset(header.single_vox_offset)
    raw = header.binaryblock + b"\0" * (int(header.single_vox_offset) - header.sizeof_hdr) + data.tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def small_header(header_class: type = nib.Nifti1Header) -> tuple[nib.Nifti1Header, np.ndarray]:
    data = np.ones((8, 8, 4), np.float32)
    header = header_class()
    header.set_data_shape(data.shape)
    header.set_data_dtype(np.float32)
    header.set_qform(np.diag([0.8, 0.8, 2.0, 1.0]), code=1)
    header.set_sform(np.diag([0.8, 0.8, 2.0, 1.0]), code=1)
    return header, data


def _nifti_affine_case(name: str, edit: Callable[[nib.Nifti1Header], None], expect: str = "affine") -> None:
    def build(folder: Path) -> Path:
        header, data = small_header()
        edit(header)
        return raw_nifti(folder / f"{name}.nii", header, data)

    build.__name__ = name
    case(expect)(build)


def _zero_pixdim(header: nib.Nifti1Header) -> None:
    header["sform_code"] = 0
    header["pixdim"][2] = 0.0


def _sform_rows(rows: np.ndarray) -> Callable[[nib.Nifti1Header], None]:
    def edit(header: nib.Nifti1Header) -> None:
        header["srow_x"], header["srow_y"], header["srow_z"] = rows
        header["qform_code"] = 0

    return edit


_nifti_affine_case("nifti_zero_pixdim", _zero_pixdim, "pixdim")
_nifti_affine_case("nifti_all_zero_sform", _sform_rows(np.zeros((3, 4))))
_nifti_affine_case(
    "nifti_singular_sform", _sform_rows(np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0.0]]))
)
_nifti_affine_case(
    "nifti_nan_sform", _sform_rows(np.array([[np.nan, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.0]]))
)


def _nifti_size_case(name: str, suffix: str, header_class: type, dims: tuple[int, ...], expect: str) -> None:
    """A small NIfTI whose header claims ``dims``."""

    def build(folder: Path) -> Path:
        header, data = small_header(header_class)
        header.set_data_shape(dims)
        return raw_nifti(folder / f"{name}{suffix}", header, data)

    build.__name__ = name
    case(expect)(build)


_nifti_size_case("nifti1_of_absurd_size", ".nii", nib.Nifti1Header, (30000, 30000, 30000), "too large")
_nifti_size_case("nifti1_gz_of_absurd_size", ".nii.gz", nib.Nifti1Header, (30000, 30000, 30000), "too large")
_nifti_size_case("nifti2_of_absurd_size", ".nii", nib.Nifti2Header, (100000, 100000, 1), "too large")
_nifti_size_case(
    "nifti1_larger_than_its_data", ".nii", nib.Nifti1Header, (1000, 1000, 100), "truncated NIfTI"
)
_nifti_size_case(
    "nifti1_gz_larger_than_its_data", ".nii.gz", nib.Nifti1Header, (1000, 1000, 100), "truncated NIfTI"
)


@case(r"2 frames at each of 48 slice positions")
def series_4d(folder: Path) -> Path:
    series, files = ct_copy(folder / "series_4d")
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.TemporalPositionIdentifier = 2
        ds.save_as(series / f"phase2_{f.name}")
    return series


@case("a cine .*: 30 frames at one position")
def cine(folder: Path) -> Path:
    return sample("examples_ybr_color.dcm")


@case("volumes over time")
def nifti_over_time(folder: Path) -> Path:
    return Path(nibabel.testing.data_path) / "example4d.nii.gz"


@case("not one volume")
def series_in_two_parts(folder: Path) -> Path:
    series, files = ct_copy(folder / "two_parts")
    for f in files[6:42]:
        f.unlink()
    return series


@case("orientation differs")
def series_with_a_sagittal_slice(folder: Path) -> Path:
    series, files = ct_copy(folder / "mixed_planes")
    ds = pydicom.dcmread(files[-1])
    ds.ImageOrientationPatient = ds_values(0, 1, 0, 0, 0, -1)
    ds.save_as(files[-1])
    return series


@case("symbolic link loop")
def folder_with_a_link_loop(folder: Path) -> Path:
    series, _ = ct_copy(folder / "looped")
    os.symlink(series, series / "again")
    return series


@case("symbolic link loop")
def folder_with_a_file_link_loop(folder: Path) -> Path:
    series, _ = ct_copy(folder / "file_loop")
    os.symlink(series / "self.dcm", series / "self.dcm")
    return series


@case("symbolic link loop")
def input_is_a_link_loop(folder: Path) -> Path:
    path = folder / "loop.dcm"
    os.symlink(path, path)
    return path


@case("empty file")
def empty_file(folder: Path) -> Path:
    path = folder / "empty.dcm"
    path.touch()
    return path


@case("neither DICOM nor NIfTI")
def random_bytes(folder: Path) -> Path:
    path = folder / "random.bin"
    path.write_bytes(np.random.default_rng(2).bytes(4096))
    return path


@case("no pixel data")
def structure_set_without_file_meta(folder: Path) -> Path:
    return sample("rtstruct.dcm")


@case("no DICOM image")
def folder_of_documents(folder: Path) -> Path:
    docs = folder / "documents"
    docs.mkdir()
    (docs / "report.txt").write_text("no images here\n")
    shutil.copy(sample("rtstruct.dcm"), docs / "rs.dcm")
    return docs


@pytest.mark.filterwarnings("ignore:Invalid value for VR")  # the NaN and Inf written on purpose
@pytest.mark.parametrize("name", CASES)
def test_corpus_case(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    built = CASES[name]
    path = built.build(tmp_path)
    check_info(path, built.expect, capsys)
    check_explain(path, built.expect, tmp_path, capsys)


def _read_only_folder(folder: Path) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    parent = folder / "read_only"
    parent.mkdir()
    parent.chmod(0o555)
    return parent / "result"


OUTPUTS = {
    "read-only folder": _read_only_folder,
    "under a file": lambda folder: Path(shutil.copy(CR, folder / "a_file.dcm")) / "result",
}


@pytest.mark.parametrize("where", OUTPUTS)
def test_unwritable_output_folder(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = OUTPUTS[where](tmp_path)
    result = run(["explain", str(CR), "--out", str(out), "--method", "saliency", "--quiet"], capsys)
    assert_refused(result, out, "")
    assert not out.exists()


# Every file pydicom, pydicom-data and nibabel ship


def shipped_files() -> list[Path]:
    roots = [Path(pydicom.data.__file__).parent / "test_files", Path(nibabel.testing.data_path)]
    roots += [Path(source.data_path) for source in external_data_sources().values()]
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


SHIPPED = {f"{p.parent.name}/{p.name}": p for p in shipped_files()}
# Shipped files that must read (the others may be refused, in one line), and those explained too.
MUST_READ = ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "OT-PAL-8-face.dcm", "anatomical.nii")
EXPLAINED = (
    "MR_small_jpeg_ls_lossless.dcm",
    "emri_small_RLE.dcm",
    "US1_J2KR.dcm",
    "examples_palette.dcm",
    "anatomical.nii",
    "liver.dcm",
)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_info(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = SHIPPED[name]
    result = run(["info", str(path)], capsys)
    assert_one_line_warnings(result)
    if path.name in MUST_READ:
        assert result.code == 0, result.err
        assert "size" in result.out
    elif result.code != 0:
        assert_refused(result, path, "")


@pytest.mark.parametrize("name", [n for n in SHIPPED if SHIPPED[n].name in EXPLAINED])
def test_shipped_file_explain(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = SHIPPED[name]
    expect = RGB if read_quietly(path).image.shape[0] == 3 else READ
    check_explain(path, expect, tmp_path, capsys)


# Fuzzing


def fuzz_sources(folder: Path) -> dict[str, Path]:
    nifti = folder / "small.nii.gz"
    rng = np.random.default_rng(3)
    nib.save(
        nib.Nifti1Image(rng.integers(0, 1000, (16, 12, 6)).astype(np.int16), np.diag([0.9, 0.9, 3, 1])), nifti
    )
    return {"MR_small.dcm": sample("MR_small.dcm"), "small.nii.gz": nifti}


def fuzzed(source: Path, seed: int, folder: Path) -> Path:
    """A copy of ``source`` with a few bytes flipped, or cut short (every fourth seed)."""
    rng = np.random.default_rng(seed)
    data = bytearray(source.read_bytes())
    if seed % 4 == 0:
        data = data[: int(rng.integers(1, len(data)))]
    else:
        for at in rng.integers(0, len(data), int(rng.integers(1, 9))):
            data[at] = int(rng.integers(0, 256))
    path = folder / f"fuzz{seed:03d}_{source.name}"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("source_name", ["MR_small.dcm", "small.nii.gz"])
def test_fuzzed_files_read_or_are_refused(
    source_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = fuzz_sources(tmp_path)[source_name]
    explained = 0
    for seed in range(FUZZ_VARIANTS):
        path = fuzzed(source, seed, tmp_path)
        result = run(["info", str(path)], capsys)
        assert result.code in (0, 2), f"{path.name}: exit {result.code}: {result.err}"
        if result.code == 2:
            assert_refused(result, path, "")
        elif explained < FUZZ_EXPLAINED and seed % 4:
            explained += 1
            folder = tmp_path / path.stem
            folder.mkdir()
            outputs = folder / "outputs"
            outputs.mkdir()
            explain = run(
                ["explain", str(path), "--out", str(outputs / "r"), "--method", "saliency", "--quiet"], capsys
            )
            assert explain.code in (0, 2), f"{path.name}: exit {explain.code}: {explain.err}"
        path.unlink()


# Geometry against SimpleITK


def sitk_affine(path: Path) -> np.ndarray | None:
    """The RAS affine (3x4: axes, origin) SimpleITK gives a file or a series folder; None if it cannot."""
    reader = sitk.ImageFileReader()
    if path.is_dir():
        names = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path))
        image = sitk.ImageSeriesReader()
        image.SetFileNames(names)
        image.SetOutputPixelType(sitk.sitkFloat32)
        image = image.Execute()
        origin, spacing, direction = image.GetOrigin(), image.GetSpacing(), image.GetDirection()
    else:
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            return None
        origin, spacing, direction = reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection()
    if len(origin) != 3:
        return None
    axes = np.asarray(direction).reshape(3, 3) * np.asarray(spacing)
    return LPS_TO_RAS @ np.column_stack([axes, origin])


REAL = {
    **{n: p for n, p in SHIPPED.items() if p.name.endswith((".dcm", ".nii", ".nii.gz"))},
    "sample/ct_nodule": CT,
    "sample/cr_lesion.dcm": CR,
    "sample/ct_nodule.nii.gz": CT_NIFTI,
}


def places_its_frames(path: Path) -> bool:
    """Whether a source gives each slice's position: a folder, NIfTI, or a file with per-frame positions.

    ITK stacks the frames of other multi-frame files 1 mm apart; medmdm at their SpacingBetweenSlices
    or SliceThickness (else 1 mm).
    """
    if path.is_dir() or path.name.endswith((".nii", ".nii.gz")):
        return True
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    return "GridFrameOffsetVector" in ds or bool(per_frame and "PlanePositionSequence" in per_frame[0])


@pytest.mark.parametrize("name", REAL)
def test_geometry_matches_simpleitk(name: str) -> None:
    path = REAL[name]
    try:
        study = read_quietly(path)
    except ValueError:  # an InputError: refused, which test_shipped_file_info checks
        pytest.skip("refused")
    expected = sitk_affine(path)
    if expected is None:
        pytest.skip("SimpleITK does not read it")
    affine = study.affine.numpy()[:3]
    columns = [0, 1] if len(study.size) == 2 or not places_its_frames(path) else [0, 1, 2]
    if len(columns) == 3 and not np.allclose(affine[:, 2], expected[:, 2], atol=1e-3):
        # ITK may keep the file's frame order where medmdm sorts along row x column: the same voxels
        expected[:, 3] += (study.size[2] - 1) * expected[:, 2]
        expected[:, 2] *= -1
    np.testing.assert_allclose(affine[:, [*columns, 3]], expected[:, [*columns, 3]], atol=1e-3)
