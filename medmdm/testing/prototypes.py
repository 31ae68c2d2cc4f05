"""A small ProtoPNet-style classifier whose prototypes can be set to known patches of an image.

Convolutional features, a prototype layer and a linear layer, as in ProtoPNet, with random
weights: a prototype set to the feature vector at one position of an image matches that image
best there, so the explanation of its similarity has a known answer (the position's receptive
field) without training.

References
----------
Chen, Li, Tao, Barnett, Su, Rudin. "This Looks Like That: Deep Learning for Interpretable Image
Recognition", NeurIPS 2019, arXiv:1806.10574.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medmdm.testing.models import Region

_KERNEL = 3  # every convolution is 3 x 3 (x 3), padded to keep the size
_LAYERS = 2  # convolutions before the prototype layer


class PrototypeNet(nn.Module):
    """Features, prototype similarities max-pooled over positions, then class logits.

    ``forward`` returns ``{"logits": (B, classes), "prototypes": (B, P)}``, the output a
    :class:`~medmdm.explainers.targets.PrototypeTarget` reads. Similarity of prototype ``p`` at a
    position with feature vector ``z``: ``log((d + 1) / (d + eps))``, ``d = ||z - p||^2``; the
    image's similarity is its maximum over positions. The last layer connects each class to its
    own prototypes with weight 1 and to the others with -0.5 (ProtoPNet's initialisation).

    Parameters
    ----------
    spatial_dims : {2, 3}
        2D or 3D convolutions.
    in_channels : int
        Input channels.
    features : int
        Channels of the feature map (the prototypes' length).
    prototypes : int
        Number of prototypes, shared out among the classes in order.
    classes : int
        Number of classes.
    eps : float
        The similarity's ``eps``: its maximum, at distance 0, is ``log(1 / eps)``.
    seed : int
        Seed of the random weights and prototypes (the global generator is left untouched).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        features: int = 8,
        prototypes: int = 4,
        classes: int = 2,
        eps: float = 1e-4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if prototypes < classes:
            raise ValueError(f"need at least one prototype per class: {prototypes} for {classes} classes")
        conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.features = nn.Sequential(
                conv(in_channels, features, _KERNEL, padding=_KERNEL // 2),
                nn.ReLU(),
                conv(features, features, _KERNEL, padding=_KERNEL // 2),
            )
            self.prototype_vectors = nn.Parameter(torch.rand(prototypes, features))
            self.last_layer = nn.Linear(prototypes, classes, bias=False)
        self.eps = eps
        self.register_buffer("prototype_classes", torch.arange(prototypes) * classes // prototypes)
        own = nn.functional.one_hot(self.prototype_classes, classes).T.float()
        with torch.no_grad():
            self.last_layer.weight.copy_(own - 0.5 * (1 - own))

    def distances(self, x: torch.Tensor) -> torch.Tensor:
        """(B, P, *spatial) squared L2 distance of each prototype to the features at each position."""
        z = self.features(x)
        shape = (1, *self.prototype_vectors.shape, *[1] * (z.ndim - 2))
        return ((z[:, None] - self.prototype_vectors.view(shape)) ** 2).sum(2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        d = self.distances(x)
        similarity = torch.log((d + 1) / (d + self.eps)).flatten(2).amax(2)
        return {"logits": self.last_layer(similarity), "prototypes": similarity}

    @torch.no_grad()
    def set_prototype(self, index: int, x: torch.Tensor, position: Sequence[int]) -> None:
        """Set prototype ``index`` to the features of image ``x`` (1, C, *spatial) at ``position``."""
        z = self.features(x[:1])
        self.prototype_vectors[index] = z[(0, slice(None), *position)]

    @staticmethod
    def receptive_field(position: Sequence[int], spatial: Sequence[int]) -> Region:
        """The input box, (start, stop) per axis, that the features at ``position`` depend on."""
        radius = _LAYERS * (_KERNEL // 2)
        return [(max(0, p - radius), min(n, p + radius + 1)) for p, n in zip(position, spatial, strict=True)]
