"""A DICOM series through explain_study with every output format: valid objects, aligned outputs."""

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medmdm.bundle import load_bundle
from medmdm.pipeline import explain_study
from medmdm.testing.internal.bundles import detector_bundle
from medmdm.testing.internal.dicom_studies import write_ct_series
from medmdm.testing.internal.dicom_validation import dciodvfy_available, validate_dicom
from medmdm.testing.internal.phantoms import ct_case


@pytest.fixture(scope="module")
def series_result(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dicom_pipeline")
    case = ct_case(11, lesions=1, size=(40, 36, 16))
    series = write_ct_series(case, folder / "series", seed=11)
    bundle = load_bundle(detector_bundle(folder / "bundle"))
    formats = "nifti,dicom-pm,dicom-sc,dicom-seg,png,json"
    result = explain_study(series, bundle, folder / "out", formats=formats, options={"seed": 0, "steps": 10})
    return series, result


def test_every_format_is_written_and_listed(series_result):
    _, result = series_result
    report = json.loads((result.out_dir / "report.json").read_text())
    kinds = [item["kind"] for item in report["outputs"]]
    assert {"nifti-overlay", "nifti-image", "dicom-pm", "dicom-sc", "dicom-seg", "png", "json"} == set(kinds)
    for item in report["outputs"]:
        assert (result.out_dir / item["path"]).is_file()
    assert report["input"]["kind"] == "dicom-series" and report["input"]["modality"] == "CT"
    assert report["input"]["series_uid"] == result.study.series_uid


@pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy (dicom3tools) not installed")
def test_dicom_outputs_pass_dciodvfy(series_result):
    _, result = series_result
    for output in result.outputs:
        if output.kind.startswith("dicom"):
            assert validate_dicom(result.out_dir / output.path) == [], output.path


def test_nifti_overlay_matches_the_source_series_in_simpleitk(series_result):
    series, result = series_result
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    source = reader.Execute()
    overlay = sitk.ReadImage(str(result.out_dir / "saliency.nii.gz"))
    assert source.GetSize() == overlay.GetSize()
    np.testing.assert_allclose(source.GetOrigin(), overlay.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(source.GetSpacing(), overlay.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(source.GetDirection(), overlay.GetDirection(), atol=1e-4)
    # SimpleITK's (z, y, x) array is the transpose of medmdm's (x, y, z) map.
    np.testing.assert_allclose(sitk.GetArrayFromImage(overlay).transpose(2, 1, 0), result.saliency.numpy(),
                               atol=1e-6)  # fmt: skip


def test_parametric_map_frames_sit_on_the_source_slices(series_result):
    _, result = series_result
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(result.out_dir / "saliency_pm.dcm"))
    assert pm.StudyInstanceUID == result.study.study_uid
    assert pm.FrameOfReferenceUID == result.study.frame_of_reference_uid
    assert pm.SeriesInstanceUID != result.study.series_uid
    source_positions = {
        tuple(np.round(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient, 4)): k
        for k, f in enumerate(result.study.files)
    }
    frames = pm.pixel_array
    saliency = result.saliency.numpy()
    for index, item in enumerate(pm.PerFrameFunctionalGroupsSequence):
        position = tuple(np.round(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float), 4))
        k = source_positions[position]
        np.testing.assert_allclose(frames[index], saliency[:, :, k].T, atol=1e-6)
