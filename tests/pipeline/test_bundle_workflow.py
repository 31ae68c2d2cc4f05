"""``python -m monai.bundle run`` with medmdm's explain config writes what ``medmdm explain`` writes."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from medmdm.bundle.workflow import EXPLAIN_CONFIG, explain_in_bundle_run
from medmdm.cli.main import main
from medmdm.errors import OptionError
from medmdm.testing.bundles import ct_with_ball


def test_bundle_run_writes_the_same_outputs_as_the_cli(detector_bundle, tmp_path):
    study, _ = ct_with_ball(tmp_path / "ct.nii.gz")
    run_out, cli_out = tmp_path / "run", tmp_path / "cli"
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", f"['{detector_bundle}/configs/inference.json','{EXPLAIN_CONFIG}']",
        "--bundle_root", str(detector_bundle),
        "--study", str(study),
        "--output_dir", str(run_out),
        "--medmdm#options#seed", "4",
        "--medmdm#options#steps", "20",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    cli = ["explain", str(study), "--bundle", str(detector_bundle), "--out", str(cli_out), "--seed", "4",
           "--steps", "20", "--quiet"]  # fmt: skip
    assert main(cli) == 0

    run_report = json.loads((run_out / "report.json").read_text())
    cli_report = json.loads((cli_out / "report.json").read_text())
    assert run_report["outputs"] == cli_report["outputs"]
    assert sorted(p.name for p in run_out.iterdir()) == sorted(p.name for p in cli_out.iterdir())
    for key in ("method", "target"):
        assert run_report[key] == cli_report[key]
    run_report["model"].pop("config_files")  # MONAI's run does not tell which files it read
    cli_report["model"].pop("config_files")
    assert run_report["model"] == cli_report["model"]
    run_map = nib.load(run_out / "saliency.nii.gz")
    cli_map = nib.load(cli_out / "saliency.nii.gz")
    np.testing.assert_allclose(run_map.get_fdata(), cli_map.get_fdata(), atol=1e-6)
    np.testing.assert_array_equal(run_map.affine, cli_map.affine)


def test_settings_are_checked(detector_bundle, tmp_path):
    with pytest.raises(OptionError, match="no study given"):
        explain_in_bundle_run("", str(detector_bundle), None, None, str(tmp_path / "o"))
    with pytest.raises(OptionError, match="unknown medmdm settings steps"):
        explain_in_bundle_run("x.nii", str(detector_bundle), None, None, str(tmp_path / "o"), {"steps": 3})
