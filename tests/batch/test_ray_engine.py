"""The Ray engine on a local Ray instance: the same records and the same maps as the local engine."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medmdm.batch import BatchSettings, explain_batch, read_results
from medmdm.errors import OptionError
from medmdm.settings import Settings
from tests.batch.conftest import Archive, crashing_once_bundle

ray = pytest.importorskip("ray")

SETTINGS = Settings(options={"steps": 5, "seed": 3}, formats="nifti")


@pytest.fixture(scope="module")
def ray_session() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def studies(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("ray_studies")
    for name in ("ball_a.nii.gz", "ball_b.nii.gz", "scan.nii.gz"):
        shutil.copy(archive.root / name, folder)
    shutil.copytree(archive.root / "patient1", folder / "patient1")
    return folder


def run(studies: Path, archive: Archive, out: Path, **engine: object) -> list[dict]:
    settings = BatchSettings(out_dir=out, settings=SETTINGS, bundle=archive.bundle)
    summary = explain_batch(studies, settings, progress=False, **engine)
    assert summary.exit_code == 1  # scan.nii.gz is not NIfTI
    return sorted(read_results(out / "results.jsonl"), key=lambda r: r["key"])


def test_ray_writes_the_maps_of_the_local_engine(
    ray_session, studies: Path, archive: Archive, tmp_path: Path
) -> None:
    local = run(studies, archive, tmp_path / "local")
    distributed = run(studies, archive, tmp_path / "ray", engine="ray", workers=2)
    assert [(r["key"], r["status"], r["error"]) for r in distributed] == [
        (r["key"], r["status"], r["error"]) for r in local
    ]
    assert [r["status"] for r in local].count("ok") == 3
    for record in local:
        if record["status"] != "ok":
            continue
        local_map = nib.load(tmp_path / "local" / record["key"] / "saliency.nii.gz")
        ray_map = nib.load(tmp_path / "ray" / record["key"] / "saliency.nii.gz")
        np.testing.assert_allclose(ray_map.get_fdata(), local_map.get_fdata(), atol=1e-6)
        np.testing.assert_allclose(ray_map.affine, local_map.affine)
        assert local_map.get_fdata().max() > 0


def test_a_study_whose_actor_died_is_retried(ray_session, archive: Archive, tmp_path: Path) -> None:
    bundle = crashing_once_bundle(tmp_path)
    settings = BatchSettings(out_dir=tmp_path / "out", settings=SETTINGS, bundle=bundle)
    summary = explain_batch(archive.root / "ball_a.nii.gz", settings, engine="ray", retries=1, progress=False)
    assert (tmp_path / "crashed").exists()  # the first actor ran the network and died
    assert [r.status for r in summary.records] == ["ok"]


def test_ray_takes_no_device_list(archive: Archive, studies: Path, tmp_path: Path) -> None:
    settings = BatchSettings(out_dir=tmp_path / "out", bundle=archive.bundle)
    with pytest.raises(OptionError, match="--devices auto or cpu"):
        explain_batch(studies, settings, engine="ray", devices="cuda:0")
