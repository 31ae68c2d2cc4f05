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
