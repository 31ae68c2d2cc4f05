"""Loading bundle folders: configs, weights, scripts, metadata, and the errors that name the bundle."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.networks.nets import DenseNet121

from medmdm.bundle import load_bundle
from medmdm.errors import BundleError, ModelError
from medmdm.io import load_study
from medmdm.pipeline import explain_study
from medmdm.testing.internal.bundles import DETECTOR_3D_CONFIG, DETECTOR_SOURCE, ct_with_ball, write_bundle

MODEL_ZOO_YAML = textwrap.dedent(
    """
    imports:
      - $import glob
      - $import os
      - $import torch
    bundle_root: .
    output_dir: $@bundle_root + '/eval'
    dataset_dir: /workspace/data
    device: "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')"
    network_def:
      _target_: DenseNet121
      spatial_dims: 2
      in_channels: 1
      out_channels: 3
    network: $@network_def.to(@device)
    preprocessing:
      _target_: Compose
      transforms:
        - _target_: LoadImaged
          keys: image
          image_only: true
        - _target_: EnsureChannelFirstd
          keys: image
        - _target_: ScaleIntensityd
          keys: image
    dataset:
      _target_: Dataset
      data: "$[{'image': i} for i in glob.glob(@dataset_dir + '/*.png')]"
      transform: "@preprocessing"
    dataloader:
      _target_: DataLoader
      dataset: "@dataset"
      batch_size: 1
    inferer:
      _target_: SimpleInferer
    handlers:
      - _target_: CheckpointLoader
        _disabled_: $not os.path.exists(@bundle_root + '/models/model.pt')
        load_path: $@bundle_root + '/models/model.pt'
        load_dict:
          model: "@network"
    evaluator:
      _target_: SupervisedEvaluator
      device: "@device"
      val_data_loader: "@dataloader"
      network: "@network"
      inferer: "@inferer"
      val_handlers: "@handlers"
    run:
      - $@evaluator.run()
    """
)
MODEL_ZOO_METADATA = {
    "name": "zoo_classifier",
    "version": "0.3.1",
    "network_data_format": {
        "inputs": {"image": {"num_channels": 1, "spatial_shape": [32, 32]}},
        "outputs": {
            "pred": {"num_channels": 3, "channel_def": {"0": "normal", "1": "benign", "2": "malignant"}}
        },
    },
}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_detector_bundle_metadata_weights_and_preprocessing(detector_bundle):
    bundle = load_bundle(detector_bundle)
    assert (bundle.name, bundle.version) == ("lesion_detector_3d", "1.2.0")
    assert bundle.class_names == ["normal", "lesion"]
    assert bundle.image_key == "image"
    assert bundle.root == detector_bundle.resolve()
    assert bundle.weights == detector_bundle.resolve() / "models" / "model.pt"
    assert bundle.weights_sha256 == sha256(bundle.weights)
    assert float(bundle.network.scale) == 20.0  # from the "model" entry of the checkpoint
    assert not bundle.network.training
    names = [type(t).__name__ for t in bundle.preprocessing.transforms]
    assert names == ["Orientationd", "Spacingd", "ScaleIntensityRanged", "Resized", "EnsureTyped"]
    summary = bundle.summary()
    json.dumps(summary)
    assert summary["weights_sha256"] == bundle.weights_sha256


def test_preprocess_gives_a_network_input_in_the_studys_space(detector_bundle, tmp_path):
    path, _ = ct_with_ball(tmp_path / "ct.nii.gz")
    study = load_study(path)
    x = load_bundle(detector_bundle).preprocess(study)
    assert tuple(x.shape) == (1, 1, 24, 24, 24)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # The source's first voxel centre and the network grid's corner stay close in RAS space.
    corner = (x.affine.reshape(-1, 4, 4)[0] @ torch.tensor([0.0, 0, 0, 1], dtype=torch.float64))[:3]
    extent = study.affine @ torch.tensor(
        [[0.0, 39, 0, 39], [0, 0, 35, 35], [0, 13, 13, 0], [1, 1, 1, 1]], dtype=torch.float64
    )
    low = extent[:3].min(dim=1).values - 3.0
    high = extent[:3].max(dim=1).values + 3.0
    assert bool(((corner >= low) & (corner <= high)).all())


def test_model_zoo_template_yaml_densenet(tmp_path):
    state = DenseNet121(spatial_dims=2, in_channels=1, out_channels=3).state_dict()
    root = write_bundle(
        tmp_path / "zoo",
        MODEL_ZOO_YAML,
        metadata=MODEL_ZOO_METADATA,
        state=state,
        config_name="inference.yaml",
    )
    bundle = load_bundle(root)
    assert isinstance(bundle.network, DenseNet121)
    assert bundle.spatial_dims == 2
    assert bundle.class_names == ["normal", "benign", "malignant"]
    assert [type(t).__name__ for t in bundle.preprocessing.transforms] == ["ScaleIntensityd"]
    for key, value in bundle.network.state_dict().items():
        torch.testing.assert_close(value, state[key])


def test_model_zoo_bundle_explains_a_2d_study(tmp_path):
    root = write_bundle(
        tmp_path / "zoo",
        MODEL_ZOO_YAML,
        metadata=MODEL_ZOO_METADATA,
        state=DenseNet121(spatial_dims=2, in_channels=1, out_channels=3).state_dict(),
        config_name="inference.yaml",
    )
    import nibabel as nib

    image = np.random.default_rng(0).normal(size=(64, 56, 1)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([0.5, 0.7, 1.0, 1.0])), tmp_path / "xray.nii.gz")
    result = explain_study(
        tmp_path / "xray.nii.gz",
        root,
        tmp_path / "out",
        target=2,
        method="saliency",
    )
    assert tuple(result.saliency.shape) == (64, 56)
    assert result.target.index == 2 and result.target.name == "malignant"
    assert result.bundle.name == "zoo_classifier"


def test_scripts_of_two_bundles_do_not_mix(tmp_path):
    first = write_bundle(
        tmp_path / "a", DETECTOR_3D_CONFIG, scripts=DETECTOR_SOURCE, state={"scale": torch.tensor(1.0)}
    )
    other_source = DETECTOR_SOURCE.replace("threshold: float = 0.5", "threshold: float = 0.25")
    second = write_bundle(
        tmp_path / "b", DETECTOR_3D_CONFIG, scripts=other_source, state={"scale": torch.tensor(2.0)}
    )
    a, b = load_bundle(first), load_bundle(second)
    assert a.network.threshold == 0.5 and b.network.threshold == 0.25
    assert float(a.network.scale) == 1.0 and float(b.network.scale) == 2.0


def test_torchscript_bundle_without_network_def(tmp_path):
    import importlib.util

    (tmp_path / "detector_net.py").write_text(DETECTOR_SOURCE)
    spec = importlib.util.spec_from_file_location("detector_net", tmp_path / "detector_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    scripted = torch.jit.script(module.LesionDetector(spatial_dims=2))
    config = {
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "img", "image_only": True},
                {"_target_": "EnsureChannelFirstd", "keys": "img"},
                {"_target_": "ScaleIntensityd", "keys": "img"},
            ],
        }
    }
    root = write_bundle(tmp_path / "ts", config)
    (root / "models").mkdir()
    scripted.save(str(root / "models" / "model.ts"))
    bundle = load_bundle(root)
    assert isinstance(bundle.network, torch.jit.ScriptModule)
    assert bundle.image_key == "img"
    assert bundle.weights_sha256 == sha256(root / "models" / "model.ts")

    import nibabel as nib

    image = np.zeros((30, 26, 1), np.float32)
    image[20:24, 5:9] = 1.0
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "spot.nii.gz")
    result = explain_study(tmp_path / "spot.nii.gz", bundle, tmp_path / "out", options={"seed": 0})
    peak = np.unravel_index(int(result.saliency.argmax()), tuple(result.saliency.shape))
    assert 19 <= peak[0] <= 24 and 4 <= peak[1] <= 9


def test_missing_weights_is_an_error_unless_allowed(tmp_path):
    root = write_bundle(
        tmp_path / "noweights", DETECTOR_3D_CONFIG, metadata={"name": "empty_one"}, scripts=DETECTOR_SOURCE
    )
    with pytest.raises(BundleError, match=r"bundle empty_one: no weights"):
        load_bundle(root)
    assert load_bundle(root, allow_random_weights=True).weights is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"preprocessing": {"_target_": "Compose", "transforms": []}}, "no network_def"),
        ({"network_def": {"_target_": "NoSuchNet"}}, "cannot build network_def"),
        ({"network_def": "$[1, 2]"}, "network_def is a list, not a torch module"),
    ],
)
def test_bad_network_def(tmp_path, config, message):
    root = write_bundle(tmp_path / "bad", config, metadata={"name": "bad_bundle"})
    with pytest.raises(BundleError, match=f"bundle bad_bundle: {message}"):
        load_bundle(root)


@pytest.mark.parametrize(
    ("name", "text"), [("inference.json", '{"network_def": '), ("inference.yaml", "network_def: [unclosed")]
)
def test_config_that_does_not_parse(tmp_path, name, text):
    root = write_bundle(tmp_path / "broken", text, config_name=name)
    with pytest.raises(BundleError, match=f"bundle broken: cannot parse {name}"):
        load_bundle(root)


def test_weights_that_do_not_fit(tmp_path):
    root = write_bundle(
        tmp_path / "mismatch", DETECTOR_3D_CONFIG, scripts=DETECTOR_SOURCE, state={"other": torch.zeros(2)}
    )
    with pytest.raises(BundleError, match="do not fit network_def"):
        load_bundle(root)


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(BundleError, match="no such folder"):
        load_bundle(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no configs/inference"):
        load_bundle(tmp_path / "empty")
    with pytest.raises(BundleError, match=r"no config file other\.json"):
        load_bundle(write_bundle(tmp_path / "x", {}), config_files="other.json")


def test_network_without_class_logits_names_the_bundle(tmp_path):
    config = {
        "network_def": {"_target_": "torch.nn.Conv3d", "in_channels": 1, "out_channels": 2, "kernel_size": 1}
    }
    root = write_bundle(
        tmp_path / "seg",
        config,
        metadata={"name": "not_a_classifier"},
        state=torch.nn.Conv3d(1, 2, 1).state_dict(),
    )
    path, _ = ct_with_ball(tmp_path / "ct.nii.gz", shape=(8, 8, 6))
    with pytest.raises(ModelError, match="bundle not_a_classifier: "):
        explain_study(path, root, tmp_path / "out", options={"steps": 5})
    assert not (tmp_path / "out").exists()


def test_bundle_explain_options_apply_to_the_methods_that_take_them(detector_bundle, tmp_path):
    metadata_path = detector_bundle / "configs" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["medmdm"] = {"explain_options": {"baseline": "blur", "blur_sigma": 2.0}}
    metadata_path.write_text(json.dumps(metadata))
    bundle = load_bundle(detector_bundle)
    assert bundle.explain_options == {"baseline": "blur", "blur_sigma": 2.0}
    assert bundle.summary()["explain_options"] == bundle.explain_options
    path, _ = ct_with_ball(tmp_path / "ct.nii.gz")
    result = explain_study(path, bundle, tmp_path / "hdm", options={"steps": 3}, formats="json")
    assert result.explanation.options["baseline"] == "blur"
    assert result.explanation.options["blur_sigma"] == 2.0
    given = {"steps": 3, "baseline": "mean"}  # the user's options win
    result = explain_study(path, bundle, tmp_path / "mean", options=given, formats="json")
    assert result.explanation.options["baseline"] == "mean"
    result = explain_study(path, bundle, tmp_path / "sal", method="saliency", formats="json")
    assert "baseline" not in result.explanation.options  # saliency has no baseline: left out

    metadata["medmdm"] = {"explain_options": ["baseline", "blur"]}
    metadata_path.write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match="explain_options"):
        load_bundle(detector_bundle)
