"""A folder of mixed studies, good and broken, and the small lesion-detector bundle."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from medmdm.batch.discovery import content_key
from medmdm.io import list_series
from medmdm.testing.internal.bundles import (
    DETECTOR_3D_CONFIG,
    DETECTOR_SOURCE,
    ct_with_ball,
    detector_bundle,
    write_bundle,
)
from medmdm.testing.internal.dicom_studies import write_ct_series
from medmdm.testing.internal.phantoms import ct_case

FAST = ["--steps", "5", "--format", "nifti", "--quiet"]  # nifti + report.json: no matplotlib, no DICOM

# The detector, but the first process that runs it dies (as a node lost or killed for memory would); a
# marker file tells the processes after it to work.
CRASHING_ONCE_SOURCE = (
    DETECTOR_SOURCE
    + """

import os


class CrashingOnce(LesionDetector):
    def __init__(self, marker: str, **kwargs):
        super().__init__(**kwargs)
        self.marker = marker

    def forward(self, x):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(3)
        return super().forward(x)
"""
)


@dataclass
class Archive:
    """A study folder and what a batch must make of it."""

    root: Path
    bundle: Path
    good: dict[str, Path] = field(default_factory=dict)  # key -> input path
    broken: dict[str, tuple[Path, str]] = field(default_factory=dict)  # key -> (file named, what went wrong)
    duplicates: list[Path] = field(default_factory=list)
    series_uids: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return detector_bundle(tmp_path_factory.mktemp("batch_bundle") / "detector")


def crashing_once_bundle(root: Path) -> Path:
    """A detector bundle whose network kills its process on its first run (``root/crashed`` marks it)."""
    config = dict(DETECTOR_3D_CONFIG)
    marker = str(root / "crashed")
    config["network_def"] = {"_target_": "scripts.net.CrashingOnce", "spatial_dims": 3, "marker": marker}
    return write_bundle(
        root / "bundle", config, scripts=CRASHING_ONCE_SOURCE, state={"model": {"scale": torch.tensor(20.0)}}
    )


@pytest.fixture(scope="session")
def ct_series_case():
    return ct_case(3, lesions=1, size=(40, 36, 16))


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory, bundle: Path, ct_series_case) -> Archive:
    """Two NIfTI files (one also copied elsewhere), a series folder, a folder holding two series, a
    truncated DICOM file, a NIfTI file that is not one, a ``.dcm`` that is not DICOM, and a note."""
    root = tmp_path_factory.mktemp("archive")
    found = Archive(root=root / "studies", bundle=bundle)
    data = found.root
    data.mkdir()
    for name, centre in (("ball_a", (27, 11, 9)), ("ball_b", (12, 24, 5))):
        path, _ = ct_with_ball(data / f"{name}.nii.gz", centre=centre)
        found.good[content_key(path)] = path
    (data / "copies").mkdir()
    found.duplicates.append(Path(shutil.copy(data / "ball_a.nii.gz", data / "copies" / "ball_a.nii.gz")))

    series = write_ct_series(ct_series_case, data / "patient1" / "ct", seed=21)
    two = data / "patient2"
    for seed in (22, 23):
        written = write_ct_series(ct_series_case, root / f"series{seed}", seed=seed)
        two.mkdir(exist_ok=True)
        for file in sorted(written.iterdir()):
            shutil.move(file, two / f"s{seed}_{file.name}")
    found.series_uids = [list_series(series)[0].series_uid] + [s.series_uid for s in list_series(two)]
    found.good[found.series_uids[0]] = series
    for uid in found.series_uids[1:]:
        found.good[uid] = two

    truncated_source = write_ct_series(ct_series_case, root / "series24", seed=24)
    truncated = data / "patient3" / "slice.dcm"
    truncated.parent.mkdir()
    content = sorted(truncated_source.iterdir())[0].read_bytes()
    truncated.write_bytes(content[: len(content) - 1000])
    found.broken[list_series(truncated.parent)[0].series_uid] = (
        truncated,
        "truncated or undecodable pixel data",
    )

    fake_nifti = data / "scan.nii.gz"
    fake_nifti.write_bytes(b"not gzip at all")
    found.broken[content_key(fake_nifti)] = (fake_nifti, "unreadable NIfTI")
    not_dicom = data / "export.dcm"
    not_dicom.write_text("exported by hand")
    found.broken[content_key(not_dicom)] = (not_dicom, "neither DICOM nor NIfTI")
    (data / "README.txt").write_text("studies for the batch tests")
    return found
