"""The MONAI Bundle workflow's settings (its run against the CLI: tests/pipeline/test_entry_points.py)."""

from __future__ import annotations

import pytest

from medmdm.errors import OptionError
from medmdm.pipeline.bundle_workflow import explain_in_bundle_run
from medmdm.testing.internal.bundles import detector_bundle


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
