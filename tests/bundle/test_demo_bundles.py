"""The demo bundles that ship in ``sample_data/`` load like any model-zoo bundle, and their maps land
on the sample studies' grids."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from medmdm.bundle import load_bundle
from medmdm.bundle.demo import DEMO_BUNDLES, demo_bundle_path
from medmdm.geometry import map_to_source
from medmdm.io import load_study

STUDIES = Path(__file__).resolve().parents[2] / "sample_data" / "studies"
SAMPLES = {  # bundle: (finding, network input shape, sample study)
    "radiograph_lesion_2d": ("lesion", [128, 128], "cr_lesion.dcm"),
    "ct_nodule_3d": ("nodule", [64, 64, 48], "ct_nodule"),
}


@pytest.fixture(scope="module", params=sorted(DEMO_BUNDLES))
def demo(request):
    dims = request.param
    bundle = load_bundle(demo_bundle_path(dims))
    return dims, bundle, SAMPLES[bundle.name]


def test_demo_bundle_metadata_weights_and_preprocessing(demo):
    dims, bundle, (finding, _, _) = demo
    assert bundle.name == DEMO_BUNDLES[dims] and bundle.version == "0.1.0"
    assert bundle.class_names == [f"no {finding}", finding]
    assert bundle.weights.name == "model.pt"
    assert bundle.weights_sha256 == hashlib.sha256(bundle.weights.read_bytes()).hexdigest()
    assert not bundle.network.training
    names = [type(t).__name__ for t in bundle.preprocessing.transforms]
    assert "LoadImaged" not in names and "EnsureChannelFirstd" not in names
    assert names[-2:] == ["Resized", "EnsureTyped"]
    summary = bundle.summary()
    assert (summary["name"], summary["version"], summary["weights_sha256"]) == (
        bundle.name,
        "0.1.0",
        bundle.weights_sha256,
    )


def test_demo_bundle_classifies_and_maps_back_onto_the_sample_study(demo):
    _, bundle, (_, input_shape, sample) = demo
    study = load_study(STUDIES / sample)
    x = bundle.preprocess(study)
    assert list(x.shape[2:]) == input_shape
    with torch.no_grad():
        probability = torch.softmax(bundle.network(x.as_tensor()), dim=1)[0, 1]
    assert probability > 0.5
    # A map that is 1 on one network voxel only comes back to the source voxels at that voxel's
    # position: the two grids' affines agree on where it is.
    network_voxel = float(x.affine[:3, :3].double().norm(dim=0).max())
    for fraction in (0.2, 0.5, 0.7):
        network_map = torch.zeros(1, *input_shape)
        index = tuple(int(fraction * n) for n in input_shape)
        network_map[(0, *index)] = 1.0
        source = map_to_source(network_map, x[0], study.image)
        assert tuple(source.shape) == tuple(study.size)
        peak_world = world_position(x.affine, index, input_shape)
        source_world = world_position(study.affine, int(source.argmax()), list(study.size))
        assert float((peak_world - source_world)[:3].norm()) <= network_voxel


def world_position(affine: torch.Tensor, voxel: int | tuple[int, ...], shape: list[int]) -> torch.Tensor:
    """Position (mm) of a voxel, by index or flat index into ``shape``, through a 4 x 4 affine."""
    index = [float(i) for i in (np.unravel_index(voxel, tuple(shape)) if isinstance(voxel, int) else voxel)]
    return affine.double() @ torch.tensor([*index, *[0.0] * (3 - len(index)), 1.0], dtype=torch.float64)
