"""Explainers behind one contract: ``create(name, model, **options)(x, target) -> map``.

Each method's options are a typed, frozen object (``explainer.options``, an instance of its
``Options`` class; see :mod:`medmdm.explainers.options`).

Examples
--------
>>> from medmdm import explainers
>>> from medmdm.testing import BoxModel, box_image
>>> box = ((8, 16), (8, 16))
>>> explainer = explainers.create("hdm", BoxModel(box), steps=30)
>>> saliency = explainer(box_image((32, 32), box, batch=2))
>>> tuple(saliency.shape)
(2, 1, 32, 32)
>>> bool(saliency[0, 0, 8:16, 8:16].sum() > 0.8 * saliency[0].sum())
True
>>> explainer.options.steps, explainer.options.levels
(30, 3)
"""

from __future__ import annotations

from medmdm.explainers.base import (
    Explainer,
    accepted_options,
    available,
    create,
    describe,
    make_options,
    options_class,
    register,
)
from medmdm.explainers.dynamic_masks import DynamicMasks
from medmdm.explainers.explanation import Explanation, LevelRecord, ProgressEvent
from medmdm.explainers.gradcam import GradCAM, GradCAMpp
from medmdm.explainers.gradients import IntegratedGradients, Saliency
from medmdm.explainers.hdm import HierarchicalDynamicMasks
from medmdm.explainers.mdm import MDMReference, MultipleDynamicMasks
from medmdm.explainers.occlusion import Occlusion
from medmdm.explainers.options import ExplainerOptions, OptionDescription, option
from medmdm.explainers.rise import RISE
from medmdm.explainers.targets import (
    BoundTarget,
    CallableTarget,
    ClassTarget,
    PrototypeTarget,
    RegionTarget,
    Target,
    as_target,
)

register("dm", DynamicMasks, "dynamic masks: coarse benchmark masks guide fine auxiliary masks (one level)")
register(
    "mdm", MultipleDynamicMasks, "multiple dynamic masks: independent masks at several grid sizes, summed"
)
register("mdm-reference", MDMReference, "MDM as the authors released it (27+ sizes, >54,000 passes; slow)")
register(
    "hdm",
    HierarchicalDynamicMasks,
    "hierarchical dynamic masks: a cascade of DM levels over the remaining image",
)
register("saliency", Saliency, "baseline: gradient magnitude of the class score (one backward pass)")
register("integrated_gradients", IntegratedGradients, "baseline: integrated gradients from a baseline image")
register("occlusion", Occlusion, "baseline: score drop when a sliding window is occluded")
register("rise", RISE, "baseline: RISE, random masks weighted by the class probability")
register("gradcam", GradCAM, "baseline: Grad-CAM at a convolution layer (MONAI)")
register("gradcampp", GradCAMpp, "baseline: Grad-CAM++ at a convolution layer (MONAI)")

__all__ = [
    "RISE",
    "BoundTarget",
    "CallableTarget",
    "ClassTarget",
    "DynamicMasks",
    "Explainer",
    "ExplainerOptions",
    "Explanation",
    "GradCAM",
    "GradCAMpp",
    "HierarchicalDynamicMasks",
    "IntegratedGradients",
    "LevelRecord",
    "MDMReference",
    "MultipleDynamicMasks",
    "Occlusion",
    "OptionDescription",
    "ProgressEvent",
    "PrototypeTarget",
    "RegionTarget",
    "Saliency",
    "Target",
    "accepted_options",
    "as_target",
    "available",
    "create",
    "describe",
    "make_options",
    "option",
    "options_class",
    "register",
]
