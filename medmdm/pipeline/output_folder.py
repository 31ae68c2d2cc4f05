"""A study's output folder appears whole or not at all: outputs are written into a hidden staging folder
beside it (``.<name>.tmp-*``) that is renamed to the output folder when everything is written."""

from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medmdm.errors import InputError

LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(tmp|old)-\w+$")  # what a killed run leaves beside the folders


def check_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuse an output path that is a file, a folder that holds files unless ``overwrite``, or a place where
    nothing can be written (a read-only file system, no permission), before anything runs.

    Raises
    ------
    InputError
        The path cannot be written to as asked.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: output path exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(f"{out_dir}: output folder exists and is not empty (use --overwrite to replace it)")
    existing = next(p for p in (out_dir.absolute(), *out_dir.absolute().parents) if p.exists())
    try:  # where the staging folder will be made, or the nearest folder that exists
        Path(tempfile.mkdtemp(prefix=".medmdm-check-", dir=existing)).rmdir()
    except OSError as error:
        raise InputError(f"{out_dir}: cannot write there ({error.strerror or error})") from None
    return out_dir


@contextlib.contextmanager
def staging_folder(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` that replaces ``out_dir`` if the block succeeds, and is removed
    if it fails."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    except OSError as error:
        raise InputError(f"{out_dir}: cannot write there ({error.strerror or error})") from None
    try:
        yield staging
        staging.chmod(0o755)
        _replace_folder(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_folder(staging: Path, out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    check_out_dir(out_dir, overwrite)
    if not any(out_dir.iterdir()):
        out_dir.rmdir()
        staging.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def clean_leftovers(parent: Path, names: set[str] | None = None) -> list[Path]:
    """Remove the hidden staging folders a killed run left in ``parent`` (those of the output folders named
    ``names`` only, when given); return them."""
    matches = [(p, LEFTOVER.match(p.name)) for p in parent.iterdir() if p.is_dir()]
    leftovers = [p for p, m in matches if m is not None and (names is None or m["name"] in names)]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers
