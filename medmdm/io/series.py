"""DICOM series in a folder: finding the files, grouping them by series, choosing one.

The folder is searched recursively, symbolic links followed: a folder reached twice is read once,
a link that leads back to a folder above it (or to itself) is an error. DICOM files are found by
their preamble or, without one (old archives), by beginning like a data set
(:func:`medmdm.io.dicom.looks_like_dicom`) that then parses and holds pixel data.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import Dataset
from pydicom.misc import is_dicom

from medmdm.errors import InputError
from medmdm.io.dicom import DICOMDIR_SOP_CLASS, looks_like_dicom, read_dataset


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series found in a folder.

    Attributes
    ----------
    series_uid : str
        SeriesInstanceUID.
    modality : str
        Modality (``"CT"``, ``"MR"``, ...), ``""`` when absent.
    description : str
        SeriesDescription, ``""`` when absent.
    study_uid : str
        StudyInstanceUID, ``""`` when absent.
    files : tuple of Path
        The series' image files, sorted by name (not slice order).
    datasets : tuple of pydicom.Dataset
        The files' datasets as the scan read them, in the order of ``files``: values over 4 KB
        (pixel data) are left in the file and read from it when first used.
    """

    series_uid: str
    modality: str
    description: str
    study_uid: str
    files: tuple[Path, ...] = field(default_factory=tuple)
    datasets: tuple[Dataset, ...] = field(default_factory=tuple, repr=False, compare=False)

    @property
    def n_images(self) -> int:
        """Number of images (frames) in the series: one per single-frame file, NumberOfFrames per multi-frame
        file."""
        if not self.datasets:
            return len(self.files)
        return sum(_frame_count(ds) for ds in self.datasets)

    def summary(self) -> str:
        """One-line description: UID, modality, description, number of images (and of files when they
        differ)."""
        images = f"{self.n_images} image{'s' if self.n_images != 1 else ''}"
        if self.n_images != len(self.files):
            images += f" in {len(self.files)} file{'s' if len(self.files) != 1 else ''}"
        return f"{self.series_uid} ({self.modality or '?'}, '{self.description}', {images})"


def _frame_count(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames") or 1))
    except (TypeError, ValueError):  # a damaged value: the file is refused when read, counted as one here
        return 1


def _iter_files(folder: Path) -> Iterator[Path]:
    """The files under ``folder`` (symbolic links followed), each once; a link loop is an error."""
    seen: set[tuple[int, int]] = set()
    for here, subfolders, names in os.walk(folder, followlinks=True):
        place = Path(here)
        info = place.stat()
        seen.add((info.st_dev, info.st_ino))
        kept = []
        for name in sorted(subfolders):
            sub = place / name
            info = sub.stat()
            if sub.is_symlink() and sub.resolve() in (place.resolve(), *place.resolve().parents):
                raise InputError(f"{sub}: symbolic link loop (it leads back to {sub.resolve()})")
            if (info.st_dev, info.st_ino) not in seen:  # a folder linked twice is read once
                seen.add((info.st_dev, info.st_ino))
                kept.append(name)
        subfolders[:] = kept
        for name in sorted(names):
            path = place / name
            if name.startswith("."):
                continue
            if not path.exists() and is_link_loop(path):
                raise InputError(f"{path}: symbolic link loop")
            if path.is_file():
                yield path


def is_link_loop(path: Path) -> bool:
    """Whether resolving a path meets a symbolic link loop."""
    try:
        path.stat()
    except OSError as e:
        return e.errno == errno.ELOOP
    return False


def list_series(folder: str | Path) -> list[SeriesInfo]:
    """The DICOM image series in a folder (searched recursively, symbolic links followed).

    DICOM files are found by their preamble, or (old archives) by beginning like a data set that
    parses and holds pixel data. DICOMDIR files and DICOM files without pixel data (SR, RTSTRUCT,
    ...) are left out.

    Parameters
    ----------
    folder : str or Path
        The folder.

    Returns
    -------
    list of SeriesInfo
        Sorted by modality, description, then UID.

    Raises
    ------
    InputError
        The folder does not exist, a DICOM file in it (with preamble) cannot be read, or a symbolic
        link in it loops.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for p in sorted(_iter_files(folder)):
        if not looks_like_dicom(p):
            continue
        try:
            ds = read_dataset(p, header_only=True)
        except InputError:
            if is_dicom(p):
                raise
            continue  # began like a data set but is none: not DICOM
        if ds.file_meta.get("MediaStorageSOPClassUID", "") == DICOMDIR_SOP_CLASS or "PixelData" not in ds:
            continue
        groups.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))
    infos = []
    for uid, members in groups.items():
        first = members[0][1]
        infos.append(
            SeriesInfo(
                series_uid=uid,
                modality=str(first.get("Modality", "")),
                description=str(first.get("SeriesDescription", "")),
                study_uid=str(first.get("StudyInstanceUID", "")),
                files=tuple(p for p, _ in members),
                datasets=tuple(ds for _, ds in members),
            )
        )
    return sorted(infos, key=lambda s: (s.modality, s.description, s.series_uid))


def select_series(folder: Path, series_uid: str | None) -> SeriesInfo:
    """The one series to read from a folder.

    Raises
    ------
    InputError
        No DICOM image in the folder; ``series_uid`` not found; several series and no ``series_uid``.
    """
    series = list_series(folder)
    if not series:
        raise InputError(f"{folder}: no DICOM image found in the folder")
    listing = "; ".join(s.summary() for s in series)
    if series_uid is not None:
        for s in series:
            if s.series_uid == series_uid:
                return s
        raise InputError(f"{folder}: no series {series_uid}; found {listing}")
    if len(series) > 1:
        raise InputError(f"{folder}: {len(series)} series; choose one with --series UID: {listing}")
    return series[0]
