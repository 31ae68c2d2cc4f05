"""The demo bundles that ship with medmdm (made by ``workflows/train_demo_bundles.py``)."""

from __future__ import annotations

import os
from pathlib import Path

from medmdm.errors import BundleError

DEMO_BUNDLES = {2: "radiograph_lesion_2d", 3: "ct_nodule_3d"}
DEMO_BUNDLES_ENV = "MEDMDM_DEMO_BUNDLES"


def demo_bundles_folder() -> Path:
    """The folder holding the demo bundles: ``$MEDMDM_DEMO_BUNDLES``, else the source tree's
    ``sample_data/bundles``."""
    configured = os.environ.get(DEMO_BUNDLES_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path(__file__).resolve().parents[2] / "sample_data" / "bundles"


def demo_bundle_path(spatial_dims: int) -> Path:
    """The demo bundle folder for 2D or 3D studies.

    Raises
    ------
    BundleError
        No demo bundle for that dimensionality, or its folder is missing.
    """
    if spatial_dims not in DEMO_BUNDLES:
        raise BundleError(f"no demo bundle for {spatial_dims}D studies; pass one with --bundle DIR")
    path = demo_bundles_folder() / DEMO_BUNDLES[spatial_dims]
    if not (path / "configs").is_dir():
        raise BundleError(
            f"demo bundle {path} not found; pass one with --bundle DIR, or set {DEMO_BUNDLES_ENV}"
        )
    return path
