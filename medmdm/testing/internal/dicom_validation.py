"""Validation of DICOM files with ``dciodvfy`` (dicom3tools), for tests.

``dciodvfy`` checks a file against the IOD of its SOP class and prints ``Error - ...``,
``Warning - ...`` and, when it cannot read the file, ``Abort - ...`` lines (on stderr).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

DCIODVFY = "dciodvfy"
ERROR_PREFIXES = ("Error", "Abort")


def dciodvfy_available() -> bool:
    """Whether ``dciodvfy`` is on the PATH."""
    return shutil.which(DCIODVFY) is not None


def validate_dicom(path: str | Path) -> list[str]:
    """The errors ``dciodvfy`` finds in a DICOM file; warnings are not errors.

    Parameters
    ----------
    path : str or Path
        The file.

    Returns
    -------
    list of str
        The ``Error - ...`` lines (and ``Abort - ...`` when the file cannot be read), in order;
        empty for a valid file.

    Raises
    ------
    FileNotFoundError
        ``dciodvfy`` is not installed.
    """
    program = shutil.which(DCIODVFY)
    if program is None:
        raise FileNotFoundError(f"{DCIODVFY} not found on the PATH (install dicom3tools)")
    run = subprocess.run([program, str(path)], capture_output=True, text=True, errors="replace", check=False)
    lines = (run.stdout + run.stderr).splitlines()
    return [line.strip() for line in lines if line.strip().startswith(ERROR_PREFIXES)]
