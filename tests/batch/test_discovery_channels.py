"""Manifest rows that list a study's channel files, and images found in folders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medmdm.batch import discover, read_manifest
from medmdm.batch.discovery import content_key

SEQUENCES = ("t1", "t1c", "t2", "flair")


@pytest.fixture
def brats(tmp_path: Path) -> list[Path]:
    """Four co-registered NIfTI files, each with its own values, in ``tmp_path / "case"``."""
    (tmp_path / "case").mkdir()
    paths = []
    for index, name in enumerate(SEQUENCES):
        path = tmp_path / "case" / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(np.full((6, 5, 4), index, np.float32), np.eye(4)), path)
        paths.append(path)
    return paths


def test_a_row_of_channel_files_is_one_study_in_their_order(tmp_path: Path, brats: list[Path]) -> None:
    csv_file = tmp_path / "list.csv"
    csv_file.write_text("path,target\n" + ";".join(f"case/{p.name}" for p in brats) + ",1\n")
    jsonl_file = tmp_path / "list.jsonl"
    jsonl_file.write_text(json.dumps({"path": [f"case/{p.name}" for p in brats], "target": 1}) + "\n")
    assert read_manifest(csv_file) == read_manifest(jsonl_file)
    (row,) = read_manifest(csv_file)
    assert row.channel_paths == tuple(brats) and row.path == brats[0] and row.target == 1
    (study,) = discover(csv_file).studies
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in brats)).hexdigest()[:12]
    assert study.key == content_key(*brats) == f"t1-{digest}" and study.error == ""
    assert study.source == tuple(brats) and study.target == 1
    reordered = tmp_path / "reordered.csv"
    reordered.write_text("path\n" + ";".join(str(p) for p in brats[::-1]) + "\n")
    assert discover(reordered).studies[0].key != study.key  # another channel order is another study


def test_a_row_with_one_path_reads_that_path(tmp_path: Path, brats: list[Path]) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path\n{brats[0]}\n")
    (study,) = discover(manifest).studies
    assert study.channel_paths == () and study.source == brats[0]


def test_a_missing_channel_file_fails_that_study_naming_it(tmp_path: Path, brats: list[Path]) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path\n{brats[0]};{tmp_path / 'case' / 'gone.nii.gz'}\n{brats[1]}\n")
    first, second = discover(manifest).studies
    assert first.error == f"{tmp_path / 'case' / 'gone.nii.gz'}: no such file" and first.key
    assert second.error == "" and second.path == brats[1]


def test_images_in_a_folder_are_studies_found_by_content(tmp_path: Path) -> None:
    pixels = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "frame.png")
    Image.fromarray(pixels[..., 0]).save(tmp_path / "patch", format="TIFF")  # no suffix
    (tmp_path / "notes.txt").write_text("not a study\n")
    found = discover(tmp_path)
    assert [(s.path.name, s.key) for s in found.studies] == [
        ("frame.png", content_key(tmp_path / "frame.png")),
        ("patch", content_key(tmp_path / "patch")),
    ]
    assert content_key(tmp_path / "frame.png").startswith("frame-")
    assert [p.name for p in found.ignored] == ["notes.txt"]
