"""Baseline images and how a mask perturbs an image towards them.

A mask ``m`` (1 = keep) turns an image ``x`` into ``m * x + (1 - m) * b``, where ``b`` is the
baseline: what the image looks like with its content removed. :class:`BaselineOptions` are the
options of the methods that perturb towards a baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from monai.networks.layers import GaussianFilter

from medmdm.errors import OptionError
from medmdm.explainers.options import ExplainerOptions, option

BaselineKind = Literal["mean", "blur", "constant"]
BASELINES: tuple[str, ...] = ("mean", "blur", "constant")


def baseline_image(
    x: torch.Tensor,
    kind: BaselineKind = "mean",
    *,
    value: float = 0.0,
    blur_sigma: float | None = None,
) -> torch.Tensor:
    """Baseline image for each sample of ``x``.

    Parameters
    ----------
    x : torch.Tensor
        (B, C, *spatial) images.
    kind : {"mean", "blur", "constant"}
        ``mean``: each channel's mean intensity; ``blur``: a Gaussian blur of the image;
        ``constant``: ``value`` everywhere.
    value : float
        The constant of the ``constant`` baseline.
    blur_sigma : float, optional
        Standard deviation of the ``blur`` baseline in voxels; default 1/20 of the longest side.

    Returns
    -------
    torch.Tensor
        (B, C, *spatial) baseline, same dtype and device as ``x``.
    """
    if kind == "mean":
        return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True).expand_as(x).clone()
    if kind == "constant":
        return torch.full_like(x, float(value))
    if kind == "blur":
        sigma = blur_sigma if blur_sigma is not None else max(x.shape[2:]) / 20
        if sigma <= 0:
            raise OptionError(f"blur_sigma must be positive, got {sigma}")
        return gaussian_blur(x, sigma)
    raise OptionError(f"baseline must be one of {', '.join(BASELINES)}; got {kind!r}")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of each channel of ``x`` (B, C, *spatial), standard deviation ``sigma`` voxels.

    No gradient flows through it.
    """
    blur = GaussianFilter(x.ndim - 2, sigma=float(sigma)).to(x.device)
    with torch.no_grad():
        return blur(x)


def keep(x: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask`` is 1, ``baseline`` where it is 0 (the masked-in image)."""
    return baseline + mask * (x - baseline)


def remove(x: torch.Tensor, baseline: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``baseline`` where ``mask`` is 1, ``x`` where it is 0 (the masked-out image)."""
    return x + mask * (baseline - x)


@dataclass(frozen=True)
class BaselineOptions(ExplainerOptions):
    """The options of a method that perturbs images towards a baseline image."""

    baseline: str = option("mean", "what removed content is replaced with", choices=BASELINES)
    baseline_value: float = option(0.0, "value of the constant baseline")
    blur_sigma: float | None = option(
        None, "sigma of the blur baseline in voxels; None: longest side / 20", low=0, low_open=True
    )

    def baseline_image(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, *spatial) baseline of each image of ``x`` (see :func:`baseline_image`)."""
        return baseline_image(x, self.baseline, value=self.baseline_value, blur_sigma=self.blur_sigma)
