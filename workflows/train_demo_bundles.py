"""Train medmdm's two demo classifiers on phantoms and write them as MONAI bundles.

    python workflows/train_demo_bundles.py                    # both, into sample_data/bundles
    python workflows/train_demo_bundles.py --bundles ct_nodule_3d
    python workflows/train_demo_bundles.py --quick            # tiny smoke run, into build/

``radiograph_lesion_2d`` tells chest radiographs with a lung nodule from those without;
``ct_nodule_3d`` does the same for chest CT volumes. Both are small MONAI DenseNets trained on
:mod:`medmdm.testing.internal.phantoms` cases (training seeds from 0, held-out seeds from 1,000,000).

Every network input is built the way medmdm runs a bundle: the case's study MetaTensor (what
``medmdm.io.load_study`` returns for its DICOM, :func:`medmdm.testing.internal.dicom_studies.study_image`)
through the bundle's own parsed ``preprocessing`` without its first two transforms (LoadImaged,
EnsureChannelFirstd). The run is deterministic for a given thread count.

``workflows/train_target_models.py`` builds its bundles with the same steps, through subclasses of
:class:`Recipe`.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import monai
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import Compose
from torch import nn

from medmdm import __version__
from medmdm.explainers.masks import grid_shape, upsample
from medmdm.explainers.perturbation import baseline_image, remove
from medmdm.explainers.targets import class_logits
from medmdm.testing.internal.dicom_studies import study_image
from medmdm.testing.internal.phantoms import Case, ct_case, radiograph_case
from medmdm.writers.atomic import atomic_path

REPOSITORY = Path(__file__).resolve().parents[1]
TRAIN_SEED_START = 0
HELD_OUT_SEED_START = 1_000_000
SCHEMA = (
    "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20220324.json"
)
LESION_CONTRAST = 0.02  # input change (of a [0, 1] range) that marks a nodule's voxel
LOADING = [
    {"_target_": "LoadImaged", "keys": "image", "image_only": True},
    {"_target_": "EnsureChannelFirstd", "keys": "image"},
]


@dataclass(frozen=True)
class Recipe:
    """What one demo bundle is: its data, network, preprocessing and training schedule.

    The methods are the steps that differ between kinds of model: training, held-out scores, what
    the metadata says the network predicts, and parts of the README. They describe the demo
    classifiers; ``workflows/train_target_models.py`` overrides them for its other models.
    """

    name: str
    finding: str
    case: Callable[[int], Case]
    network: dict[str, Any]
    transforms: list[dict[str, Any]]  # after LoadImaged and EnsureChannelFirstd
    spatial_shape: list[int]
    input_format: str
    modality: str
    task: str
    description: str
    train_cases: int
    held_out_cases: int
    epochs: int
    batch_size: int
    learning_rate: float
    explain_options: dict[str, Any]  # what medmdm's explainers should use on these images
    perturbed_share: float  # images of a training batch that :func:`perturb` changes
    command: ClassVar[str] = "python workflows/train_demo_bundles.py --bundles"  # regenerates a bundle

    def training_case(self, seed: int, *, lesions: int | None = None) -> Case:
        """The training phantom of ``seed`` (``case``'s; held-out phantoms are always ``case``'s).

        ``lesions`` is the phantoms' own option: 0 gives the same phantom without its nodules.
        """
        return self.case(seed, lesions=lesions)

    def train(self, network: nn.Module, data: NetworkInputs) -> nn.Module:
        """Train ``network`` on ``data`` (:func:`train_network`); returns it in eval mode."""
        return train_network(network, data, self)

    def evaluate(self, network: nn.Module, data: NetworkInputs) -> dict[str, float]:
        """Scores on the held-out ``data`` (:func:`evaluate`)."""
        return evaluate(network, data)

    def postprocessing(self) -> list[dict[str, Any]]:
        """The transforms of the bundle's ``postprocessing`` (medmdm does not run them)."""
        return [{"_target_": "Activationsd", "keys": "pred", "softmax": True}]

    def prediction(self, measured: dict[str, Any]) -> dict[str, Any]:
        """What the network predicts, for ``configs/metadata.json``: ``label_classes``,
        ``pred_classes``, ``eval_metrics`` and ``pred`` (``network_data_format.outputs.pred``)."""
        return {
            "label_classes": f"0: no {self.finding}, 1: {self.finding}",
            "pred_classes": f"2 logits: 0 no {self.finding}, 1 {self.finding}",
            "eval_metrics": {k: measured[k] for k in ("accuracy", "sensitivity", "specificity")},
            "pred": {
                "type": "logits",
                "format": "classes",
                "num_channels": 2,
                "spatial_shape": [2],
                "dtype": "float32",
                "value_range": [],
                "is_onehot": False,
                "channel_def": {"0": f"no {self.finding}", "1": self.finding},
            },
        }

    def data_text(self, measured: dict[str, Any]) -> str:
        """The README's training data."""
        first, last = measured["training_seeds"][0], measured["training_seeds"][1] - 1
        return f"""{measured["training_cases"]} {self.modality} phantoms from
`medmdm.testing.internal.phantoms` (seeds {first} to {last}), about half with one or two lung
nodules of varied size, contrast and shape, the others without. Every case may also hold
distractors outside the lungs (markers, tubes, electrodes, calcifications) that do not decide the
label."""

    def network_text(self, measured: dict[str, Any]) -> str:
        """The README's network."""
        network = self.network
        return f"""MONAI `DenseNet`: {network["spatial_dims"]}D, init_features {network["init_features"]},
growth_rate {network["growth_rate"]}, block_config {network["block_config"]},
{measured["parameters"]} parameters; two output logits, 0 = no {self.finding}, 1 = {self.finding}."""

    def training_text(self, measured: dict[str, Any]) -> str:
        """The README's training schedule."""
        return f"""{measured["epochs"]} epochs of AdamW with a
one-cycle learning rate, random left-right flips and perturbations like the explainers'
({self.perturbed_share:.0%} of the images have random smooth regions, 5% to 95% of the image,
replaced with the image's mean or its blur; a positive whose nodules lose more than half their
voxels this way is labelled negative)"""

    def results_text(self, measured: dict[str, Any]) -> str:
        """The README's held-out results, after the held-out phantoms' description."""
        return f"""accuracy {measured["accuracy"]:.1%},
sensitivity {measured["sensitivity"]:.1%}, specificity {measured["specificity"]:.1%}.

Perturbations: with their nodules (dilated by a voxel) replaced by the image's blur,
{measured["negative_once_blur_erased"]:.1%} of the positives are called negative; replaced by the
image's mean, {measured["negative_once_mean_erased"]:.1%}. This bundle asks medmdm to perturb with
the baseline that erases nodules more often (`medmdm.explain_options` in `configs/metadata.json`:
`{json.dumps(self.explain_options)}`)."""


def _densenet(dims: int) -> dict[str, Any]:
    return {
        "_target_": "DenseNet",
        "spatial_dims": dims,
        "in_channels": 1,
        "out_channels": 2,
        "init_features": 8,
        "growth_rate": 8,
        "block_config": [2, 2, 2],
        "bn_size": 2,
    }


RECIPES = {
    recipe.name: recipe
    for recipe in (
        Recipe(
            name="radiograph_lesion_2d",
            finding="lesion",
            case=radiograph_case,
            network=_densenet(2),
            transforms=[
                {
                    "_target_": "ScaleIntensityRangePercentilesd",
                    "keys": "image",
                    "lower": 1,
                    "upper": 99,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
                {"_target_": "Resized", "keys": "image", "spatial_size": [128, 128]},
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
            spatial_shape=[128, 128],
            input_format="magnitude",
            modality="CR",
            task="Lung nodule classification on synthetic chest radiographs (lesion / no lesion)",
            description=(
                "A small MONAI DenseNet that tells synthetic posteroanterior chest radiographs with a "
                "lung nodule from those without, trained on medmdm phantoms for demonstrating explanations"
            ),
            train_cases=2400,
            held_out_cases=300,
            epochs=10,
            batch_size=32,
            learning_rate=3e-3,
            explain_options={"baseline": "blur"},
            perturbed_share=0.5,
        ),
        Recipe(
            name="ct_nodule_3d",
            finding="nodule",
            case=ct_case,
            network=_densenet(3),
            transforms=[
                {
                    "_target_": "Orientationd",
                    "keys": "image",
                    "axcodes": "RAS",
                    "labels": [["L", "R"], ["P", "A"], ["I", "S"]],
                },
                {
                    "_target_": "ScaleIntensityRanged",
                    "keys": "image",
                    "a_min": -1000,
                    "a_max": 400,
                    "b_min": 0.0,
                    "b_max": 1.0,
                    "clip": True,
                },
                {"_target_": "Resized", "keys": "image", "spatial_size": [64, 64, 48]},
                {"_target_": "EnsureTyped", "keys": "image"},
            ],
            spatial_shape=[64, 64, 48],
            input_format="hounsfield",
            modality="CT",
            task="Lung nodule classification on synthetic chest CT (nodule / no nodule)",
            description=(
                "A small MONAI DenseNet that tells synthetic chest CT volumes with a lung nodule from "
                "those without, trained on medmdm phantoms for demonstrating explanations"
            ),
            train_cases=1200,
            held_out_cases=100,
            epochs=20,
            batch_size=16,
            learning_rate=3e-3,
            explain_options={"baseline": "mean"},
            perturbed_share=0.4,
        ),
    )
}


def inference_config(recipe: Recipe) -> dict[str, Any]:
    """The bundle's ``configs/inference.json``."""
    return {
        "imports": ["$import torch"],
        "bundle_root": ".",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": recipe.network,
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [*LOADING, *recipe.transforms]},
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {"_target_": "Compose", "transforms": recipe.postprocessing()},
    }


def parse_bundle(folder: Path) -> ConfigParser:
    """The bundle's parsed ``configs/inference.json``, with ``bundle_root`` set to ``folder``."""
    parser = ConfigParser()
    parser.read_config(folder / "configs" / "inference.json")
    parser["bundle_root"] = str(folder)
    return parser


def study_transforms(parser: ConfigParser) -> Compose:
    """The bundle's preprocessing as medmdm runs it on a loaded study: without its first two transforms."""
    return Compose(parser.get_parsed_content("preprocessing").transforms[2:])


_worker_state: dict[str, Any] = {}


def _start_worker(recipe: Recipe, folder: Path, training: bool) -> None:
    torch.set_num_threads(1)
    _worker_state["case"] = recipe.training_case if training else recipe.case
    _worker_state["transforms"] = study_transforms(parse_bundle(folder))


def _prepared_case(seed: int) -> tuple[torch.Tensor, int, torch.Tensor]:
    make, transforms = _worker_state["case"], _worker_state["transforms"]
    case = make(seed)
    image = transforms({"image": study_image(case)})["image"].as_tensor()
    lesion = torch.zeros_like(image, dtype=torch.bool)
    if case.label:  # the same phantom without its nodules differs from it only at the nodules
        clean = transforms({"image": study_image(make(seed, lesions=0))})["image"].as_tensor()
        lesion = (image - clean).abs() > LESION_CONTRAST
    return image, case.label, lesion


@dataclass
class NetworkInputs:
    """Preprocessed phantoms: inputs ``(N, 1, *spatial)``, labels ``(N,)`` and, in the network's grid,
    where the nodules change the input ``(N, 1, *spatial)`` (all False for negatives)."""

    x: torch.Tensor
    y: torch.Tensor
    lesion: torch.Tensor


def network_inputs(
    recipe: Recipe, folder: Path, seeds: Sequence[int], workers: int, training: bool = False
) -> NetworkInputs:
    """The phantoms of ``seeds`` as the bundle in ``folder`` sees them.

    ``training`` chooses the recipe's training phantoms (:meth:`Recipe.training_case`), else its
    held-out ones. Each case goes through the preprocessing of the bundle as medmdm runs it;
    ``workers`` processes share the work, and the result does not depend on how many there are.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        workers, context, initializer=_start_worker, initargs=(recipe, folder, training)
    ) as pool:
        prepared = list(pool.map(_prepared_case, seeds, chunksize=16))
    x, y, lesion = zip(*prepared, strict=True)
    return NetworkInputs(torch.stack(x), torch.tensor(y), torch.stack(lesion))


def perturb(
    inputs: torch.Tensor,
    blurred: torch.Tensor | None,
    lesion: torch.Tensor,
    labels: torch.Tensor,
    share: float,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace random smooth regions of some images with a baseline, as the explainers do.

    Each image is perturbed with probability ``share``: a random coarse grid, upsampled
    and thresholded with soft edges, chooses from 5% to 95% of the image, which becomes the image's
    mean or its blur (the explainers' baselines; ``blurred`` holds the inputs' blur, computed once
    per training set because it is the costly one, and may be None when ``share`` is 0). A positive
    image whose nodules lose more than half of their voxels this way is labelled negative. The
    network thus learns that a baseline-filled region is no finding, and the explainers' masked
    images stay inside what it was trained on.

    Returns
    -------
    (perturbed inputs, their labels)
    """
    count, spatial = len(inputs), inputs.shape[2:]
    cells = int(torch.randint(2, 9, (1,), generator=generator))
    grid = torch.rand((count, 1, *grid_shape(cells, spatial)), generator=generator)
    smooth = upsample(grid, spatial)
    low = smooth.flatten(1).amin(1).view(-1, *[1] * (inputs.ndim - 1))
    high = smooth.flatten(1).amax(1).view(-1, *[1] * (inputs.ndim - 1))
    coverage = 0.05 + 0.9 * torch.rand((count, *[1] * (inputs.ndim - 1)), generator=generator)
    threshold = low + (1 - coverage) * (high - low)
    region = torch.sigmoid((smooth - threshold) / (0.05 * (high - low) + 1e-6))
    chosen = (torch.rand(count, generator=generator) < share).view(-1, *[1] * (inputs.ndim - 1))
    region = region * chosen
    kind = "mean" if float(torch.rand(1, generator=generator)) < 0.5 else "blur"
    if not chosen.any():
        return inputs, labels
    baseline = baseline_image(inputs, "mean") if kind == "mean" else blurred
    perturbed = remove(inputs, baseline, region)
    nodule = lesion.float().flatten(1)
    kept = ((1 - region.flatten(1)) * nodule).sum(1) / nodule.sum(1).clamp_min(1)
    labels = torch.where((labels == 1) & (nodule.sum(1) > 0) & (kept < 0.5), 0, labels)
    return perturbed, labels


BatchLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def classification_loss(
    network: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, lesion: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy of the network's class logits (a tensor, or a mapping's ``"logits"``)."""
    return nn.functional.cross_entropy(class_logits(network(inputs)), labels)


def train_network(
    network: nn.Module, data: NetworkInputs, recipe: Recipe, loss: BatchLoss = classification_loss
) -> nn.Module:
    """AdamW with a one-cycle schedule (short warm-up), random left-right flips and :func:`perturb`.

    ``loss(network, inputs, labels, lesion)`` scores a batch: its inputs, their labels after
    :func:`perturb` and their nodules, all flipped alike. Parameters whose ``requires_grad`` is off
    stay as they are; when ``loss`` is a module, its own parameters (a training-only head) train too.
    The network trains in channels-last memory format (faster on CPU) and comes back in the default
    one, in eval mode.
    """
    generator = torch.Generator().manual_seed(0)
    x = data.x
    steps = recipe.epochs * -(-len(x) // recipe.batch_size)
    parameters = [*network.parameters(), *(loss.parameters() if isinstance(loss, nn.Module) else ())]
    trained = [p for p in parameters if p.requires_grad]
    optimiser = torch.optim.AdamW(trained, lr=recipe.learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=recipe.learning_rate, total_steps=steps, pct_start=0.15
    )
    layout = torch.channels_last_3d if x.ndim == 5 else torch.channels_last
    share = recipe.perturbed_share
    blurred = torch.cat([baseline_image(chunk, "blur") for chunk in x.split(32)]) if share > 0 else None
    network.to(memory_format=layout).train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), recipe.batch_size):
            batch = order[start : start + recipe.batch_size]
            inputs, labels = perturb(
                x[batch],
                None if blurred is None else blurred[batch],
                data.lesion[batch],
                data.y[batch],
                share,
                generator,
            )
            flip = (torch.rand(len(batch), generator=generator) < 0.5).view(-1, *[1] * (x.ndim - 1))
            inputs = torch.where(flip, inputs.flip(2), inputs)
            lesion = torch.where(flip, data.lesion[batch].flip(2), data.lesion[batch])
            value = loss(network, inputs.to(memory_format=layout), labels, lesion)
            optimiser.zero_grad()
            value.backward()
            optimiser.step()
            schedule.step()
            total += float(value.detach()) * len(batch)
        print(f"  epoch {epoch + 1}/{recipe.epochs}: loss {total / len(x):.4f}", flush=True)
    return network.to(memory_format=torch.contiguous_format).eval()


def evaluate(network: nn.Module, data: NetworkInputs) -> dict[str, float]:
    """Accuracy, sensitivity and specificity of the predicted class; and the share of the positives
    called negative once their nodules (dilated by one voxel) are replaced with each baseline."""

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([class_logits(network(chunk)).argmax(1) for chunk in x.split(32)])

    x, y = data.x, data.y
    predicted = predict(x)
    positives, negatives = y == 1, y == 0
    pool = (nn.functional.max_pool2d, nn.functional.max_pool3d)[x.ndim - 4]
    nodules = pool(data.lesion[positives].float(), 3, 1, 1)
    scores = {
        "accuracy": float((predicted == y).float().mean()),
        "sensitivity": float((predicted[positives] == 1).float().mean()),
        "specificity": float((predicted[negatives] == 0).float().mean()),
    }
    for kind in ("mean", "blur"):
        erased = predict(remove(x[positives], baseline_image(x[positives], kind), nodules))
        scores[f"negative_once_{kind}_erased"] = float((erased == 0).float().mean())
    return scores


def seconds_per_image(network: nn.Module, spatial: Sequence[int], batch: int = 8, repeats: int = 5) -> float:
    """Seconds of one forward and backward pass per image, gradients to the input only, as medmdm runs."""
    flags = [p.requires_grad for p in network.parameters()]
    for p in network.parameters():
        p.requires_grad_(False)
    x = torch.rand((batch, 1, *spatial), requires_grad=True)

    def channel_one(output: Any) -> torch.Tensor:  # class 1 of logits or a mapping's "logits"; label 1
        return (output["logits"] if isinstance(output, Mapping) else output)[:, 1].sum()

    channel_one(network(x)).backward()
    start = time.perf_counter()
    for _ in range(repeats):
        channel_one(network(x)).backward()
    elapsed = (time.perf_counter() - start) / (repeats * batch)
    for p, flag in zip(network.parameters(), flags, strict=True):
        p.requires_grad_(flag)
    return elapsed


def build_bundle(recipe: Recipe, folder: Path, threads: int, workers: int) -> dict[str, Any]:
    """Train one recipe and write its bundle into ``folder``; returns what was measured."""
    started, started_cpu = time.perf_counter(), _cpu_seconds()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    for sub in ("configs", "models", "docs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    _write_json(folder / "configs" / "inference.json", inference_config(recipe))
    parser = parse_bundle(folder)
    network = parser.get_parsed_content("network_def")
    train_seeds = range(TRAIN_SEED_START, TRAIN_SEED_START + recipe.train_cases)
    held_out_seeds = range(HELD_OUT_SEED_START, HELD_OUT_SEED_START + recipe.held_out_cases)

    training = network_inputs(recipe, folder, train_seeds, workers, training=True)
    print(
        f"{recipe.name}: {len(training.x)} training cases ready after {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    train_start, train_start_cpu = time.perf_counter(), _cpu_seconds()
    network = recipe.train(network, training)
    train_seconds, train_cpu = time.perf_counter() - train_start, _cpu_seconds() - train_start_cpu
    held_out = network_inputs(recipe, folder, held_out_seeds, workers)
    scores = recipe.evaluate(network, held_out)
    measured = {
        **{k: round(v, 4) for k, v in scores.items()},
        "held_out_cases": len(held_out.x),
        "held_out_positives": int(held_out.y.sum()),
        "training_cases": len(training.x),
        "training_seeds": [train_seeds.start, train_seeds.stop],
        "held_out_seeds": [held_out_seeds.start, held_out_seeds.stop],
        "epochs": recipe.epochs,
        "threads": threads,
        "training_loop_seconds": round(train_seconds, 1),
        "training_loop_cpu_seconds": round(train_cpu, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "total_cpu_seconds": round(_cpu_seconds() - started_cpu, 1),
        "forward_backward_seconds_per_image": round(seconds_per_image(network, recipe.spatial_shape), 4),
        "parameters": sum(p.numel() for p in network.parameters()),
    }
    weights = io.BytesIO()  # saved through a buffer, the file holds no temporary name: same bytes every run
    torch.save(network.state_dict(), weights)
    with atomic_path(folder / "models" / "model.pt") as tmp:
        tmp.write_bytes(weights.getvalue())
    measured["weights_bytes"] = (folder / "models" / "model.pt").stat().st_size
    _write_json(folder / "configs" / "metadata.json", metadata(recipe, measured))
    with atomic_path(folder / "docs" / "README.md") as tmp:
        tmp.write_text(readme(recipe, measured))
    return measured


def metadata(recipe: Recipe, measured: dict[str, Any]) -> dict[str, Any]:
    """The bundle's ``configs/metadata.json``."""
    prediction = recipe.prediction(measured)
    return {
        "schema": SCHEMA,
        "version": "0.1.0",
        "changelog": {"0.1.0": "first version, trained on medmdm phantoms"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "required_packages_version": {"medmdm": __version__},
        "name": recipe.name,
        "task": recipe.task,
        "description": recipe.description,
        "authors": "medmdm",
        "copyright": "medmdm, Apache-2.0",
        "data_source": "synthetic phantoms from medmdm.testing.internal.phantoms; no patient data",
        "data_type": "dicom",
        "image_classes": f"single-channel {recipe.modality} image, {recipe.input_format} intensities",
        "label_classes": prediction["label_classes"],
        "pred_classes": prediction["pred_classes"],
        "eval_metrics": prediction["eval_metrics"],
        "intended_use": "Demonstration of medmdm explanations only. Synthetic data; not for clinical use.",
        "references": [],
        "network_data_format": {
            "inputs": {
                "image": {
                    "type": "image",
                    "format": recipe.input_format,
                    "modality": recipe.modality,
                    "num_channels": 1,
                    "spatial_shape": recipe.spatial_shape,
                    "dtype": "float32",
                    "value_range": [0, 1],
                    "is_patch_data": False,
                    "channel_def": {"0": "image"},
                }
            },
            "outputs": {"pred": prediction["pred"]},
        },
        "medmdm_training": measured,
        "medmdm": {"explain_options": recipe.explain_options},
    }


def readme(recipe: Recipe, measured: dict[str, Any]) -> str:
    """The bundle's ``docs/README.md``."""
    steps = "\n".join(f"- `{t['_target_']}`" + _arguments(t) for t in recipe.transforms[:-1])
    training = recipe.training_text(measured)
    held_first, held_last = measured["held_out_seeds"][0], measured["held_out_seeds"][1] - 1
    return f"""# {recipe.name}

{recipe.description}.

**Synthetic, for demonstration only.** It was trained and tested on phantoms, has never seen a
patient image, and its outputs mean nothing clinically.

## Data

{recipe.data_text(measured)}

## Network and preprocessing

{recipe.network_text(measured)}
After `LoadImaged` and `EnsureChannelFirstd`, the preprocessing is:

{steps}

The network was trained on exactly what medmdm feeds it: each phantom as `medmdm.io.load_study`
reads its DICOM, through this preprocessing. Training: {training}, on {measured["threads"]} CPU thread(s),
{measured["training_loop_seconds"]:.0f} s of training and {measured["total_seconds"]:.0f} s in all,
phantom generation and evaluation included (CPU time: {measured["training_loop_cpu_seconds"]:.0f} s
and {measured["total_cpu_seconds"]:.0f} s; the wall times grow when other work shares the CPU).

## Held-out results

{measured["held_out_cases"]} held-out phantoms (seeds {held_first} to {held_last},
{measured["held_out_positives"]} positive): {recipe.results_text(measured)}

One forward and backward pass (gradients to the input, as medmdm's explainers run it) takes
{measured["forward_backward_seconds_per_image"] * 1000:.1f} ms per image on the CPU it was trained on.

Regenerate with `{recipe.command} {recipe.name}`.
"""


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _arguments(transform: dict[str, Any]) -> str:
    args = ", ".join(f"{k}={v}" for k, v in transform.items() if k not in ("_target_", "keys"))
    return f"({args})" if args else ""


def _write_json(path: Path, content: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train the chosen bundles and print what was measured."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--out", type=Path, help="folder of the bundles (default sample_data/bundles)")
    cli.add_argument("--quick", action="store_true", help="tiny smoke run (default --out build/demo_bundles)")
    cli.add_argument("--bundles", nargs="+", choices=sorted(RECIPES), default=sorted(RECIPES))
    cli.add_argument(
        "--threads",
        type=int,
        default=2,
        help="CPU threads for training (default 2; 1 is faster on a busy CPU)",
    )
    cli.add_argument("--workers", type=int, default=2, help="processes making the phantoms (default 2)")
    args = cli.parse_args(argv)
    out = args.out or REPOSITORY / ("build/demo_bundles" if args.quick else "sample_data/bundles")
    build_bundles([RECIPES[name] for name in args.bundles], out, args.quick, args.threads, args.workers)
    return 0


def build_bundles(recipes: Sequence[Recipe], out: Path, quick: bool, threads: int, workers: int) -> None:
    """Build each recipe's bundle in ``out`` (a tiny smoke run when ``quick``) and print its scores."""
    for recipe in recipes:
        if quick:
            recipe = replace(recipe, train_cases=48, held_out_cases=16, epochs=1)
        measured = build_bundle(recipe, out / recipe.name, threads, workers)
        scores = ", ".join(f"{k} {v:.1%}" for k, v in recipe.prediction(measured)["eval_metrics"].items())
        print(
            f"{recipe.name}: held-out {scores} on {measured['held_out_cases']} cases, "
            f"training {measured['training_loop_seconds']:.0f} s, total {measured['total_seconds']:.0f} s, "
            f"forward+backward {measured['forward_backward_seconds_per_image'] * 1000:.1f} ms per image, "
            f"weights {measured['weights_bytes'] / 1e6:.2f} MB",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
