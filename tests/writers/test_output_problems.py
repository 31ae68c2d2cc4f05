"""What a study can carry: ``dicom_output_problem`` before anything runs, the writers' first check; and
the DICOM outputs of a study resampled from an irregular series, one frame per source slice."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.valuerep import DSfloat

from medmdm.errors import InputError
from medmdm.io import Study, interpolate_slices, load_study
from medmdm.testing.internal.dicom_validation import dciodvfy_available, validate_dicom
from medmdm.writers import (
    dicom_output_problem,
    write_parametric_map,
    write_secondary_capture,
    write_segmentation,
)
from medmdm.writers.segmentation import top_region

KINDS = ("dicom-pm", "dicom-sc", "dicom-seg")
WRITERS = {
    "dicom-pm": lambda data, study, out: [write_parametric_map(data, study, out / "pm.dcm", method="hdm")],
    "dicom-sc": lambda data, study, out: write_secondary_capture(data, study, out / "sc", method="hdm"),
    "dicom-seg": lambda data, study, out: [write_segmentation(data, study, out / "seg.dcm", method="hdm")],
}
POSITION_TOLERANCE = 1e-3  # mm


def _quietly(path: Path) -> Study:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_study(path)


def _nifti(folder: Path) -> Study:
    path = folder / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), np.eye(4)), path)
    return load_study(path)


def _without(name: str, keyword: str, folder: Path) -> Study:
    ds = pydicom.dcmread(get_testdata_file(name))
    delattr(ds, keyword)
    ds.save_as(folder / "patched.dcm")
    return load_study(folder / "patched.dcm")


def _headerless(folder: Path) -> Study:
    read = load_study(get_testdata_file("CT_small.dcm"))
    return Study(image=read.image, path=read.path, kind=read.kind, size=read.size)


SOURCES = {
    "CT_small.dcm": (lambda folder: load_study(get_testdata_file("CT_small.dcm")), {}),
    "radiograph without frame of reference": (
        lambda folder: load_study(get_testdata_file("JPEG2000.dcm")),
        {},
    ),
    "enhanced multi-frame": (lambda folder: load_study(get_testdata_file("eCT_Supplemental.dcm")), {}),
    "palette colour": (lambda folder: load_study(get_testdata_file("OT-PAL-8-face.dcm")), {}),
    "NIfTI": (_nifti, dict.fromkeys(KINDS, "DICOM outputs need a DICOM source; this study is NIfTI")),
    "no headers": (_headerless, dict.fromkeys(KINDS, "this study has no DICOM headers")),
    "no StudyInstanceUID": (
        lambda folder: _without("CT_small.dcm", "StudyInstanceUID", folder),
        dict.fromkeys(KINDS, "reference the source's StudyInstanceUID, which it lacks"),
    ),
    "RT Dose": (
        lambda folder: load_study(get_testdata_file("rtdose.dcm")),
        {k: "is derived from images; this source is an RT Dose grid" for k in ("dicom-pm", "dicom-seg")},
    ),
    "multi-frame without functional groups": (
        lambda folder: load_study(get_testdata_file("SC_rgb_2frame.dcm")),
        {k: "needs single-frame images or an enhanced multi-frame image" for k in ("dicom-pm", "dicom-seg")},
    ),
    "retired SOP class": (
        lambda folder: load_study(get_testdata_file("color-pl.dcm")),
        {k: r"retired SOP class \(Ultrasound Image Storage\)" for k in ("dicom-pm", "dicom-seg")},
    ),
    "CT without frame of reference": (
        lambda folder: _without("CT_small.dcm", "FrameOfReferenceUID", folder),
        {"dicom-seg": "without the FrameOfReferenceUID its IOD requires"},
    ),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", SOURCES)
def test_the_problem_is_what_the_writer_refuses(tmp_path: Path, name: str, kind: str) -> None:
    build, problems = SOURCES[name]
    study = build(tmp_path)
    problem = dicom_output_problem(study, kind)
    out = tmp_path / "out"
    out.mkdir()
    data = np.linspace(0, 1, int(np.prod(study.size))).reshape(study.size)
    if kind not in problems:
        assert problem is None
        assert WRITERS[kind](data, study, out)
        return
    assert problem is not None and "\n" not in problem and str(study.path) not in problem
    assert re.search(problems[kind], problem), problem
    with pytest.raises(InputError) as error:
        WRITERS[kind](data, study, out)
    assert str(error.value) == f"{study.path}: {problem}"
    assert list(out.rglob("*")) == []


def test_unknown_kind_is_an_input_error() -> None:
    with pytest.raises(InputError, match="unknown DICOM output 'dicom-xx'"):
        dicom_output_problem(load_study(get_testdata_file("CT_small.dcm")), "dicom-xx")


def test_old_dates_and_times_are_written_as_dicom_writes_them(tmp_path: Path) -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.StudyDate, ds.StudyTime = "2001.01.31", "14:04:38"  # ACR-NEMA style, which highdicom refuses
    ds.save_as(tmp_path / "old.dcm")
    study = load_study(tmp_path / "old.dcm")
    written = write_parametric_map(np.ones(study.size), study, tmp_path / "pm.dcm", method="hdm")
    pm = pydicom.dcmread(written)
    assert (pm.StudyDate, pm.StudyTime) == ("20010131", "140438")
    assert study.headers[0].StudyTime == "14:04:38"  # the study's header is left as read


# A study resampled from an irregular series


@pytest.fixture
def irregular(tmp_path_factory: pytest.TempPathFactory, series_writer):
    """A 6-slice CT series 2.5 mm apart whose last three slices are 1 mm further: one gap of 3.5 mm."""
    spec = series_writer(tmp_path_factory.mktemp("source") / "ct", n_slices=6)
    normal = np.cross(spec.orientation[:3], spec.orientation[3:])
    for k in (3, 4, 5):
        ds = pydicom.dcmread(spec.files[k])
        spec.positions[k] = spec.positions[k] + normal
        ds.ImagePositionPatient = [DSfloat(float(v), auto_format=True) for v in spec.positions[k]]
        ds.save_as(spec.files[k])
    return spec, _quietly(spec.folder)


def _on_source_slices(data: np.ndarray, study: Study) -> np.ndarray:
    return interpolate_slices(data, np.asarray(study.source_slice_positions) / study.spacing[2])


def _frame_at(ds: pydicom.Dataset, position: np.ndarray) -> int:
    found = [
        i
        for i, item in enumerate(ds.PerFrameFunctionalGroupsSequence)
        if np.abs(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float) - position).max()
        < POSITION_TOLERANCE
    ]
    assert len(found) == 1
    return found[0]


def test_the_study_is_resampled_and_keeps_its_source_slices(irregular) -> None:
    spec, study = irregular
    assert study.size == (20, 16, 6)  # 0 to 12.5 mm, 2.5 mm apart (the last source slice at 13.5 mm)
    assert study.source_slice_positions == pytest.approx([0, 2.5, 5, 8.5, 11, 13.5])
    assert study.sop_instance_uids == spec.sop_uids


def test_parametric_map_has_a_frame_per_source_slice(irregular, tmp_path: Path) -> None:
    spec, study = irregular
    data = np.random.default_rng(0).random(study.size).astype(np.float32)
    ds = pydicom.dcmread(write_parametric_map(data, study, tmp_path / "pm.dcm", method="hdm"))
    pixels = hd.pm.ParametricMap.from_dataset(ds).pixel_array
    assert len(pixels) == int(ds.NumberOfFrames) == 6
    expected = _on_source_slices(data, study)
    np.testing.assert_allclose(expected[..., 3], 0.6 * data[..., 3] + 0.4 * data[..., 4], rtol=1e-6)  # 8.5 mm
    for k, position in enumerate(spec.positions):
        index = _frame_at(ds, position)
        np.testing.assert_allclose(pixels[index], expected[..., k].T, rtol=1e-6)
        source = ds.PerFrameFunctionalGroupsSequence[index].DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == spec.sop_uids[k]


def test_segmentation_is_the_top_of_the_map_on_the_source_slices(irregular, tmp_path: Path) -> None:
    spec, study = irregular
    data = np.random.default_rng(1).random(study.size).astype(np.float32)
    ds = pydicom.dcmread(
        write_segmentation(data, study, tmp_path / "seg.dcm", method="hdm", top_fraction=0.1)
    )
    expected = top_region(_on_source_slices(data, study), 0.1)
    frames = hd.seg.Segmentation.from_dataset(ds).pixel_array
    for k, position in enumerate(spec.positions):
        if expected[..., k].any():
            np.testing.assert_array_equal(frames[_frame_at(ds, position)], expected[..., k].T)


def test_secondary_captures_reference_the_source_slices(irregular, tmp_path: Path) -> None:
    spec, study = irregular
    data = np.zeros(study.size, np.float32)
    data[..., 5] = 1.0  # the last grid slice, at 12.5 mm: nearest to the source slice at 13.5 mm
    paths = write_secondary_capture(data, study, tmp_path, method="hdm", mass_fraction=0.5)
    references = [pydicom.dcmread(p).SourceImageSequence[0].ReferencedSOPInstanceUID for p in paths]
    assert references == [spec.sop_uids[5]]
    assert pydicom.dcmread(paths[0]).DerivationDescription == "medmdm hdm saliency over slice 6 of 6"


@pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy (dicom3tools) not installed")
@pytest.mark.parametrize("kind", KINDS)
def test_outputs_of_a_resampled_study_are_valid(irregular, tmp_path: Path, kind: str) -> None:
    _, study = irregular
    data = np.random.default_rng(2).random(study.size).astype(np.float32)
    for path in WRITERS[kind](data, study, tmp_path):
        assert validate_dicom(path) == [], path.name
