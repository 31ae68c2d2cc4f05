"""explain_study: the map lands on the source grid, the report says what was done, and a failed study
leaves nothing behind."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medmdm.bundle import load_bundle
from medmdm.errors import InputError, OptionError
from medmdm.pipeline import explain_study
from medmdm.settings import Settings
from medmdm.testing.internal.bundles import ct_with_ball, detector_bundle


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    path, ball = ct_with_ball(folder / "ct.nii.gz")
    bundle = load_bundle(detector_bundle(folder / "bundle"))
    result = explain_study(path, bundle, folder / "out", options={"seed": 0})
    return path, ball, bundle, result


def test_map_lands_on_the_lesion_in_source_voxels(case):
    # The network sees a RAS, 2 mm, 24^3 resampling of an LPS 1.1 x 0.9 x 3 mm grid; the map must come
    # back on the source voxels, where the ball is.
    _, ball, _, result = case
    saliency = result.saliency.numpy()
    assert saliency.shape == ball.shape == (40, 36, 14)
    peak = np.unravel_index(int(saliency.argmax()), saliency.shape)
    assert ball[peak]
    near = (
        torch.nn.functional.max_pool3d(torch.tensor(ball[None], dtype=torch.float32), 5, 1, 2)[0].numpy() > 0
    )
    assert saliency[near].sum() / saliency.sum() > 0.6
    assert saliency.min() >= 0.0 and saliency.max() <= 1.0 + 1e-6


def test_outputs_and_report(case):
    path, _, bundle, result = case
    out = result.out_dir
    report = json.loads((out / "report.json").read_text())
    listed = {item["path"]: item["kind"] for item in report["outputs"]}
    assert listed == {"saliency.nii.gz": "nifti-overlay", "preview.png": "png", "report.json": "json"}
    assert sorted(p.name for p in out.iterdir()) == sorted(listed)
    assert report["input"]["path"] == str(path) and report["input"]["size"] == [40, 36, 14]
    assert report["input"]["orientation"] == "LPS"
    np.testing.assert_allclose(report["input"]["spacing"], [1.1, 0.9, 3.0], atol=1e-6)
    assert report["model"]["name"] == "lesion_detector_3d" and report["model"]["version"] == "1.2.0"
    assert report["model"]["weights_sha256"] == bundle.weights_sha256 != ""
    assert report["model"]["input_shape"] == [1, 24, 24, 24]
    assert report["method"]["name"] == "hdm" and report["method"]["options"]["seed"] == 0
    assert report["method"]["options"]["baseline"] == "auto"
    assert report["method"]["baseline"] in {"mean", "minimum"} or report["method"]["baseline"].startswith(
        "blur"
    )
    assert report["target"]["index"] == 1 and report["target"]["name"] == "lesion"
    assert report["target"]["score_masked"] > 0.5 * report["target"]["score_original"]
    assert report["explanation"]["samples"] > 0
    assert {"read", "preprocess", "explain", "map_back", "write", "total"} <= set(report["timings"])
    assert {"torch", "monai", "pydicom", "highdicom", "nibabel", "python"} <= set(report["environment"])
    assert "patient" not in json.dumps(report).lower()


def test_failed_write_leaves_no_folder(case, tmp_path, monkeypatch):
    path, _, bundle, _ = case
    import medmdm.pipeline.stages as stages

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(stages, "write_preview", broken)
    with pytest.raises(OSError, match="disk full"):
        explain_study(path, bundle, tmp_path / "out", options={"seed": 0, "steps": 5})
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(case, tmp_path):
    path, _, bundle, _ = case
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep")
    with pytest.raises(InputError, match="not empty"):
        explain_study(path, bundle, out, options={"steps": 5})
    assert (out / "old.txt").read_text() == "keep"
    explain_study(path, bundle, out, options={"steps": 5}, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "report.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_formats(case):
    *_, result = case
    assert Settings(formats="png, json").formats_for(result.study) == ("png", "json")
    with pytest.raises(OptionError, match="unknown output format tiff"):
        Settings(formats="nifti,tiff")
    with pytest.raises(InputError, match="need a DICOM study"):
        Settings(formats="dicom-pm").formats_for(result.study)
    assert "dicom-pm" not in Settings().formats_for(result.study)


def test_what_reading_warned_is_in_the_report(tmp_path):
    import shutil
    import warnings
    from pathlib import Path

    series = Path(__file__).resolve().parents[2] / "sample_data" / "studies" / "ct_nodule"
    shutil.copytree(series, tmp_path / "ct")
    slices = sorted((tmp_path / "ct").iterdir())
    slices[10].unlink()  # one gap twice as wide: read resampled onto a regular grid
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = explain_study(
            tmp_path / "ct", None, tmp_path / "out", method="saliency", formats="nifti,json"
        )
    notes = [w for w in result.warnings if "resampled" in w]
    assert len(notes) == 1 and notes == list(result.study.notes)
    assert notes[0] in json.loads((tmp_path / "out" / "report.json").read_text())["warnings"]
    assert any("resampled" in str(w.message) for w in caught)  # and still warned, for the command line
