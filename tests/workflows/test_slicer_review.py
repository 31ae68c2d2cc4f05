"""workflows/slicer/review.py against a recording stand-in for Slicer (conftest.py), on real NIfTI files."""

from __future__ import annotations

import doctest
import json
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medmdm.errors import InputError
from medmdm.writers import write_nifti_image, write_nifti_overlay

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "workflows" / "slicer" / "review.py"
SLICER_DOC = REPO / "docs" / "slicer.md"
SPACING = (0.7, 1.1, 2.5)
ORIGIN = (-12.3, 40.1, 7.7)
SPATIAL = {2: (11, 8), 3: (9, 7, 5)}
PEAK = {2: (7, 3), 3: (6, 2, 3)}
PEAK_VALUE = 0.9


@dataclass
class OutputFolder:
    folder: Path
    source: Path
    overlay: Path
    affine: np.ndarray  # 4x4 RAS, the source's
    peak_ijk: tuple[int, int, int]

    def peak_ras(self) -> np.ndarray:
        return (self.affine @ np.array([*self.peak_ijk, 1.0]))[:3]


def oblique_affine() -> np.ndarray:
    """A rotation by 0.5 rad about (1, 2, 3), anisotropic voxels, an offset origin."""
    axis = np.array([1.0, 2.0, 3.0]) / np.sqrt(14.0)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rotation = np.eye(3) + np.sin(0.5) * cross + (1 - np.cos(0.5)) * cross @ cross
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag(SPACING)
    affine[:3, 3] = ORIGIN
    return affine


def write_output_folder(folder: Path, dims: int) -> OutputFolder:
    """source.nii.gz and saliency.nii.gz as medmdm writes them; the map peaks at PEAK[dims]."""
    folder.mkdir(parents=True, exist_ok=True)
    affine = oblique_affine()
    rng = np.random.default_rng(dims)
    image = MetaTensor(
        torch.as_tensor(rng.normal(size=(1, *SPATIAL[dims])), dtype=torch.float32), affine=affine
    )
    saliency = rng.uniform(0.0, 0.5, size=SPATIAL[dims]).astype(np.float32)
    saliency[PEAK[dims]] = PEAK_VALUE
    source = write_nifti_image(image, folder / "source.nii.gz")
    overlay = write_nifti_overlay(torch.from_numpy(saliency), image, folder / "saliency.nii.gz")
    peak = (*PEAK[dims], 0) if dims == 2 else PEAK[dims]
    return OutputFolder(folder, source, overlay, affine, peak)


def write_report(folder: Path, report: dict) -> None:
    (folder / "report.json").write_text(json.dumps(report))


@pytest.fixture(params=[2, 3], ids=["2d", "3d"])
def output(request: pytest.FixtureRequest, tmp_path: Path) -> OutputFolder:
    return write_output_folder(tmp_path / "out", request.param)


def test_review_shows_the_map_over_the_source_and_centres_on_its_peak(
    review_script, fake_slicer, output: OutputFolder, capsys: pytest.CaptureFixture
) -> None:
    peak = review_script.review(output.folder)

    source_node, overlay_node = fake_slicer.loaded
    assert (source_node.path, overlay_node.path) == (output.source, output.overlay)
    assert fake_slicer.layer_calls == [
        {
            "background": source_node,
            "foreground": overlay_node,
            "label": "keep-current",
            "foregroundOpacity": 0.45,
            "labelOpacity": None,
            "fit": True,
            "rotateToVolumePlane": True,
        }
    ]
    display = overlay_node.display
    assert display.colour_node_id == "vtkMRMLColorTableNodeFileInferno.txt"
    assert (display.apply_threshold, display.lower_threshold, display.upper_threshold) == (1, 0.2, 1.0)
    assert (display.auto_window_level, display.window_min_max) == (0, (0.2, 1.0))
    assert source_node.display.colour_node_id is None  # the source keeps its grey display

    [(x, y, z, centred)] = fake_slicer.jumps
    np.testing.assert_allclose((x, y, z), output.peak_ras(), rtol=0, atol=1e-4)
    assert centred is True
    assert peak.ijk == output.peak_ijk
    assert peak.value == pytest.approx(PEAK_VALUE)
    np.testing.assert_allclose(peak.ras, output.peak_ras(), rtol=0, atol=1e-4)

    [line] = capsys.readouterr().out.splitlines()
    assert str(output.source) in line and str(output.overlay) in line
    assert "peak 0.9 at RAS ({:.2f}, {:.2f}, {:.2f}) mm".format(*output.peak_ras()) in line


def test_command_line_under_slicer_runs_the_review_with_its_options(
    fake_slicer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = write_output_folder(tmp_path / "out", 3)
    argv = [str(SCRIPT), "--", str(output.folder), "--threshold", "0.35", "--opacity", "0.6"]
    monkeypatch.setattr(sys, "argv", argv)

    runpy.run_path(str(SCRIPT), run_name="__main__")

    source_node, overlay_node = fake_slicer.loaded
    assert (source_node.path, overlay_node.path) == (output.source, output.overlay)
    assert fake_slicer.layer_calls[0]["foregroundOpacity"] == 0.6
    assert (overlay_node.display.lower_threshold, overlay_node.display.window_min_max) == (0.35, (0.35, 1.0))
    np.testing.assert_allclose(fake_slicer.jumps[0][:3], output.peak_ras(), rtol=0, atol=1e-4)


def test_console_exec_defines_review_and_loads_nothing_until_called(
    fake_slicer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = write_output_folder(tmp_path / "out", 3)
    monkeypatch.setattr(sys, "argv", [""])  # Slicer's sys.argv without --python-script
    console = {"__name__": "__main__"}

    exec(compile(SCRIPT.read_text(), str(SCRIPT), "exec"), console)
    assert fake_slicer.loaded == []

    console["review"](str(output.folder))
    assert [node.path for node in fake_slicer.loaded] == [output.source, output.overlay]


@pytest.mark.parametrize(
    ("tables", "expected"),
    [
        ({"Viridis": "vtkMRMLColorTableNodeFileViridis.txt"}, "vtkMRMLColorTableNodeFileViridis.txt"),
        ({}, "vtkMRMLColorTableNodeIron"),
    ],
    ids=["viridis", "iron"],
)
def test_colour_table_falls_back_when_inferno_is_absent(
    review_script, fake_slicer, tmp_path: Path, tables: dict, expected: str
) -> None:
    output = write_output_folder(tmp_path / "out", 2)
    fake_slicer.colour_tables = tables
    review_script.review(output.folder)
    assert fake_slicer.loaded[1].display.colour_node_id == expected


def test_report_outputs_come_before_file_names(review_script, tmp_path: Path) -> None:
    listed = write_output_folder(tmp_path / "out" / "maps", 3)
    decoy = write_output_folder(tmp_path / "out", 3)  # source.nii.gz and saliency.nii.gz, not listed
    outputs = [
        {"path": "maps/source.nii.gz", "kind": "nifti-image"},
        {"path": "maps/saliency.nii.gz", "kind": "nifti-overlay"},
        {"path": "preview.png", "kind": "png"},
    ]
    write_report(decoy.folder, {"outputs": outputs})

    files = review_script.find_review_files(decoy.folder)

    assert (files.source, files.overlay) == (listed.source, listed.overlay)


def test_of_several_listed_overlays_saliency_is_shown(review_script, tmp_path: Path) -> None:
    output = write_output_folder(tmp_path / "out", 2)
    (output.folder / "level_1.nii.gz").write_bytes(output.overlay.read_bytes())
    outputs = [
        {"path": "level_1.nii.gz", "kind": "nifti-overlay"},
        {"path": "saliency.nii.gz", "kind": "nifti-overlay"},
    ]
    write_report(output.folder, {"outputs": outputs})
    assert review_script.find_review_files(output.folder).overlay == output.overlay


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative-to-folder"])
def test_a_nifti_study_named_in_the_report_is_the_source(
    review_script, tmp_path: Path, relative: bool
) -> None:
    output = write_output_folder(tmp_path / "out", 3)
    study = output.source.rename(tmp_path / "study.nii.gz")
    recorded = "../study.nii.gz" if relative else str(study)
    outputs = [{"path": "saliency.nii.gz", "kind": "nifti-overlay"}]
    write_report(output.folder, {"input": {"path": recorded, "kind": "nifti"}, "outputs": outputs})

    files = review_script.find_review_files(output.folder)

    assert files.source.resolve() == study.resolve()
    assert files.overlay == output.overlay


def test_a_dicom_study_without_source_nifti_is_an_error_that_points_to_the_dicom_module(
    review_script, tmp_path: Path
) -> None:
    output = write_output_folder(tmp_path / "out", 3)
    output.source.unlink()
    series = tmp_path / "series"
    series.mkdir()
    write_report(output.folder, {"input": {"path": str(series), "kind": "dicom-series"}})

    with pytest.raises(InputError, match=r"series: the source is DICOM .* DICOM module"):
        review_script.find_review_files(output.folder)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no-overlay", r"out: no saliency map .*saliency\.nii\.gz"),
        ("no-source", r"out: no source image \(source\.nii\.gz\) and no input path in report\.json"),
        ("listed-missing", r"out/gone\.nii\.gz: listed in report\.json but missing"),
        ("study-missing", r"/nowhere/study\.nii\.gz: the study named in .*report\.json does not exist"),
        ("bad-json", r"report\.json: cannot be read as JSON"),
        ("bad-outputs", r"report\.json: 'outputs' must be a list"),
        ("no-folder", r"absent: not a folder"),
    ],
)
def test_missing_or_broken_files_are_input_errors_naming_them(
    review_script, fake_slicer, tmp_path: Path, breakage: str, message: str
) -> None:
    output = write_output_folder(tmp_path / "out", 3)
    folder = output.folder
    if breakage == "no-overlay":
        output.overlay.unlink()
    elif breakage == "no-source":
        output.source.unlink()
    elif breakage == "listed-missing":
        write_report(folder, {"outputs": [{"path": "gone.nii.gz", "kind": "nifti-overlay"}]})
    elif breakage == "study-missing":
        output.source.unlink()
        write_report(folder, {"input": {"path": "/nowhere/study.nii.gz"}})
    elif breakage == "bad-json":
        (folder / "report.json").write_text("{not json")
    elif breakage == "bad-outputs":
        write_report(folder, {"outputs": {"path": "saliency.nii.gz"}})
    else:
        folder = tmp_path / "absent"

    with pytest.raises(InputError, match=message):
        review_script.review(folder)
    assert fake_slicer.loaded == []  # checked before anything is loaded


def test_peak_voxel_reads_slicer_order_and_ignores_nan(review_script) -> None:
    array_kji = np.zeros((2, 3, 4), dtype=np.float32)  # K=2 slices, J=3 rows, I=4 columns
    array_kji[1, 2, 3] = 0.8
    array_kji[0, 1, 2] = 0.8  # a tie, earlier in memory: chosen
    array_kji[0, 0, 0] = np.nan
    assert review_script.peak_voxel(array_kji) == ((2, 1, 0), pytest.approx(0.8))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 3, 4, 3)), r"one scalar volume \(K, J, I\), got shape \(2, 3, 4, 3\)"),
        (np.full((2, 2, 2), np.nan), "no finite value"),
    ],
    ids=["vector", "all-nan"],
)
def test_peak_voxel_rejects_maps_without_a_peak(review_script, array: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        review_script.peak_voxel(array)


def test_ijk_to_ras_applies_the_whole_matrix(review_script) -> None:
    affine = oblique_affine()
    expected = affine[:3, :3] @ np.array([6.0, 2.0, 3.0]) + affine[:3, 3]
    np.testing.assert_allclose(review_script.ijk_to_ras(affine, (6, 2, 3)), expected, rtol=0, atol=1e-12)


def test_parse_arguments_defaults_and_slicer_separator(review_script) -> None:
    defaults = review_script.parse_arguments(["--", "/data/out"])
    assert (defaults.folder, defaults.threshold, defaults.opacity) == (Path("/data/out"), 0.2, 0.45)
    given = review_script.parse_arguments(["/data/out", "--opacity", "0.7", "--threshold", "0"])
    assert (given.threshold, given.opacity) == (0.0, 0.7)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--"], "the following arguments are required: folder"),
        (["out", "--colour", "hot"], "unrecognized arguments: --colour hot"),
        (["out", "--threshold", "1"], r"threshold must be in \[0, 1\), got 1.0"),
        (["out", "--opacity", "0"], r"opacity must be in \(0, 1\], got 0.0"),
        (["out", "--opacity", "half"], "invalid float value: 'half'"),
    ],
)
def test_bad_command_lines_are_input_errors_not_exits(review_script, argv: list[str], message: str) -> None:
    with pytest.raises(InputError, match=message):
        review_script.parse_arguments(argv)


def test_outside_slicer_review_says_it_needs_slicer(
    review_script, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = write_output_folder(tmp_path / "out", 2)
    monkeypatch.setitem(sys.modules, "slicer", None)  # import slicer fails, as in a plain Python
    with pytest.raises(ImportError, match="runs inside 3D Slicer"):
        review_script.review(output.folder)


def test_command_lines_in_the_docs_parse(review_script) -> None:
    commands = re.findall(r"--python-script \S*review\.py (.+)", SLICER_DOC.read_text())
    assert any("--threshold" in command for command in commands)
    for command in commands:
        arguments = review_script.parse_arguments(shlex.split(command))
        assert arguments.folder.name


def test_docstring_examples_run(review_script) -> None:
    results = doctest.testmod(review_script)
    assert results.attempted > 0 and results.failed == 0
