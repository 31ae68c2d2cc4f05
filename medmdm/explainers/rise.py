"""RISE: randomized input sampling; saliency is the score-weighted mean of random masks.

References
----------
Petsiuk, Das, Saenko. "RISE: Randomized Input Sampling for Explanation of Black-box Models",
BMVC 2018, arXiv:1806.07421.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from medmdm.explainers.base import Explainer, ModelScorer
from medmdm.explainers.explanation import Explanation
from medmdm.explainers.masks import grid_shape, normalise
from medmdm.explainers.one_shot import (
    perturbation_chunk,
    single_level_explanation,
)
from medmdm.explainers.options import option
from medmdm.explainers.perturbation import BaselineOptions, keep
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
    samples per image (plus 3 scoring samples), passed ``max_batch`` at a time. The paper
    multiplies by the mask: the ``constant`` baseline 0.
    """

    @dataclass(frozen=True)
    class Options(BaselineOptions):
        """Options of ``rise``; the score is the probability by default, as in the paper."""

        method = "rise"

        score: str = BaselineOptions.with_default("score", "probability")
        masks: int | None = option(
            None, "number of random masks; None: 2000 for 2D, 1000 for 3D inputs", low=1
        )
        cells: int = option(
            7, "grid cells along the longest axis, proportionally fewer along the others", low=2
        )
        keep_probability: float = option(
            0.5, "probability that a grid cell is kept", low=0, high=1, low_open=True, high_open=True
        )

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        b, _, *spatial = x.shape
        options = self.options
        total = options.masks or _DEFAULT_MASKS[min(3, len(spatial))]
        cells = grid_shape(options.cells, spatial)
        base = options.baseline_for(x, scorer, target, score_original).image
        generator = torch.Generator().manual_seed(options.seed)
        block = min(_BLOCK, perturbation_chunk(None, x[0, :1]))
        saliency = torch.zeros_like(x[:, :1])
        low = torch.full((b,), torch.inf, device=x.device)
        high = torch.full((b,), -torch.inf, device=x.device)
        for start in range(0, total, block):
            masks = rise_masks(generator, min(block, total - start), cells, spatial, options.keep_probability)
            masks = masks.to(x.device)
            for i in range(b):
                kept = keep(x[i : i + 1], base[i : i + 1], masks)
                scores = scorer.scores(kept, target[[i] * len(masks)])
                saliency[i] += torch.einsum("m,m...->...", scores, masks)
                low[i], high[i] = torch.minimum(low[i], scores.min()), torch.maximum(high[i], scores.max())
        # Scores that do not vary with the mask leave only the masks' own unevenness in the sum.
        varies = (high - low) > 1e-6 * torch.maximum(high.abs(), low.abs()) + 1e-12
        saliency = saliency * varies.view(-1, *[1] * (x.ndim - 1))
        saliency = normalise(saliency / (total * options.keep_probability), len(spatial))
        return single_level_explanation(self.name, x, target, scorer, score_original, saliency)
