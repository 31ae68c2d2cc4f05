"""Fixtures: bundle folders built in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from medmdm.testing.internal.bundles import detector_bundle as write_detector_bundle


@pytest.fixture
def detector_bundle(tmp_path: Path) -> Path:
    """3D bundle: Orientationd, Spacingd, ScaleIntensityRanged and Resized before a lesion detector."""
    return write_detector_bundle(tmp_path / "detector")
