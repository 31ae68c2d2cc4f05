"""``medmdm explain``, ``medmdm batch``, ``medmdm evaluate`` and ``python -m monai.bundle run`` run the same
stages: for one study and one seed they give the same map, the same report and the same scores."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medmdm.cli.main import main
from medmdm.evaluation import localisation_scores
from medmdm.io import load_study
from medmdm.pipeline.bundle_workflow import EXPLAIN_CONFIG
from medmdm.testing.internal.bundles import ct_with_ball, detector_bundle
from medmdm.writers import write_nifti_overlay

OPTIONS = ["--seed", "4", "--steps", "10", "--format", "nifti,png,json"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The output folder of each entry point, and the study, its mask and the evaluate folder."""
    root = tmp_path_factory.mktemp("entry")
    (root / "cases").mkdir()
    study, ball = ct_with_ball(root / "cases" / "ct.nii.gz")
    mask = write_nifti_overlay(torch.tensor(ball, dtype=torch.float32), load_study(study).image,
                               root / "cases" / "ct_mask.nii.gz")  # fmt: skip
    bundle = detector_bundle(root / "bundle")
    out = {"study": study, "mask": mask}
    out["explain"] = root / "explain"
    assert main(["explain", str(study), "--bundle", str(bundle), "--out", str(out["explain"]), *OPTIONS,
                 "--quiet"]) == 0  # fmt: skip
    assert main(["batch", str(study), "--bundle", str(bundle), "--out", str(root / "batch"), *OPTIONS,
                 "--quiet"]) == 0  # fmt: skip
    (out["batch"],) = [p for p in (root / "batch").iterdir() if p.is_dir() and not p.name.startswith(".")]
    out["evaluate"] = root / "evaluate"
    assert main(["evaluate", str(study.parent), "--bundle", str(bundle), "--out", str(out["evaluate"]),
                 "--seed", "4", "--steps", "10", "--quiet"]) == 0  # fmt: skip
    out["bundle-run"] = root / "run"
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", f"['{bundle}/configs/inference.json','{EXPLAIN_CONFIG}']",
        "--bundle_root", str(bundle),
        "--study", str(study),
        "--output_dir", str(out["bundle-run"]),
        "--medmdm#options#seed", "4",
        "--medmdm#options#steps", "10",
        "--medmdm#formats", "nifti,png,json",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    return out


@pytest.mark.parametrize("entry", ["batch", "bundle-run"])
def test_the_same_map_and_report_as_explain(runs, entry):
    folder, reference = runs[entry], runs["explain"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in reference.iterdir())
    got, expected = nib.load(folder / "saliency.nii.gz"), nib.load(reference / "saliency.nii.gz")
    np.testing.assert_allclose(got.get_fdata(), expected.get_fdata(), atol=1e-6)
    np.testing.assert_array_equal(got.affine, expected.affine)
    report = json.loads((folder / "report.json").read_text())
    alone = json.loads((reference / "report.json").read_text())
    for key in ("input", "method", "target", "outputs", "device"):
        assert report[key] == alone[key], key
    for one in (report, alone):
        one["model"].pop("config_files")  # MONAI's run does not tell which files it read
    assert report["model"] == alone["model"]
    assert report["explanation"]["samples"] == alone["explanation"]["samples"]


def test_evaluate_scores_the_map_explain_writes(runs):
    with (runs["evaluate"] / "cases.csv").open() as handle:
        (row,) = list(csv.DictReader(handle))
    assert (row["case"], row["method"], row["status"]) == ("ct", "hdm", "ok")
    saliency = torch.from_numpy(nib.load(runs["explain"] / "saliency.nii.gz").get_fdata()).float()
    mask = torch.from_numpy(nib.load(runs["mask"]).get_fdata() > 0)
    scores = localisation_scores(saliency[None, None], mask[None])
    for name, values in scores.items():
        assert float(row[name]) == pytest.approx(float(values[0]), abs=1e-4), name
    report = json.loads((runs["explain"] / "report.json").read_text())
    assert int(row["target"]) == report["target"]["index"]
