"""Maps of a small trained CNN: where each dynamic-mask method puts its peak and its mass.

``medmdm.testing.train_lesion_cnn`` trains a three-layer CNN to tell 48² images with a bright round
lesion from images without (every image also holds a bright bar that does not decide the label).
On the first 12 held-out lesion images this prints a Markdown table: how many maps peak on the
lesion, the mean share of the map's mass on it, and samples through the model per image; the
absolute input gradient is the reference (``tests/explainers/test_trained_cnn.py`` checks the same).

Examples
--------
::

    python benchmarks/trained_cnn.py
    python benchmarks/trained_cnn.py --methods hdm
"""

from __future__ import annotations

import argparse

import torch

from medmdm import explainers
from medmdm.testing import lesion_images, train_lesion_cnn


def mass_on(saliency: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean share of each (N, *spatial) map's mass inside its mask."""
    return float(((saliency * masks).flatten(1).sum(1) / saliency.flatten(1).sum(1)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="dm,hdm,mdm")
    parser.add_argument("--images", type=int, default=12, help="held-out lesion images (default 12)")
    args = parser.parse_args()
    model = train_lesion_cnn()
    images, labels, masks = lesion_images(200, seed=1)
    positive = labels.nonzero()[: args.images, 0]
    x, masks = images[positive], masks[positive]
    count = len(positive)

    x_grad = x.clone().requires_grad_(True)
    model(x_grad)[:, 1].sum().backward()
    print("| method | peak on the lesion | mass on the lesion | samples / image |")
    print("|---|---|---|---|")
    print(f"| input gradient (absolute) | - | {mass_on(x_grad.grad.abs()[:, 0], masks):.2f} | 1 |")
    for name in args.methods.split(","):
        explanation = explainers.create(name, model).explain(x, target=1)
        saliency = explanation.map[:, 0]
        peaks = int(masks.flatten(1).gather(1, saliency.flatten(1).argmax(1, keepdim=True)).sum())
        print(
            f"| `{name}` | {peaks} / {count} | {mass_on(saliency, masks):.2f} "
            f"| {explanation.samples / count:.0f} |"
        )


if __name__ == "__main__":
    main()
