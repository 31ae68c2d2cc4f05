"""A small ProtoPNet-style classifier whose prototypes can be set to known patches of an image.

Convolutional features, a prototype layer and a linear layer, as in ProtoPNet. With random
weights, a prototype set to the feature vector at one position of an image matches that image
best there, so the explanation of its similarity has a known answer (the position's receptive
field) without training. With downsampling stages (``channels``) it is big enough to train:
``workflows/train_target_models.py`` trains one on the 2D phantoms.

References
----------
Chen, Li, Tao, Barnett, Su, Rudin. "This Looks Like That: Deep Learning for Interpretable Image
Recognition", NeurIPS 2019, arXiv:1806.10574.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from medmdm.testing.models import Region

_KERNEL = 3  # every convolution is 3 x 3 (x 3), padded to keep the size
_POOL = 2  # each downsampling stage ends with a 2 x 2 (x 2) max-pooling of stride 2


class PrototypeNet(nn.Module):
    """Features, prototype similarities max-pooled over positions, then class logits.

    ``forward`` returns ``{"logits": (B, classes), "prototypes": (B, P), "distances": (B, P)}``:
    ``prototypes`` is the output a :class:`~medmdm.explainers.targets.PrototypeTarget` reads,
    ``distances`` the smallest squared distance of each prototype to the image's features
    (ProtoPNet's ``min_distances``, for its training costs). Similarity of prototype ``p`` at a
    position with feature vector ``z``: ``log((d + 1) / (d + eps))``, ``d = ||z - p||^2``; the
    image's similarity is its maximum over positions. The last layer connects each class to its
    own prototypes with weight 1 and to the others with -0.5 (ProtoPNet's initialisation).

    The features are ``len(channels)`` downsampling stages (3 x 3 convolution, batch norm, ReLU,
    2 x 2 max-pooling), then two 3 x 3 convolutions with a ReLU between them.

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
    channels : sequence of int
        Output channels of the downsampling stages, each halving the grid; none by default, so
        the features keep the input's grid.
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
        channels: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if prototypes < classes:
            raise ValueError(f"need at least one prototype per class: {prototypes} for {classes} classes")
        conv = (nn.Conv2d, nn.Conv3d)[spatial_dims - 2]
        norm = (nn.BatchNorm2d, nn.BatchNorm3d)[spatial_dims - 2]
        pool = (nn.MaxPool2d, nn.MaxPool3d)[spatial_dims - 2]
        widths = [in_channels, *channels]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            stages = [
                layer
                for width, out in itertools.pairwise(widths)
                for layer in (
                    conv(width, out, _KERNEL, padding=_KERNEL // 2),
                    norm(out),
                    nn.ReLU(),
                    pool(_POOL),
                )
            ]
            self.features = nn.Sequential(
                *stages,
                conv(widths[-1], features, _KERNEL, padding=_KERNEL // 2),
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
        return self.feature_distances(self.features(x))

    def feature_distances(self, z: torch.Tensor) -> torch.Tensor:
        """:meth:`distances` from the features ``z`` (B, features, *grid) already computed."""
        shape = (1, *self.prototype_vectors.shape, *[1] * (z.ndim - 2))
        return ((z[:, None] - self.prototype_vectors.view(shape)) ** 2).sum(2)

    def classify(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`forward` from the features ``z`` already computed (a training loss reuses them)."""
        nearest = self.feature_distances(z).flatten(2).amin(2)
        similarity = torch.log((nearest + 1) / (nearest + self.eps))
        return {"logits": self.last_layer(similarity), "prototypes": similarity, "distances": nearest}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.classify(self.features(x))

    @torch.no_grad()
    def set_prototype(self, index: int, x: torch.Tensor, position: Sequence[int]) -> None:
        """Set prototype ``index`` to the features of image ``x`` (1, C, *spatial) at ``position``."""
        z = self.features(x[:1])
        self.prototype_vectors[index] = z[(0, slice(None), *position)]

    @torch.no_grad()
    def push(
        self, x: torch.Tensor, labels: torch.Tensor, batch: int = 32
    ) -> list[tuple[int, tuple[int, ...]]]:
        """Set each prototype to its nearest feature vector in the images of its class (ProtoPNet's push).

        After the push every prototype is the features of one real patch of a training image, so
        "this looks like that" points at that patch. Runs in eval mode and restores the mode.

        Parameters
        ----------
        x : torch.Tensor
            (N, C, *spatial) images.
        labels : torch.Tensor
            (N,) class of each image; every class needs at least one image.
        batch : int
            Images per pass.

        Returns
        -------
        list of tuple
            For each prototype, the index of its image in ``x`` and its position in the feature grid.
        """
        training = self.training
        self.eval()
        count = len(self.prototype_vectors)
        best = torch.full((count,), torch.inf)
        where: list[tuple[int, tuple[int, ...]]] = [(-1, ())] * count
        for start in range(0, len(x), batch):
            distances = self.distances(x[start : start + batch])
            nearest, position = distances.flatten(2).min(2)  # (B, P)
            other_class = labels[start : start + batch, None] != self.prototype_classes[None]
            nearest = nearest.masked_fill(other_class, torch.inf)
            value, image = nearest.min(0)
            for index in (value < best).nonzero()[:, 0].tolist():
                spot = torch.unravel_index(position[image[index], index], distances.shape[2:])
                best[index] = value[index]
                where[index] = (start + int(image[index]), tuple(int(c) for c in spot))
        missing = sorted({int(self.prototype_classes[i]) for i, (image, _) in enumerate(where) if image < 0})
        if missing:
            raise ValueError(f"no image of class(es) {missing} to push their prototypes onto")
        for index, (image, spot) in enumerate(where):
            self.set_prototype(index, x[image : image + 1], spot)
        self.train(training)
        return where

    def receptive_field(self, position: Sequence[int], spatial: Sequence[int]) -> Region:
        """The input box, (start, stop) per axis, that the features at grid ``position`` depend on.

        ``spatial`` is the input's shape, to which the box is clipped.
        """
        first, size, step = 0, 1, 1  # input box of feature 0: first voxel, extent; feature stride
        for layer in self.features:
            if isinstance(layer, nn.Conv2d | nn.Conv3d | nn.MaxPool2d | nn.MaxPool3d):
                kernel, stride, padding = (
                    _first(getattr(layer, k)) for k in ("kernel_size", "stride", "padding")
                )
                first, size, step = first - padding * step, size + (kernel - 1) * step, step * stride
        return [
            (max(0, first + p * step), min(n, first + p * step + size))
            for p, n in zip(position, spatial, strict=True)
        ]


def _first(value: int | Sequence[int]) -> int:
    """A layer's kernel size, stride or padding along the first axis (all axes are alike here)."""
    return value if isinstance(value, int) else value[0]
