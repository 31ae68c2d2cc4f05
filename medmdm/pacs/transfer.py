"""Reading a study out of a PACS into a temporary folder, and sending DICOM files into one."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pydicom
import requests
from pydicom.errors import InvalidDicomError

from medmdm.pacs import dicomweb, dimse
from medmdm.pacs.location import PacsError, PacsLocation, credentials, parse_url
from medmdm.pacs.sent import SendReport, SentObject


def retrieve(url: str, study_uid: str, series_uid: str | None, folder: Path) -> list[Path]:
    """Copy a study's series (or one series) from a PACS into ``folder``, one file per instance.

    Parameters
    ----------
    url : str
        ``dicomweb://host:port/path`` or ``dicom://AET@host:port`` (:mod:`medmdm.pacs.location`).
    study_uid : str
        The StudyInstanceUID.
    series_uid : str, optional
        One series of the study; default every series (the folder is then read as a study folder is).
    folder : Path
        An existing folder.

    Raises
    ------
    PacsError
        A server that cannot be reached or fails, a study or series it does not hold.
    """
    location = parse_url(url)
    who = credentials(location)
    if not study_uid:
        raise PacsError(f"{location.url}: name the study to read with --study UID")
    try:
        if location.is_dicomweb:
            web = dicomweb.client(location, who)
            series = _chosen(location, study_uid, series_uid, dicomweb.find_series(web, study_uid))
            paths = []
            for uid in series:
                for ds in dicomweb.retrieve_series(web, study_uid, uid):
                    paths.append(folder / f"{len(paths):05d}.dcm")
                    ds.save_as(paths[-1], enforce_file_format=True)
            return paths
        found = dimse.find_series(location, who, study_uid)
        chosen = _chosen(location, study_uid, series_uid, list(found))
        return dimse.retrieve_series(location, who, study_uid, {uid: found[uid] for uid in chosen}, folder)
    except requests.RequestException as error:
        raise dicomweb.http_failure(location, error) from None


def _chosen(location: PacsLocation, study_uid: str, series_uid: str | None, series: list[str]) -> list[str]:
    url = location.url
    if not series:
        raise PacsError(f"{url}: no study {study_uid}")
    if series_uid is None:
        return series
    if series_uid not in series:
        raise PacsError(f"{url}: study {study_uid} has no series {series_uid} ({len(series)} series)")
    return [series_uid]


@contextmanager
def retrieved(url: str, study_uid: str, series_uid: str | None = None) -> Iterator[Path]:
    """A temporary folder holding the study retrieved by :func:`retrieve`, removed after."""
    with tempfile.TemporaryDirectory(prefix="medmdm-pacs-") as folder:
        retrieve(url, study_uid, series_uid, Path(folder))
        yield Path(folder)


def study_url(url: str, study_uid: str, series_uid: str | None = None) -> str:
    """What a study read from a PACS is recorded as: ``<url>/studies/<uid>[/series/<uid>]``, the URL without
    user information."""
    series = f"/series/{series_uid}" if series_uid else ""
    return f"{parse_url(url).url}/studies/{study_uid}{series}"


def send(url: str, folder: Path, paths: Sequence[str]) -> SendReport:
    """Send DICOM files to a PACS by STOW-RS (DICOMweb) or C-STORE (a DICOM node).

    Parameters
    ----------
    url : str
        Where to (:mod:`medmdm.pacs.location`).
    folder : Path
        The folder ``paths`` are relative to.
    paths : sequence of str
        The DICOM files, relative to ``folder`` (as recorded).

    Returns
    -------
    SendReport
        Per object whether the server accepted it; a server that cannot be reached is its ``error``, not an
        exception, so that the caller keeps its outputs and records what happened.

    Raises
    ------
    PacsError
        A URL that does not parse or bad credentials settings (nothing was sent).
    """
    location = parse_url(url)
    who = credentials(location)
    protocol = "STOW-RS" if location.is_dicomweb else "C-STORE"
    started = time.perf_counter()
    datasets = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(folder / path))
        except (OSError, InvalidDicomError) as error:
            raise PacsError(f"{folder / path}: cannot be sent ({type(error).__name__})") from None
    try:
        if location.is_dicomweb:
            refused = dicomweb.store(dicomweb.client(location, who), datasets)
        else:
            refused = dimse.store(location, who, datasets)
    except (requests.RequestException, PacsError) as error:
        if isinstance(error, requests.RequestException):
            error = dicomweb.http_failure(location, error)
        return SendReport(location.url, protocol, error=str(error), seconds=time.perf_counter() - started)
    objects = tuple(
        SentObject(
            path,
            str(ds.SOPInstanceUID),
            str(ds.SOPClassUID),
            str(ds.SOPInstanceUID) not in refused,
            refused.get(str(ds.SOPInstanceUID), ""),
        )
        for path, ds in zip(paths, datasets, strict=True)
    )
    return SendReport(location.url, protocol, objects, seconds=time.perf_counter() - started)
