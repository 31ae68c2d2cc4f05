"""Bundle folders and studies for tests.

The lesion detector's answer is known by construction; it lives in the bundle's own ``scripts/``, behind a
3D preprocessing that reorients, resamples, rescales and resizes.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

# A classifier whose answer is known by construction: the "lesion" logit is the brightest local mean of
# the (scaled) input, so the evidence is the bright ball and nothing else.
DETECTOR_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn
    import torch.nn.functional as F


    class LesionDetector(nn.Module):
        def __init__(self, spatial_dims: int = 3, width: int = 3, threshold: float = 0.5):
            super().__init__()
            self.spatial_dims = spatial_dims
            self.width = width
            self.threshold = threshold
            self.scale = nn.Parameter(torch.tensor(20.0))

        def forward(self, x):
            if self.spatial_dims == 3:
                local = F.avg_pool3d(x[:, :1], self.width, stride=1, padding=self.width // 2)
            else:
                local = F.avg_pool2d(x[:, :1], self.width, stride=1, padding=self.width // 2)
            peak = local.flatten(1).amax(dim=1)
            lesion = self.scale * (peak - self.threshold)
            return torch.stack([-lesion, lesion], dim=1)
    """
)

DETECTOR_3D_CONFIG = {
    "imports": ["$import torch"],
    "bundle_root": ".",
    "device": "$torch.device('cpu')",
    "network_def": {"_target_": "scripts.net.LesionDetector", "spatial_dims": 3},
    "network": "$@network_def.to(@device)",
    "preprocessing": {
        "_target_": "Compose",
        "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
            {"_target_": "Spacingd", "keys": "image", "pixdim": [2.0, 2.0, 2.0], "mode": "bilinear"},
            {
                "_target_": "ScaleIntensityRanged",
                "keys": "image",
                "a_min": -1000,
                "a_max": 400,
                "b_min": 0.0,
                "b_max": 1.0,
                "clip": True,
            },
            {"_target_": "Resized", "keys": "image", "spatial_size": [24, 24, 24]},
            {"_target_": "EnsureTyped", "keys": "image"},
        ],
    },
    "inferer": {"_target_": "SimpleInferer"},
    "postprocessing": {
        "_target_": "Compose",
        "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": True}],
    },
}


def write_bundle(
    root: Path,
    config: dict | str,
    *,
    metadata: dict | None = None,
    scripts: str | None = None,
    state: dict | None = None,
    config_name: str = "inference.json",
) -> Path:
    """Write a bundle folder: ``configs/<config_name>`` (a dict as JSON, or text as it is), and optionally
    ``configs/metadata.json``, ``scripts/net.py`` and ``models/model.pt`` (``torch.save(state)``)."""
    (root / "configs").mkdir(parents=True)
    text = config if isinstance(config, str) else json.dumps(config, indent=1)
    (root / "configs" / config_name).write_text(text)
    if metadata is not None:
        (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    if scripts is not None:
        (root / "scripts").mkdir()
        (root / "scripts" / "__init__.py").write_text("")
        (root / "scripts" / "net.py").write_text(scripts)
    if state is not None:
        (root / "models").mkdir()
        torch.save(state, root / "models" / "model.pt")
    return root


def ct_with_ball(
    path: Path,
    shape: tuple[int, int, int] = (40, 36, 14),
    centre: tuple[int, int, int] = (27, 11, 9),
    radius_mm: float = 7.0,
) -> tuple[Path, np.ndarray]:
    """Write an LPS-oriented, anisotropic NIfTI "CT" (0 HU) with a 300 HU ball.

    Returns the path and the ball's boolean mask on the image grid.
    """
    affine = np.array([[-1.1, 0.0, 0.0, 30.0], [0.0, -0.9, 0.0, 20.0], [0.0, 0.0, 3.0, -15.0], [0, 0, 0, 1]])
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    mm = (grid - np.array(centre)) * np.array([1.1, 0.9, 3.0])
    ball = np.linalg.norm(mm, axis=-1) <= radius_mm
    volume = np.zeros(shape, np.float32)
    volume[ball] = 300.0
    nib.save(nib.Nifti1Image(volume, affine), path)
    return path, ball


def detector_bundle(root: Path) -> Path:
    """The 3D lesion-detector bundle (Orientationd, Spacingd, ScaleIntensityRanged, Resized)."""
    metadata = {
        "name": "lesion_detector_3d",
        "version": "1.2.0",
        "network_data_format": {"outputs": {"pred": {"channel_def": {"0": "normal", "1": "lesion"}}}},
    }
    return write_bundle(
        root,
        DETECTOR_3D_CONFIG,
        metadata=metadata,
        scripts=DETECTOR_SOURCE,
        state={"model": {"scale": torch.tensor(20.0)}},
    )


# Networks whose answers are known by construction, for the bundle patterns of the model zoo: each scores how
# bright its input is around each voxel (a 3-voxel local mean over 0.5) and, like a UNet with strides, refuses
# spatial sizes that are not multiples of ``divisor``.
BLOB_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn
    import torch.nn.functional as F


    def local_mean(x):
        pool = F.avg_pool3d if x.ndim == 5 else F.avg_pool2d
        return pool(x, 3, stride=1, padding=1, count_include_pad=False)


    class BlobSegmenter(nn.Module):
        def __init__(self, divisor: int = 4, multilabel: bool = False):
            super().__init__()
            self.divisor = divisor
            self.multilabel = multilabel
            self.scale = nn.Parameter(torch.tensor(10.0))

        def forward(self, x):
            if any(size % self.divisor for size in x.shape[2:]):
                raise RuntimeError(f"sizes {tuple(x.shape[2:])} must be divisible by {self.divisor}")
            bright = self.scale * (local_mean(x) - 0.5)
            if self.multilabel:
                return bright[:, :3]
            return torch.cat([-bright.amax(1, keepdim=True), bright], 1)


    class BlobDetector(nn.Module):
        def __init__(self, anchors: int = 3):
            super().__init__()
            self.anchors = anchors
            self.scale = nn.Parameter(torch.tensor(10.0))

        def forward(self, x):
            bright = self.scale * (local_mean(x[:, :1]) - 0.5)
            levels = [bright, F.avg_pool3d(bright, 2)]
            classification = [torch.cat([b, -b] * self.anchors, 1) for b in levels]
            boxes = [torch.zeros_like(b).repeat(1, 6 * self.anchors, 1, 1, 1) for b in levels]
            return {"classification": classification, "box_regression": boxes}


    class PooledClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.tensor(10.0))

        def forward(self, x):
            peak = F.adaptive_max_pool3d(local_mean(x[:, :1]), 1)
            return torch.cat([-self.scale * (peak - 0.5), self.scale * (peak - 0.5)], 1)
    """
)


def blob_config(
    network_def: dict,
    *,
    inferer: dict | None = None,
    postprocessing: list[dict] | None = None,
    extra_steps: tuple[dict, ...] = (),
) -> dict:
    """A model-zoo style config: ``@``/``$`` references, ``LoadImaged(reader="ITKReader")``, orientation and
    spacing (1.5 x 1.5 x 2 mm), a window from 0 to 300 HU, ``network_def``, ``inferer`` and ``postprocessing``
    (with ``Invertd`` and ``SaveImaged``, as the zoo's are)."""
    config = {
        "imports": ["$import torch", "$import os"],
        "bundle_root": ".",
        "image_key": "image",
        "output_dir": "$@bundle_root + '/eval'",
        "device": "$torch.device('cpu')",
        "network_def": network_def,
        "network": "$@network_def.to(@device)",
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "@image_key", "reader": "ITKReader"},
                {"_target_": "EnsureChannelFirstd", "keys": "@image_key"},
                {"_target_": "Orientationd", "keys": "@image_key", "axcodes": "RAS"},
                {"_target_": "Spacingd", "keys": "@image_key", "pixdim": [1.5, 1.5, 2.0], "mode": "bilinear"},
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "@image_key",
                    "a_min": 0,
                    "a_max": 300,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
                *extra_steps,
                {"_target_": "EnsureTyped", "keys": "@image_key"},
            ],
        },
        "inferer": inferer or {"_target_": "SimpleInferer"},
    }
    if postprocessing is not None:
        config["postprocessing"] = {
            "_target_": "Compose",
            "transforms": [
                *postprocessing,
                {
                    "_target_": "Invertd",
                    "keys": "pred",
                    "transform": "@preprocessing",
                    "orig_keys": "@image_key",
                    "nearest_interp": False,
                },
                {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir"},
            ],
        }
    return config


SLIDING_WINDOW = {
    "_target_": "SlidingWindowInferer",
    "roi_size": [16, 16, 16],
    "sw_batch_size": 2,
    "overlap": 0.5,
}
ARGMAX = [
    {"_target_": "Activationsd", "keys": "pred", "softmax": True},
    {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
]


def blob_bundle(root: Path, config: dict, *, name: str = "blob", state: bool = True) -> Path:
    """A bundle of ``config`` over :data:`BLOB_SOURCE`'s networks, with weights (``scale`` 10) unless not
    ``state``."""
    return write_bundle(
        root,
        config,
        metadata={"name": name, "version": "0.1.0"},
        scripts=BLOB_SOURCE,
        state={"scale": torch.tensor(10.0)} if state else None,
    )
