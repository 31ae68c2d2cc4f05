"""A small CNN trained in seconds to find bright round lesions among distracting bars.

The label depends only on the lesion, so a faithful map lies on it; unlike the analytic models,
the network's evidence is learned, not built in.
"""

from __future__ import annotations

import torch
from torch import nn


def lesion_images(
    count: int, size: int = 48, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Synthetic 2D images, half with a round lesion.

    Returns
    -------
    tuple of torch.Tensor
        Images (count, 1, size, size), labels (count,) with 1 = lesion, lesion masks
        (count, size, size) bool. Every image has a bright bar that does not decide the label.
    """
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((count, 1, size, size), generator=generator) * 0.3
    labels = torch.randint(0, 2, (count,), generator=generator)
    masks = torch.zeros((count, size, size), dtype=torch.bool)
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    margin = size // 6
    for i in range(count):
        bar = int(torch.randint(2, size - 4, (1,), generator=generator))
        images[i, 0, bar : bar + 2, 2 : size - 2] += 0.5
        if labels[i]:
            cy, cx = torch.randint(margin, size - margin, (2,), generator=generator).tolist()
            radius = float(torch.randint(size // 16 + 2, size // 8 + 2, (1,), generator=generator))
            masks[i] = (rows - cy) ** 2 + (cols - cx) ** 2 <= radius**2
            images[i, 0][masks[i]] += 0.6
    return images, labels, masks


def lesion_cnn() -> nn.Module:
    """A three-layer CNN with global max pooling and two classes."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 2),
    )


def train_lesion_cnn(count: int = 1000, size: int = 48, epochs: int = 5, seed: int = 0) -> nn.Module:
    """Train :func:`lesion_cnn` on :func:`lesion_images`; deterministic for a seed, in eval mode."""
    torch.manual_seed(seed)
    images, labels, _ = lesion_images(count, size, seed)
    model = lesion_cnn()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        permutation = torch.randperm(count, generator=order)
        for start in range(0, count, 50):
            batch = permutation[start : start + 50]
            loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    return model.eval()
