"""medmdm.evaluation and ``medmdm evaluate``: finding cases, scoring maps, summaries, the command line."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medmdm.cli.main import main
from medmdm.errors import InputError
from medmdm.evaluation import (
    LOCALISATION_METRICS,
    METRICS,
    faithfulness_scores,
    find_cases,
    load_mask,
    localisation_scores,
    min_lesion_evidence,
    summarise,
)
from medmdm.io import load_study
from medmdm.testing import BoxModel, box_image, region_mask
from medmdm.testing.internal.bundles import DETECTOR_3D_CONFIG, DETECTOR_SOURCE, ct_with_ball, write_bundle
from medmdm.writers import write_nifti_overlay

REPOSITORY = Path(__file__).resolve().parents[1]


def write_mask(mask: np.ndarray, study: Path, path: Path) -> Path:
    return write_nifti_overlay(torch.tensor(mask, dtype=torch.float32), load_study(study).image, path)


def empty_ct(path: Path) -> Path:
    """The grid of ``ct_with_ball`` without the ball: 0 HU everywhere."""
    _, _ = ct_with_ball(path)
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine), path)
    return path


@pytest.fixture(scope="module")
def cases_folder(tmp_path_factory) -> Path:
    """Two studies with a ball (masks beside them), one without (an empty mask), and other files."""
    folder = tmp_path_factory.mktemp("cases")
    for name, centre in (("a", (27, 11, 9)), ("b", (12, 24, 5))):
        study, ball = ct_with_ball(folder / f"{name}.nii.gz", centre=centre)
        write_mask(ball, study, folder / f"{name}_mask.nii.gz")
    negative = empty_ct(folder / "c.nii.gz")
    write_mask(np.zeros((40, 36, 14)), negative, folder / "c_mask.nii.gz")
    (folder / "README.txt").write_text("not a study")
    return folder


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    """The lesion detector bundle, its threshold between the background (0 HU) and the ball (300 HU)."""
    config = json.loads(json.dumps(DETECTOR_3D_CONFIG))
    config["network_def"]["threshold"] = 0.85
    spacing, resize = config["preprocessing"]["transforms"][3], config["preprocessing"]["transforms"][5]
    spacing["pixdim"], resize["spatial_size"] = [3.0, 3.0, 3.0], [16, 16, 16]  # small, so fast
    metadata = {
        "name": "ball_detector",
        "network_data_format": {"outputs": {"pred": {"channel_def": {"0": "normal", "1": "lesion"}}}},
    }
    root = tmp_path_factory.mktemp("bundle") / "ball_detector"
    return write_bundle(
        root,
        config,
        metadata=metadata,
        scripts=DETECTOR_SOURCE,
        state={"model": {"scale": torch.tensor(20.0)}},
    )


# finding cases


def test_folder_cases_pair_each_study_with_its_mask(cases_folder):
    cases = find_cases(cases_folder)
    assert [case.name for case in cases] == ["a", "b", "c"]
    assert [case.study.name for case in cases] == ["a.nii.gz", "b.nii.gz", "c.nii.gz"]
    assert [case.mask.name for case in cases] == ["a_mask.nii.gz", "b_mask.nii.gz", "c_mask.nii.gz"]
    assert all(case.target is None for case in cases)


def test_series_folder_and_dicom_file_stems(tmp_path):
    (tmp_path / "series1").mkdir()
    (tmp_path / "scan.dcm").write_bytes(b"")
    for stem in ("series1", "scan"):
        (tmp_path / f"{stem}_mask.nii.gz").write_bytes(b"")
    cases = find_cases(tmp_path)
    assert [(c.name, c.study.name, c.mask.name) for c in cases] == [
        ("scan", "scan.dcm", "scan_mask.nii.gz"),
        ("series1", "series1", "series1_mask.nii.gz"),
    ]


def test_a_study_without_its_mask_is_named(tmp_path):
    ct_with_ball(tmp_path / "lonely.nii.gz")
    with pytest.raises(InputError, match=r"lonely\.nii\.gz: no lesion mask lonely_mask\.nii\.gz"):
        find_cases(tmp_path)


def test_an_empty_folder_has_no_cases(tmp_path):
    with pytest.raises(InputError, match="no studies found"):
        find_cases(tmp_path)


def test_manifest_paths_targets_and_missing_masks(cases_folder, tmp_path):
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"study,mask,target\n{cases_folder}/a.nii.gz,{cases_folder}/a_mask.nii.gz,1\n")
    local = cases_folder / "manifest.csv"
    local.write_text("study,mask\nb.nii.gz,b_mask.nii.gz\nc.nii.gz,\n")
    try:
        (a,) = find_cases(manifest)
        b, c = find_cases(local)
    finally:
        local.unlink()
    assert (a.study, a.mask, a.target) == (cases_folder / "a.nii.gz", cases_folder / "a_mask.nii.gz", 1)
    assert (b.name, b.study, b.target) == ("b.nii.gz", cases_folder / "b.nii.gz", None)
    assert c.mask is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("study,target\nx.nii.gz,1\n", "no column mask"),
        ("study,mask\nmissing.nii.gz,\n", r"row 2: .*missing\.nii\.gz does not exist"),
        ("study,mask,target\na.nii.gz,,lesion\n", "row 2: target must be a class index"),
    ],
)
def test_bad_manifests_name_the_file_and_row(cases_folder, tmp_path, text, message):
    manifest = tmp_path / "bad.csv"
    manifest.write_text(text.replace("a.nii.gz", str(cases_folder / "a.nii.gz")))
    with pytest.raises(InputError, match=message) as error:
        find_cases(manifest)
    assert str(manifest) in str(error.value)


# masks


def test_mask_reads_back_on_the_study_grid(cases_folder, tmp_path):
    study = load_study(cases_folder / "a.nii.gz")
    _, ball = ct_with_ball(tmp_path / "again.nii.gz")  # the same ball as case a
    mask = load_mask(cases_folder / "a_mask.nii.gz", study)
    assert mask.dtype == torch.bool and torch.equal(mask, torch.from_numpy(ball))
    assert not load_mask(None, study).any()


def test_masks_off_the_study_grid_are_refused(cases_folder, tmp_path):
    study = load_study(cases_folder / "a.nii.gz")
    small = tmp_path / "small_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((40, 36, 13), np.float32), np.eye(4)), small)
    with pytest.raises(InputError, match=r"small_mask\.nii\.gz: mask of shape \(40, 36, 13\)"):
        load_mask(small, study)
    shifted = tmp_path / "shifted_mask.nii.gz"
    affine = study.affine.numpy().copy()
    affine[0, 3] += 0.5
    nib.save(nib.Nifti1Image(np.zeros((40, 36, 14), np.float32), affine), shifted)
    with pytest.raises(InputError, match=r"shifted_mask\.nii\.gz: mask affine differs .* by up to 0\.5 mm"):
        load_mask(shifted, study)


# scores


def test_localisation_of_a_map_that_finds_one_of_two_lesions():
    masks = torch.zeros(2, 20, 20, dtype=torch.bool)
    masks[:, 2:6, 2:6] = True  # 16 voxels
    masks[:, 12:16, 12:16] = True  # 16 voxels
    saliency = torch.zeros(2, 1, 20, 20)
    saliency[0, 0, 2:6, 2:6] = 1.0  # the first lesion only
    saliency[1, 0][masks[1]] = 1.0  # both
    scores = localisation_scores(saliency, masks)
    assert scores["energy_pointing_game"].tolist() == [1.0, 1.0]
    assert scores["pointing_game"].tolist() == [1.0, 1.0]
    assert scores["min_lesion_share"].tolist() == [0.0, 0.5]
    assert scores["lesions_found"].tolist() == [0.5, 1.0]
    # The 99th percentile of each map is 1: its positives are the voxels at 1, all on a lesion. The 95th
    # percentile of the first map is 0, so every voxel is positive; of the second, 1: the union exactly.
    assert scores["precision_p99"].tolist() == [1.0, 1.0]
    assert scores["sensitivity_p99"].tolist() == [0.5, 1.0]
    assert scores["sensitivity_p95"].tolist() == [1.0, 1.0]
    assert math.isclose(float(scores["precision_p95"][0]), 32 / 400, rel_tol=1e-6)
    assert scores["dice_p95"][1] == 1.0


def test_localisation_is_nan_without_a_lesion():
    scores = localisation_scores(torch.rand(1, 1, 8, 8, 8), torch.zeros(1, 8, 8, 8))
    assert list(scores) == list(LOCALISATION_METRICS)
    assert all(math.isnan(float(values[0])) for values in scores.values())


def test_faithfulness_ranks_the_evidence_first():
    box = ((8, 16), (8, 16))
    model = BoxModel(box)
    x = box_image((32, 32), box, batch=2)
    inside = region_mask((32, 32), box).float()
    saliency = torch.stack([inside, 1 - inside])[:, None]  # the box first; the box last
    scores = faithfulness_scores(model, x, saliency, target=1, steps=10)
    assert scores["deletion_auc"][0] < 0.1 < 0.8 < scores["deletion_auc"][1]
    assert scores["insertion_auc"][0] > scores["insertion_auc"][1]
    assert scores["average_drop"][0] < 0.05 < 0.9 < scores["average_drop"][1]


class TwoBoxSum(torch.nn.Module):
    """Class 1's logit adds the mean of box A once and of box B three times: A holds a quarter of the
    evidence, whatever replaces it."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b = a.float(), b.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = lambda box: (x[:, 0] * box).flatten(1).sum(1) / box.sum()  # noqa: E731
        score = mean(self.a) + 3 * mean(self.b)
        return torch.stack([-score, score], 1)


def test_min_lesion_evidence_is_the_smaller_lesions_share_of_the_logit():
    a, b = region_mask((32, 32), ((4, 10), (4, 10))), region_mask((32, 32), ((18, 26), (18, 26)))
    x = torch.zeros(1, 1, 32, 32)
    x[0, 0][a | b] = 1.0
    model = TwoBoxSum(a, b)
    share = min_lesion_evidence(model, x, torch.stack([a, b]).float(), 1, "constant")
    assert share == pytest.approx(0.25, abs=1e-6)
    assert math.isnan(min_lesion_evidence(model, x, a[None].float(), 1))


def test_summary_leaves_out_nan_and_needs_two_values_for_a_spread():
    rows = [
        {"method": "hdm", "dice_p95": 0.2, "samples": 100},
        {"method": "hdm", "dice_p95": 0.4, "samples": 300},
        {"method": "gradcam", "dice_p95": float("nan"), "samples": 5},
        {"method": "hdm", "dice_p95": float("nan"), "samples": 200},
    ]
    summary = summarise(rows, ["dice_p95", "samples"])
    assert list(summary) == ["hdm", "gradcam"]
    assert summary["hdm"]["dice_p95"]["n"] == 2 and math.isclose(summary["hdm"]["dice_p95"]["mean"], 0.3)
    assert math.isclose(summary["hdm"]["dice_p95"]["std"], math.sqrt(0.02))
    assert summary["hdm"]["samples"] == {"mean": 200.0, "std": 100.0, "n": 3}
    assert summary["gradcam"]["dice_p95"] == {"mean": None, "std": None, "n": 0}
    assert summary["gradcam"]["samples"] == {"mean": 5.0, "std": None, "n": 1}


# the command line


def test_evaluate_writes_rows_summary_and_table(cases_folder, detector, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["evaluate", str(cases_folder), "--bundle", str(detector), "--out", str(out), "--seed", "1"]
    code = main([*args, "--methods", "saliency,integrated_gradients"])
    assert code == 0
    printed = capsys.readouterr()
    assert "| saliency |" in printed.out and "| integrated_gradients |" in printed.out
    assert "1 case(s) without a lesion" in printed.out and "for c" in printed.out
    with (out / "cases.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case"], r["method"]) for r in rows] == [
        (case, method) for case in "abc" for method in ("saliency", "integrated_gradients")
    ]
    assert set(METRICS) <= set(rows[0])
    # the ball decides: both maps peak on it; the case without a ball is explained as "normal", unscored
    assert [r["pointing_game"] for r in rows if r["case"] != "c"] == ["1"] * 4
    assert [(r["target"], r["lesions"], r["energy_pointing_game"]) for r in rows if r["case"] == "c"] == [
        ("0", "0", ""),
        ("0", "0", ""),
    ]
    assert all(r["deletion_auc"] != "" for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["cases"] == 3 and summary["cases_without_lesion"] == ["c"]
    gradients = summary["summary"]["integrated_gradients"]
    assert gradients["pointing_game"] == {"mean": 1.0, "std": 0.0, "n": 2}
    assert gradients["deletion_auc"]["n"] == 3 and gradients["samples"]["mean"] > 32
    assert summary["options"] == {"device": "cpu", "seed": 1} and summary["failed"] == []
    assert set(summary["grids"]) == {"localisation", "faithfulness"}


def test_evaluate_runs_hdm_with_a_manifest_target_and_limit(cases_folder, detector, tmp_path, capsys):
    manifest = tmp_path / "cases.csv"
    manifest.write_text(f"study,mask,target\n{cases_folder}/b.nii.gz,{cases_folder}/b_mask.nii.gz,1\n")
    out = tmp_path / "out"
    args = ["evaluate", str(manifest), "--bundle", str(detector), "--out", str(out), "--steps", "8"]
    assert main([*args, "--limit", "1", "--quiet"]) == 0
    assert capsys.readouterr().out == ""
    with (out / "cases.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["method"], row["target"], row["lesions"]) == ("hdm", "1", "1")
    assert float(row["samples"]) > 8 and float(row["seconds"]) > 0
    assert row["pointing_game"] == "1"
    assert json.loads((out / "summary.json").read_text())["options"]["steps"] == 8


def test_evaluate_records_failed_cases_and_keeps_the_others(cases_folder, detector, tmp_path, capsys):
    cases = tmp_path / "cases"
    cases.mkdir()
    for name in ("a", "c"):  # a 3D case with a ball and one without
        for suffix in (".nii.gz", "_mask.nii.gz"):
            (cases / f"{name}{suffix}").write_bytes((cases_folder / f"{name}{suffix}").read_bytes())
    (cases / "b.nii.gz").write_bytes(b"not a NIfTI file")  # unreadable
    (cases / "b_mask.nii.gz").write_bytes((cases_folder / "a_mask.nii.gz").read_bytes())
    flat = np.zeros((30, 20, 1), np.float32)  # a 2D image: the 3D bundle refuses it, for this case only
    nib.save(nib.Nifti1Image(flat, np.eye(4)), cases / "d.nii.gz")
    nib.save(nib.Nifti1Image(flat, np.eye(4)), cases / "d_mask.nii.gz")
    out = tmp_path / "out"
    code = main(
        ["evaluate", str(cases), "--bundle", str(detector), "--out", str(out), "--methods", "saliency"]
    )
    assert code == 1
    printed = capsys.readouterr()
    assert "2 run(s) of a case and a method failed" in printed.out and "| saliency |" in printed.out
    with (out / "cases.csv").open() as handle:
        rows = {r["case"]: r for r in csv.DictReader(handle)}
    assert [rows[c]["status"] for c in "abcd"] == ["ok", "failed", "ok", "failed"]
    assert rows["a"]["pointing_game"] == "1" and rows["a"]["error"] == ""
    assert rows["b"]["error"].startswith(f"{cases / 'b.nii.gz'}: ") and "NIfTI" in rows["b"]["error"]
    assert rows["d"]["error"].startswith(f"{cases / 'd.nii.gz'}: ") and rows["d"]["pointing_game"] == ""
    summary = json.loads((out / "summary.json").read_text())
    assert [(f["case"], f["method"]) for f in summary["failed"]] == [("b", "saliency"), ("d", "saliency")]
    assert summary["summary"]["saliency"]["deletion_auc"]["n"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--methods", "nope"], "unknown explainer 'nope'"),
        (["--limit", "0"], "--limit must be at least 1"),
        (["--target", "x"], "argument --target: invalid int value: 'x'"),
        (["--target", "-1"], "--target must be a class index >= 0"),
    ],
)
def test_evaluate_usage_errors_are_one_line_with_code_2(
    cases_folder, detector, tmp_path, capsys, extra, message
):
    out = tmp_path / "o"
    code = main(["evaluate", str(cases_folder), "--bundle", str(detector), "--out", str(out), *extra])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medmdm: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_evaluate_names_a_missing_mask_and_refuses_a_full_out(detector, tmp_path, capsys):
    cases = tmp_path / "cases"
    cases.mkdir()
    ct_with_ball(cases / "x.nii.gz")
    assert main(["evaluate", str(cases), "--bundle", str(detector), "--out", str(tmp_path / "o")]) == 2
    assert f"{cases / 'x.nii.gz'}: no lesion mask x_mask.nii.gz" in capsys.readouterr().err
    full = tmp_path / "full"
    full.mkdir()
    (full / "kept.txt").write_text("")
    assert main(["evaluate", str(cases), "--bundle", str(detector), "--out", str(full)]) == 2
    assert "not empty" in capsys.readouterr().err


# the benchmark's documentation section and stored results


@pytest.fixture
def quality(monkeypatch):
    spec = importlib.util.spec_from_file_location("quality", REPOSITORY / "benchmarks" / "quality.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "quality", module)
    spec.loader.exec_module(module)
    return module


def test_quality_benchmark_replaces_only_its_section(quality):
    section = f"{quality.START}\nnew\n{quality.END}\n"
    text = "# Benchmarks\n\nkept\n"
    once = quality.replace_section(text, section)
    assert once == "# Benchmarks\n\nkept\n\n" + section
    twice = quality.replace_section(once + "after\n", section.replace("new", "newer"))
    assert twice == "# Benchmarks\n\nkept\n\n" + section.replace("new", "newer") + "after\n"


def test_quality_results_merge_by_run_and_refuse_other_cases(quality, tmp_path):
    def results(cases, runs, value):
        rows = [
            {column: 0.0 for column in quality.CSV_COLUMNS}
            | {"dims": 2, "case": str(case), "method": run, "target": 1, "lesions": 1, "dice_p95": value}
            for run in runs
            for case in cases
        ]
        info = {
            "cases": cases,
            "reference_cases": [],
            "runs": {r: {"method": r, "options": {}} for r in runs},
        }
        gallery = {f"{cases[0]}/{run}": np.full((2, 2), value, np.uint8) for run in runs}
        return quality.Results(2, info, rows, gallery)

    quality.save_results(results([7, 9], ["hdm", "gradcam"], 1), tmp_path)
    stored = quality.load_results(tmp_path, 2)
    assert [(r["case"], r["method"], r["dice_p95"], r["lesions"]) for r in stored.rows][:2] == [
        ("7", "hdm", 1.0, 1),
        ("9", "hdm", 1.0, 1),
    ]
    merged = quality.merge_results(stored, results([7, 9], ["hdm", "rise"], 2))
    assert list(merged.info["runs"]) == ["gradcam", "hdm", "rise"]
    assert {(r["method"], r["dice_p95"]) for r in merged.rows} == {("gradcam", 1), ("hdm", 2), ("rise", 2)}
    assert int(merged.gallery["7/hdm"][0, 0]) == 2 and int(merged.gallery["7/gradcam"][0, 0]) == 1
    with pytest.raises(SystemExit, match="other cases"):
        quality.merge_results(stored, results([7, 8], ["rise"], 2))
