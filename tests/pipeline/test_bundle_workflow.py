"""The MONAI Bundle workflow's settings, and its run of a sliding-window bundle against the CLI's (the other
entry points: tests/pipeline/test_entry_points.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from medmdm.cli.main import main
from medmdm.errors import OptionError
from medmdm.pipeline.bundle_workflow import EXPLAIN_CONFIG, explain_in_bundle_run
from medmdm.testing.internal.bundles import (
    ARGMAX,
    SLIDING_WINDOW,
    blob_bundle,
    blob_config,
    ct_with_ball,
    detector_bundle,
)

SEGMENTER = {"_target_": "scripts.net.BlobSegmenter"}


def test_settings_are_checked(tmp_path):
    root, out = str(detector_bundle(tmp_path / "bundle")), str(tmp_path / "o")
    with pytest.raises(OptionError, match="no study given"):
        explain_in_bundle_run("", root, None, None, out)
    with pytest.raises(OptionError, match="steps is an option of hdm; set it under options"):
        explain_in_bundle_run("x.nii", root, None, None, out, {"steps": 3})
    with pytest.raises(OptionError, match="unknown setting 'metod' \\(did you mean 'method'\\?\\)"):
        explain_in_bundle_run("x.nii", root, None, None, out, {"metod": "dm"})
    with pytest.raises(OptionError, match="unknown option 'stpes' for hdm \\(did you mean 'steps'\\?\\)"):
        explain_in_bundle_run(
            "x.nii", str(detector_bundle), None, None, str(tmp_path / "o"), {"options": {"stpes": 3}}
        )


def test_bundle_run_runs_the_network_through_the_bundles_inferer(tmp_path):
    """A network that refuses sizes not divisible by 4 behind a 16^3 sliding window, on a 47 x 36 x 30
    network grid: ``python -m monai.bundle run`` explains the region through the bundle's inferer and its
    postprocessing (argmax) as ``medmdm explain --bundle`` does, to the same map."""
    root = blob_bundle(tmp_path / "sw", blob_config(SEGMENTER, inferer=SLIDING_WINDOW, postprocessing=ARGMAX))
    study, _ = ct_with_ball(tmp_path / "ct.nii.gz", shape=(64, 60, 20), centre=(12, 14, 6))
    explained, ran = tmp_path / "explain", tmp_path / "run"
    assert main(["explain", str(study), "--bundle", str(root), "--out", str(explained), "--quiet",
                 "--method", "saliency", "--target", "region:1", "--format", "nifti,json"]) == 0  # fmt: skip
    command = [
        sys.executable, "-m", "monai.bundle", "run",
        "--config_file", f"['{root}/configs/inference.json','{EXPLAIN_CONFIG}']",
        "--bundle_root", str(root), "--study", str(study), "--output_dir", str(ran),
        "--medmdm#method", "saliency", "--medmdm#target", "region:1", "--medmdm#formats", "nifti,json",
    ]  # fmt: skip
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    got, expected = nib.load(ran / "saliency.nii.gz"), nib.load(explained / "saliency.nii.gz")
    assert got.get_fdata().max() > 0
    np.testing.assert_allclose(got.get_fdata(), expected.get_fdata(), atol=1e-6)
    np.testing.assert_array_equal(got.affine, expected.affine)
    report, alone = (json.loads((folder / "report.json").read_text()) for folder in (ran, explained))
    assert report["target"] == alone["target"]
    assert report["model"]["inferer"] == alone["model"]["inferer"] == "SlidingWindowInferer"
