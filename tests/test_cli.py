"""The command line, called in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmdm import __version__, explainers
from medmdm.cli.main import main


def test_methods_lists_every_registered_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == explainers.available()
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage" in capsys.readouterr().out


@pytest.fixture(scope="module")
def cli_case(tmp_path_factory):
    from medmdm.testing.internal.bundles import ct_with_ball, detector_bundle

    folder = tmp_path_factory.mktemp("cli")
    study, _ = ct_with_ball(folder / "ct.nii.gz")
    return study, detector_bundle(folder / "bundle")


def test_explain_writes_outputs_and_a_summary(cli_case, tmp_path, capsys):
    study, bundle = cli_case
    config = tmp_path / "options.yaml"
    config.write_text("baseline: constant\nbaseline_value: 0.0\n")
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(study),
            "--bundle",
            str(bundle),
            "--out",
            str(out),
            "--config",
            str(config),
            "--steps",
            "15",
            "--seed",
            "3",
            "--format",
            "nifti,json",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "lesion_detector_3d" in captured.out and str(out) in captured.out
    report = json.loads((out / "report.json").read_text())
    options = report["method"]["options"]
    assert (options["baseline"], options["seed"]) == ("constant", 3)
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "saliency.nii.gz"]


def test_quiet_prints_nothing(cli_case, tmp_path, capsys):
    study, bundle = cli_case
    assert (
        main(
            [
                "explain",
                str(study),
                "--bundle",
                str(bundle),
                "--out",
                str(tmp_path / "o"),
                "--quiet",
                "--steps",
                "5",
                "--format",
                "json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["explain", "{tmp}/absent.nii.gz"], "absent.nii.gz: no such file or folder"),
        (["explain", "{study}", "--method", "nope"], "unknown explainer 'nope'"),
        (["explain", "{study}", "--format", "tiff"], "unknown output format tiff"),
        (["explain", "{study}", "--format", "dicom-sc"], "need a DICOM study"),
        (["explain", "{study}", "--target", "x"], "--target: target 'x' is not understood"),
        (["explain", "{study}", "--target", "7", "--steps", "2"], "out of range"),
        (["explain", "{study}", "--config", "{tmp}/bad.yaml"], "bad.yaml: cannot parse the config file"),
        (["explain", "{study}", "--config", "{tmp}/list.yaml"], "must hold a mapping"),
        (["explain", "{study}", "--bundle", "{tmp}"], "no configs/inference"),
        (["explain", "{study}", "--steps", "many"], "invalid int value"),
        (["explain"], "the following arguments are required: study"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli_case, tmp_path, capsys, arguments, message):
    study, bundle = cli_case
    (tmp_path / "bad.yaml").write_text("steps: [1, 2\n")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    args = [a.format(tmp=tmp_path, study=study) for a in arguments]
    if "--bundle" not in args and len(args) > 1:
        args += ["--bundle", str(bundle)]
    out = tmp_path / "out"
    code = main([*args, "--out", str(out)] if len(args) > 1 else args)
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("medmdm: error: ")
    assert message in lines[0]
    assert "Traceback" not in captured.err
    assert not out.exists()


def test_existing_output_folder_and_overwrite(cli_case, tmp_path, capsys):
    study, bundle = cli_case
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    base = ["explain", str(study), "--bundle", str(bundle), "--out", str(out), "--steps", "5", "--quiet"]
    assert main(base) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    assert main([*base, "--overwrite"]) == 0
    assert not (out / "notes.txt").exists() and (out / "report.json").is_file()


def test_internal_error_is_exit_1_and_traceback_only_with_debug(cli_case, tmp_path, capsys, monkeypatch):
    study, bundle = cli_case
    import medmdm.pipeline.stages as stages

    def broken(*args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(stages, "write_preview", broken)
    base = ["explain", str(study), "--bundle", str(bundle), "--steps", "5", "--quiet", "--format", "png"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "medmdm: internal error: RuntimeError: renderer crashed" in err and "Traceback" not in err
    assert main([*base, "--out", str(tmp_path / "b"), "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_info_describes_a_study_and_lists_series(cli_case, tmp_path, capsys):
    study, _ = cli_case
    assert main(["info", str(study)]) == 0
    out = capsys.readouterr().out
    assert "40 x 36 x 14" in out and "LPS" in out and "nifti" in out

    from pydicom.data import get_testdata_file

    folder = tmp_path / "two"
    folder.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(get_testdata_file(name), folder / name)
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "2 series" in out and "CT" in out and "MR" in out
    assert main(["info", str(tmp_path / "missing")]) == 2


SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "studies"


@pytest.mark.parametrize(
    ("study", "kinds"),
    [
        (
            "cr_lesion.dcm",
            {"nifti-overlay", "nifti-image", "dicom-pm", "dicom-pr", "dicom-sc", "png", "json"},
        ),
        ("ct_nodule", {"nifti-overlay", "nifti-image", "dicom-pm", "dicom-pr", "dicom-sc", "png", "json"}),
        ("ct_nodule.nii.gz", {"nifti-overlay", "png", "json"}),
    ],
)
def test_demo_studies_end_to_end_with_the_demo_bundles(study, kinds, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["explain", str(SAMPLES / study), "--out", str(out), "--steps", "4", "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert {item["kind"] for item in report["outputs"]} == kinds
    expected_bundle = "radiograph_lesion_2d" if study.startswith("cr_") else "ct_nodule_3d"
    assert report["model"]["name"] == expected_bundle and len(report["model"]["weights_sha256"]) == 64
    assert report["target"]["index"] == 1 and report["target"]["name"] in ("lesion", "nodule")
    overlay = nib.load(out / "saliency.nii.gz")
    assert list(overlay.shape[: len(report["input"]["size"])]) == report["input"]["size"]
    assert "wrote" in capsys.readouterr().out


def test_default_outputs_degrade_and_a_named_format_is_refused_before_the_model(tmp_path, capsys):
    from pydicom.data import get_testdata_file

    dose = get_testdata_file("rtdose.dcm")  # multi-frame without per-frame plane geometry: no PM, no SEG
    out = tmp_path / "out"
    assert main(["explain", dose, "--method", "saliency", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    skipped = {s["kind"]: s["reason"] for s in report["skipped_outputs"]}
    assert "dicom-pm" in skipped and skipped["dicom-pm"] in " ".join(report["warnings"])
    assert f"medmdm: warning: no dicom-pm written: {skipped['dicom-pm']}" in err
    assert {"nifti-overlay", "png", "json"} <= {o["kind"] for o in report["outputs"]}
    named = tmp_path / "named"
    assert (
        main(["explain", dose, "--method", "saliency", "--format", "nifti,dicom-pm", "--out", str(named)])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("medmdm: error:") and "--format dicom-pm" in err and "\n" not in err
    assert not named.exists()


def test_quiet_is_silent_and_paths_can_be_redacted(cli_case, tmp_path, capsys):
    study, bundle = cli_case
    out = tmp_path / "out"
    base = ["explain", str(study), "--bundle", str(bundle), "--method", "saliency", "--format", "nifti,json"]
    assert main([*base, "--out", str(out), "--quiet", "--redact-paths"]) == 0
    assert capsys.readouterr() == ("", "")
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["path"] == "" and str(study) not in json.dumps(report)


def test_an_output_folder_that_cannot_be_written_is_refused_before_the_model(cli_case, tmp_path, capsys):
    study, bundle = cli_case
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "not_a_folder").write_text("")
    assert (
        main(["explain", str(study), "--bundle", str(bundle), "--out", str(locked / "not_a_folder" / "o")])
        == 2
    )
    assert "cannot write there" in capsys.readouterr().err


def test_an_rgb_study_is_turned_grey_for_a_grey_network_and_other_channel_counts_are_refused(
    tmp_path, capsys
):
    from pydicom.data import get_testdata_file

    rgb = get_testdata_file("SC_rgb.dcm")
    out = tmp_path / "rgb"
    assert main(["explain", rgb, "--method", "saliency", "--format", "nifti,json", "--out", str(out)]) == 0
    assert "an RGB image turned grey by luminance" in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["channels"] == 3 and report["model"]["input_shape"][0] == 1
    assert any("turned grey" in warning for warning in report["warnings"])
    two = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 1, 2), np.float32), np.eye(4)), two)
    assert main(["explain", str(two), "--method", "saliency", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"medmdm: error: {two}: the study has 2 channel(s)") and "takes 1" in err
