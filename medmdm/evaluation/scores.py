"""Every metric of one explanation, with the grid each is computed on.

Localisation (against the lesion mask) is computed on the *source* grid, the study as read, after the
map is mapped back through the affines (:func:`medmdm.geometry.map_to_source`): the mask is drawn
there, and nothing is resampled but the map. Faithfulness (deletion, insertion, average drop and
increase) is computed on the *network input*, the model's own grid, where the model can score the
perturbed images. Both follow :mod:`medmdm.metrics`.

Columns, each one value per case:

- ``pointing_game`` (1 or 0), ``energy_pointing_game``: against the union of the lesions;
- ``min_lesion_share``: the smallest share of the map's mass inside any one lesion (a connected
  component of the mask, corners included); with two lesions it is 0 when a map finds one only;
- ``lesions_found``: the fraction of lesions where the map reaches at least half of its maximum;
- ``dice_p80`` ... ``sensitivity_p99``: overlap of the map thresholded at its percentiles;
- ``deletion_auc``, ``insertion_auc``, ``average_drop``, ``average_increase``;
- ``min_lesion_evidence``: what the map's ``min_lesion_share`` is measured against, the smallest share of
  the evidence that one lesion holds: each lesion (on the network grid, one voxel wider) is replaced by the
  deletion baseline and the target logit's loss is its evidence (NaN for fewer than two lesions).

A case without a lesion (an empty mask) has NaN for every localisation column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from medmdm import metrics
from medmdm.explainers.masks import connected_regions
from medmdm.explainers.perturbation import BaselineKind, baseline_image, remove
from medmdm.metrics import PERCENTILES

OVERLAP_SCORES = ("dice", "iou", "precision", "sensitivity")
FOUND_FRACTION = 0.5  # a lesion is found where the map reaches this fraction of its maximum
LOCALISATION_METRICS: tuple[str, ...] = (
    "pointing_game",
    "energy_pointing_game",
    "min_lesion_share",
    "lesions_found",
    *[f"{score}_p{percentile:g}" for score in OVERLAP_SCORES for percentile in PERCENTILES],
)
FAITHFULNESS_METRICS: tuple[str, ...] = ("deletion_auc", "insertion_auc", "average_drop", "average_increase")
EVIDENCE_METRICS: tuple[str, ...] = ("min_lesion_evidence",)
COST_METRICS: tuple[str, ...] = ("seconds", "samples")
METRICS: tuple[str, ...] = LOCALISATION_METRICS + FAITHFULNESS_METRICS + EVIDENCE_METRICS + COST_METRICS


def _direction(name: str) -> metrics.Direction:
    if name in COST_METRICS:
        return "lower"
    if name in ("min_lesion_share", "lesions_found", "min_lesion_evidence"):
        return "higher"
    return metrics.DIRECTION[name.rsplit("_p", 1)[0] if name[-1].isdigit() else name]


DIRECTION: Mapping[str, metrics.Direction] = MappingProxyType({name: _direction(name) for name in METRICS})
"""Whether a higher or a lower value of each column is better (read-only)."""


def lesion_labels(mask: torch.Tensor) -> tuple[np.ndarray, int]:
    """The lesions of a ``(*spatial)`` mask, numbered 1 ... n (int32), and n: its connected
    components, corners connecting (:func:`medmdm.explainers.masks.connected_regions`)."""
    return connected_regions(mask)


def localisation_scores(saliency: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """The localisation columns of maps against lesion masks, on the masks' grid.

    Parameters
    ----------
    saliency : torch.Tensor
        (B, 1, *spatial) non-negative maps (negative values, from interpolation, count as 0).
    masks : torch.Tensor
        (B, *spatial) lesion masks, nonzero inside.

    Returns
    -------
    dict of str to torch.Tensor
        One (B,) float32 CPU tensor per name of :data:`LOCALISATION_METRICS`; NaN where a mask
        is empty.

    Examples
    --------
    >>> masks = torch.zeros(1, 8, 8, dtype=torch.bool)
    >>> masks[0, 1:3, 1:3] = masks[0, 5:7, 5:7] = True
    >>> saliency = torch.zeros(1, 1, 8, 8)
    >>> saliency[0, 0, 1:3, 1:3] = 1.0
    >>> scores = localisation_scores(saliency, masks)
    >>> [float(scores[name]) for name in ("energy_pointing_game", "min_lesion_share", "lesions_found")]
    [1.0, 0.0, 0.5]
    """
    saliency = saliency.detach().float().cpu().clamp(min=0)
    masks = masks.detach().cpu() != 0
    out = {
        "pointing_game": metrics.pointing_game(saliency, masks).float(),
        "energy_pointing_game": metrics.energy_pointing_game(saliency, masks),
    }
    per_lesion = torch.tensor([_per_lesion(m[0], mask) for m, mask in zip(saliency, masks, strict=True)])
    out["min_lesion_share"], out["lesions_found"] = per_lesion.float().T
    overlap = metrics.overlap(saliency, masks, PERCENTILES)
    for score, values in overlap.as_dict().items():
        for column, percentile in enumerate(overlap.percentiles):
            out[f"{score}_p{percentile:g}"] = values[:, column].float()
    empty = ~masks.flatten(1).any(1)
    return {name: out[name].masked_fill(empty, float("nan")) for name in LOCALISATION_METRICS}


def _per_lesion(saliency: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """Smallest share of the map's mass in one lesion, and the fraction of lesions found."""
    labels, count = lesion_labels(mask)
    if count == 0:
        return float("nan"), float("nan")
    values = saliency.numpy().astype(np.float64)
    total, peak = values.sum(), values.max()
    index = np.arange(1, count + 1)
    mass = ndimage.sum_labels(values, labels, index)
    highest = ndimage.maximum(values, labels, index)
    share = float(mass.min() / total) if total > 0 else 0.0
    found = float(np.mean(highest >= FOUND_FRACTION * peak)) if peak > 0 else 0.0
    return share, found


def faithfulness_scores(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    target: int | Sequence[int] | None,
    *,
    steps: int = 20,
    max_batch: int | None = None,
    deletion_baseline: BaselineKind = "mean",
) -> dict[str, torch.Tensor]:
    """The faithfulness columns of maps on the network input.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (B, classes); left as found.
    x : torch.Tensor
        (B, C, *spatial) network inputs.
    saliency : torch.Tensor
        (B, 1, *spatial) maps in [0, 1] on the same grid.
    target : int, sequence of int or None
        The class each map explains (None: the predicted class).
    steps : int
        Deletion and insertion steps (each curve costs ``steps + 1`` samples per image).
    max_batch : int, optional
        Most images passed through the model at once.
    deletion_baseline : {"mean", "blur", "constant"}
        What deleted voxels become (insertion always starts from the blur); a bundle's own
        ``baseline`` option, where it has one, so that deleting means what it means to its model.

    Returns
    -------
    dict of str to torch.Tensor
        One (B,) float32 CPU tensor per name of :data:`FAITHFULNESS_METRICS`.
    """
    x = x.detach().as_subclass(torch.Tensor).float()
    saliency = saliency.detach().float().to(x.device)
    curves = {"steps": steps, "max_batch": max_batch}
    drop = metrics.average_drop_increase(model, x, saliency, target)
    out = {
        "deletion_auc": metrics.deletion_auc(
            model, x, saliency, target, baseline=deletion_baseline, **curves
        ),
        "insertion_auc": metrics.insertion_auc(model, x, saliency, target, **curves),
        "average_drop": drop.drop,
        "average_increase": drop.increase,
    }
    return {name: out[name].detach().float().cpu() for name in FAITHFULNESS_METRICS}


def min_lesion_evidence(
    model: nn.Module,
    x: torch.Tensor,
    lesions: torch.Tensor,
    target: int,
    deletion_baseline: BaselineKind = "mean",
) -> float:
    """The smallest share of the evidence that one lesion holds.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (B, classes), in eval mode.
    x : torch.Tensor
        (1, C, *spatial) network input.
    lesions : torch.Tensor
        (L, *spatial) one mask per lesion on the network grid, in [0, 1] (resampled masks).
    target : int
        The class whose logit is the evidence.
    deletion_baseline : {"mean", "blur", "constant"}
        What a removed lesion becomes.

    Returns
    -------
    float
        ``min_i loss_i / sum_i loss_i`` where ``loss_i`` is the target logit lost when lesion ``i``, one
        voxel wider, is replaced by the baseline (negative losses count as 0); NaN with fewer than two
        lesions or no loss at all.
    """
    if lesions.shape[0] < 2:
        return float("nan")
    x = x.detach().as_subclass(torch.Tensor).float()
    pool = (nn.functional.max_pool2d, nn.functional.max_pool3d)[x.ndim - 4]
    wider = pool(lesions.float().to(x.device)[:, None], 3, stride=1, padding=1)
    baseline = baseline_image(x, deletion_baseline)
    with torch.no_grad():
        original = model(x)[0, target]
        removed = model(remove(x, baseline, wider))[:, target]
    loss = (original - removed).clamp_min(0).double()
    return float(loss.min() / loss.sum()) if float(loss.sum()) > 0 else float("nan")
