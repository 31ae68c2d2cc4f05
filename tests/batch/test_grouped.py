"""``medmdm batch --studies-per-call N``: studies of one network input shape share an explainer call, and each
study's outputs and record are those of a single run; a study of another shape gets its own call, and a bad
study in a group fails alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medmdm.batch import BatchSettings, finished_outputs, read_results
from medmdm.batch.worker import AUTO_STUDIES_PER_CALL
from medmdm.cli.main import main
from medmdm.errors import OptionError
from medmdm.testing.internal.bundles import DETECTOR_3D_CONFIG, DETECTOR_SOURCE, ct_with_ball, write_bundle

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FAST = ["--steps", "5", "--format", "nifti", "--quiet"]
ODD_SHAPE = (44, 36, 12)  # another network input shape: the bundle does not resize


# The detector, but it refuses an image that is all air (-990 HU, about 0.007 once scaled; the memory probe's
# zeros pass): such a study reads and preprocesses well and fails in the explainer call.
AIR_REFUSING_SOURCE = (
    DETECTOR_SOURCE
    + """

class AirRefusing(LesionDetector):
    def forward(self, x):
        peak = x.flatten(1).amax(1)
        if ((peak > 0) & (peak < 0.01)).any():
            raise ValueError("an image of air only")
        return super().forward(x)
"""
)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The lesion-detector bundle without its resize, and eight studies: s1-s6 and s8 of one shape, but s5
    is air only (its explainer call fails), and s7 of another shape."""
    root = tmp_path_factory.mktemp("grouped")
    config = dict(DETECTOR_3D_CONFIG)
    transforms = config["preprocessing"]["transforms"]
    kept = [t for t in transforms if t["_target_"] != "Resized"]
    config["preprocessing"] = {**config["preprocessing"], "transforms": kept}
    config["network_def"] = {"_target_": "scripts.net.AirRefusing", "spatial_dims": 3}
    state = {"model": {"scale": torch.tensor(20.0)}}
    bundle = write_bundle(root / "bundle", config, scripts=AIR_REFUSING_SOURCE, state=state)
    studies = root / "studies"
    studies.mkdir()
    for number in range(1, 9):
        shape = ODD_SHAPE if number == 7 else (40, 36, 14)
        path, _ = ct_with_ball(studies / f"s{number}.nii.gz", shape, centre=(8 + 3 * number, 11 + number, 6))
        if number == 5:
            image = nib.load(path)
            nib.save(nib.Nifti1Image(np.full(image.shape, -990.0, np.float32), image.affine), path)
    return bundle, studies


def run_batch(archive: tuple[Path, Path], out: Path, *flags: str) -> dict[str, dict]:
    bundle, studies = archive
    code = main(["batch", str(studies), "--out", str(out), "--bundle", str(bundle), *FAST, *flags])
    assert code == 1  # s5 failed
    return {Path(r["input"]).name.split(".")[0]: r for r in read_results(out / "results.jsonl")}


@pytest.fixture(scope="module")
def runs(archive, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, dict], Path]]:
    found = {}
    for per_call in ("1", "3"):
        out = tmp_path_factory.mktemp(f"per_call_{per_call}") / "out"
        found[per_call] = run_batch(archive, out, "--devices", "cpu", "--studies-per-call", per_call), out
    return found


def report(out: Path, record: dict) -> dict:
    return json.loads((out / record["key"] / "report.json").read_text())


def test_grouped_maps_equal_those_of_single_runs(runs) -> None:
    (alone, alone_out), (grouped, grouped_out) = runs["1"], runs["3"]
    assert sorted(grouped) == [f"s{n}" for n in range(1, 9)]
    for name, record in grouped.items():
        assert record["status"] == alone[name]["status"], name
        if record["status"] != "ok":
            continue
        grouped_map = nib.load(grouped_out / record["key"] / "saliency.nii.gz")
        alone_map = nib.load(alone_out / record["key"] / "saliency.nii.gz")
        np.testing.assert_allclose(grouped_map.get_fdata(), alone_map.get_fdata(), atol=1e-5, rtol=0)
        np.testing.assert_array_equal(grouped_map.affine, alone_map.affine)
        assert grouped_map.get_fdata().max() > 0
        mine, theirs = report(grouped_out, record), report(alone_out, alone[name])
        assert mine["target"] == pytest.approx(theirs["target"], abs=1e-5)
        for level, other in zip(mine["explanation"]["levels"], theirs["explanation"]["levels"], strict=True):
            for key, values in level.items():
                np.testing.assert_allclose(np.array(values, float), np.array(other[key], float), atol=1e-5)
        assert mine["explanation"]["steps"] == theirs["explanation"]["steps"]
        assert mine["model"] == theirs["model"] and mine["warnings"] == theirs["warnings"]


def test_studies_of_one_shape_share_a_call_and_other_shapes_get_their_own(runs) -> None:
    grouped, out = runs["3"]
    ok = {name: r for name, r in grouped.items() if r["status"] == "ok"}
    in_call = {name: report(out, r)["explanation"]["studies_in_call"] for name, r in ok.items()}
    # calls of [s1 s2 s3], [s4 s5 s6] (s5 fails: one at a time), [s7 s8] (two shapes: one each)
    assert in_call == {"s1": 3, "s2": 3, "s3": 3, "s4": 1, "s6": 1, "s7": 1, "s8": 1}
    assert (
        report(out, grouped["s7"])["model"]["input_shape"]
        != report(out, grouped["s8"])["model"]["input_shape"]
    )
    alone, alone_out = runs["1"]
    assert {
        report(alone_out, r)["explanation"]["studies_in_call"] for r in alone.values() if r["outputs"]
    } == {1}


def test_reports_and_records_are_complete(runs) -> None:
    grouped, out = runs["3"]
    for name, record in grouped.items():
        if record["status"] != "ok":
            continue
        assert sorted(record["outputs"]) == sorted(finished_outputs(out / record["key"]))
        timings = record["timings"]
        assert {"prepare", "wait", "explain_and_write"} <= set(timings) and record["seconds"] > 0
        study_report = report(out, record)
        assert study_report["explanation"]["samples"] > 0
        assert {"explain", "map_back", "write", "total"} <= set(study_report["timings"])
        assert study_report["input"]["path"].endswith(f"{name}.nii.gz")


def test_a_bad_study_in_a_group_fails_alone(runs) -> None:
    for grouped, out in runs.values():
        failed = {name: r for name, r in grouped.items() if r["status"] == "failed"}
        assert list(failed) == ["s5"]
        assert "an image of air only" in failed["s5"]["error"] and "s5.nii.gz" in failed["s5"]["error"]
        assert "s4.nii.gz" not in failed["s5"]["error"]  # its own call's error, not the group's
        assert not (out / failed["s5"]["key"]).exists()


def test_resume_after_a_grouped_run_does_no_new_work(runs, archive, tmp_path: Path) -> None:
    _, out = runs["3"]
    bundle, studies = archive
    resumed = tmp_path / "out"
    shutil.copytree(out, resumed)
    code = main(
        [
            "batch",
            str(studies),
            "--out",
            str(resumed),
            "--bundle",
            str(bundle),
            *FAST,
            "--resume",
            "--studies-per-call",
            "3",
        ]
    )
    assert code == 1
    records = {Path(r["input"]).name.split(".")[0]: r for r in read_results(resumed / "results.jsonl")}
    assert {name for name, r in records.items() if r["status"] == "skipped"} >= {"s1", "s2", "s3"}


def test_studies_per_call_auto_is_one_on_the_cpu_and_four_on_cuda(tmp_path: Path) -> None:
    settings = BatchSettings(out_dir=tmp_path)
    assert settings.per_call("cpu") == 1 and settings.per_call("cuda:0") == AUTO_STUDIES_PER_CALL == 4
    assert BatchSettings(out_dir=tmp_path, studies_per_call=3).per_call("cpu") == 3
    with pytest.raises(OptionError, match="--studies-per-call must be auto or at least 1"):
        BatchSettings(out_dir=tmp_path, studies_per_call=0)


@pytest.mark.gpu
@CUDA
def test_grouped_maps_equal_single_runs_on_cuda(archive, tmp_path: Path) -> None:
    alone = run_batch(archive, tmp_path / "alone", "--devices", "cuda", "--studies-per-call", "1")
    grouped = run_batch(archive, tmp_path / "grouped", "--devices", "cuda")  # auto: 4 a call
    assert (
        report(tmp_path / "grouped", grouped["s1"])["explanation"]["studies_in_call"] == AUTO_STUDIES_PER_CALL
    )
    for name, record in grouped.items():
        if record["status"] == "ok":
            grouped_map = nib.load(tmp_path / "grouped" / record["key"] / "saliency.nii.gz").get_fdata()
            alone_map = nib.load(tmp_path / "alone" / alone[name]["key"] / "saliency.nii.gz").get_fdata()
            np.testing.assert_allclose(grouped_map, alone_map, atol=1e-5, rtol=0)
