"""docs/batch.md's Python example runs as written."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from medmdm.batch import read_results
from tests.batch.conftest import Archive

DOC = Path(__file__).resolve().parents[2] / "docs" / "batch.md"


def test_python_example_runs(archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert '"steps": 40' in block
    block = block.replace('"steps": 40', '"steps": 5')  # the same call, faster
    (tmp_path / "archive").mkdir()
    shutil.copy(archive.root / "ball_a.nii.gz", tmp_path / "archive")
    shutil.copytree(archive.bundle, tmp_path / "bundle")
    monkeypatch.chdir(tmp_path)
    exec(compile(block, str(DOC), "exec"), {})
    (record,) = read_results(tmp_path / "explained" / "results.jsonl")
    assert record["status"] == "ok" and (tmp_path / "explained" / record["key"] / "report.json").is_file()
