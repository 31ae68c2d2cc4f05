"""The trained models of sample_data behind the class, prototype and region targets, explained.

A MONAI ViT and a ProtoPNet-style network (2D radiographs), and a MONAI UNet (3D CT), made by
``workflows/train_target_models.py``. The 2D models are explained on held-out positive phantoms
(seeds their training never used), the UNet through the command line on the sample CT series; the
maps are checked against the nodules on the source grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from monai.data import MetaTensor

from medmdm import explainers
from medmdm.bundle import Bundle, load_bundle
from medmdm.cli.main import main
from medmdm.explainers import PrototypeTarget
from medmdm.explainers.targets import class_logits
from medmdm.geometry import map_to_source
from medmdm.io import load_study
from medmdm.metrics import energy_pointing_game, pointing_game
from medmdm.testing.internal.dicom_studies import study_image
from medmdm.testing.internal.phantoms import radiograph_case

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
BUNDLES, STUDIES = SAMPLE_DATA / "bundles", SAMPLE_DATA / "studies"
MODELS = ("vit_lesion_2d", "protopnet_lesion_2d", "ct_nodule_seg_3d")
CASES = 4  # held-out positives explained per 2D model
STEPS = 20
TOLERANCE = 10  # source pixels of 1.5 mm: the map's peak on the nodule or within 15 mm of it
# Around the predicted nodule: (radius in voxels, most volume share, least share of the map)
AROUND = ((3, 0.01, 0.3), (6, 0.03, 0.6))
MIN_PROBABILITY = 0.9  # a held-out positive the model calls positive with this confidence


@dataclass
class Phantoms:
    """Held-out positive phantoms: network inputs, source images and nodule masks (source grid)."""

    x: torch.Tensor
    inputs: list[MetaTensor]
    sources: list[MetaTensor]
    masks: torch.Tensor


def held_out_positives(bundle: Bundle) -> Phantoms:
    """The first ``CASES`` held-out phantoms with one nodule that the bundle calls positive.

    A map of class 1 explains why the model says "nodule"; on a missed nodule there is nothing
    to find. The inputs go through the bundle's preprocessing.
    """
    metadata = json.loads((bundle.root / "configs" / "metadata.json").read_text())
    held_out = range(*metadata["medmdm_training"]["held_out_seeds"])
    found: list[tuple[MetaTensor, MetaTensor, torch.Tensor]] = []
    for case in map(radiograph_case, held_out[:60]):
        if case.lesions != 1:
            continue
        source = study_image(case)
        x = bundle.preprocessing({bundle.image_key: source})[bundle.image_key]
        with torch.no_grad():
            logits = class_logits(bundle.network(x.as_tensor()[None]))
        if logits.softmax(1)[0, 1] >= MIN_PROBABILITY:
            found.append((x, source, torch.from_numpy(case.mask).bool()))
        if len(found) == CASES:
            break
    inputs, sources, masks = zip(*found, strict=True)
    return Phantoms(
        torch.stack([x.as_tensor() for x in inputs]), list(inputs), list(sources), torch.stack(masks)
    )


def on_source(maps: torch.Tensor, phantoms: Phantoms) -> torch.Tensor:
    """(N, 1, *source) maps on the phantoms' source grids."""
    return torch.stack(
        [
            map_to_source(m, x, source)
            for m, x, source in zip(maps, phantoms.inputs, phantoms.sources, strict=True)
        ]
    )[:, None]


def hdm(bundle: Bundle) -> explainers.Explainer:
    """Short HDM with the bundle's recommended options (the blur baseline)."""
    options = explainers.accepted_options("hdm", bundle.explain_options)
    return explainers.create("hdm", bundle.network, steps=STEPS, seed=0, **options)


def dilated(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A 3D bool mask grown by ``radius`` voxels (a cube)."""
    return F.max_pool3d(mask[None, None].float(), 2 * radius + 1, 1, radius)[0, 0] > 0


@pytest.mark.parametrize("name", MODELS)
def test_bundles_are_small_and_report_held_out_results(name: str) -> None:
    folder = BUNDLES / name
    metadata = json.loads((folder / "configs" / "metadata.json").read_text())
    training = metadata["medmdm_training"]
    assert (folder / "models" / "model.pt").stat().st_size < 2 * 1024 * 1024
    assert training["training_loop_seconds"] < 1800  # cheap to remake on a CPU
    held_out, trained = range(*training["held_out_seeds"]), range(*training["training_seeds"])
    assert held_out.start >= trained.stop
    metrics = metadata["eval_metrics"]
    first = next(iter(metrics))
    assert metrics[first] >= {"accuracy": 0.9, "dice": 0.6}[first]
    readme = (folder / "docs" / "README.md").read_text()
    assert "demonstration only" in readme and f"{metrics[first]:.1%}" in readme
    assert metadata["medmdm"]["explain_options"] == {"baseline": "blur"}


def test_the_vit_maps_find_the_nodules_of_held_out_phantoms() -> None:
    bundle = load_bundle(BUNDLES / "vit_lesion_2d")
    phantoms = held_out_positives(bundle)
    assert type(bundle.network).__name__ == "ViTClassifier"
    maps = on_source(hdm(bundle)(phantoms.x, target=1), phantoms)
    hits = pointing_game(maps, phantoms.masks, tolerance=TOLERANCE)
    assert int(hits.sum()) >= CASES - 1, hits.tolist()
    # the same maps against the nodules mirrored into the other lung: the test can fail
    assert int(pointing_game(maps, phantoms.masks.flip(1), tolerance=TOLERANCE).sum()) <= 1


def test_a_nodule_prototype_is_explained_at_the_nodule() -> None:
    bundle = load_bundle(BUNDLES / "protopnet_lesion_2d")
    phantoms = held_out_positives(bundle)
    network = bundle.network
    nodule_prototypes = (network.prototype_classes == 1).nonzero()[:, 0]
    with torch.no_grad():
        output = network(phantoms.x)
    assert bool((output["logits"].argmax(1) == 1).all())
    chosen = nodule_prototypes[output["prototypes"][:, nodule_prototypes].argmax(1)]  # most alike, per image
    explainer = hdm(bundle)
    maps = on_source(explainer(phantoms.x, target=PrototypeTarget(chosen)), phantoms)
    assert explainer.last.target_description["kind"] == "prototype"
    hits = pointing_game(maps, phantoms.masks, tolerance=TOLERANCE)
    assert int(hits.sum()) >= CASES - 1, hits.tolist()
    assert int(pointing_game(maps, phantoms.masks.flip(1), tolerance=TOLERANCE).sum()) <= 1


def test_the_cli_explains_the_predicted_nodule_of_the_segmentation_bundle(tmp_path: Path) -> None:
    study_path, folder, out = STUDIES / "ct_nodule", BUNDLES / "ct_nodule_seg_3d", tmp_path / "out"
    args = ["explain", str(study_path), "--bundle", str(folder), "--target", "region:1", "--out", str(out)]
    assert main([*args, "--steps", str(STEPS), "--seed", "0", "--format", "nifti,json", "--quiet"]) == 0

    report = json.loads((out / "report.json").read_text())
    target = report["target"]
    assert (target["kind"], target["index"], target["name"], target["region"]) == (
        "region",
        1,
        "nodule",
        "predicted",
    )
    assert report["model"]["explain_options"] == {"baseline": "blur"}
    study, saliency = load_study(study_path), load_study(out / "saliency.nii.gz")
    assert saliency.size == study.size
    torch.testing.assert_close(saliency.affine, study.affine, rtol=0, atol=1e-4)

    bundle = load_bundle(folder)
    network_input = bundle.preprocess(study)
    with torch.no_grad():
        predicted = bundle.network(network_input.as_tensor()).argmax(1)[0] == 1
    assert target["voxels"] == int(predicted.sum()) > 0
    region = map_to_source(predicted.float(), network_input[0], study.image) > 0.5
    mask = load_study(STUDIES / "ct_nodule_mask.nii.gz").image[0] > 0
    assert (region & mask).sum() > 0.5 * region.sum()  # the predicted region is the nodule
    maps = saliency.image[None]
    for around in (region, mask):
        for radius, share, least in AROUND:
            near = dilated(around, radius)
            assert near.float().mean() < share  # a small part of the volume...
            assert float(energy_pointing_game(maps, near[None])) >= least  # ...holds much of the map


def test_the_cli_explains_the_nodule_prototype_at_the_nodule(tmp_path: Path) -> None:
    study_path, folder, out = STUDIES / "cr_lesion.dcm", BUNDLES / "protopnet_lesion_2d", tmp_path / "out"
    bundle, study = load_bundle(folder), load_study(study_path)
    network = bundle.network
    with torch.no_grad():
        similarity = network(bundle.preprocess(study).as_tensor())["prototypes"][0]
    nodule_prototypes = (network.prototype_classes == 1).nonzero()[:, 0]
    chosen = int(nodule_prototypes[similarity[nodule_prototypes].argmax()])
    args = ["explain", str(study_path), "--bundle", str(folder), "--target", f"prototype:{chosen}"]
    assert (
        main(
            [
                *args,
                "--out",
                str(out),
                "--steps",
                str(STEPS),
                "--seed",
                "0",
                "--format",
                "nifti,json",
                "--quiet",
            ]
        )
        == 0
    )

    report = json.loads((out / "report.json").read_text())
    assert (report["target"]["kind"], report["target"]["index"]) == ("prototype", chosen)
    saliency = load_study(out / "saliency.nii.gz")
    assert saliency.size == study.size
    mask = load_study(STUDIES / "cr_lesion_mask.nii.gz").image > 0
    maps = saliency.image[None]
    assert bool(pointing_game(maps, mask, tolerance=TOLERANCE)[0])
    assert not bool(pointing_game(maps, mask.flip(1), tolerance=TOLERANCE)[0])
