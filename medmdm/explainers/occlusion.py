"""Occlusion: slide a box over the image, replace it with the baseline, record the score drop.

Written here rather than on ``monai.visualize.OcclusionSensitivity``, which takes one image at a
time, explains a fixed activation of the output (softmax or sigmoid chosen from the number of
*input* channels), calls the model outside the scorer (no ``max_batch``, no sample count) and
fills each window with a Python loop.

References
----------
Zeiler, Fergus. "Visualizing and Understanding Convolutional Networks", ECCV 2014, arXiv:1311.2901.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from medmdm.errors import InputError, OptionError
from medmdm.explainers.base import Explainer, ModelScorer
from medmdm.explainers.explanation import Explanation
from medmdm.explainers.masks import normalise
from medmdm.explainers.one_shot import (
    perturbation_chunk,
    single_level_explanation,
)
from medmdm.explainers.options import option
from medmdm.explainers.perturbation import BaselineOptions, remove
from medmdm.explainers.targets import BoundTarget

_MIN_WINDOW = 3


def _per_axis(value: int | tuple[int, ...], spatial: Sequence[int], name: str) -> list[int]:
    values = [value] * len(spatial) if isinstance(value, int) else list(value)
    if len(values) != len(spatial):
        raise InputError(
            f"{name} {value!r} has {len(values)} axes; the image has {len(spatial)} spatial axes"
        )
    return values


def window_starts(spatial: Sequence[int], window: Sequence[int], stride: Sequence[int]) -> torch.Tensor:
    """(W, dims) first voxel of every window; the last window on each axis ends at the image edge."""
    axes = []
    for n, w, s in zip(spatial, window, stride, strict=True):
        starts = list(range(0, n - w + 1, s))
        if starts[-1] != n - w:
            starts.append(n - w)
        axes.append(starts)
    return torch.tensor(list(itertools.product(*axes)), dtype=torch.long)


def window_masks(starts: torch.Tensor, window: Sequence[int], spatial: Sequence[int]) -> torch.Tensor:
    """(K, 1, *spatial) masks, 1 inside the window starting at each of the (K, dims) ``starts``."""
    count, dims = starts.shape
    masks = torch.ones((count, *[1] * dims), device=starts.device)
    for axis, (n, w) in enumerate(zip(spatial, window, strict=True)):
        coord = torch.arange(n, device=starts.device)
        first = starts[:, axis : axis + 1]
        inside = (coord >= first) & (coord < first + w)
        shape = [count] + [1] * dims
        shape[1 + axis] = n
        masks = masks * inside.view(shape)
    return masks.unsqueeze(1)


class Occlusion(Explainer):
    """Score drop when a sliding box is replaced by the baseline, averaged over the boxes covering a voxel.

    N-D with one code path. Drops are positive where occlusion lowers the class score; negative
    drops (occlusion raising the score) are set to 0, then each map is min-max normalised. Cost:
    one sample per window position per image (plus 3 scoring samples); e.g. 225 for a 224^2
    image and 3,375 for a 96^3 volume with the defaults. The last box on each axis ends at the
    image edge, so every voxel is covered.
    """

    @dataclass(frozen=True)
    class Options(BaselineOptions):
        """Options of ``occlusion``; the baseline fills an occluded box."""

        method = "occlusion"

        window: int | tuple[int, ...] | None = option(
            None, "box size in voxels, for all axes or per axis; None: 1/8 of each axis, at least 3", low=1
        )
        stride: int | tuple[int, ...] | None = option(
            None, "step between boxes, at most the window; None: half the window, rounded up", low=1
        )

    def geometry(self, spatial: Sequence[int]) -> tuple[list[int], list[int]]:
        """Window and stride per axis for an image of shape ``spatial``."""
        options = self.options
        if options.window is None:
            window = [min(n, max(_MIN_WINDOW, n // 8)) for n in spatial]
        else:
            window = _per_axis(options.window, spatial, "window")
            if any(w > n for w, n in zip(window, spatial, strict=True)):
                raise InputError(f"window {window} is larger than the image {list(spatial)}")
        if options.stride is None:
            stride = [max(1, (w + 1) // 2) for w in window]
        else:
            stride = _per_axis(options.stride, spatial, "stride")
            if any(s > w for s, w in zip(stride, window, strict=True)):
                raise OptionError(f"stride {stride} exceeds the window {window}: voxels would be skipped")
        return window, stride

    def _attribute(
        self, x: torch.Tensor, target: BoundTarget, scorer: ModelScorer, score_original: torch.Tensor
    ) -> Explanation:
        b, _, *spatial = x.shape
        window, stride = self.geometry(spatial)
        starts = window_starts(spatial, window, stride).to(x.device)
        base = self.options.baseline_for(x, scorer, target, score_original).image
        drops = torch.zeros_like(x[:, :1])
        covered = torch.zeros_like(x[:1, :1])
        windows = starts.shape[0]
        count = b * windows
        chunk = perturbation_chunk(self.options.max_batch, x[0])
        for start in range(0, count, chunk):
            flat = torch.arange(start, min(start + chunk, count), device=x.device)
            image, position = flat // windows, flat % windows
            masks = window_masks(starts[position], window, spatial)
            occluded = scorer.scores(remove(x[image], base[image], masks), target[image])
            drop = (score_original[image] - occluded).view(-1, *[1] * (x.ndim - 1))
            drops.index_add_(0, image, drop * masks)
            covered += masks[image == 0].sum(0, keepdim=True)
        saliency = normalise((drops / covered).clamp_min(0), len(spatial))
        return single_level_explanation(self.name, x, target, scorer, score_original, saliency)
