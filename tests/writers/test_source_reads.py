"""Each source file is parsed once, when the study is read; the DICOM writers work from its headers.

``pydicom.dcmread`` is counted under every name it is called by; the source files are deleted
before writing, so a writer that went back to them (through ``dcmread`` or a deferred value)
would fail.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

import medmdm.io.dicom
from medmdm.errors import InputError
from medmdm.io import Study, load_study
from medmdm.testing.internal.dicom_studies import write_ct_series
from medmdm.testing.internal.phantoms import ct_case
from medmdm.writers import write_parametric_map, write_secondary_capture, write_segmentation

SLICES = 48


@pytest.fixture
def dcmread_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The files ``pydicom.dcmread`` parses while the test runs, in call order."""
    paths: list[Path] = []
    read = pydicom.dcmread

    def counting(fp, *args, **kwargs):
        paths.append(Path(fp))
        return read(fp, *args, **kwargs)

    for module in (pydicom, pydicom.filereader, medmdm.io.dicom):
        monkeypatch.setattr(module, "dcmread", counting)
    return paths


def write_all(study: Study, folder: Path) -> None:
    """The Parametric Map, Secondary Captures and Segmentation of a ramp map on the study."""
    folder.mkdir()
    size = int(np.prod(study.size))
    data = (np.arange(size, dtype=np.float32).reshape(study.size) + 1) / size
    write_parametric_map(data, study, folder / "pm.dcm", method="hdm")
    write_secondary_capture(data, study, folder / "sc", method="hdm")
    write_segmentation(data, study, folder / "seg.dcm", method="hdm")


def test_a_series_is_read_once_and_written_from_its_headers(tmp_path, dcmread_calls):
    folder = write_ct_series(ct_case(0, size=(32, 32, SLICES)), tmp_path / "ct")
    dcmread_calls.clear()
    study = load_study(folder)
    assert len(dcmread_calls) == SLICES
    assert sorted(dcmread_calls) == sorted(folder.iterdir())
    assert [h.SOPInstanceUID for h in study.headers] == study.sop_instance_uids
    assert study.frame_numbers == (1,) * SLICES
    assert not any("PixelData" in h for h in study.headers)
    dcmread_calls.clear()
    shutil.rmtree(folder)
    write_all(study, tmp_path / "out")
    assert dcmread_calls == []


def test_a_multiframe_file_is_read_once_and_written_from_its_header(multiframe, tmp_path, dcmread_calls):
    path = multiframe.study.path
    study = load_study(path)
    assert dcmread_calls == [path]
    assert len(study.headers) == 1 and "PixelData" not in study.headers[0]
    assert study.frame_numbers == tuple(multiframe.frame_numbers)
    dcmread_calls.clear()
    path.unlink()
    write_all(study, tmp_path / "out")
    assert dcmread_calls == []


def test_writing_leaves_the_study_headers_as_read(source, tmp_path):
    study = source.study
    headers = study.headers
    before = [h.to_json_dict() for h in headers]
    write_all(study, tmp_path / "out")
    assert study.headers is headers
    assert [h.to_json_dict() for h in headers] == before


def test_a_study_without_headers_is_refused(series, tmp_path):
    read = series.study
    study = Study(image=read.image, path=read.path, kind=read.kind, size=read.size)
    with pytest.raises(InputError, match="no DICOM headers"):
        write_parametric_map(np.ones(study.size), study, tmp_path / "pm.dcm", method="hdm")
