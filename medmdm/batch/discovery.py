"""Finding the studies of a batch and giving each a stable key.

The input is a folder (searched recursively), one DICOM, NIfTI, PNG, JPEG or TIFF file, or a manifest (CSV
or JSONL, see :mod:`medmdm.batch.manifest`). A folder yields one study per DICOM series (wherever its files
lie), one per NIfTI file, one per PNG, JPEG or TIFF image (found by content), and one per DICOM file without
a SeriesInstanceUID; a manifest row may list several files, the channels of one study. In a folder, files
named as masks or labels (``*_mask.*``, ``*_label*``) are not studies (name them in a manifest to explain
them), and a NIfTI file with the name of a DICOM study beside it (``ct.nii.gz`` and the series folder
``ct/`` or ``ct.dcm``) is the same study: ``prefer`` says which of the two is explained.

Keys name the output folders, so they depend on the data only: a DICOM series is keyed by its
SeriesInstanceUID (made safe for a folder name), a NIfTI file, an image or a DICOM file without a series UID
by its name and a short SHA-256 of its content, a study of several files by the first's name and a SHA-256
of their contents in order. An input that cannot be read still gets a key (from its name and
content, or its path when it does not exist) and is listed with the error, so a batch reports it as failed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from medmdm.batch.manifest import MANIFEST_SUFFIXES, ManifestRow, read_manifest
from medmdm.errors import InputError, OptionError
from medmdm.io.dicom import DICOMDIR_SOP_CLASS, looks_like_dicom, read_dataset
from medmdm.io.images import IMAGE_SUFFIXES, looks_like_image
from medmdm.io.reader import NIFTI_SUFFIXES

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
PREFERENCES = ("dicom", "nifti", "both")
HASH_CHARS = 12
MAX_KEY_CHARS = 120


@dataclass(frozen=True)
class StudyInput:
    """One study to explain.

    Attributes
    ----------
    key : str
        Stable name of the study's output folder.
    path : Path
        What :func:`medmdm.io.load_study` reads: a DICOM file, a folder holding the series, a NIfTI file, an
        image (the first of ``channel_paths`` when there are several).
    series_uid : str or None
        The series to read from ``path`` when it is a folder.
    target : int or None
        Class to explain; None: the batch's default (the predicted class unless set).
    error : str
        Why the input cannot be read, found while listing it; ``""`` when it looks readable.
    note : str
        Why the input is not explained (the NIfTI copy of a DICOM study...); ``""`` when it is.
    channel_paths : tuple of Path
        The files read together as the study's channels, in order, when a manifest row lists several;
        empty otherwise.
    """

    key: str
    path: Path
    series_uid: str | None = None
    target: int | None = None
    error: str = ""
    note: str = ""
    channel_paths: tuple[Path, ...] = ()

    @property
    def source(self) -> Path | tuple[Path, ...]:
        """What :func:`medmdm.io.load_study` reads: ``channel_paths`` when there are several, else
        ``path``."""
        return self.channel_paths or self.path


@dataclass
class Discovery:
    """What :func:`discover` found.

    Attributes
    ----------
    studies : list of StudyInput
        In a deterministic order; two entries share a key when the same study was found twice.
    ignored : list of Path
        Files in the folders that are neither DICOM images nor NIfTI files (DICOMDIR, reports, notes...).
    """

    studies: list[StudyInput] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)


def safe_name(text: str) -> str:
    """``text`` as a folder name: letters, digits, ``.``, ``_`` and ``-`` only, never hidden, never empty."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", text).lstrip(".")[:MAX_KEY_CHARS]
    return name or "study"


def content_key(path: Path, *more: Path) -> str:
    """``<name>-<sha256 of the content, 12 hex digits>`` for a file; with ``more`` files, the first's name and
    the hash of all their contents, in order (the channels of one study)."""
    digest = hashlib.sha256()
    for file in (path, *more):
        with file.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                digest.update(block)
    return f"{safe_name(_stem(path))}-{digest.hexdigest()[:HASH_CHARS]}"


def discover(source: str | Path, *, exclude: str | Path | None = None, prefer: str = "dicom") -> Discovery:
    """The studies of a folder, a file or a manifest.

    Parameters
    ----------
    source : str or Path
        A folder, a DICOM file, a NIfTI file, or a ``.csv``/``.jsonl`` manifest.
    exclude : str or Path, optional
        A folder left out of the search (the batch's own output folder).
    prefer : {"dicom", "nifti", "both"}
        Which of a DICOM study and the NIfTI file of the same name beside it is explained (``both``: each).

    Returns
    -------
    Discovery

    Raises
    ------
    InputError
        ``source`` does not exist, or a manifest cannot be read.
    """
    source = Path(source)
    if prefer not in PREFERENCES:
        raise OptionError(f"--prefer must be one of {', '.join(PREFERENCES)}, got {prefer!r}")
    if not source.exists():
        raise InputError(f"{source}: no such file or folder")
    excluded = Path(exclude).resolve() if exclude is not None else None
    if source.is_file() and source.name.lower().endswith(MANIFEST_SUFFIXES):
        return _from_manifest(read_manifest(source), excluded)
    found = Discovery()
    _scan(_files(source, excluded), found)
    if prefer != "both":
        _pair_copies(found, prefer)
    return found


def is_mask_name(path: Path) -> bool:
    """Whether a file is named as a mask or a label map (``*_mask.*``, ``*_label*``), not a study."""
    stem = _stem(path).lower()
    return stem.endswith("_mask") or "_label" in stem


def _pair_copies(found: Discovery, prefer: str) -> None:
    """Mark the NIfTI file or the DICOM study of each same-named pair in one folder as not explained."""

    def place(item: StudyInput) -> tuple[Path, str]:
        return item.path.parent, _stem(item.path)

    nifti = {place(s): i for i, s in enumerate(found.studies) if s.path.name.lower().endswith(NIFTI_SUFFIXES)}
    for i, item in enumerate(found.studies):
        j = nifti.get(place(item))
        if j is None or j == i or item.error or found.studies[j].error:
            continue
        dropped, kept = (j, i) if prefer == "dicom" else (i, j)
        note = f"the same study as {found.studies[kept].path} (--prefer {prefer})"
        found.studies[dropped] = replace(found.studies[dropped], note=note)


def _from_manifest(rows: list[ManifestRow], excluded: Path | None) -> Discovery:
    found = Discovery()
    for row in rows:
        if row.channel_paths:
            found.studies.append(_channels_input(row))
        elif not row.path.exists():
            error = f"{row.path}: no such file or folder"
            found.studies.append(StudyInput(_path_key(row.path), row.path, row.series_uid, row.target, error))
        elif row.series_uid is not None:
            found.studies.append(StudyInput(safe_name(row.series_uid), row.path, row.series_uid, row.target))
        else:
            listed = Discovery()
            _scan(_files(row.path, excluded), listed)
            found.studies.extend(replace(s, target=row.target) for s in listed.studies)
            found.ignored.extend(listed.ignored)
    return found


def _channels_input(row: ManifestRow) -> StudyInput:
    """The study of a manifest row that lists several files (its channels), keyed by their contents."""
    paths = row.channel_paths
    item = StudyInput(_path_key(row.path), row.path, row.series_uid, row.target, channel_paths=paths)
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        return replace(item, error=f"{missing}: no such file")
    try:
        return replace(item, key=content_key(*paths))
    except OSError as error:
        return replace(item, error=f"{error.filename}: cannot read ({error.strerror})")


def _files(source: Path, excluded: Path | None) -> Iterator[Path]:
    """Files under ``source`` (or ``source`` itself), hidden files and folders and ``excluded`` left out."""
    if source.is_file():
        yield source
        return
    for folder, subfolders, names in os.walk(source):
        here = Path(folder)
        subfolders[:] = sorted(
            d for d in subfolders if not d.startswith(".") and (here / d).resolve() != excluded
        )
        yield from (here / n for n in sorted(names) if not n.startswith(".") and not is_mask_name(here / n))


def _scan(files: Iterable[Path], found: Discovery) -> None:
    """Sort files into NIfTI studies, DICOM series, single DICOM files and unreadable inputs."""
    series: dict[str, list[tuple[Path, str]]] = {}
    studies: list[StudyInput] = []
    for path in files:
        try:
            _sort_file(path, series, studies, found.ignored)
        except OSError as error:
            studies.append(StudyInput(_path_key(path), path, error=f"{path}: cannot read ({error.strerror})"))
    for uid, members in series.items():
        studies.extend(_series_inputs(uid, members))
    found.studies.extend(sorted(studies, key=lambda s: (str(s.path), s.key)))


def _sort_file(
    path: Path, series: dict[str, list[tuple[Path, str]]], studies: list[StudyInput], ignored: list[Path]
) -> None:
    lower = path.name.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        studies.append(StudyInput(content_key(path), path))
    elif looks_like_dicom(path):
        try:
            ds = read_dataset(path, header_only=True)
        except InputError as error:
            studies.append(StudyInput(content_key(path), path, error=str(error)))
            return
        if ds.file_meta.get("MediaStorageSOPClassUID", "") == DICOMDIR_SOP_CLASS or "PixelData" not in ds:
            ignored.append(path)
        elif uid := str(ds.get("SeriesInstanceUID", "")):
            series.setdefault(uid, []).append((path, str(ds.get("SOPInstanceUID", ""))))
        else:
            studies.append(StudyInput(content_key(path), path))
    elif looks_like_image(path):
        studies.append(StudyInput(content_key(path), path))
    elif lower.endswith(DICOM_SUFFIXES):
        error = f"{path}: neither DICOM nor NIfTI (no DICOM preamble)"
        studies.append(StudyInput(content_key(path), path, error=error))
    else:
        ignored.append(path)


def _series_inputs(uid: str, members: list[tuple[Path, str]]) -> list[StudyInput]:
    """One input per series; one per folder when the folders hold copies of the same images."""
    key = safe_name(uid)
    folders: dict[Path, list[tuple[Path, str]]] = {}
    for path, sop in members:
        folders.setdefault(path.parent, []).append((path, sop))

    def where(group: list[tuple[Path, str]]) -> Path:
        return group[0][0] if len(group) == 1 else group[0][0].parent

    if len(folders) == 1:
        return [StudyInput(key, where(members), uid)]
    instances = [sop for _, sop in members]
    if len(set(instances)) < len(instances):  # the same images in several folders: copies
        return [StudyInput(key, where(group), uid) for group in folders.values()]
    common = Path(os.path.commonpath([str(p) for p in folders]))
    return [StudyInput(key, common, uid)]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, *DICOM_SUFFIXES, *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _path_key(path: Path) -> str:
    """A key for an input whose content cannot be read: its name and a hash of its path."""
    return f"{safe_name(_stem(path))}-{hashlib.sha256(str(path).encode()).hexdigest()[:HASH_CHARS]}"
