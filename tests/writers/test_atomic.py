"""atomic_path: all or nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medmdm.writers.atomic import atomic_path


def test_success_replaces_existing_file(tmp_path: Path) -> None:
    final = tmp_path / "out.nii.gz"
    final.write_text("old")
    with atomic_path(final) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".out.nii.gz.tmp-")
        assert tmp.name.endswith(".nii.gz")
        assert final.read_text() == "old"  # untouched while the block runs
        tmp.write_text("new")
    assert final.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "out.png"
    with pytest.raises(RuntimeError, match="boom"), atomic_path(final) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_failure_keeps_existing_file(tmp_path: Path) -> None:
    final = tmp_path / "out.png"
    final.write_text("old")
    with pytest.raises(KeyError), atomic_path(final) as tmp:
        tmp.write_text("half")
        raise KeyError("x")
    assert final.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_failure_after_block_removed_temp(tmp_path: Path) -> None:
    """The block may delete its temporary file itself; a failure is still reported as is."""
    with pytest.raises(ValueError), atomic_path(tmp_path / "a.txt") as tmp:
        tmp.unlink()
        raise ValueError("x")
    assert list(tmp_path.iterdir()) == []


def test_permissions_follow_umask(tmp_path: Path) -> None:
    final = tmp_path / "a.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("x")
    mask = os.umask(0o022)
    os.umask(mask)
    assert final.stat().st_mode & 0o777 == 0o666 & ~mask
