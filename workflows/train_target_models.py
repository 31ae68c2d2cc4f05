"""Train the models behind medmdm's prototype and region targets on phantoms, as MONAI bundles.

    python workflows/train_target_models.py                     # all three, into sample_data/bundles
    python workflows/train_target_models.py --models vit_lesion_2d
    python workflows/train_target_models.py --quick             # tiny smoke run, into build/

- ``vit_lesion_2d``: a MONAI ``ViT`` that tells 2D radiograph phantoms with a lung nodule from those
  without (class targets on a transformer);
- ``protopnet_lesion_2d``: a ProtoPNet-style classifier (:class:`medmdm.testing.PrototypeNet` with
  downsampling stages) for the same task, whose prototypes are real training patches
  (``prototype:K`` targets);
- ``ct_nodule_seg_3d``: a MONAI ``UNet`` that segments the nodules of 3D CT phantoms
  (``region:1`` targets).

They are built like the demo bundles, with the steps of ``workflows/train_demo_bundles.py``: the
same network inputs (each phantom's study MetaTensor through the bundle's own preprocessing), the
same perturbations like the explainers' during training, the same metadata and README; the
:class:`~train_demo_bundles.Recipe` subclasses here change what differs. The 2D models train on
pairs of phantoms, each anatomy with and without nodules, so that only the nodules tell the classes
apart. Training seeds start at 0, held-out seeds at 1,000,000; the run is deterministic for a given
thread count.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from monai.losses import DiceCELoss
from monai.networks.nets import ViT
from torch import nn
from train_demo_bundles import (
    RECIPES,
    REPOSITORY,
    NetworkInputs,
    Recipe,
    build_bundles,
    evaluate,
    train_network,
)

from medmdm.testing import PrototypeNet
from medmdm.testing.internal.phantoms import Case, radiograph_case

RADIOGRAPH, CT = RECIPES["radiograph_lesion_2d"], RECIPES["ct_nodule_3d"]
COMMAND = "python workflows/train_target_models.py --models"
BLUR = {"baseline": "blur"}  # what each bundle asks medmdm's explainers to perturb with (see the READMEs)


def paired_radiograph_case(seed: int, *, lesions: int | None = None) -> Case:
    """Training phantom ``seed`` of a pair: anatomy ``seed // 2`` with and without nodules.

    An even seed is the radiograph phantom of ``seed // 2`` as drawn; the odd seed after it is the
    same phantom without its nodules, or with one nodule when it drew none. ``lesions`` overrides
    the count, as :func:`~medmdm.testing.internal.phantoms.radiograph_case` takes it.
    """
    anatomy = seed // 2
    if lesions is not None:
        return radiograph_case(anatomy, lesions=lesions)
    drawn = radiograph_case(anatomy)
    if seed % 2 == 0:
        return drawn
    return radiograph_case(anatomy, lesions=0 if drawn.label else 1)


@dataclass(frozen=True)
class PairedRecipe(Recipe):
    """A 2D classifier trained on :func:`paired_radiograph_case` pairs; held out on plain phantoms."""

    def training_case(self, seed: int, *, lesions: int | None = None) -> Case:
        return paired_radiograph_case(seed, lesions=lesions)

    def data_text(self, measured: dict[str, Any]) -> str:
        first, stop = measured["training_seeds"]
        return f"""{measured["training_cases"]} {self.modality} phantoms from
`medmdm.testing.internal.phantoms`, in pairs: each anatomy (seeds {first // 2} to {(stop - 1) // 2})
as its seed draws it and again without its nodules (with one nodule when the seed drew none), so
the two images of a pair differ only at the nodules. Half of the images hold one or two lung nodules
of varied size, contrast and shape. Every case may also hold distractors outside the lungs
(markers, tubes, electrodes, calcifications) that do not decide the label. The held-out phantoms
are drawn as their seeds give them, about half with nodules."""


def nodule_cells_loss(
    scores: torch.Tensor, lesion: torch.Tensor, labels: torch.Tensor, cell: int, positive_weight: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of per-cell scores against whether each cell holds a nodule.

    ``scores`` (B, cells) are in the row-major order of the grid of ``cell``-voxel cells that tiles
    ``lesion`` (B, 1, *spatial); a cell holds a nodule when one of its voxels is a nodule voxel of a
    positive image (``labels``, after the perturbations, which may erase a nodule). The rare cells
    that hold one weigh ``positive_weight``.
    """
    pool = (nn.functional.max_pool2d, nn.functional.max_pool3d)[lesion.ndim - 4]
    holds_nodule = pool(lesion.float(), cell).flatten(1) * labels[:, None]
    return nn.functional.binary_cross_entropy_with_logits(scores, holds_nodule, pos_weight=positive_weight)


class PatchLesionLoss(nn.Module):
    """Cross-entropy of a ViT's class logits plus an auxiliary per-patch nodule loss.

    A linear head, trained with the network and dropped afterwards, tells from each patch token of
    the last transformer block whether its patch holds a nodule (:func:`nodule_cells_loss`). It
    teaches the patch embedding what a nodule looks like, which the class token alone learns too
    slowly from scratch.

    Parameters
    ----------
    hidden_size, patch_size : int
        The ViT's.
    weight : float
        Weight of the auxiliary loss.
    positive_weight : float
        Weight of the (rare) patches that hold a nodule.
    """

    def __init__(self, hidden_size: int, patch_size: int, weight: float, positive_weight: float) -> None:
        super().__init__()
        self.head = nn.Linear(hidden_size, 1)
        self.patch_size, self.weight = patch_size, weight
        self.register_buffer("positive_weight", torch.tensor(positive_weight))

    def forward(
        self, network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, lesion: torch.Tensor
    ) -> torch.Tensor:
        """The loss of a batch, as :func:`~train_demo_bundles.train_network` calls it."""
        logits, hidden = ViT.forward(network, inputs)
        patches = self.head(hidden[-1][:, 1:])[..., 0]  # the tokens after the class token, in grid order
        auxiliary = nodule_cells_loss(patches, lesion, labels, self.patch_size, self.positive_weight)
        return nn.functional.cross_entropy(logits, labels) + self.weight * auxiliary


@dataclass(frozen=True)
class ViTRecipe(PairedRecipe):
    """The ViT classifier: :class:`PatchLesionLoss` during training."""

    patch_loss_weight: float = 1.0
    patch_positive_weight: float = 10.0
    command: ClassVar[str] = COMMAND

    def train(self, network: nn.Module, data: NetworkInputs) -> nn.Module:
        loss = PatchLesionLoss(
            self.network["hidden_size"],
            self.network["patch_size"],
            self.patch_loss_weight,
            self.patch_positive_weight,
        )
        return train_network(network, data, self, loss)

    def network_text(self, measured: dict[str, Any]) -> str:
        net = self.network
        tokens = (net["img_size"][0] // net["patch_size"]) * (net["img_size"][1] // net["patch_size"])
        return f"""MONAI `ViT` as `medmdm.testing.ViTClassifier` (the same network and weights; its
`forward` returns the logits only, where MONAI's returns the logits and the hidden states):
{net["spatial_dims"]}D, patch {net["patch_size"]} on the {net["img_size"][0]} x {net["img_size"][1]}
input ({tokens} patch tokens and a class token), hidden size {net["hidden_size"]}, MLP
{net["mlp_dim"]}, {net["num_layers"]} layers of {net["num_heads"]} heads, {measured["parameters"]}
parameters; two output logits from the class token, 0 = no {self.finding}, 1 = {self.finding}."""

    def training_text(self, measured: dict[str, Any]) -> str:
        return f"""{super().training_text(measured)}. A linear head on
the patch tokens of the last block, dropped after training, learns with weight
{self.patch_loss_weight} whether each patch holds a nodule: a ViT this small, trained from scratch,
otherwise stays at chance for many epochs"""


class PrototypeLoss(nn.Module):
    """ProtoPNet's joint loss, plus an auxiliary per-position nodule loss on the features.

    ProtoPNet's terms: cross-entropy, ``cluster`` x the squared distance from each image to the
    nearest prototype of its class, and ``separation`` x the similarity of each image to the nearest
    prototype of another class (bounded for these features, unlike the distance ProtoPNet
    subtracts). A 1 x 1 convolution, trained with the network and dropped afterwards, tells from the
    features at each position whether its cell holds a nodule (:func:`nodule_cells_loss`): without
    it, a network this small, trained from scratch on images that differ only at small nodules,
    stays at chance.

    Parameters
    ----------
    network : PrototypeNet
        The network to train (its feature width, dimensions and downsampling).
    cluster, separation, nodule_weight : float
        Weights of the cluster and separation costs and of the auxiliary loss.
    positive_weight : float
        Weight of the (rare) positions that hold a nodule.
    seed : int
        Seed of the convolution's initial weights (the global generator is left untouched).
    """

    def __init__(
        self,
        network: PrototypeNet,
        cluster: float,
        separation: float,
        nodule_weight: float,
        positive_weight: float,
        seed: int = 0,
    ) -> None:
        super().__init__()
        conv = next(m for m in network.features if isinstance(m, nn.Conv2d | nn.Conv3d))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = type(conv)(network.prototype_vectors.shape[1], 1, 1)
        self.cell = 2 ** sum(isinstance(m, nn.MaxPool2d | nn.MaxPool3d) for m in network.features)
        self.cluster, self.separation, self.nodule_weight = cluster, separation, nodule_weight
        self.register_buffer("positive_weight", torch.tensor(positive_weight))

    def forward(
        self, network: PrototypeNet, inputs: torch.Tensor, labels: torch.Tensor, lesion: torch.Tensor
    ) -> torch.Tensor:
        """The loss of a batch, as :func:`~train_demo_bundles.train_network` calls it."""
        z = network.features(inputs)
        output = network.classify(z)
        own = network.prototype_classes[None] == labels[:, None]
        cluster_cost = output["distances"].masked_fill(~own, torch.inf).amin(1).mean()
        separation_cost = output["prototypes"].masked_fill(own, 0).amax(1).mean()
        cells = self.head(z).flatten(1)
        auxiliary = nodule_cells_loss(cells, lesion, labels, self.cell, self.positive_weight)
        return (
            nn.functional.cross_entropy(output["logits"], labels)
            + self.cluster * cluster_cost
            + self.separation * separation_cost
            + self.nodule_weight * auxiliary
        )


def fit_last_layer(network: PrototypeNet, x: torch.Tensor, y: torch.Tensor, steps: int, l1: float) -> None:
    """ProtoPNet's last stage: the last layer alone, on the prototype similarities of ``x``.

    Cross-entropy with an L1 penalty on the connections from each prototype to the classes it does
    not belong to, full batch; the features and prototypes stay as they are.
    """
    with torch.no_grad():
        similarities = torch.cat([network(chunk)["prototypes"] for chunk in x.split(64)])
    classes = network.last_layer.out_features
    other = 1 - nn.functional.one_hot(network.prototype_classes, classes).T.float()
    optimiser = torch.optim.Adam(network.last_layer.parameters(), lr=1e-2)
    for _ in range(steps):
        weight = network.last_layer.weight
        loss = (
            nn.functional.cross_entropy(network.last_layer(similarities), y)
            + l1 * (weight * other).abs().sum()
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


@dataclass(frozen=True)
class PrototypeRecipe(PairedRecipe):
    """The ProtoPNet-style classifier: joint training, push, then the last layer (ProtoPNet's stages)."""

    cluster_weight: float = 0.8
    separation_weight: float = 0.08
    nodule_weight: float = 3.0
    nodule_positive_weight: float = 10.0
    seed: int = 1  # of the auxiliary head
    last_layer_steps: int = 300
    last_layer_l1: float = 1e-4
    command: ClassVar[str] = COMMAND

    def train(self, network: nn.Module, data: NetworkInputs) -> nn.Module:
        network.last_layer.requires_grad_(False)  # the joint stage keeps ProtoPNet's initial last layer
        loss = PrototypeLoss(
            network,
            self.cluster_weight,
            self.separation_weight,
            self.nodule_weight,
            self.nodule_positive_weight,
            self.seed,
        )
        train_network(network, data, self, loss)
        network.last_layer.requires_grad_(True)
        network.push(data.x, data.y)
        fit_last_layer(network, data.x, data.y, self.last_layer_steps, self.last_layer_l1)
        return network.eval()

    def evaluate(self, network: nn.Module, data: NetworkInputs) -> dict[str, float]:
        """:func:`~train_demo_bundles.evaluate`'s scores, and how often a nodule prototype matches the nodule.

        ``prototype_on_nodule``: the share of the positives where the most similar prototype of the
        nodule class matches best at a patch (its receptive field) that holds a nodule voxel.
        """
        scores = evaluate(network, data)
        positives = data.y == 1
        nodule_prototypes = (network.prototype_classes == 1).nonzero()[:, 0]
        hits = []
        with torch.no_grad():
            for image, lesion in zip(data.x[positives], data.lesion[positives], strict=True):
                distances = network.distances(image[None])[0, nodule_prototypes]
                spot = torch.unravel_index(distances.argmin(), distances.shape)[1:]
                box = network.receptive_field([int(c) for c in spot], lesion.shape[1:])
                hits.append(bool(lesion[0][tuple(slice(*bounds) for bounds in box)].any()))
        scores["prototype_on_nodule"] = sum(hits) / max(len(hits), 1)
        ((start, stop),) = network.receptive_field([100], [1000])  # a position away from the borders
        scores["prototype_receptive_field"] = stop - start
        return scores

    def postprocessing(self) -> list[dict[str, Any]]:
        return [
            {"_target_": "Lambdad", "keys": "pred", "func": "$lambda pred: torch.softmax(pred['logits'], 0)"}
        ]

    def prediction(self, measured: dict[str, Any]) -> dict[str, Any]:
        count = self.network["prototypes"]
        return {
            **super().prediction(measured),
            "pred_classes": (
                f"2 logits, the 'logits' of a mapping that also holds 'prototypes' (the similarity of "
                f"each of {count} prototypes: 0 to {count // 2 - 1} no {self.finding}, {count // 2} to "
                f"{count - 1} {self.finding}) and 'distances'"
            ),
        }

    def network_text(self, measured: dict[str, Any]) -> str:
        net = self.network
        count, field = net["prototypes"], measured["prototype_receptive_field"]
        return f"""`medmdm.testing.PrototypeNet`, ProtoPNet-style: {len(net["channels"])} downsampling
stages (3 x 3 convolution, batch norm, ReLU, 2 x 2 max-pooling; {net["channels"]} channels), two
3 x 3 convolutions to {net["features"]}-channel features, {count} prototypes ({count // 2} per class)
compared with the features at every position (similarity `log((d + 1) / (d + 1e-4))` of the
squared distance `d`, max-pooled over positions; each position sees {field} x {field} pixels), and
a linear layer to two logits, 0 = no {self.finding}, 1 = {self.finding};
{measured["parameters"]} parameters. `forward` returns a mapping with `logits`, `prototypes` and
`distances`: `prototype:K` targets explain prototype K."""

    def training_text(self, measured: dict[str, Any]) -> str:
        return f"""ProtoPNet's three stages. First {measured["epochs"]} epochs of AdamW with
a one-cycle learning rate, random left-right flips and perturbations like the explainers'
({self.perturbed_share:.0%} of the images have random smooth regions replaced with the image's mean
or its blur; a positive whose nodules lose more than half their voxels this way is labelled
negative) on cross-entropy, {self.cluster_weight} x the cluster cost (squared distance to the
nearest prototype of the image's class), {self.separation_weight} x the separation cost (similarity
to the nearest prototype of the other class) and {self.nodule_weight} x an auxiliary loss: a 1 x 1
convolution on the features, dropped after training, tells whether each position's cell holds a
nodule (without it this small network stayed at chance), the last layer fixed. Then the push:
each prototype becomes the features of its nearest patch among the training images of its class,
so every prototype is a real training patch. Last, the last layer alone,
{self.last_layer_steps} full-batch Adam steps on the training similarities with an L1 penalty of
{self.last_layer_l1} on the connections to the other class"""

    def results_text(self, measured: dict[str, Any]) -> str:
        return f"""{super().results_text(measured)}

Prototypes: on {measured["prototype_on_nodule"]:.1%} of the held-out positives, the most similar
prototype of the {self.finding} class matches best at a patch that holds the nodule."""


def segmentation_loss(
    network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, lesion: torch.Tensor
) -> torch.Tensor:
    """MONAI's Dice and cross-entropy of the per-voxel logits against the nodules' voxels.

    The Dice is the nodule channel's, over the whole batch (negatives have no nodule voxel).
    """
    criterion = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    return criterion(network(inputs), lesion.float())


@dataclass(frozen=True)
class SegmentationRecipe(Recipe):
    """The UNet: trained on the nodules' voxels, scored by Dice."""

    command: ClassVar[str] = COMMAND

    def train(self, network: nn.Module, data: NetworkInputs) -> nn.Module:
        return train_network(network, data, self, segmentation_loss)

    def evaluate(self, network: nn.Module, data: NetworkInputs) -> dict[str, float]:
        """Dice over the positives, and how often a nodule is found, or wrongly found in a negative.

        ``dice``: mean Dice of the predicted nodule voxels (argmax over the channels) with the true
        ones, over the positives; ``sensitivity``: positives whose prediction overlaps a nodule;
        ``specificity``: negatives without a predicted nodule voxel.
        """
        with torch.no_grad():
            predicted = torch.cat([network(chunk).argmax(1, keepdim=True) == 1 for chunk in data.x.split(8)])
        overlap = (predicted & data.lesion).flatten(1).sum(1).float()
        sizes = (predicted.flatten(1).sum(1) + data.lesion.flatten(1).sum(1)).float()
        positives = data.y == 1
        return {
            "dice": float((2 * overlap[positives] / sizes[positives]).mean()),
            "sensitivity": float((overlap[positives] > 0).float().mean()),
            "specificity": float((predicted[~positives].flatten(1).sum(1) == 0).float().mean()),
        }

    def postprocessing(self) -> list[dict[str, Any]]:
        return [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        ]

    def prediction(self, measured: dict[str, Any]) -> dict[str, Any]:
        return {
            "label_classes": f"0: background, 1: {self.finding} (the voxels a nodule changes)",
            "pred_classes": f"2 logits per voxel: 0 background, 1 {self.finding}",
            "eval_metrics": {k: measured[k] for k in ("dice", "sensitivity", "specificity")},
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": self.spatial_shape,
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": False,
                "is_onehot": False,
                "channel_def": {"0": "background", "1": self.finding},
            },
        }

    def network_text(self, measured: dict[str, Any]) -> str:
        net = self.network
        return f"""MONAI `UNet`: {net["spatial_dims"]}D, channels {net["channels"]}, strides {net["strides"]},
num_res_units {net["num_res_units"]}, {measured["parameters"]} parameters; two logits per voxel,
0 = background, 1 = {self.finding}: `region:1` targets explain the predicted nodule."""

    def training_text(self, measured: dict[str, Any]) -> str:
        return f"""{measured["epochs"]} epochs of AdamW with a one-cycle
learning rate and random left-right flips on MONAI's `DiceCELoss` (softmax; Dice of the nodule
channel over the batch, plus cross-entropy) against the nodules' voxels in the network's grid
(where the phantom differs from the same phantom without its nodules)"""

    def results_text(self, measured: dict[str, Any]) -> str:
        return f"""mean Dice {measured["dice"]:.1%} with the
nodules' voxels over the positives; a nodule found (predicted voxels overlapping one) in
{measured["sensitivity"]:.1%} of the positives; no nodule voxel predicted in {measured["specificity"]:.1%} of
the negatives.

This bundle asks medmdm to perturb with the image's blur (`medmdm.explain_options` in
`configs/metadata.json`: `{json.dumps(self.explain_options)}`). With the image's mean, a mask that
keeps the nodule and greys out its surroundings raises the nodule's logits far above the original
ones, and the maps of `region:1` spread away from the nodule; with the blur they gather on it."""


def _like(base: Recipe, kind: type[Recipe], **changes: Any) -> Recipe:
    """A ``kind`` recipe with the fields of ``base`` (its preprocessing, data...), ``changes`` applied."""
    return kind(**{**{f.name: getattr(base, f.name) for f in fields(base)}, **changes})


MODELS = {
    recipe.name: recipe
    for recipe in (
        _like(
            RADIOGRAPH,
            ViTRecipe,
            name="vit_lesion_2d",
            network={
                "_target_": "medmdm.testing.ViTClassifier",
                "in_channels": 1,
                "img_size": [128, 128],
                "patch_size": 16,
                "hidden_size": 96,
                "mlp_dim": 192,
                "num_layers": 3,
                "num_heads": 4,
                "num_classes": 2,
                "spatial_dims": 2,
                "post_activation": None,
            },
            description=(
                "A small MONAI ViT that tells synthetic posteroanterior chest radiographs with a lung "
                "nodule from those without, trained on medmdm phantoms for demonstrating explanations"
            ),
            train_cases=8000,
            epochs=24,
            learning_rate=1e-3,
            explain_options=BLUR,
        ),
        _like(
            RADIOGRAPH,
            PrototypeRecipe,
            name="protopnet_lesion_2d",
            network={
                "_target_": "medmdm.testing.PrototypeNet",
                "spatial_dims": 2,
                "in_channels": 1,
                "features": 16,
                "prototypes": 10,
                "classes": 2,
                "channels": [16, 32],
                "seed": 0,
            },
            description=(
                "A small ProtoPNet-style network that tells synthetic posteroanterior chest radiographs "
                "with a lung nodule from those without by their similarity to prototype patches of "
                "training images, trained on medmdm phantoms for demonstrating explanations"
            ),
            train_cases=4000,
            epochs=8,
            explain_options=BLUR,
            perturbed_share=0.5,
        ),
        _like(
            CT,
            SegmentationRecipe,
            name="ct_nodule_seg_3d",
            network={
                "_target_": "UNet",
                "spatial_dims": 3,
                "in_channels": 1,
                "out_channels": 2,
                "channels": [8, 16, 32],
                "strides": [2, 2],
                "num_res_units": 1,
            },
            task="Lung nodule segmentation on synthetic chest CT (background / nodule)",
            description=(
                "A small MONAI UNet that segments the lung nodules of synthetic chest CT volumes, "
                "trained on medmdm phantoms for demonstrating explanations"
            ),
            train_cases=500,
            epochs=8,
            batch_size=4,
            learning_rate=1e-2,
            explain_options=BLUR,
            perturbed_share=0.0,
        ),
    )
}


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train the chosen models and print what was measured."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--out", type=Path, help="folder of the bundles (default sample_data/bundles)")
    cli.add_argument(
        "--quick", action="store_true", help="tiny smoke run (default --out build/target_models)"
    )
    cli.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    cli.add_argument("--threads", type=int, default=1, help="CPU threads for training (default 1)")
    cli.add_argument("--workers", type=int, default=2, help="processes making the phantoms (default 2)")
    args = cli.parse_args(argv)
    out = args.out or REPOSITORY / ("build/target_models" if args.quick else "sample_data/bundles")
    build_bundles([MODELS[name] for name in args.models], out, args.quick, args.threads, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
