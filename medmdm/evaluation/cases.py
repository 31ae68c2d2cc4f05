"""Finding evaluation cases: studies with a lesion mask on their grid, in a folder or a CSV manifest.

A folder holds studies (a DICOM file ``*.dcm``/``*.dicom``, a DICOM series subfolder, a NIfTI file
``*.nii``/``*.nii.gz``), each with its lesion mask beside it, named ``<study stem>_mask.nii.gz``: the
stem of ``a.dcm``, ``a.nii.gz`` and of the folder ``a/`` is ``a``. Other files are ignored. A manifest is
a CSV file with a header and the columns ``study`` and ``mask``, and optionally ``target`` (a class
index; empty for the predicted class); relative paths are taken from the manifest's folder, and an
empty ``mask`` cell means the study has no lesion.

A mask is nonzero inside the lesions and lies on the study's grid: the same spatial shape and the
same RAS affine (as :func:`medmdm.io.load_study` reads both), which is what
:func:`medmdm.writers.write_nifti_overlay` writes with the study as reference.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medmdm.errors import InputError
from medmdm.io import Study, load_study

MASK_SUFFIX = "_mask.nii.gz"
STUDY_SUFFIXES = (".dcm", ".dicom", ".nii", ".nii.gz")
AFFINE_TOLERANCE_MM = 1e-3


@dataclass(frozen=True)
class EvaluationCase:
    """One study to explain and the lesions its map should find.

    Attributes
    ----------
    name : str
        The study's stem (folder) or its manifest row's study path as written.
    study : Path
        DICOM file, DICOM series folder or NIfTI file.
    mask : Path or None
        Lesion mask on the study's grid; None for a study without a lesion.
    target : int or None
        Class to explain; None explains the class the model predicts.
    """

    name: str
    study: Path
    mask: Path | None
    target: int | None = None


def find_cases(path: str | Path) -> list[EvaluationCase]:
    """The cases of a folder (sorted by name) or of a CSV manifest (in row order).

    Parameters
    ----------
    path : str or Path
        A folder of studies with masks beside them, or a ``.csv`` manifest.

    Returns
    -------
    list of EvaluationCase

    Raises
    ------
    InputError
        A missing path, a study without its mask, a manifest without the needed columns or naming
        a missing file, or no case at all.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    cases = _folder_cases(path) if path.is_dir() else read_manifest(path)
    if not cases:
        raise InputError(f"{path}: no studies found (expected DICOM, DICOM series folders or NIfTI)")
    return cases


def study_stem(path: Path) -> str:
    """``a`` for ``a.dcm``, ``a.nii.gz``, ``a.nii`` and the folder ``a``."""
    name = path.name
    for suffix in STUDY_SUFFIXES:
        if not path.is_dir() and name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _folder_cases(folder: Path) -> list[EvaluationCase]:
    cases = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name.startswith(".") or name.endswith(MASK_SUFFIX):
            continue
        if not entry.is_dir() and not name.lower().endswith(STUDY_SUFFIXES):
            continue
        stem = study_stem(entry)
        mask = folder / f"{stem}{MASK_SUFFIX}"
        if not mask.is_file():
            raise InputError(f"{entry}: no lesion mask {mask.name} beside it")
        cases.append(EvaluationCase(name=stem, study=entry, mask=mask))
    return cases


def read_manifest(path: str | Path) -> list[EvaluationCase]:
    """The cases of a CSV manifest with columns ``study``, ``mask`` and optionally ``target``.

    Raises
    ------
    InputError
        An unreadable file, missing columns, a bad target or a path that does not exist; the
        message names the manifest and the row.
    """
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
            columns = set(rows[0]) if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: cannot read the manifest ({type(error).__name__}: {error})") from error
    missing = {"study", "mask"} - columns
    if rows and missing:
        raise InputError(f"{path}: the manifest has no column {', '.join(sorted(missing))}")
    cases = []
    for row_number, row in enumerate(rows, start=2):
        where = f"{path}, row {row_number}"
        study_text = (row["study"] or "").strip()
        if not study_text:
            raise InputError(f"{where}: empty study")
        study = _resolve(path.parent, study_text, where)
        mask_text = (row["mask"] or "").strip()
        mask = _resolve(path.parent, mask_text, where) if mask_text else None
        cases.append(EvaluationCase(study_text, study, mask, _target(row.get("target"), where)))
    return cases


def _resolve(base: Path, text: str, where: str) -> Path:
    path = Path(text).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.exists():
        raise InputError(f"{where}: {path} does not exist")
    return path


def _target(text: str | None, where: str) -> int | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise InputError(f"{where}: target must be a class index, got {text!r}") from None
    if value < 0:
        raise InputError(f"{where}: target must be a class index >= 0, got {value}")
    return value


def load_mask(path: str | Path | None, study: Study) -> torch.Tensor:
    """A lesion mask as a ``(*spatial)`` bool tensor on the study's grid.

    Parameters
    ----------
    path : str, Path or None
        A NIfTI mask, nonzero inside the lesions; None gives an empty mask (no lesion).
    study : Study
        The study the mask belongs to.

    Raises
    ------
    InputError
        An unreadable mask, one with several channels, another shape, or an affine more than
        ``AFFINE_TOLERANCE_MM`` away from the study's.
    """
    spatial = tuple(study.size)
    if path is None:
        return torch.zeros(spatial, dtype=torch.bool)
    mask = load_study(path)
    if mask.image.shape[0] != 1:
        raise InputError(f"{path}: a mask must have one channel, this one has {mask.image.shape[0]}")
    if tuple(mask.size) != spatial:
        raise InputError(
            f"{path}: mask of shape {tuple(mask.size)} is not on the grid of {study.path} (shape {spatial})"
        )
    dims = len(spatial)
    mask_affine = np.asarray(mask.affine, dtype=float)
    study_affine = np.asarray(study.affine, dtype=float)
    columns = [*range(dims), 3]  # the spatial steps and the origin; a 2D image's normal is free
    offset = float(np.abs(mask_affine[:3, columns] - study_affine[:3, columns]).max())
    if offset > AFFINE_TOLERANCE_MM:
        raise InputError(
            f"{path}: mask affine differs from that of {study.path} by up to {offset:.4g} mm; "
            "the mask must lie on the study's grid"
        )
    return mask.image[0].as_tensor() != 0
