"""``medmdm.testing`` exports the user-facing models and images only; ``internal`` stays apart."""

from __future__ import annotations

import subprocess
import sys

import medmdm.testing

USER_FACING = [
    "BoxModel",
    "EitherRegionModel",
    "PrototypeNet",
    "Region",
    "ThresholdSegmenter",
    "ViTClassifier",
    "box_image",
    "lesion_cnn",
    "lesion_images",
    "region_mask",
    "train_lesion_cnn",
]


def test_all_is_exactly_the_user_facing_names() -> None:
    assert sorted(medmdm.testing.__all__) == USER_FACING
    for name in USER_FACING:
        assert getattr(medmdm.testing, name) is not None


def test_importing_testing_does_not_import_internal() -> None:
    code = (
        "import sys, medmdm.testing; "
        "print(sorted(m for m in sys.modules if m.startswith('medmdm.testing.internal')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_internal_imports_nothing_but_itself() -> None:
    code = (
        "import sys, medmdm.testing.internal; "
        "print(sorted(m for m in sys.modules if m.startswith('medmdm.testing.internal.')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
