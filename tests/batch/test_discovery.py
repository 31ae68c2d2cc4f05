"""Finding studies, their stable keys, and the manifests a batch reads."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pydicom
import pytest

from medmdm.batch import discover, read_manifest
from medmdm.batch.discovery import content_key, safe_name
from medmdm.errors import InputError, OptionError
from tests.batch.conftest import Archive


def test_keys_are_the_series_uid_or_the_name_and_content_hash(archive: Archive) -> None:
    found = discover(archive.root)
    keys = {s.key for s in found.studies}
    assert keys == set(archive.good) | set(archive.broken)
    nifti = archive.root / "ball_a.nii.gz"
    digest = hashlib.sha256(nifti.read_bytes()).hexdigest()[:12]
    assert content_key(nifti) == f"ball_a-{digest}"
    assert set(archive.series_uids) <= keys
    assert [s.key for s in discover(archive.root).studies] == [s.key for s in found.studies]  # stable
    assert [p.name for p in found.ignored] == ["README.txt"]


def test_the_same_study_twice_has_one_key(archive: Archive) -> None:
    found = discover(archive.root)
    copies = [s for s in found.studies if s.key == content_key(archive.root / "ball_a.nii.gz")]
    assert sorted(s.path for s in copies) == sorted([archive.root / "ball_a.nii.gz", *archive.duplicates])


def test_a_folder_with_two_series_gives_two_studies(archive: Archive) -> None:
    found = {s.key: s for s in discover(archive.root / "patient2").studies}
    assert sorted(found) == sorted(archive.series_uids[1:])
    assert all(s.path == archive.root / "patient2" and s.series_uid == s.key for s in found.values())


def test_a_series_split_over_folders_is_one_study(archive: Archive, tmp_path: Path) -> None:
    files = sorted((archive.root / "patient1" / "ct").iterdir())
    for index, file in enumerate(files):
        part = tmp_path / "study" / f"part{index % 2}"
        part.mkdir(parents=True, exist_ok=True)
        shutil.copy(file, part)
    studies = discover(tmp_path).studies
    assert [(s.key, s.path) for s in studies] == [(archive.series_uids[0], tmp_path / "study")]


def test_a_dicom_file_without_series_uid_is_keyed_by_content(archive: Archive, tmp_path: Path) -> None:
    source = sorted((archive.root / "patient1" / "ct").iterdir())[0]
    ds = pydicom.dcmread(source)
    del ds.SeriesInstanceUID
    ds.save_as(tmp_path / "lone.dcm")
    (study,) = discover(tmp_path).studies
    assert study.key == content_key(tmp_path / "lone.dcm") and study.key.startswith("lone-")
    assert study.path == tmp_path / "lone.dcm" and study.series_uid is None


def test_the_output_folder_is_left_out(archive: Archive, tmp_path: Path) -> None:
    shutil.copy(archive.root / "ball_a.nii.gz", tmp_path)
    (tmp_path / "out" / "ball").mkdir(parents=True)
    shutil.copy(archive.root / "ball_b.nii.gz", tmp_path / "out" / "ball" / "saliency.nii.gz")
    assert [s.path.name for s in discover(tmp_path, exclude=tmp_path / "out").studies] == ["ball_a.nii.gz"]
    assert len(discover(tmp_path).studies) == 2


@pytest.mark.parametrize(
    ("text", "name"),
    [("1.2.840.10008.5.1", "1.2.840.10008.5.1"), ("a/b c", "a_b_c"), ("..x", "x"), ("", "study")],
)
def test_safe_name(text: str, name: str) -> None:
    assert safe_name(text) == name


def test_csv_and_jsonl_manifests(archive: Archive, tmp_path: Path) -> None:
    two = archive.root / "patient2"
    csv_file = tmp_path / "list.csv"
    csv_file.write_text(
        f"path,series_uid,target\n{archive.root / 'ball_a.nii.gz'},,1\n{two},{archive.series_uids[2]},\n"
        "missing.nii.gz,,\n"
    )
    jsonl_file = tmp_path / "list.jsonl"
    rows = [
        {"path": str(archive.root / "ball_a.nii.gz"), "target": 1},
        {"path": str(two), "series_uid": archive.series_uids[2]},
        {"path": "missing.nii.gz"},
    ]
    jsonl_file.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_manifest(csv_file) == read_manifest(jsonl_file)
    assert read_manifest(csv_file)[2].path == tmp_path / "missing.nii.gz"  # relative to the manifest
    found = discover(csv_file).studies
    assert [(s.key, s.target) for s in found[:2]] == [
        (content_key(archive.root / "ball_a.nii.gz"), 1),
        (archive.series_uids[2], None),
    ]
    assert found[2].error == f"{tmp_path / 'missing.nii.gz'}: no such file or folder"


def test_a_manifest_folder_without_series_stands_for_its_studies(archive: Archive, tmp_path: Path) -> None:
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,target\n{archive.root / 'patient2'},0\n")
    found = discover(manifest).studies
    assert sorted(s.key for s in found) == sorted(archive.series_uids[1:])
    assert {s.target for s in found} == {0}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("list.csv", "file,target\na.nii.gz,1\n", "line 1: unknown field file"),
        ("list.csv", "path,target\na.nii.gz,lesion\n", "line 2: target must be a class index"),
        ("list.csv", "path\n", "lists no study"),
        ("list.jsonl", '{"path": "a.nii.gz"}\n{"path": \n', "line 2: not JSON"),
        ("list.jsonl", '["a.nii.gz"]\n', "line 1: expected a JSON object"),
        ("list.jsonl", '{"path": ""}\n', "line 1: empty path"),
        ("list.csv", "path\na.nii.gz;;b.nii.gz\n", "line 2: an empty path in 'a.nii.gz;;b.nii.gz'"),
        ("list.jsonl", '{"path": []}\n', "line 1: empty path"),
        ("list.jsonl", '{"path": ["a.nii.gz", 3]}\n', r"line 1: path must be text or a list of paths"),
    ],
)
def test_bad_manifests_name_the_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    manifest = tmp_path / name
    manifest.write_text(text)
    with pytest.raises(InputError, match=f"^{re.escape(str(manifest))}: .*{message}"):
        read_manifest(manifest)


def test_a_missing_input_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        discover(tmp_path / "nothing")


def test_masks_and_labels_in_a_folder_are_not_studies_unless_named(tmp_path: Path) -> None:
    study = Path(__file__).resolve().parents[2] / "sample_data" / "studies" / "cr_lesion.nii.gz"
    for name in ("a.nii.gz", "a_mask.nii.gz", "a_labels.nii.gz", "b_label_map.nii.gz"):
        shutil.copy(study, tmp_path / name)
    assert [s.path.name for s in discover(tmp_path).studies] == ["a.nii.gz"]
    assert [s.path.name for s in discover(tmp_path / "a_mask.nii.gz").studies] == ["a_mask.nii.gz"]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\na_mask.nii.gz\n")
    assert [s.path.name for s in discover(manifest).studies] == ["a_mask.nii.gz"]


@pytest.mark.parametrize(("prefer", "explained"), [("dicom", ["ct_nodule"]), ("nifti", ["ct_nodule.nii.gz"]),
                                                   ("both", ["ct_nodule", "ct_nodule.nii.gz"])])  # fmt: skip
def test_a_nifti_copy_of_a_dicom_study_is_explained_once(
    tmp_path: Path, prefer: str, explained: list
) -> None:
    samples = Path(__file__).resolve().parents[2] / "sample_data" / "studies"
    shutil.copytree(samples / "ct_nodule", tmp_path / "ct_nodule")
    shutil.copy(samples / "ct_nodule.nii.gz", tmp_path)
    shutil.copy(samples / "cr_lesion.nii.gz", tmp_path / "other.nii.gz")  # no DICOM twin: always explained
    studies = discover(tmp_path, prefer=prefer).studies
    assert sorted(s.path.name for s in studies if not s.note) == sorted([*explained, "other.nii.gz"])
    for skipped in (s for s in studies if s.note):
        assert f"the same study as {tmp_path}" in skipped.note and f"--prefer {prefer}" in skipped.note
    with pytest.raises(OptionError, match="--prefer"):
        discover(tmp_path, prefer="png")


def test_dicom_files_without_preamble_or_file_meta_are_found(tmp_path: Path) -> None:
    series = Path(__file__).resolve().parents[2] / "sample_data" / "studies" / "ct_nodule"
    for source in sorted(series.iterdir())[:3]:
        ds = pydicom.dcmread(source)
        ds.preamble, ds.file_meta = None, pydicom.dataset.FileMetaDataset()
        ds.save_as(tmp_path / f"{source.stem}.raw", enforce_file_format=False)
    (study,) = discover(tmp_path).studies
    assert (study.key, study.error) == (safe_name(str(ds.SeriesInstanceUID)), "")
