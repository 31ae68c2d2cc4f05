"""How explanations are judged: pure functions returning one value per image, in 2D and 3D.

Maps are (B, 1, *spatial), images (B, C, *spatial); every metric returns tensors (float32, or
bool for the pointing game) with the batch as first axis, and keeps no state between calls.
:data:`DIRECTION` says, for each reported quantity, whether higher or lower is better.

Protocols
---------
Deletion and insertion (:func:`deletion_auc`, :func:`insertion_auc`, and their curves)
    Rank voxels by saliency; delete them (replace with a baseline) or insert them (into a blurred
    image) a fraction at a time; area under the probability curve on [0, 1]. Petsiuk, Das and
    Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC 2018.
Average drop and increase in confidence (:func:`average_drop_increase`)
    Score change when the image is multiplied by its map. Chattopadhyay et al., "Grad-CAM++:
    Generalized Gradient-based Visual Explanations for Deep Convolutional Networks", WACV 2018.
Pointing game (:func:`pointing_game`)
    Whether the map's maximum lies within a tolerance (15 voxels at 224, scaled with the size) of
    the region. Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016.
Energy-based pointing game (:func:`energy_pointing_game`)
    The share of the map's mass inside the region. Wang et al., "Score-CAM: Score-Weighted
    Visual Explanations for Convolutional Neural Networks", CVPR Workshops 2020.
Overlap (:func:`overlap`)
    Dice, IoU, precision and sensitivity of the map thresholded at its 80th ... 99th percentiles
    (the MDM code's protocol).
Model randomisation (:func:`model_randomisation_check`)
    Spearman correlation between the maps of the model and of a copy with re-drawn weights.
    Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.

Examples
--------
>>> import torch
>>> from medmdm.metrics import DIRECTION, energy_pointing_game
>>> DIRECTION["deletion_auc"], DIRECTION["insertion_auc"]
('lower', 'higher')
>>> region = torch.zeros(1, 8, 8, dtype=torch.bool)
>>> region[0, 2:4, 2:4] = True
>>> energy_pointing_game(region[:, None].float(), region)
tensor([1.])
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from medmdm.metrics.faithfulness import (
    Curve,
    DropIncrease,
    average_drop_increase,
    curve_area,
    deletion_auc,
    deletion_curve,
    insertion_auc,
    insertion_curve,
)
from medmdm.metrics.localisation import (
    PERCENTILES,
    Overlap,
    default_tolerance,
    energy_pointing_game,
    overlap,
    pointing_game,
)
from medmdm.metrics.sanity import model_randomisation_check, randomised_copy, spearman

Direction = Literal["higher", "lower"]

DIRECTION: Mapping[str, Direction] = MappingProxyType(
    {
        "deletion_auc": "lower",
        "insertion_auc": "higher",
        "average_drop": "lower",
        "average_increase": "higher",
        "pointing_game": "higher",
        "energy_pointing_game": "higher",
        "dice": "higher",
        "iou": "higher",
        "precision": "higher",
        "sensitivity": "higher",
        "model_randomisation": "lower",
    }
)
"""Whether a higher or a lower value of each reported quantity is better (read-only)."""

__all__ = [
    "DIRECTION",
    "PERCENTILES",
    "Curve",
    "Direction",
    "DropIncrease",
    "Overlap",
    "average_drop_increase",
    "curve_area",
    "default_tolerance",
    "deletion_auc",
    "deletion_curve",
    "energy_pointing_game",
    "insertion_auc",
    "insertion_curve",
    "model_randomisation_check",
    "overlap",
    "pointing_game",
    "randomised_copy",
    "spearman",
]
