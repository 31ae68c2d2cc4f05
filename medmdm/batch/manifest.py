"""The files a batch reads and writes besides the studies: input manifests and the results manifest.

An input manifest lists studies, one per row: a CSV file with a header, or a JSONL file of objects, with the
fields ``path`` (required; relative paths are relative to the manifest's folder), ``series_uid`` (the series
to read from a folder holding several) and ``target`` (a class index; empty for the predicted class). A
folder without ``series_uid`` stands for every study found in it.

A study of several co-registered files, one per channel (BraTS' T1, T1c, T2 and FLAIR), lists them in its
``path`` in channel order, separated by ``;`` (``t1.nii.gz;t1c.nii.gz;t2.nii.gz;flair.nii.gz``; in JSONL a
list of paths works too); they are read as one study (:func:`medmdm.io.load_study`).

The results manifest (``results.jsonl`` in the output folder) gets one JSON line per study as the study
ends, written and flushed at once, so a killed run keeps the lines of the studies it finished.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from medmdm.errors import InputError

MANIFEST_SUFFIXES = (".csv", ".jsonl", ".ndjson")
MANIFEST_FIELDS = ("path", "series_uid", "target")
CHANNEL_SEPARATOR = ";"  # between the files of a study's channels in a manifest's path
RESULTS_NAME = "results.jsonl"
NOTE_FINISHED = "finished by an earlier run"
NOTE_NOT_RUN = "not run: the batch stopped at a failure (--fail-fast)"
Status = Literal["ok", "failed", "skipped"]


@dataclass(frozen=True)
class ManifestRow:
    """One row of an input manifest.

    Attributes
    ----------
    path : Path
        The study (the first of its channel files), resolved against the manifest's folder.
    series_uid : str or None
        The series to read from a folder.
    target : int or None
        Class to explain; None for the batch's default.
    channel_paths : tuple of Path
        The files read as the study's channels, in order, when the row lists several; empty otherwise.
    """

    path: Path
    series_uid: str | None = None
    target: int | None = None
    channel_paths: tuple[Path, ...] = ()


@dataclass
class StudyRecord:
    """One line of the results manifest.

    Attributes
    ----------
    key : str
        The study's output folder name.
    input : str
        The study's path.
    status : {"ok", "failed", "skipped"}
        Skipped: finished by an earlier run, the duplicate of another input, or not run after a failure
        with ``--fail-fast`` (``note`` says which).
    error : str
        One-line error of a failed study, ``""`` otherwise.
    seconds : float
        Wall-clock time spent on the study (reading, explaining, writing).
    timings : dict
        Seconds spent reading and preprocessing (``prepare``, overlapping the previous study's
        explanation), waiting for the explainer (``wait``), explaining and writing (``explain_and_write``).
    outputs : list of str
        Output files, relative to the batch's output folder.
    series_uid : str
        The series read, ``""`` when not given.
    target : int, str or None
        What was asked for (None: the predicted class).
    device : str
        Where the study was explained.
    note : str
        Why a study was skipped.
    traceback : str
        The traceback of an unexpected error (not an input, model or option error).
    """

    key: str
    input: str
    status: Status
    error: str = ""
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    series_uid: str = ""
    target: int | str | None = None
    device: str = ""
    note: str = ""
    traceback: str = ""

    def to_json(self) -> str:
        """The record as one line of JSON (the traceback only when there is one)."""
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["timings"] = {name: round(value, 3) for name, value in self.timings.items()}
        if not self.traceback:
            del data["traceback"]
        return json.dumps(data)


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """Read a CSV or JSONL input manifest.

    Raises
    ------
    InputError
        The file cannot be read, has no ``path`` field, an unknown field, an empty path or a target that is
        not a class index; the message names the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: cannot read the manifest ({error})") from error
    entries = _csv_entries(path, text) if path.suffix.lower() == ".csv" else _jsonl_entries(path, text)
    rows = [_row(path, line, entry) for line, entry in entries]
    if not rows:
        raise InputError(f"{path}: the manifest lists no study")
    return rows


def _csv_entries(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip() for f in reader.fieldnames or []]
    _check_fields(path, 1, fields)
    entries = []
    try:
        for record in reader:
            values = {k.strip(): (v or "").strip() for k, v in record.items() if k is not None}
            if any(values.values()):
                entries.append((reader.line_num, values))
    except csv.Error as error:
        raise InputError(f"{path}: line {reader.line_num}: {error}") from error
    return entries


def _jsonl_entries(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    entries = []
    for line, content in enumerate(text.splitlines(), start=1):
        if not content.strip():
            continue
        try:
            entry = json.loads(content)
        except ValueError as error:
            raise InputError(f"{path}: line {line}: not JSON ({error})") from error
        if not isinstance(entry, dict):
            raise InputError(f"{path}: line {line}: expected a JSON object with a path")
        _check_fields(path, line, list(entry))
        entries.append((line, entry))
    return entries


def _check_fields(path: Path, line: int, fields: list[str]) -> None:
    unknown = [f for f in fields if f not in MANIFEST_FIELDS]
    if unknown or "path" not in fields:
        problem = f"unknown field {', '.join(unknown)}" if unknown else "no path field"
        raise InputError(f"{path}: line {line}: {problem}; the fields are {', '.join(MANIFEST_FIELDS)}")


def _row(manifest: Path, line: int, entry: dict[str, Any]) -> ManifestRow:
    where = f"{manifest}: line {line}"
    study = entry.get("path")
    parts = study.split(CHANNEL_SEPARATOR) if isinstance(study, str) else study
    if not isinstance(parts, list) or not all(isinstance(p, str) for p in parts):
        raise InputError(f"{where}: path must be text or a list of paths, got {study!r}")
    if not parts or not all(p.strip() for p in parts):
        raise InputError(f"{where}: empty path" if len(parts) < 2 else f"{where}: an empty path in {study!r}")
    series_uid = entry.get("series_uid")
    if series_uid is not None and not isinstance(series_uid, str):
        raise InputError(f"{where}: series_uid must be text, got {series_uid!r}")
    target = _target(where, entry.get("target"))
    paths = tuple(_resolved(manifest, part) for part in parts)
    return ManifestRow(paths[0], (series_uid or "").strip() or None, target, paths if len(paths) > 1 else ())


def _resolved(manifest: Path, path: str) -> Path:
    """A manifest's path, relative to the manifest's folder unless absolute."""
    resolved = Path(path.strip()).expanduser()
    return resolved if resolved.is_absolute() else manifest.parent / resolved


def _target(where: str, value: Any) -> int | None:
    """A class index from a manifest: an integer, or text of digits; empty or null for none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise InputError(f"{where}: target must be a class index, got {value!r}")


class ResultsLog:
    """The results manifest of one run, written a line per study.

    Parameters
    ----------
    path : str or Path
        Replaced by this run's lines.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file = self.path.open("w", encoding="utf-8")

    def write(self, record: StudyRecord) -> None:
        """Append one record and push it to the disk."""
        self._file.write(record.to_json() + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> ResultsLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results manifest, as dictionaries, in the order written."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]
