"""Running a bundle's network as the bundle runs it: through its ``inferer``, with its ``postprocessing``
deciding what a region is.

- :class:`BundleModel` is the module the explainers see: its forward runs the bundle's inferer (a
  ``SimpleInferer``, a ``SlidingWindowInferer`` with its roi, overlap and blending, a ``SliceInferer`` that
  applies a 2D network slice by slice to a 3D study), differentiably: the masks' gradient flows through the
  window stitching. A classifier's logits with singleton spatial axes, ``(B, C, 1, 1)``, become ``(B, C)``.
- :func:`label_regions` runs the value steps of the bundle's ``postprocessing`` (activations, thresholds,
  argmax, connected components, label merging) on the network output and reads the regions from them:
  overlapping channels for a sigmoid multi-label bundle, one label per voxel for an argmax one.
- :func:`max_batch_for` bounds the samples per pass by the free memory, from what one window's forward pass
  saves for its backward pass (measured on the ``meta`` device), before the explainer runs.
- :func:`focus_region` finds a region target's region and crops the network input to the inferer's windows
  that overlap it (:func:`focus_window`): the region's output is what it is in the bundle's inference on
  the whole input, and a region target costs those windows, not the whole study's.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer, SliceInferer, SlidingWindowInferer
from monai.transforms import Compose, MapTransform, SpatialCrop
from monai.utils import ensure_tuple_rep, fall_back_tuple
from torch import nn

from medmdm.bundle.config import root_cause
from medmdm.errors import BundleError, InputError, ModelError
from medmdm.explainers.targets import RegionTarget

INFERERS = frozenset({"SimpleInferer", "SlidingWindowInferer", "SliceInferer", "SlidingWindowInfererAdapt"})
# Where more samples than this fit in memory, the explainer keeps its own max_batch (a mask stage passes 4
# to 7 samples per image), so that maps do not depend on the memory free at the time.
AMPLE_BATCH = 64
# The share of the free memory that the tensors a gradient pass saves may take; the rest is for the pass's
# transient buffers and the masks. On a CPU, a gradient pass peaked (resident set) at 1.19x what it saves for
# a SegResNet on one 96^3 window, 1.51x for spleen_ct_segmentation's UNet on nine.
MEMORY_SHARE = 0.6


class BundleModel(nn.Module):
    """A bundle's network run through its inferer: what the explainers call "the model".

    Parameters
    ----------
    network : nn.Module
        The bundle's network.
    inferer : monai.inferers.Inferer, optional
        The bundle's inferer; None runs the network on the whole input.
    """

    def __init__(self, network: nn.Module, inferer: Inferer | None = None) -> None:
        super().__init__()
        self.network = network
        self.inferer = inferer

    def inferer_for(self, spatial_dims: int) -> Inferer | None:
        """The inferer for an input of ``spatial_dims`` axes: a ``SliceInferer`` given one slice (a 2D study)
        runs as a ``SlidingWindowInferer`` with its 2D roi, overlap and blending, as it runs on each slice."""
        inferer = self.inferer
        if isinstance(inferer, SliceInferer) and spatial_dims == len(inferer.orig_roi_size):
            settings = ("sw_batch_size", "overlap", "mode", "sigma_scale", "padding_mode", "cval")
            return SlidingWindowInferer(
                inferer.orig_roi_size, **{name: getattr(inferer, name) for name in settings}
            )
        return inferer

    def forward(self, x: torch.Tensor) -> Any:
        """The bundle's output for ``x`` ``(B, C, *spatial)``; logits ``(B, C, 1, ...)`` as ``(B, C)``."""
        inferer = self.inferer_for(x.ndim - 2)
        out = self.network(x) if inferer is None else inferer(x, self.network)
        if isinstance(out, torch.Tensor) and out.ndim > 2 and all(size == 1 for size in out.shape[2:]):
            return out.flatten(1)
        return out


def window_starts(inferer: Inferer | None, spatial: Sequence[int]) -> list[tuple[int, list[int]]] | None:
    """Per spatial axis, the window size and the window starts of a windowed inferer on an input of shape
    ``spatial``, as MONAI's ``sliding_window_inference`` places them (a ``SliceInferer``'s slice axis has
    windows one slice thick); None for an inferer that runs on the whole input."""
    if not isinstance(inferer, SlidingWindowInferer):
        return None
    sliced = isinstance(inferer, SliceInferer)
    plane = [n for axis, n in enumerate(spatial) if not (sliced and axis == inferer.spatial_dim)]
    roi = list(
        fall_back_tuple(
            getattr(inferer, "orig_roi_size", inferer.roi_size) if sliced else inferer.roi_size, plane
        )
    )
    overlap = list(ensure_tuple_rep(inferer.overlap, len(plane)))
    if sliced:
        roi.insert(inferer.spatial_dim, 1)
        overlap.insert(inferer.spatial_dim, 0.0)
    axes = []
    for n, r, o in zip(spatial, roi, overlap, strict=True):
        size = max(n, r)
        step = r if r == size else max(int(r * (1 - o)), 1)
        count = next(i for i in range(size) if i * step + r >= size) + 1
        axes.append((r, [min(i * step, size - r) for i in range(count)]))
    return axes


@dataclass(frozen=True)
class Regions:
    """The regions a bundle predicts on one image.

    Attributes
    ----------
    masks : torch.Tensor
        ``(C, *spatial)`` bool, one (possibly overlapping) region per output channel.
    labels : list of int
        The labels predicted somewhere (the channels of a multi-label bundle, the label values otherwise).
    rule : str
        How they were made, for the report: ``"argmax"``, or the postprocessing steps that made them
        (``"Activationsd, AsDiscreted"``).
    """

    masks: torch.Tensor
    labels: list[int]
    rule: str


def label_regions(
    output: torch.Tensor, postprocessing: Compose | None, key: str = "pred", name: str = ""
) -> Regions:
    """The regions of each output channel, by the bundle's postprocessing when it makes labels.

    The value steps run one by one on ``output``. The regions are the last state that holds one binary
    channel per output channel (sigmoid and threshold; argmax and one-hot), else the last one-channel label
    map (argmax, connected components); a one-channel label map made after per-channel regions (label
    merging for a file) does not replace them. Without such a state: argmax over channels (logit > 0 for a
    single channel).

    Parameters
    ----------
    output : torch.Tensor
        ``(C, *spatial)`` network output on one image.
    postprocessing : Compose, optional
        The bundle's postprocessing without its saving and inverting steps.
    key : str
        The key its dictionary transforms read.
    name : str
        The bundle's name, for messages.

    Raises
    ------
    BundleError
        A postprocessing step that fails (its root cause in the message).
    """
    channels, spatial = output.shape[0], tuple(output.shape[1:])
    value: Any = output.detach().float()
    masks: torch.Tensor | None = None
    rule: list[str] = []
    made: list[str] = []
    per_channel = False
    steps = postprocessing.flatten().transforms if postprocessing is not None else ()
    for step in steps:
        try:
            value = step({key: value})[key] if isinstance(step, MapTransform) else step(value)
        except Exception as error:
            cause = root_cause(error)
            raise BundleError(
                f"bundle {name}: postprocessing step {type(step).__name__} failed ({cause})"
            ) from error
        value = torch.as_tensor(value).float()
        rule.append(type(step).__name__)
        if tuple(value.shape[1:]) != spatial:
            break
        if not bool((value == value.round()).all()):
            continue
        if value.shape[0] == channels and bool(((value == 0) | (value == 1)).all()):
            masks, per_channel, made = value > 0, True, rule.copy()
        elif value.shape[0] == 1 and channels > 1 and not per_channel:
            labels = value[0].long()
            masks = torch.stack([labels == k for k in range(channels)])
            made = rule.copy()
    if masks is None:
        made = ["argmax" if channels > 1 else "logit > 0"]
        masks = torch.stack([output.argmax(0) == k for k in range(channels)]) if channels > 1 else output > 0
    predicted = [k for k in range(channels) if bool(masks[k].any())]
    return Regions(masks.bool(), predicted, ", ".join(made))


@dataclass(frozen=True)
class Focus:
    """A region target and the part of the network input that explains it.

    Attributes
    ----------
    network_input : MetaTensor
        ``(1, C, *spatial)``: the input cropped to the windows that cover the region (whole for an inferer
        without windows), its affine moved with the crop so that the map lands where it belongs.
    target : RegionTarget
        The label's channel, averaged over the region on that grid.
    note : str
        Where the region came from and which part of the input was explained, for the report.
    """

    network_input: MetaTensor
    target: RegionTarget
    note: str


def focus_region(
    model: BundleModel,
    network_input: MetaTensor,
    label: int,
    *,
    mask: torch.Tensor | None = None,
    postprocessing: Compose | None = None,
    output_key: str = "pred",
    name: str = "",
) -> Focus:
    """The region of ``label`` (the bundle's prediction on the whole input, or ``mask``), and the input
    cropped to the inferer's windows that overlap it (:func:`focus_window`).

    Parameters
    ----------
    model : BundleModel
        The bundle's network and inferer.
    network_input : MetaTensor
        ``(1, C, *spatial)`` preprocessed study.
    label : int
        The output channel to explain.
    mask : torch.Tensor, optional
        ``(*spatial)`` region given on the network grid; None: the one predicted (:func:`label_regions`).
    postprocessing, output_key : optional
        The bundle's postprocessing steps and the key they read.
    name : str
        The bundle's name, for messages.

    Raises
    ------
    InputError
        A label without an output channel, or an empty region (the message lists the labels predicted).
    """
    spatial = tuple(network_input.shape[2:])
    if mask is None:
        parameter = next(model.parameters(), None)
        x = network_input.as_tensor().float()
        try:
            with torch.no_grad():
                output = model(x.to(parameter.device) if parameter is not None else x)
        except Exception as error:
            raise failed_forward(error, x.shape, name) from error
        if not isinstance(output, torch.Tensor) or tuple(output.shape[2:]) != spatial:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise InputError(
                f"bundle {name}: a region target needs a segmentation output on the input's grid "
                f"{spatial}; the network gave {shape}"
            )
        check_label(label, int(output.shape[1]), name)
        regions = label_regions(output[0].cpu(), postprocessing, output_key, name)
        region, source = regions.masks[label], f"predicted ({regions.rule})"
        if not bool(region.any()):
            raise InputError(
                f"bundle {name} predicts no voxel of label {label} ({regions.rule}); it predicts labels "
                f"{regions.labels}; give the region with --region-mask FILE (region= in Python)"
            )
    else:
        region, source = mask.bool(), "given"
        if not bool(region.any()):
            raise InputError(f"bundle {name}: the region mask holds no voxel on the network grid")
    cropped, region, box = focus_window(
        network_input, region, window_starts(model.inferer_for(len(spatial)), spatial)
    )
    part = " x ".join(f"{b.start}:{b.stop}" for b in box)
    note = (
        f"region {label} {source}, {int(region.sum())} voxels; explained the network grid's "
        f"[{part}] of {' x '.join(map(str, spatial))} (the rest of the map is 0)"
    )
    origin = "predicted" if mask is None else "given"
    return Focus(cropped, RegionTarget(label, region=region, source=origin), note)


def focus_window(
    network_input: MetaTensor, region: torch.Tensor, windows: list[tuple[int, list[int]]] | None
) -> tuple[MetaTensor, torch.Tensor, tuple[slice, ...]]:
    """The network input and region cropped to the inferer's windows that overlap the region.

    Every voxel of the region is then covered by the same windows, with the same blending weights, as in
    the bundle's inference on the whole input: its output, and so the target score, is the same.

    Parameters
    ----------
    network_input : MetaTensor
        ``(1, C, *spatial)``.
    region : torch.Tensor
        ``(*spatial)`` bool, not empty.
    windows : list, optional
        Per axis, the window size and starts (:func:`window_starts`); None keeps the whole input.

    Returns
    -------
    network_input : MetaTensor
        ``(1, C, *cropped)``, its affine moved with the crop (what was cropped away maps back as 0).
    region : torch.Tensor
        ``(*cropped)``.
    box : tuple of slice
        The part of the input kept.
    """
    spatial = tuple(region.shape)
    whole = tuple(slice(0, n) for n in spatial)
    if windows is None:
        return network_input, region, whole
    where = region.nonzero()
    low, high = where.amin(0).tolist(), where.amax(0).tolist()
    box = []
    for lo, hi, n, (size, starts) in zip(low, high, spatial, windows, strict=True):
        if size >= n:
            box.append(slice(0, n))
            continue
        used = [start for start in starts if start <= hi and start + size > lo]
        box.append(slice(min(used), max(used) + size))
    if tuple(box) == whole:
        return network_input, region, whole
    cropped = SpatialCrop(roi_slices=box)(network_input[0])
    return cropped.unsqueeze(0), region[tuple(box)], tuple(box)


def saved_bytes(network: nn.Module, x: torch.Tensor) -> int:
    """Bytes a backward pass keeps alive for ``x``: what one forward pass of ``network`` on ``x`` (with a
    gradient to its input, as the explainers take) saves for its backward pass, each storage once and the
    network's own weights left out, its input and output included.

    The pass runs on the ``meta`` device, where tensors have a shape and no memory, with a copy of the
    network, which may keep what its forward pass makes (a DynUNet keeps its deep-supervision heads); a
    network that cannot run there runs on ``x``'s device."""
    try:
        return _saved_bytes(copy.deepcopy(network), x.to("meta"))
    except Exception:
        return _saved_bytes(network, x)


def _saved_bytes(network: nn.Module, x: torch.Tensor) -> int:
    weights = dict(network.named_parameters()) | dict(network.named_buffers())
    on_meta = {key: torch.empty_like(value, device="meta") for key, value in weights.items()}
    own = {value.untyped_storage()._cdata for value in (on_meta if x.is_meta else weights).values()}
    saved: dict[int, int] = {}

    def add(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in own:
            saved[storage._cdata] = storage.nbytes()
        return tensor

    probe = x.detach().requires_grad_(True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(add, lambda tensor: tensor):
        output = torch.func.functional_call(network, on_meta, (probe,)) if x.is_meta else network(probe)
    outputs = output if isinstance(output, tuple | list) else [output]
    for tensor in [probe, *outputs]:
        if isinstance(tensor, torch.Tensor):
            add(tensor)
    return sum(saved.values())


def bytes_per_sample(model: BundleModel, network_input: torch.Tensor, name: str = "") -> int:
    """Memory one sample of ``network_input`` ``(1, C, *spatial)`` takes in a gradient pass through the
    bundle's inferer: what one window's forward pass saves for its backward pass (:func:`saved_bytes`,
    measured on a window of zeros), times the windows that cover the input (one whole input without windows).

    Raises
    ------
    BundleError
        When the network fails on the window: its root cause, in one line.
    """
    spatial = tuple(network_input.shape[2:])
    inferer = model.inferer_for(len(spatial))
    windows = window_starts(inferer, spatial)
    shape, count = spatial, 1
    if windows is not None:
        shape = tuple(size for size, _ in windows)
        count = math.prod(len(starts) for _, starts in windows)
        if isinstance(inferer, SliceInferer):
            shape = shape[: inferer.spatial_dim] + shape[inferer.spatial_dim + 1 :]
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else network_input.device
    probe = torch.zeros(1, network_input.shape[1], *shape, device=device)
    try:
        return count * saved_bytes(model.network, probe)
    except Exception as error:
        raise failed_forward(error, probe.shape, name) from error


def failed_forward(error: Exception, shape: Sequence[int], name: str) -> BundleError:
    """The one-line error for a network that fails on an input of ``shape``."""
    shown = " x ".join(map(str, shape))
    return BundleError(f"bundle {name}: its network fails on a {shown} input ({root_cause(error)})")


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the CUDA device's free memory, or the host's available memory."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def max_batch_for(
    model: BundleModel, network_input: torch.Tensor, device: torch.device, name: str = ""
) -> int:
    """The most samples per pass whose saved tensors (:func:`bytes_per_sample`) fit :data:`MEMORY_SHARE` of
    the free memory of ``device``, the rest left for the pass's transient buffers and the explainer's masks.

    Raises
    ------
    ModelError
        When one sample does not fit: the message gives both sizes.
    """
    needed, free = bytes_per_sample(model, network_input, name), free_memory(device)
    fits = int(MEMORY_SHARE * free // max(needed, 1))
    sizes = f"{needed / 2**30:.2f} GiB per sample, {free / 2**30:.1f} GiB free on {device}"
    if fits < 1:
        raise ModelError(
            f"bundle {name}: a gradient pass needs about {sizes}; explain a smaller region (--region-mask) "
            "or use a device with more memory"
        )
    return fits


def check_label(label: int, channels: int, name: str) -> None:
    """Refuse a region label the bundle's output has no channel for."""
    if not 0 <= label < channels:
        raise InputError(f"region:{label}: bundle {name}'s network has {channels} output channel(s)")
