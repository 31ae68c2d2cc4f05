"""The committed sample data: two trained demo bundles and sample studies they classify as positive."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose

from medmdm.io import Study, load_study

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
BUNDLES = SAMPLE_DATA / "bundles"
STUDIES = SAMPLE_DATA / "studies"
MAX_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True)
class Demo:
    """What a demo bundle is expected to be, and its sample study (DICOM, mask, NIfTI copy)."""

    finding: str
    input_shape: list[int]
    least_held_out: int
    study: str
    mask: str
    nifti: str


DEMOS = {
    "radiograph_lesion_2d": Demo(
        "lesion", [128, 128], 200, "cr_lesion.dcm", "cr_lesion_mask.nii.gz", "cr_lesion.nii.gz"
    ),
    "ct_nodule_3d": Demo(
        "nodule", [64, 64, 48], 60, "ct_nodule", "ct_nodule_mask.nii.gz", "ct_nodule.nii.gz"
    ),
}


class DemoClassifier:
    """A bundle run the way medmdm runs it: preprocessing without LoadImaged and EnsureChannelFirstd."""

    def __init__(self, folder: Path) -> None:
        parser = ConfigParser()
        parser.read_config(folder / "configs" / "inference.json")
        parser["bundle_root"] = str(folder)
        self.parser = parser
        preprocessing = parser.get_parsed_content("preprocessing")
        self.first_two = [type(t).__name__ for t in preprocessing.transforms[:2]]
        self.transforms = Compose(preprocessing.transforms[2:])
        self.network = parser.get_parsed_content("network").eval()
        self.network.load_state_dict(torch.load(folder / "models" / "model.pt", weights_only=True))
        self.metadata = json.loads((folder / "configs" / "metadata.json").read_text())

    def probabilities(self, study: Study) -> torch.Tensor:
        x = self.transforms({"image": study.image})["image"]
        with torch.no_grad():
            return torch.softmax(self.network(x.as_tensor()[None]), dim=1)[0]


@pytest.fixture(scope="module", params=sorted(DEMOS))
def demo(request: pytest.FixtureRequest) -> tuple[str, DemoClassifier]:
    return request.param, DemoClassifier(BUNDLES / request.param)


def test_sample_data_is_all_there_and_small() -> None:
    expected = [
        *(
            BUNDLES / name / part
            for name in DEMOS
            for part in (
                "configs/metadata.json",
                "configs/inference.json",
                "models/model.pt",
                "docs/README.md",
            )
        ),
        *(STUDIES / item for demo in DEMOS.values() for item in (demo.study, demo.mask, demo.nifti)),
        SAMPLE_DATA / "README.md",
    ]
    missing = [str(p.relative_to(SAMPLE_DATA)) for p in expected if not p.exists()]
    assert not missing, f"run workflows/train_demo_bundles.py and workflows/make_sample_data.py: {missing}"
    total = sum(p.stat().st_size for p in SAMPLE_DATA.rglob("*") if p.is_file())
    assert total <= MAX_BYTES
    for name in DEMOS:
        assert (BUNDLES / name / "models" / "model.pt").stat().st_size < 3 * 1024 * 1024


def test_bundle_metadata_describes_the_network(demo) -> None:
    name, classifier = demo
    expected = DEMOS[name]
    metadata = classifier.metadata
    assert metadata["name"] == name and metadata["version"] == "0.1.0" and metadata["authors"] == "medmdm"
    image = metadata["network_data_format"]["inputs"]["image"]
    assert (image["num_channels"], image["spatial_shape"], image["dtype"]) == (
        1,
        expected.input_shape,
        "float32",
    )
    assert image["value_range"] == [0, 1]
    pred = metadata["network_data_format"]["outputs"]["pred"]
    assert pred["num_channels"] == 2
    assert pred["channel_def"] == {"0": f"no {expected.finding}", "1": expected.finding}
    training = metadata["medmdm_training"]
    assert training["held_out_cases"] >= expected.least_held_out
    assert metadata["eval_metrics"]["accuracy"] >= 0.95
    # Trained with the explainers' perturbations: a nodule replaced with the baseline the bundle
    # recommends (the one that erases nodules more often) reads as no nodule in most positives.
    baseline = metadata["medmdm"]["explain_options"]["baseline"]
    erased = {kind: training[f"negative_once_{kind}_erased"] for kind in ("mean", "blur")}
    assert erased[baseline] == max(erased.values()) and erased[baseline] >= 0.5
    held_out, trained = range(*training["held_out_seeds"]), range(*training["training_seeds"])
    assert held_out.start >= trained.stop or held_out.stop <= trained.start  # disjoint
    readme = (BUNDLES / name / "docs" / "README.md").read_text()
    assert "demonstration only" in readme and f"{metadata['eval_metrics']['accuracy']:.1%}" in readme


def test_inference_config_defines_what_medmdm_reads(demo) -> None:
    name, classifier = demo
    parser = classifier.parser
    for key in ("imports", "bundle_root", "device", "network_def", "network", "preprocessing"):
        assert key in parser.config
    assert classifier.first_two == ["LoadImaged", "EnsureChannelFirstd"]
    x = torch.rand((2, 1, *DEMOS[name].input_shape))
    assert classifier.network(x).shape == (2, 2)  # logits


def test_bundle_classifies_its_sample_studies_as_positive(demo) -> None:
    name, classifier = demo
    for path in (STUDIES / DEMOS[name].study, STUDIES / DEMOS[name].nifti):
        probabilities = classifier.probabilities(load_study(path))
        assert probabilities[1] > 0.5, f"{path.name}: {probabilities.tolist()}"


def test_masks_and_nifti_copies_share_the_study_grid(demo) -> None:
    name, _ = demo
    expected = DEMOS[name]
    study, mask, copy = (load_study(STUDIES / f) for f in (expected.study, expected.mask, expected.nifti))
    assert mask.size == copy.size == study.size
    torch.testing.assert_close(mask.affine, study.affine, rtol=0, atol=1e-5)
    torch.testing.assert_close(copy.affine, study.affine, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(copy.image.numpy(), study.image.numpy())
    values = np.unique(mask.image.numpy())
    assert values.tolist() == [0.0, 1.0]


def test_ct_sample_series_files_are_not_in_slice_order() -> None:
    study = load_study(STUDIES / "ct_nodule")
    names = [f.name for f in study.files]  # slice order
    assert study.kind == "dicom-series" and len(names) == study.size[2]
    assert names != sorted(names)
