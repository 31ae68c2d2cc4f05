"""Bundles as the model zoo ships them: inferers, config references, the bundle's own region rules,
pretrained backbones, detectors, and what is refused. Every network's answer is known by construction
(:data:`medmdm.testing.internal.bundles.BLOB_SOURCE`)."""

from __future__ import annotations

import json
import re

import monai.data
import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from medmdm.bundle import inference, load_bundle
from medmdm.cli.main import main
from medmdm.errors import BundleError, InputError, ModelError
from medmdm.explainers.targets import DetectionTarget
from medmdm.pipeline import explain_study, prepare, read
from medmdm.pipeline.stages import focus
from medmdm.testing.internal.bundles import (
    ARGMAX,
    BLOB_SOURCE,
    SLIDING_WINDOW,
    blob_bundle,
    blob_config,
    ct_with_ball,
    write_bundle,
)

SEGMENTER = {"_target_": "scripts.net.BlobSegmenter"}
FAST = {"method": "saliency"}


def local_mean(x: torch.Tensor) -> torch.Tensor:
    pool = F.avg_pool3d if x.ndim == 5 else F.avg_pool2d
    return pool(x, 3, stride=1, padding=1, count_include_pad=False)


@pytest.fixture
def corner_ct(tmp_path):
    """A CT whose ball lies in a corner: the windows that cover it are a part of the volume."""
    return ct_with_ball(tmp_path / "ct.nii.gz", shape=(64, 60, 20), centre=(12, 14, 6))


def assert_the_bundles_own_score(result, bundle, ct_path, error):
    """The explained score is the bundle's own inference through its inferer on the whole study (where
    the network alone fails, with ``error`` if given), averaged over the region its argmax predicts;
    returns the region."""
    whole = bundle.preprocess(read(ct_path)).as_tensor().float()
    with pytest.raises(RuntimeError, match=error):
        bundle.network(whole)
    with torch.no_grad():
        logits = bundle.inferer(whole, bundle.network)[0]
    region = logits.argmax(0) == 1
    assert result.target.details["voxels"] == int(region.sum())
    expected = float(logits[1][region].mean())
    assert float(result.explanation.score_original[0]) == pytest.approx(expected, rel=1e-5)
    return region


def assert_on_source_grid(result, ct_path):
    source = nib.load(ct_path)
    written = nib.load(result.out_dir / "saliency.nii.gz")
    assert written.shape == source.shape
    np.testing.assert_allclose(written.affine, source.affine, atol=1e-3)


def test_sliding_window_region_through_the_windows_that_cover_it(tmp_path, corner_ct, monkeypatch):
    """A network that refuses sizes not divisible by 4, behind a 16^3 sliding window on a 47 x 36 x 30
    network grid; the config reads its image with ITKReader, which is never built."""

    def no_itk(*args, **kwargs):
        raise AssertionError("ITKReader was built")

    monkeypatch.setattr(monai.data.ITKReader, "__init__", no_itk)
    root = blob_bundle(tmp_path / "sw", blob_config(SEGMENTER, inferer=SLIDING_WINDOW, postprocessing=ARGMAX))
    bundle = load_bundle(root)
    ct, ball = corner_ct
    result = explain_study(ct, bundle, tmp_path / "out", target="region:1", **FAST)
    assert_on_source_grid(result, ct)

    region = assert_the_bundles_own_score(result, bundle, ct, r"sizes \(47, 36, 30\) must be divisible by 4")

    # only the windows that overlap the ball were explained (starts 0, 8, ..., 31 on the first axis: 16 to
    # 31, whose windows end at 47); the rest of the map is 0
    box = [region.any(dim=[a for a in range(3) if a != axis]).nonzero()[:, 0] for axis in range(3)]
    starts = [[min(8 * i, n - 16) for i in range(-(-(n - 16) // 8) + 1)] for n in (47, 36, 30)]
    used = [
        [s for s in each if s <= int(b.max()) and s + 16 > int(b.min())]
        for each, b in zip(starts, box, strict=True)
    ]
    part = " x ".join(f"{min(u)}:{max(u) + 16}" for u in used)
    assert result.network_shape[1:] == tuple(max(u) + 16 - min(u) for u in used)
    assert result.network_shape[1] < 47
    assert any(f"explained the network grid's [{part}] of 47 x 36 x 30" in w for w in result.warnings)
    saliency = result.saliency.numpy()
    assert saliency[40:, 40:, :].max() == 0
    assert saliency[ball].sum() / saliency.sum() > 0.6
    with pytest.raises(ModelError, match=r"\(1, 2, 47, 36, 30\); .* takes a region target \(region:K\)"):
        explain_study(ct, bundle, tmp_path / "class", **FAST)


def test_per_slice_inferer_runs_a_2d_network_on_a_3d_study(tmp_path, corner_ct):
    inferer = {"_target_": "SliceInferer", "roi_size": [16, 16], "spatial_dim": 2, "sw_batch_size": 4}
    root = blob_bundle(tmp_path / "slices", blob_config(SEGMENTER, inferer=inferer, postprocessing=ARGMAX))
    bundle = load_bundle(root)
    ct, ball = corner_ct
    result = explain_study(ct, bundle, tmp_path / "out", target="region:1", **FAST)
    assert_on_source_grid(result, ct)
    assert_the_bundles_own_score(result, bundle, ct, None)  # the network alone fails on the volume
    assert result.saliency.numpy()[ball].sum() / float(result.saliency.sum()) > 0.8


def test_multilabel_regions_follow_the_bundles_postprocessing(tmp_path):
    """Four channels, three sigmoid outputs whose regions overlap (BraTS): region 1 is every voxel whose
    channel-1 probability passes 0.5, not the voxels where channel 1 is the largest."""
    shape, affine = (24, 24, 12), np.diag([1.5, 1.5, 2.0, 1.0])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    core = np.linalg.norm((grid - [8, 8, 6]) * [1.5, 1.5, 2.0], axis=-1) <= 5
    edema = np.linalg.norm((grid - [15, 15, 6]) * [1.5, 1.5, 2.0], axis=-1) <= 5
    channels = np.stack([core, core | edema, np.zeros(shape, bool), core], -1).astype(np.float32) * 300
    nib.save(nib.Nifti1Image(channels, affine), tmp_path / "mri.nii.gz")
    postprocessing = [
        {"_target_": "Activationsd", "keys": "pred", "sigmoid": True},
        {"_target_": "AsDiscreted", "keys": "pred", "threshold": 0.5},
        {
            "_target_": "Lambdad",
            "keys": "pred",
            "func": "$lambda x: torch.where(x[[2]] > 0, 4, torch.where(x[[0]] > 0, 1, "
            "torch.where(x[[1]] > 0, 2, 0)))",
        },
    ]
    network = {"_target_": "scripts.net.BlobSegmenter", "multilabel": True}
    bundle = load_bundle(blob_bundle(tmp_path / "brats", blob_config(network, postprocessing=postprocessing)))
    prepared = prepare(read(tmp_path / "mri.nii.gz"), bundle)
    _, target = focus(prepared, "region:1")
    x = prepared.network_input.as_tensor().float()
    logits = 10 * (local_mean(x) - 0.5)[0, :3]
    by_rule, by_argmax = logits[1] > 0, logits.argmax(0) == 1
    assert torch.equal(target.region, by_rule)
    assert int((by_rule & ~by_argmax).sum()) > 50  # argmax gives the core to channel 0
    with pytest.raises(
        InputError, match=r"predicts no voxel of label 2 .*predicts labels \[0, 1\].*--region-mask"
    ):
        focus(prepared, "region:2")


def test_region_kept_by_largest_connected_component(tmp_path):
    """``KeepLargestConnectedComponentd`` after the argmax (prostate_mri_anatomy): of two bright balls, the
    region of label 1 is the larger one only."""
    shape, spacing = (32, 24, 16), np.array([1.5, 1.5, 2.0])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    large = np.linalg.norm((grid - [8, 12, 8]) * spacing, axis=-1) <= 7
    small = np.linalg.norm((grid - [24, 12, 8]) * spacing, axis=-1) <= 4
    nib.save(
        nib.Nifti1Image((large | small).astype(np.float32) * 300, np.diag([*spacing, 1])), tmp_path / "ct.nii"
    )
    keep = {"_target_": "KeepLargestConnectedComponentd", "keys": "pred", "applied_labels": [1]}
    bundle = load_bundle(
        blob_bundle(tmp_path / "klcc", blob_config(SEGMENTER, postprocessing=[*ARGMAX, keep]))
    )
    result = explain_study(tmp_path / "ct.nii", bundle, tmp_path / "out", target="region:1", **FAST)
    with torch.no_grad():
        argmax = bundle.model(bundle.preprocess(read(tmp_path / "ct.nii")).as_tensor())[0].argmax(0) == 1
    components, count = ndimage.label(argmax.numpy())
    sizes = np.bincount(components.ravel())[1:]
    assert count == 2 and result.target.details["voxels"] == sizes.max() > sizes.min()
    rule = "region 1 predicted (Activationsd, AsDiscreted, KeepLargestConnectedComponentd)"
    assert any(rule in w for w in result.warnings)
    saliency = result.saliency.numpy()
    assert saliency[large].sum() > 10 * saliency[small].sum()


def test_region_mask_explains_the_region_the_user_gives(tmp_path, corner_ct):
    root = blob_bundle(tmp_path / "sw", blob_config(SEGMENTER, inferer=SLIDING_WINDOW, postprocessing=ARGMAX))
    ct, ball = corner_ct
    mask = np.zeros(ball.shape, np.float32)
    mask[ball] = 1
    mask[:, :, :7] = 0  # the top of the ball
    nib.save(nib.Nifti1Image(mask, nib.load(ct).affine), tmp_path / "mask.nii.gz")
    out = tmp_path / "out"
    code = main(
        [
            "explain",
            str(ct),
            "--bundle",
            str(root),
            "--target",
            "region:1",
            "--region-mask",
            str(tmp_path / "mask.nii.gz"),
            "--method",
            "saliency",
            "--out",
            str(out),
            "--format",
            "nifti,json",
        ]
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert any("region 1 given" in w for w in report["warnings"])
    predicted = explain_study(ct, load_bundle(root), tmp_path / "predicted", target="region:1", **FAST)
    assert report["target"]["region"] == "given" and predicted.target.details["region"] == "predicted"
    assert 0 < report["target"]["voxels"] < predicted.target.details["voxels"]


def test_memory_is_bounded_before_the_run(tmp_path, corner_ct, monkeypatch):
    """A gradient pass keeps what each window's pass saves for its backward pass: at least the window's input
    and its 2-channel output (3 x 16^3 floats) and a few maps more, for each of the windows that cover the
    ball's part of the input (23 x 28 x 24 voxels: 2 x 3 x 2 windows)."""
    root = blob_bundle(tmp_path / "sw", blob_config(SEGMENTER, inferer=SLIDING_WINDOW, postprocessing=ARGMAX))
    ct, _ = corner_ct
    per_window = inference.saved_bytes(load_bundle(root).network, torch.zeros(1, 1, 16, 16, 16))
    assert 3 * 16**3 * 4 <= per_window <= 8 * 16**3 * 4
    per_sample = 12 * per_window
    monkeypatch.setattr(
        inference, "free_memory", lambda device: 3 * per_sample / inference.MEMORY_SHARE + 100
    )
    result = explain_study(ct, load_bundle(root), tmp_path / "out", target="region:1", **FAST)
    assert result.network_shape[1:] == (23, 28, 24)
    assert result.explanation.options["max_batch"] == 3
    monkeypatch.setattr(inference, "free_memory", lambda device: per_sample)
    with pytest.raises(ModelError, match=r"needs about 0.00 GiB per sample, 0.0 GiB free on "):
        explain_study(ct, load_bundle(root), tmp_path / "refused", target="region:1", **FAST)
    assert not (tmp_path / "refused").exists()


def test_measuring_memory_leaves_the_network_as_it_was():
    """A DynUNet with deep supervision keeps tensors its forward pass makes; the measuring pass (on the meta
    device) must not leave them in the network, which then runs as before."""
    from monai.networks.nets import DynUNet

    network = DynUNet(3, 1, 2, [3, 3, 3], [1, 2, 2], [2, 2], deep_supervision=True, deep_supr_num=1).eval()
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        before = network(x)
    assert inference.saved_bytes(network, x) >= 3 * x.numel() * 4  # its input and output at least
    with torch.no_grad():
        torch.testing.assert_close(network(x), before)


def test_random_weights_from_the_command_line_are_marked(tmp_path, corner_ct, capsys):
    root = blob_bundle(tmp_path / "sw", blob_config(SEGMENTER, inferer=SLIDING_WINDOW), state=False)
    ct, _ = corner_ct
    args = ["explain", str(ct), "--bundle", str(root), "--method", "saliency", "--target", "region:1"]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert "random weights" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "out"), "--allow-random-weights", "--format", "json"]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"]["random_weights"] is True
    assert any("RANDOM WEIGHTS" in w for w in report["warnings"])


def test_pretrained_backbone_is_built_offline_and_the_bundles_weights_loaded(tmp_path, monkeypatch):
    """``pretrained: true`` (a key, or ``pretrained=True`` in an expression) would download weights."""

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    from monai.networks.nets import DenseNet121

    state = DenseNet121(spatial_dims=2, in_channels=1, out_channels=2).state_dict()
    for network in (
        {
            "_target_": "DenseNet121",
            "spatial_dims": 2,
            "in_channels": 1,
            "out_channels": 2,
            "pretrained": True,
        },
        "$monai.networks.nets.DenseNet121(spatial_dims=2, in_channels=1, out_channels=2, pretrained=True)",
    ):
        root = write_bundle(
            tmp_path / str(len(list(tmp_path.iterdir()))),
            {"imports": ["$import monai"], "network_def": network},
            state=state,
        )
        bundle = load_bundle(root)
        assert torch.equal(
            bundle.network.state_dict()["class_layers.out.weight"], state["class_layers.out.weight"]
        )
        assert any("pretrained" in note for note in bundle.notes)


def test_an_argument_monai_removed_is_dropped_and_the_bundles_weights_loaded(tmp_path):
    """swin_unetr_btcv_segmentation passes SwinUNETR's ``img_size``, which MONAI 1.5 removed: the network is
    built without it, the bundle's weights load strictly, and it runs through its sliding window (one 32^3
    window, the 30 x 22 x 20 network grid padded)."""
    from monai.networks.nets import SwinUNETR

    arguments = {"in_channels": 1, "out_channels": 2, "feature_size": 12, "depths": [1, 1, 1, 1]}
    arguments["norm_name"] = "batch"  # instance norm needs more than the 1^3 bottleneck of a 32^3 window
    torch.manual_seed(0)
    state = SwinUNETR(**arguments).state_dict()
    network = {"_target_": "SwinUNETR", "spatial_dims": 3, "img_size": 32, **arguments}
    inferer = {**SLIDING_WINDOW, "roi_size": [32, 32, 32]}
    config = blob_config(network, inferer=inferer, postprocessing=ARGMAX)
    bundle = load_bundle(write_bundle(tmp_path / "swin", config, metadata={"name": "swin"}, state=state))
    weights = bundle.network.state_dict()
    assert all(torch.equal(weights[name], value) for name, value in state.items())
    ct, _ = ct_with_ball(tmp_path / "ct.nii.gz")
    result = explain_study(ct, bundle, tmp_path / "out", target="region:1", **FAST)
    said = "bundle swin: network_def: SwinUNETR's img_size dropped: removed in MONAI 1.5"
    assert said in result.warnings
    assert any("region 1 predicted (Activationsd, AsDiscreted)" in w for w in result.warnings)
    assert result.saliency.shape == nib.load(ct).shape and float(result.saliency.abs().sum()) > 0


def test_a_renamed_argument_is_passed_under_its_new_name_and_others_still_fail(tmp_path):
    """``pos_embed`` of ViT became ``proj_type`` (removed in MONAI 1.4): its value is kept; an argument MONAI
    never had is the one-line cause it was."""
    network = {
        "_target_": "monai.networks.nets.ViT",
        "in_channels": 1,
        "img_size": 16,
        "patch_size": 8,
        "hidden_size": 8,
        "mlp_dim": 8,
        "num_layers": 1,
        "num_heads": 2,
        "spatial_dims": 2,
        "pos_embed": "perceptron",
    }
    bundle = load_bundle(write_bundle(tmp_path / "vit", {"network_def": network}), allow_random_weights=True)
    assert bundle.network.patch_embedding.proj_type == "perceptron"
    assert any(
        "network_def: ViT's pos_embed renamed proj_type: removed in MONAI 1.4" in n for n in bundle.notes
    )
    with pytest.raises(
        BundleError, match=r"cannot build network_def \(TypeError: .*keyword argument 'colour'\)"
    ):
        load_bundle(write_bundle(tmp_path / "colour", {"network_def": {**network, "colour": 1}}))


def test_torch_load_of_a_missing_file_names_it(tmp_path):
    config = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "arch_ckpt": "$torch.load(@bundle_root + '/models/search_code.pt')",
        "network_def": {"_target_": "torch.nn.Linear", "in_features": "$@arch_ckpt['n']", "out_features": 2},
    }
    root = write_bundle(tmp_path / "dints", config)
    with pytest.raises(BundleError) as caught:
        load_bundle(root)
    message = str(caught.value)
    assert "\n" not in message and "search_code.pt" in message and "FileNotFoundError" in message
    assert "Failed to instantiate" not in message


def test_a_missing_package_is_the_first_line_of_its_cause(tmp_path):
    config = {
        "imports": ["$import monai"],
        "network_def": "$monai.utils.optional_import('medmdm_absent')[0]()",
    }
    with pytest.raises(BundleError) as caught:
        load_bundle(write_bundle(tmp_path / "absent", config))
    cause = "OptionalImportError: import medmdm_absent (No module named 'medmdm_absent')."
    assert str(caught.value).endswith(f"cannot build network_def ({cause})")


def test_detection_target_is_the_best_anchor_of_the_class(tmp_path, corner_ct):
    root = blob_bundle(tmp_path / "det", blob_config({"_target_": "scripts.net.BlobDetector"}))
    ct, _ = corner_ct
    bundle = load_bundle(root)
    result = explain_study(ct, bundle, tmp_path / "out", target="detection:0", **FAST)
    assert_on_source_grid(result, ct)
    x = bundle.preprocess(read(ct)).as_tensor().float()
    assert float(result.explanation.score_original[0]) == pytest.approx(
        float(10 * (local_mean(x).max() - 0.5))
    )
    assert result.target.kind == "detection"
    with pytest.raises(InputError, match="out of range"):
        explain_study(ct, bundle, tmp_path / "out2", target="detection:2", **FAST)


def test_classifier_logits_with_singleton_axes_and_random_transforms(tmp_path, corner_ct):
    noise = ({"_target_": "RandGaussianNoised", "keys": "@image_key", "prob": 1.0, "std": 5.0},)
    config = blob_config({"_target_": "scripts.net.PooledClassifier"}, extra_steps=noise)
    bundle = load_bundle(blob_bundle(tmp_path / "cls", config))
    ct, _ = corner_ct
    result = explain_study(ct, bundle, tmp_path / "out", **FAST)
    assert result.target.index == 1
    assert float(result.explanation.score_original[0]) == pytest.approx(5.0, rel=1e-4)  # 10 * (1 - 0.5)
    assert any("RandGaussianNoised" in w for w in result.warnings)


def test_array_preprocessing_gets_an_array(tmp_path, corner_ct):
    config = {
        "network_def": {"_target_": "scripts.net.PooledClassifier"},
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImage", "image_only": True},
                {"_target_": "EnsureChannelFirst"},
                {"_target_": "ScaleIntensityRange", "a_min": 0, "a_max": 300, "b_min": 0, "b_max": 1},
            ],
        },
    }
    bundle = load_bundle(blob_bundle(tmp_path / "array", config))
    x = bundle.preprocess(read(corner_ct[0]))
    assert float(x.max()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("config", "metadata", "said"),
    [
        (
            {
                "preprocessing": {
                    "_target_": "Compose",
                    "transforms": [{"_target_": "AddGuidanceSignalDeepEditd"}],
                }
            },
            {},
            "it takes user input (clicks, prompts or guidance: AddGuidanceSignalDeepEditd)",
        ),
        (
            {},
            {"network_data_format": {"inputs": {"image": {}, "points": {}}}},
            "its network takes 2 inputs (image, points)",
        ),
        (
            {
                "preprocessing": {
                    "_target_": "Compose",
                    "transforms": [{"_target_": "LoadImaged", "keys": ["a", "v"]}],
                }
            },
            {},
            "it reads 2 images (a, v) under separate keys",
        ),
        (
            {},
            {"network_data_format": {"inputs": {"latent": {"type": "noise", "format": "image"}}}},
            "a generative bundle (its network makes an image from noise or a latent): nothing to explain",
        ),
    ],
)
def test_bundles_that_need_more_than_an_image_are_refused(tmp_path, config, metadata, said):
    root = write_bundle(tmp_path / "interactive", {"network_def": SEGMENTER, **config}, metadata=metadata)
    with pytest.raises(BundleError, match=re.escape(f"not supported: {said}")):
        load_bundle(root)


def test_detection_target_reads_anchor_logits_and_refuses_other_outputs():
    logits = torch.tensor([[[0.0, 1.0], [3.0, -1.0], [2.0, 5.0]]])  # (B=1, anchors=3, classes=2)
    for index, best in ((0, 3.0), (1, 5.0)):
        bound = DetectionTarget(index).bind({"classification": logits}, 1, "logit")
        assert float(bound.scores({"classification": logits})[0]) == best
    with pytest.raises(ModelError, match=r"returned \['logits'\]; a detection target needs a mapping"):
        DetectionTarget(0).bind({"logits": logits[:, 0]}, 1, "logit")


def test_per_slice_inferer_on_a_2d_study_runs_its_2d_windows(tmp_path):
    """A 2D bundle whose inferer is a ``SliceInferer`` (16 x 16 windows) on a 42 x 38 slice, which the
    network alone refuses (not divisible by 4): its windows run as a 2D sliding window."""
    image = np.zeros((38, 42), np.uint8)  # rows x columns: a 42 x 38 image
    rows, columns = np.mgrid[:38, :42]
    disc = (rows - 10) ** 2 + (columns - 30) ** 2 <= 16
    image[disc] = 255
    Image.fromarray(image).save(tmp_path / "slice.png")
    inferer = {"_target_": "SliceInferer", "roi_size": [16, 16], "spatial_dim": 2, "sw_batch_size": 4}
    config = {
        "network_def": SEGMENTER,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "ScaleIntensityd", "keys": "image"},
            ],
        },
        "inferer": inferer,
        "postprocessing": {"_target_": "Compose", "transforms": ARGMAX},
    }
    root = write_bundle(tmp_path / "slice", config, scripts=BLOB_SOURCE, state={"scale": torch.tensor(10.0)})
    bundle = load_bundle(root)
    result = explain_study(tmp_path / "slice.png", bundle, tmp_path / "out", target="region:1", **FAST)
    saliency = result.saliency.numpy()
    assert saliency.shape == (42, 38)
    assert saliency[disc.T].sum() / saliency.sum() > 0.5
    whole = bundle.preprocess(read(tmp_path / "slice.png")).as_tensor().float()
    with pytest.raises(RuntimeError, match=r"sizes \(42, 38\) must be divisible by 4"):
        bundle.network(whole)
    with torch.no_grad():
        region = bundle.model(whole)[0].argmax(0) == 1
    assert result.target.details["voxels"] == int(region.sum()) > 0


def test_a_network_that_fails_on_its_input_is_one_line_naming_the_bundle(tmp_path, corner_ct):
    """A network needing more inputs than the image (a diffusion network's time steps) fails on the first
    forward pass: the error names the bundle, the input's shape and the cause."""
    network = {"_target_": "torch.nn.Bilinear", "in1_features": 20, "in2_features": 20, "out_features": 2}
    root = write_bundle(tmp_path / "two", {"network_def": network}, metadata={"name": "two_inputs"})
    ct, _ = corner_ct
    said = r"^bundle two_inputs: its network fails on a 1 x 1 x \d+ x \d+ x \d+ input \(TypeError: .*missing"
    with pytest.raises(BundleError, match=said) as error:
        explain_study(ct, load_bundle(root, allow_random_weights=True), tmp_path / "out", **FAST)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()
