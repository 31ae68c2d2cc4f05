"""Studies of the shapes bundles take, end to end through ``medmdm explain``: an RGB PNG given to a colour
classifier, and a 4-channel MRI given as four files or as one 4D NIfTI to a segmentation bundle.

The networks' answers are known by construction: the classifier scores the reddest spot of the image, the
segmenter marks where its 4th input channel (FLAIR) is bright.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_dilation

from medmdm.cli.main import main
from medmdm.testing.internal.bundles import write_bundle

NETWORKS = textwrap.dedent(
    """
    import torch
    from torch import nn
    import torch.nn.functional as F


    def local_mean(x):
        pool = F.avg_pool3d if x.ndim == 5 else F.avg_pool2d
        return pool(x, 3, stride=1, padding=1, count_include_pad=False)


    class RedSpot(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(10.0))

        def forward(self, x):
            red = local_mean(x[:, :1] - x[:, 1:2]).flatten(1).amax(1)
            score = self.scale * (red - 0.25)
            return torch.stack([-score, score], 1)


    class FlairSegmenter(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(10.0))

        def forward(self, x):
            bright = self.scale * (local_mean(x[:, 3:4]) - 0.5)
            return torch.cat([-bright, bright], 1)
    """
)
SQUARE = (slice(10, 18), slice(30, 40))  # rows, columns of the red square
ROWS, COLS = 32, 48
MR_SHAPE = (20, 18, 12)
MR_AFFINE = np.array([[-1.5, 0, 0, 30.0], [0, -1.5, 0, 25.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
BALL = ((12, 6, 5), 3.0)  # centre (voxels), radius (voxels) of the FLAIR lesion
SEQUENCES = ("t1", "t1c", "t2", "flair")


def bundle(root: Path, network: str, channels: int, dims: int, a_max: float) -> Path:
    """A bundle of ``scripts.net.<network>`` taking ``channels`` channels, its input scaled from 0..``a_max``
    to 0..1 (the loading step names a reader medmdm does not use)."""
    config = {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "image_key": "image",
        "network_def": {"_target_": f"scripts.net.{network}"},
        "network": "$@network_def",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {
                    "_target_": "LoadImaged",
                    "keys": "@image_key",
                    **({"reader": "PILReader"} if dims == 2 else {}),
                },
                {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
                *(
                    [{"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"}]
                    if dims == 3
                    else []
                ),
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "@image_key",
                    "a_min": 0,
                    "a_max": a_max,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
                {"_target_": "EnsureTyped", "keys": "@image_key"},
            ],
        },
    }
    image = {"type": "image", "num_channels": channels, "spatial_shape": [16] * dims}
    metadata = {"name": network, "version": "0.1.0", "network_data_format": {"inputs": {"image": image}}}
    return write_bundle(
        root, config, metadata=metadata, scripts=NETWORKS, state={"scale": torch.tensor(10.0)}
    )


def run(*args: object) -> int:
    return main(["explain", *map(str, args), "--quiet"])


@pytest.fixture(scope="module")
def red_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("png")
    pixels = np.full((ROWS, COLS, 3), 110, np.uint8)
    pixels[SQUARE] = (230, 40, 40)
    Image.fromarray(pixels).save(folder / "frame.png")
    return folder / "frame.png"


def test_rgb_png_classifier_map_on_the_pixels(tmp_path, red_png):
    root = bundle(tmp_path / "red", "RedSpot", 3, 2, 255.0)
    out = tmp_path / "out"
    assert run(red_png, "--bundle", root, "--out", out, "--method", "saliency") == 0
    overlay = nib.load(out / "saliency.nii.gz")
    saliency = np.asarray(overlay.dataobj).reshape(COLS, ROWS)  # columns first, as the study
    np.testing.assert_array_equal(overlay.affine, np.diag([-1.0, -1.0, 1.0, 1.0]))
    square = np.zeros((ROWS, COLS), bool)
    square[SQUARE] = True
    assert saliency.sum() > 0 and saliency[square.T].sum() / saliency.sum() > 0.99  # the gradient is in it
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["kind"] == "image" and report["input"]["pixel_space"] is True
    assert report["input"]["channels"] == 3 and report["target"]["index"] == 1
    assert any("no patient geometry" in w for w in report["warnings"])
    assert {s["kind"] for s in report["skipped_outputs"]} == {"dicom-pm", "dicom-pr", "dicom-sc"}
    written = ["preview.png", "report.json", "saliency.nii.gz", "source.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == written


def test_rgb_png_with_the_default_method_keeps_the_red_square(tmp_path, red_png):
    root = bundle(tmp_path / "red", "RedSpot", 3, 2, 255.0)
    out = tmp_path / "out"
    assert run(red_png, "--bundle", root, "--out", out, "--steps", "10", "--seed", "0") == 0
    saliency = np.asarray(nib.load(out / "saliency.nii.gz").dataobj).reshape(COLS, ROWS).T
    peak = np.unravel_index(int(saliency.argmax()), saliency.shape)
    assert SQUARE[0].start <= peak[0] < SQUARE[0].stop and SQUARE[1].start <= peak[1] < SQUARE[1].stop


def test_channels_that_cannot_be_converted_are_refused_naming_both_counts(tmp_path, red_png, capsys):
    root = bundle(tmp_path / "four", "RedSpot", 4, 2, 255.0)
    assert run(red_png, "--bundle", root, "--out", tmp_path / "out") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "the study has 3 channel(s)" in line and "the network takes 4" in line
    assert not (tmp_path / "out").exists()


def test_a_dicom_format_is_refused_for_an_image_before_the_model_runs(tmp_path, red_png, capsys):
    root = bundle(tmp_path / "red", "RedSpot", 3, 2, 255.0)
    assert run(red_png, "--bundle", root, "--out", tmp_path / "out", "--format", "dicom-pm") == 2
    assert "dicom-pm" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def brats(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], Path, np.ndarray]:
    """Four co-registered sequences (only FLAIR shows the lesion), the same in one 4D NIfTI, the lesion."""
    folder = tmp_path_factory.mktemp("brats")
    grid = np.stack(np.meshgrid(*map(np.arange, MR_SHAPE), indexing="ij"), -1)
    lesion = np.linalg.norm(grid - np.array(BALL[0]), axis=-1) <= BALL[1]
    volumes = np.full((4, *MR_SHAPE), 30.0, np.float32) + np.arange(4, dtype=np.float32)[:, None, None, None]
    volumes[3][lesion] = 90.0
    paths = []
    for name, volume in zip(SEQUENCES, volumes, strict=True):
        nib.save(nib.Nifti1Image(volume, MR_AFFINE), folder / f"{name}.nii.gz")
        paths.append(folder / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(np.moveaxis(volumes, 0, -1), MR_AFFINE), folder / "case.nii.gz")
    return paths, folder / "case.nii.gz", lesion


def test_four_mri_files_are_one_study_and_the_map_lies_on_their_grid(tmp_path, brats):
    paths, _, lesion = brats
    root = bundle(tmp_path / "seg", "FlairSegmenter", 4, 3, 100.0)
    out = tmp_path / "out"
    assert run(*paths, "--bundle", root, "--out", out, "--method", "saliency", "--target", "region:1") == 0
    overlay = nib.load(out / "saliency.nii.gz")
    assert overlay.shape[:3] == MR_SHAPE
    np.testing.assert_allclose(overlay.affine, MR_AFFINE, atol=1e-3)
    saliency = np.asarray(overlay.dataobj).reshape(MR_SHAPE)
    # The region reaches one voxel past the lesion (a 3-voxel mean over it), its gradient one voxel further.
    near = binary_dilation(lesion, np.ones((3, 3, 3), bool), iterations=2)
    assert saliency.sum() > 0 and saliency[near].sum() / saliency.sum() > 0.999
    report = json.loads((out / "report.json").read_text())
    assert report["input"]["channel_files"] == [str(p) for p in paths] and report["input"]["channels"] == 4
    assert report["target"]["kind"] == "region"


def test_one_4d_nifti_gives_the_map_of_its_four_files(tmp_path, brats):
    paths, case, _ = brats
    root = bundle(tmp_path / "seg", "FlairSegmenter", 4, 3, 100.0)
    maps = []
    for name, given in (("files", paths), ("nifti", [case])):
        out = tmp_path / name
        assert (
            run(*given, "--bundle", root, "--out", out, "--method", "saliency", "--target", "region:1") == 0
        )
        maps.append(np.asarray(nib.load(out / "saliency.nii.gz").dataobj))
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-6)


def test_files_in_another_order_are_other_channels(tmp_path, brats, capsys):
    paths, _, _ = brats
    root = bundle(tmp_path / "seg", "FlairSegmenter", 4, 3, 100.0)
    # FLAIR first: the network's 4th channel is T2, flat, so region 1 is empty.
    code = run(paths[3], *paths[:3], "--bundle", root, "--out", tmp_path / "out", "--target", "region:1")
    assert code == 2 and "no voxel of label 1" in capsys.readouterr().err


def test_files_on_different_grids_are_refused_in_one_line(tmp_path, brats, capsys):
    paths, _, _ = brats
    moved = MR_AFFINE.copy()
    moved[0, 3] += 0.5
    nib.save(nib.Nifti1Image(np.zeros(MR_SHAPE, np.float32), moved), tmp_path / "flair.nii.gz")
    root = bundle(tmp_path / "seg", "FlairSegmenter", 4, 3, 100.0)
    assert run(*paths[:3], tmp_path / "flair.nii.gz", "--bundle", root, "--out", tmp_path / "out") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(tmp_path / "flair.nii.gz") in line and str(paths[0]) in line and "by up to 0.5 mm" in line
