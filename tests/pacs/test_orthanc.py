"""Round trips through a real Orthanc: the sample series stored into it, explained from it by DICOMweb and by
DIMSE, the outputs sent back by STOW-RS and C-STORE, and what Orthanc then holds checked against what was
written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    PseudoColorSoftcopyPresentationStateStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from medmdm import pacs
from medmdm.cli.main import main

SAMPLE_SERIES = Path(__file__).resolve().parents[2] / "sample_data" / "studies" / "ct_nodule"
DICOM = ("dicom-pm", "dicom-pr", "dicom-sc", "dicom-seg")
FAST = ["--method", "saliency", "--device", "cpu", "--format", f"{','.join(DICOM)},json"]
SECRET = "s3cret-Pa55word"
PIXEL_KEYWORDS = {"PixelData", "FloatPixelData", "DoubleFloatPixelData"}


@pytest.fixture(scope="module")
def source(orthanc) -> pydicom.Dataset:
    """The sample CT series, stored into Orthanc through its REST API; the header of its first file."""
    files = sorted(SAMPLE_SERIES.glob("*.dcm"))
    orthanc.store(files)
    return pydicom.dcmread(files[0], stop_before_pixels=True)


def sent_objects(out: Path) -> list[dict]:
    report = json.loads((out / "report.json").read_text())
    assert report["sent"]["ok"] and report["sent"]["error"] == ""
    return report["sent"]["objects"]


def check_orthanc_holds_what_was_written(url: str, out: Path, source: pydicom.Dataset, tmp: Path) -> None:
    """Every object sent is in the source's study, in a new series with the source's frame of reference
    (the Parametric Map and SEG), and what Orthanc returns for it has the pixel data written, byte for
    byte."""
    objects = sent_objects(out)
    written = {o["sop_instance_uid"]: pydicom.dcmread(out / o["path"]) for o in objects}
    outputs = json.loads((out / "report.json").read_text())["outputs"]
    assert sorted(o["path"] for o in objects) == sorted(o["path"] for o in outputs if o["kind"] in DICOM)
    assert all(o["accepted"] and o["reason"] == "" for o in objects)
    for series_uid in {str(ds.SeriesInstanceUID) for ds in written.values()}:
        assert series_uid != source.SeriesInstanceUID
        folder = tmp / series_uid
        folder.mkdir()
        for path in pacs.retrieve(url, source.StudyInstanceUID, series_uid, folder):
            returned = pydicom.dcmread(path)
            ours = written.pop(str(returned.SOPInstanceUID))
            assert returned.StudyInstanceUID == source.StudyInstanceUID
            if returned.SOPClassUID == PseudoColorSoftcopyPresentationStateStorage:
                # No pixels and no frame of reference: its palette comes back as written.
                assert returned.RedPaletteColorLookupTableData == ours.RedPaletteColorLookupTableData
                continue
            if returned.SOPClassUID != SecondaryCaptureImageStorage:  # whose IOD has no frame of reference
                assert returned.FrameOfReferenceUID == source.FrameOfReferenceUID
            (keyword,) = PIXEL_KEYWORDS & set(ours.dir())
            assert returned[keyword].value == ours[keyword].value
    assert written == {}


def test_explain_from_dicomweb_and_send_back_by_stow_rs(orthanc, source, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDMDM_PACS_PASSWORD", SECRET)
    url = orthanc.dicomweb_url.replace("://", "://alice@")  # a user name in the URL: used, not recorded
    out = tmp_path / "out"
    argv = ["explain", url, "--study", source.StudyInstanceUID, "--out", str(out), *FAST, "--send-to", url]
    assert main(argv) == 0
    said = capsys.readouterr().out
    report_text = (out / "report.json").read_text()
    report = json.loads(report_text)
    assert report["input"]["series_uid"] == source.SeriesInstanceUID
    assert report["input"]["path"] == f"{orthanc.dicomweb_url}/studies/{source.StudyInstanceUID}"
    assert report["sent"]["url"] == orthanc.dicomweb_url and report["sent"]["protocol"] == "STOW-RS"
    n = len(report["sent"]["objects"])
    assert f"{orthanc.dicomweb_url} accepted {n} of {n} DICOM objects (STOW-RS)" in said
    assert "alice" not in report_text and SECRET not in report_text
    check_orthanc_holds_what_was_written(orthanc.dicomweb_url, out, source, tmp_path)


def test_explain_from_a_dicom_node_and_send_back_by_c_store(orthanc, source, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMDM_AE_TITLE", "MEDMDM_TEST")
    out = tmp_path / "out"
    argv = [
        "explain",
        orthanc.dicom_url,
        "--study",
        source.StudyInstanceUID,
        "--series",
        source.SeriesInstanceUID,
    ]
    assert main([*argv, "--out", str(out), *FAST, "--send-to", orthanc.dicom_url, "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["sent"]["protocol"] == "C-STORE"
    assert report["input"]["size"] == [96, 96, len(list(SAMPLE_SERIES.glob("*.dcm")))]
    check_orthanc_holds_what_was_written(orthanc.dicom_url, out, source, tmp_path)


def test_batch_sends_each_study(orthanc, source, tmp_path):
    studies = tmp_path / "studies"
    shutil.copytree(SAMPLE_SERIES, studies / "ct_nodule")
    out = tmp_path / "out"
    formats = ["--format", "dicom-pm,dicom-seg,json"]  # the captures go by STOW-RS in the test above
    argv = ["batch", str(studies), "--out", str(out), *FAST, *formats, "--send-to", orthanc.dicomweb_url]
    assert main([*argv, "--quiet"]) == 0
    (study,) = [p for p in out.iterdir() if (p / "report.json").is_file()]
    check_orthanc_holds_what_was_written(orthanc.dicomweb_url, study, source, tmp_path)


def test_a_study_or_series_the_server_does_not_hold_is_one_line(orthanc, source, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", orthanc.dicomweb_url, "--study", "1.2.3.4", "--out", str(out), *FAST]) == 2
    assert capsys.readouterr().err == f"medmdm: error: {orthanc.dicomweb_url}: no study 1.2.3.4\n"
    argv = ["explain", orthanc.dicom_url, "--study", source.StudyInstanceUID, "--series", "1.2.3"]
    assert main([*argv, "--out", str(out), *FAST]) == 2
    assert f"study {source.StudyInstanceUID} has no series 1.2.3 (" in capsys.readouterr().err
    assert not out.exists()


def test_a_study_of_several_series_is_refused_naming_its_url(orthanc, tmp_path, capsys):
    study_uid, series = generate_uid(), [generate_uid(), generate_uid()]
    for k, series_uid in enumerate(series):  # a new study: one slice in each of two series
        ds = pydicom.dcmread(SAMPLE_SERIES / "IM0001.dcm")
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, generate_uid()
        ds.save_as(tmp_path / f"{k}.dcm")
        orthanc.store([tmp_path / f"{k}.dcm"])
    out = tmp_path / "out"
    assert main(["explain", orthanc.dicomweb_url, "--study", study_uid, "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"medmdm: error: {orthanc.dicomweb_url}/studies/{study_uid}: 2 series; choose one")
    assert all(uid in err for uid in series) and "medmdm-pacs-" not in err and not out.exists()
