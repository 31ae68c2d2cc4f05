"""MONAI's vision transformer as a classifier that returns its class logits only.

MONAI's :class:`~monai.networks.nets.ViT` returns ``(logits, hidden_states)``; medmdm's class
targets read logits ``(B, classes)`` (or a mapping with ``"logits"``). :class:`ViTClassifier` is the
same network, with the same parameters and state dict, whose ``forward`` keeps the logits. Its
``hidden_states`` stay reachable as ``monai.networks.nets.ViT.forward(model, x)[1]``.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.networks.nets import ViT


class ViTClassifier(ViT):
    """``monai.networks.nets.ViT`` with ``classification=True``, returning logits ``(B, classes)``.

    Parameters
    ----------
    **options
        ``monai.networks.nets.ViT``'s parameters (``in_channels``, ``img_size``, ``patch_size``,
        ``hidden_size``, ``num_classes``, ``spatial_dims``, ...), all but ``classification``.

    Examples
    --------
    >>> model = ViTClassifier(in_channels=1, img_size=(32, 32), patch_size=8, hidden_size=16,
    ...                       mlp_dim=32, num_layers=1, num_heads=2, spatial_dims=2)
    >>> model(torch.zeros(3, 1, 32, 32)).shape
    torch.Size([3, 2])
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(classification=True, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0]
