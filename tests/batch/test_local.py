"""``medmdm batch`` with the local engine: every good study gets outputs, every broken one is recorded as
failed with its error, reruns are idempotent, and a killed run resumes without duplicates."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medmdm.batch import finished_outputs, read_results
from medmdm.batch.discovery import StudyInput, content_key
from medmdm.batch.local import worker_devices
from medmdm.batch.runner import LOCK_NAME
from medmdm.batch.shard import Shard
from medmdm.bundle import load_bundle
from medmdm.cli.main import main
from medmdm.errors import OptionError
from medmdm.pipeline import explain_study
from medmdm.testing.internal.bundles import ct_with_ball
from tests.batch.conftest import FAST, Archive, crashing_once_bundle


def run(*args: object) -> int:
    return main(["batch", *(str(a) for a in args)])


def study_folders(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def first_run(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path]:
    out = tmp_path_factory.mktemp("first_run") / "out"
    code = run(archive.root, "--out", out, "--bundle", archive.bundle, *FAST)
    return code, out


def test_every_good_study_gets_outputs(archive: Archive, first_run: tuple[int, Path]) -> None:
    code, out = first_run
    assert code == 1  # some failed
    records = {r["key"]: r for r in read_results(out / "results.jsonl") if r["status"] == "ok"}
    assert set(records) == set(archive.good)
    assert study_folders(out) == sorted(archive.good)
    for key, path in archive.good.items():
        assert records[key]["input"] == str(path)
        assert sorted(records[key]["outputs"]) == sorted(finished_outputs(out / key))
        assert {Path(o).name for o in records[key]["outputs"]} >= {"saliency.nii.gz", "report.json"}
        report = json.loads((out / key / "report.json").read_text())
        assert report["input"]["path"] == str(path)
        assert report["method"]["options"]["steps"] == 5
    # the folder holding two series gave one study per series, read by its UID
    two = [records[uid] for uid in archive.series_uids[1:]]
    assert [r["series_uid"] for r in two] == archive.series_uids[1:]


def test_a_batch_writes_what_explain_study_writes(
    archive: Archive, first_run: tuple[int, Path], tmp_path: Path
) -> None:
    _, out = first_run
    for key, path in list(archive.good.items())[:2]:
        alone = explain_study(
            path, load_bundle(archive.bundle), tmp_path / key, options={"steps": 5}, formats="nifti"
        )
        batched = nib.load(out / key / "saliency.nii.gz")
        np.testing.assert_array_equal(
            batched.get_fdata(), nib.load(alone.out_dir / "saliency.nii.gz").get_fdata()
        )
        np.testing.assert_array_equal(batched.affine, nib.load(alone.out_dir / "saliency.nii.gz").affine)
        report = json.loads((out / key / "report.json").read_text())
        alone_report = json.loads((alone.out_dir / "report.json").read_text())
        assert report["target"] == alone_report["target"] and report["model"] == alone_report["model"]


def test_every_broken_study_is_failed_with_its_error(archive: Archive, first_run: tuple[int, Path]) -> None:
    _, out = first_run
    failed = {r["key"]: r for r in read_results(out / "results.jsonl") if r["status"] == "failed"}
    assert set(failed) == set(archive.broken)
    for key, (path, problem) in archive.broken.items():
        error = failed[key]["error"]
        assert error.startswith(f"{path}: {problem}") and "\n" not in error
        assert failed[key]["outputs"] == []


def test_duplicates_are_processed_once_and_other_files_ignored(
    archive: Archive, first_run: tuple[int, Path]
) -> None:
    _, out = first_run
    records = read_results(out / "results.jsonl")
    assert len(records) == len({r["key"] for r in records}) + len(archive.duplicates)
    skipped = [r for r in records if r["status"] == "skipped"]
    assert [r["input"] for r in skipped] == [str(p) for p in archive.duplicates]
    assert all(r["note"].startswith("duplicate of ") for r in skipped)
    assert not any("README" in r["input"] for r in records)


def test_resume_does_no_new_work(
    archive: Archive, first_run: tuple[int, Path], tmp_path: Path, capsys
) -> None:
    _, first = first_run
    out = tmp_path / "out"
    shutil.copytree(first, out)
    reports = {key: (out / key / "report.json").stat().st_mtime_ns for key in archive.good}
    assert run(archive.root, "--out", out, "--bundle", archive.bundle, "--resume", "--steps", "5") == 1
    summary = capsys.readouterr().out
    records = read_results(out / "results.jsonl")
    assert {
        r["key"] for r in records if r["status"] == "skipped" and r["note"] == "finished by an earlier run"
    } == set(archive.good)
    assert not [r for r in records if r["status"] == "ok"]
    assert {r["key"] for r in records if r["status"] == "failed"} == set(archive.broken)
    assert {key: (out / key / "report.json").stat().st_mtime_ns for key in archive.good} == reports
    assert f"0 ok, {len(archive.good) + len(archive.duplicates)} skipped" in summary
    assert f"{len(archive.broken)} failed" in summary


def test_rerun_without_resume_is_refused(archive: Archive, first_run: tuple[int, Path], capsys) -> None:
    _, out = first_run
    before = (out / "results.jsonl").read_text()
    assert run(archive.root, "--out", out, "--bundle", archive.bundle, *FAST) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("medmdm: error: ") and "--resume" in error and "\n" not in error
    assert (out / "results.jsonl").read_text() == before


def test_fail_fast_stops_at_the_first_failure(archive: Archive, tmp_path: Path) -> None:
    data = tmp_path / "studies"
    data.mkdir()
    shutil.copy(archive.root / "export.dcm", data)
    shutil.copy(archive.root / "ball_a.nii.gz", data)
    out = tmp_path / "out"
    assert run(data, "--out", out, "--bundle", archive.bundle, "--fail-fast", *FAST) == 1
    records = read_results(out / "results.jsonl")
    assert [r["status"] for r in records] == ["failed", "skipped"]
    assert records[1]["note"].startswith("not run")
    assert study_folders(out) == []


def test_a_busy_output_folder_is_refused(archive: Archive, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with (out / LOCK_NAME).open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        assert run(archive.root, "--out", out, "--bundle", archive.bundle, *FAST) == 2
    assert "another medmdm batch" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nonsense"], "unknown explainer"),
        (["--format", "nifti,tiff"], "unknown output format tiff"),
        (["--workers", "0"], "at least 1"),
        (["--ray-address", "head:6379"], "needs --engine ray"),
    ],
)
def test_bad_options_run_nothing(
    archive: Archive, tmp_path: Path, capsys, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert run(archive.root, "--out", out, "--bundle", archive.bundle, "--quiet", *args) == 2
    assert message in capsys.readouterr().err
    assert not (out / "results.jsonl").exists()


def test_worker_processes_write_the_maps_of_one_and_a_dead_one_fails_its_studies_only(
    archive: Archive, first_run: tuple[int, Path], tmp_path: Path
) -> None:
    _, single = first_run
    bundle = crashing_once_bundle(tmp_path)  # the detector; the first process to run it dies
    data = tmp_path / "studies"
    data.mkdir()
    for name in ("ball_a.nii.gz", "ball_b.nii.gz"):
        shutil.copy(archive.root / name, data)
    shutil.copytree(archive.root / "patient1", data / "patient1")
    out = tmp_path / "out"
    assert run(data, "--out", out, "--bundle", bundle, "--workers", "2", "--devices", "cpu", *FAST) == 1
    records = read_results(out / "results.jsonl")
    failed = [r for r in records if r["status"] == "failed"]
    assert 1 <= len(failed) <= 2 and len(records) == 3
    assert all(
        r["error"].endswith("the worker process on cpu exited with code 3 while the study was in progress")
        for r in failed
    )
    assert {r["status"] for r in records} == {"ok", "failed"}
    for record in records:
        if record["status"] == "ok":
            np.testing.assert_allclose(
                nib.load(out / record["key"] / "saliency.nii.gz").get_fdata(),
                nib.load(single / record["key"] / "saliency.nii.gz").get_fdata(),
                atol=1e-6,
            )
    assert run(data, "--out", out, "--bundle", bundle, "--resume", *FAST) == 0
    assert sorted(r["status"] for r in read_results(out / "results.jsonl")) == sorted(
        "ok" if r["status"] == "failed" else "skipped" for r in records
    )


def test_shards_split_the_studies_and_share_the_output_folder(
    archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "studies"
    shutil.copytree(archive.root / "copies", data / "copies")
    for name in ("ball_a.nii.gz", "ball_b.nii.gz"):
        shutil.copy(archive.root / name, data)
    out = tmp_path / "out"
    assert run(data, "--out", out, "--bundle", archive.bundle, "--shard", "0/2", *FAST) == 0
    monkeypatch.setenv("RANK", "1")  # as torchrun sets them
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run(data, "--out", out, "--bundle", archive.bundle, *FAST) == 0
    shards = [read_results(out / f"results.shard-{k}-of-2.jsonl") for k in (0, 1)]
    keys = [{r["key"] for r in records} for records in shards]
    assert keys[0] | keys[1] == {k for k, p in archive.good.items() if p.name.startswith("ball")}
    assert len(keys[0]) == len(keys[1]) == 1
    assert sorted(len(records) for records in shards) == [1, 2]  # the copy of ball_a goes with ball_a
    assert not (out / "results.jsonl").exists()


def test_shard_parsing_and_selection() -> None:
    assert Shard.parse("1/3") == Shard(1, 3)
    with pytest.raises(OptionError, match="K/N"):
        Shard.parse("1-3")
    with pytest.raises(OptionError, match="0 <= K < N"):
        Shard.parse("3/3")
    studies = [StudyInput(key, Path(key)) for key in ("c", "a", "b", "a", "d")]
    assert [s.key for s in Shard(0, 2).select(studies)] == ["c", "a", "a"]
    assert [s.key for s in Shard(1, 2).select(studies)] == ["b", "d"]
    assert Shard.from_environment({"RANK": "2", "WORLD_SIZE": "4"}) == Shard(2, 4)
    assert Shard.from_environment({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert Shard.from_environment({}) is None


def test_worker_devices() -> None:
    assert worker_devices("cpu", 3) == ["cpu", "cpu", "cpu"]
    assert worker_devices("cpu") == ["cpu"]
    if not torch.cuda.is_available():
        assert worker_devices("auto") == ["cpu"]
        with pytest.raises(OptionError, match="no CUDA device"):
            worker_devices("cuda:0,cuda:1")


def test_killed_run_resumes_without_duplicates_or_half_written_folders(
    archive: Archive, tmp_path: Path
) -> None:
    data = tmp_path / "studies"
    data.mkdir()
    for index, centre in enumerate([(27, 11, 9), (12, 24, 5), (20, 18, 7), (30, 25, 4)]):
        ct_with_ball(data / f"ball{index}.nii.gz", centre=centre)
    out = tmp_path / "out"
    args = [data, "--out", out, "--bundle", archive.bundle, "--steps", "30", "--format", "nifti", "--quiet"]
    command = [
        sys.executable,
        "-c",
        "import sys; from medmdm.cli.main import main; sys.exit(main())",
        "batch",
    ]
    process = subprocess.Popen(
        [*command, *(str(a) for a in args)], start_new_session=True, stderr=subprocess.DEVNULL
    )
    results = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while not (results.is_file() and '"ok"' in results.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, "the batch ended before it was killed"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    finished = study_folders(out)
    assert 1 <= len(finished) < 4
    assert all(finished_outputs(out / key) is not None for key in finished)
    (out / f".{finished[0]}.tmp-leftover").mkdir()  # as a kill while writing leaves
    assert run(*args, "--resume") == 0
    records = read_results(results)
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 4
    assert {r["key"] for r in records if r["status"] == "skipped"} == set(finished)
    assert {r["status"] for r in records} == {"ok", "skipped"}
    assert len(study_folders(out)) == 4 and all(finished_outputs(out / key) for key in keys)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [LOCK_NAME]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("medmdm") is None, reason="the medmdm command is not installed")
def test_torchrun_ranks_split_the_batch_and_wait_for_each_other(archive: Archive, tmp_path: Path) -> None:
    data = tmp_path / "studies"
    data.mkdir()
    for name in ("ball_a.nii.gz", "ball_b.nii.gz", "scan.nii.gz"):
        shutil.copy(archive.root / name, data)
    out = tmp_path / "out"
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--no-python",
    ]
    batch = ["medmdm", "batch", str(data), "--out", str(out), "--bundle", str(archive.bundle), *FAST]
    finished = subprocess.run([*torchrun, *batch], capture_output=True, text=True, timeout=300)
    assert finished.returncode != 0  # scan.nii.gz failed in its rank
    records = [r for k in (0, 1) for r in read_results(out / f"results.shard-{k}-of-2.jsonl")]
    keys = {content_key(data / name): name for name in ("ball_a.nii.gz", "ball_b.nii.gz", "scan.nii.gz")}
    assert sorted(r["key"] for r in records) == sorted(keys)
    assert {keys[r["key"]]: r["status"] for r in records} == {  # the other rank was not stopped early
        "ball_a.nii.gz": "ok",
        "ball_b.nii.gz": "ok",
        "scan.nii.gz": "failed",
    }
