"""The JSON report of one explanation, and the versions of the packages that made it."""

from __future__ import annotations

import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from medmdm.writers.atomic import atomic_path

REPORTED_PACKAGES = ("medmdm", "torch", "monai", "numpy", "pydicom", "highdicom", "nibabel", "matplotlib")


def package_versions() -> dict[str, str]:
    """Python's and the main packages' versions (``""`` for one that is not installed)."""
    versions = {"python": platform.python_version()}
    for name in REPORTED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = ""
    return versions


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write a report as indented JSON, atomically.

    Parameters
    ----------
    report : dict
        JSON-ready values only (str, numbers, bool, None, lists, dicts).
    path : str or Path
        The ``.json`` file; its folder must exist.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    text = json.dumps(report, indent=2, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
    return path
