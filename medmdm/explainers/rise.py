"""RISE: randomized input sampling; saliency is the score-weighted mean of random masks.

References
----------
Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of Black-box Models",
BMVC 2018, arXiv:1806.07421.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medmdm.errors import OptionError
from medmdm.explainers.base import Explainer, Explanation, ModelScorer
from medmdm.explainers.masks import grid_shape, normalise
from medmdm.explainers.one_shot import (
    check_int,
    perturbation_chunk,
    single_level_explanation,
)
from medmdm.explainers.perturbation import BaselineKind, baseline_image, check_baseline, keep
from medmdm.explainers.targets import BoundTarget

_DEFAULT_MASKS = {2: 2000, 3: 1000}
_BLOCK = 256  # most masks drawn at once; fixed, so the masks do not depend on the batch


def rise_masks(
    generator: torch.Generator,
    count: int,
    cells: Sequence[int],
    spatial: Sequence[int],
    keep_probability: float,
) -> torch.Tensor:
    """(count, 1, *spatial) smooth random masks on the CPU.

    Each is a random binary grid of shape ``cells`` (1 with ``keep_probability``), upsampled
    (bi/trilinear) to ``cells + 1`` cells of ``ceil(spatial / cells)`` voxels each and cropped
    at a random shift of less than one cell.
    """
    cell = [math.ceil(n / g) for n, g in zip(spatial, cells, strict=True)]
    grids = (torch.rand((count, 1, *cells), generator=generator) < keep_probability).float()
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    size = [(g + 1) * s for g, s in zip(cells, cell, strict=True)]
    smooth = F.interpolate(grids, size=size, mode=mode, align_corners=False)
    shifts = torch.stack([torch.randint(0, s, (count,), generator=generator) for s in cell], dim=1)
    masks = torch.empty((count, 1, *spatial))
    for i, shift in enumerate(shifts.tolist()):
        masks[i] = smooth[(i, slice(None), *[slice(s, s + n) for s, n in zip(shift, spatial, strict=True)])]
    return masks


class RISE(Explainer):
    """Randomized input sampling: ``S = sum_m p_m M_m / (N * keep_probability)``, normalised.

    ``p_m`` is the class score of the image with only mask ``M_m`` kept (the rest replaced by the
    baseline); by default the softmax probability, as in the paper. Every image sees the same
    masks, drawn on the CPU from a generator seeded with ``seed``, so a batch equals single calls
    and the map is the same on every device. An image whose scores do not vary over the masks
    gets an empty map (the sum would show only the masks' own unevenness). Cost: ``masks``
    samples per image (plus 3 scoring samples), passed ``max_batch`` at a time.

    Parameters
    ----------
    model : nn.Module
        Classifier returning logits (B, classes).
    masks : int, optional
        Number of random masks N; default 2000 for 2D and 1000 for 3D inputs.
    cells : int
        Grid cells along the longest axis, proportionally fewer along shorter ones (at least 2).
    keep_probability : float
        Probability that a grid cell is kept, in (0, 1).
    baseline : {"mean", "blur", "constant"}
        What the masked-out part is replaced with (the paper multiplies by the mask: ``constant`` 0).
    baseline_value : float
        Value of the ``constant`` baseline.
    blur_sigma : float, optional
        Sigma of the ``blur`` baseline in voxels (default: longest side / 20).
    **common
        ``score`` (default ``"probability"`` here), ``device``, ``seed``, ``mixed_precision``,
        ``max_batch``, ``progress`` (see :class:`~medmdm.explainers.base.Explainer`).
    """

    name = "rise"

    def __init__(
        self,
        model: nn.Module,
        *,
        masks: int | None = None,
        cells: int = 7,
        keep_probability: float = 0.5,
        baseline: BaselineKind = "mean",
        baseline_value: float = 0.0,
        blur_sigma: float | None = None,
        **common: Any,
    ) -> None:
        common.setdefault("score", "probability")
        super().__init__(model, **common)
        self.masks = None if masks is None else check_int(masks, "masks")
        self.cells = check_int(cells, "cells", minimum=2)
        if not isinstance(keep_probability, int | float) or not 0 < keep_probability < 1:
            raise OptionError(f"keep_probability must be in (0, 1), got {keep_probability!r}")
        self.keep_probability = float(keep_probability)
        self.baseline = check_baseline(baseline)
        self.baseline_value = baseline_value
        self.blur_sigma = blur_sigma

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        b, _, *spatial = x.shape
        total = self.masks or _DEFAULT_MASKS[min(3, len(spatial))]
        cells = grid_shape(self.cells, spatial)
        base = baseline_image(x, self.baseline, value=self.baseline_value, blur_sigma=self.blur_sigma)
        generator = torch.Generator().manual_seed(self.seed)
        block = min(_BLOCK, perturbation_chunk(None, x[0, :1]))
        saliency = torch.zeros_like(x[:, :1])
        low = torch.full((b,), torch.inf, device=x.device)
        high = torch.full((b,), -torch.inf, device=x.device)
        for start in range(0, total, block):
            masks = rise_masks(generator, min(block, total - start), cells, spatial, self.keep_probability)
            masks = masks.to(x.device)
            for i in range(b):
                kept = keep(x[i : i + 1], base[i : i + 1], masks)
                scores = scorer.scores(kept, target[[i] * len(masks)])
                saliency[i] += torch.einsum("m,m...->...", scores, masks)
                low[i], high[i] = torch.minimum(low[i], scores.min()), torch.maximum(high[i], scores.max())
        # Scores that do not vary with the mask leave only the masks' own unevenness in the sum.
        varies = (high - low) > 1e-6 * torch.maximum(high.abs(), low.abs()) + 1e-12
        saliency = saliency * varies.view(-1, *[1] * (x.ndim - 1))
        saliency = normalise(saliency / (total * self.keep_probability), len(spatial))
        return single_level_explanation(self.name, x, target, scorer, score_original, saliency)
