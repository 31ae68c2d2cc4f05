"""Atomic file output: write under a temporary name, rename onto the final name on success."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextlib.contextmanager
def atomic_path(final: str | Path) -> Iterator[Path]:
    """A temporary path beside ``final``, moved onto ``final`` only if the block succeeds.

    The temporary file is created (empty) in ``final``'s folder as ``.{name}.tmp-XXXXXXXX{suffix}``
    (the final extension is repeated, e.g. ``.nii.gz``, for libraries that pick the format from it) so
    that the rename is a same-filesystem ``os.replace`` (atomic on POSIX and Windows). The final file
    gets the permissions a plain ``open(final, "w")`` would give (``0o666`` less the umask). If the
    block raises, the temporary file is removed, ``final`` is left as it was, and the exception
    propagates.

    Parameters
    ----------
    final : str or Path
        The file to produce. Its folder must exist; an existing file is replaced.

    Yields
    ------
    Path
        Where the block should write.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (folder / "a.txt").read_text()
    'done'
    """
    final = Path(final)
    suffix = "".join(final.suffixes[-2:]) if final.suffix.lower() == ".gz" else final.suffix
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
