"""PNG preview of a saliency map over its image, for a quick look without a viewer.

2D ``(C, W, H)``: three panels, the image in grey (RGB as is) named by its view (a radiograph's
ViewPosition, else ``"image"``), the map in a perceptual colour map with a colour bar, and the map over
the image. Arrays are shown transposed, ``(H, W)``, so rows run down the page as in the DICOM.

3D ``(C, X, Y, Z)``: the three planes through the map's peak, named axial, coronal or sagittal from
the affine with their slice number (from 1) and position in mm (:mod:`medmdm.writers.display`), then
a montage of up to 12 slices across axis 2 (the DICOM slices, numbered as the Secondary Captures
number them), evenly spread over the slices that hold the central 95% of the map's (positive) mass.
Planes are drawn with their voxel spacing, from the affine when the image is a MetaTensor.

Overlays leave the image readable: the map's upper values in colour at :data:`OVERLAY_ALPHA`, its
lowest values (below :data:`HIDE_BELOW` of its range) not drawn, and a contour at
:data:`CONTOUR_LEVEL` of its range. A summary (the target, the scores in words) goes under the title.

matplotlib is drawn through ``Figure`` + ``FigureCanvasAgg``: the global backend is not changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor

from medmdm.errors import InputError
from medmdm.writers.atomic import atomic_path
from medmdm.writers.checks import saliency_array
from medmdm.writers.display import plane_name, slice_label

CMAP = "inferno"
OVERLAY_ALPHA = 0.4
HIDE_BELOW = 0.2  # overlay hides values below min + HIDE_BELOW * (max - min)
CONTOUR_LEVEL = 0.5  # share of the map's range where its contour is drawn
CONTOUR_COLOUR = "#00e5ff"
MONTAGE_SLICES = 12
MONTAGE_COLUMNS = 6
MASS_FRACTION = 0.95
PANEL_INCHES = 3.2
DPI = 100
SUMMARY_INCHES = 0.22  # height of a line of the summary


def write_preview(
    image: torch.Tensor,
    saliency: torch.Tensor,
    path: str | Path,
    title: str = "",
    *,
    view: str = "image",
    summary: Sequence[str] = (),
    window: tuple[float, float] | None = None,
) -> Path:
    """Draw the image, the map and their overlay into a PNG.

    Parameters
    ----------
    image : torch.Tensor
        ``(C, *spatial)``, 2D or 3D; C = 1 is shown in grey, C = 3 as RGB, other C by the first
        channel. A MetaTensor's affine gives the voxel spacing, the planes' names and positions
        (else 1 mm voxels along R, A, S).
    saliency : torch.Tensor
        ``(1, *spatial)`` or ``(*spatial)``, finite, the image's spatial shape.
    path : str or Path
        ``.png`` file; its folder must exist. Written atomically.
    title : str, optional
        Figure title.
    view : str
        The name of a 2D image's panel (``"PA"``, ``"axial"``...).
    summary : sequence of str
        Lines under the title (the target, the scores in words).
    window : (float, float), optional
        The grey values shown black and white (the source's window,
        :func:`medmdm.writers.display.grey_window`); by default each plane's 0.5th and 99.5th
        percentiles. Used for grey images only.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        Wrong extension, shapes that do not match, not 2D/3D, non-finite map values.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"{path}: a preview file name must end with .png")
    img, sal, affine = _inputs(image, saliency)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lines = [line for line in (title, *summary) if line]
    header = SUMMARY_INCHES * (len(lines) + 1)
    if sal.ndim == 2:
        fig = Figure(figsize=(3 * PANEL_INCHES + 1, PANEL_INCHES + header), dpi=DPI, layout="constrained")
        _draw_2d(fig, img, sal, _spacing(affine), view, window)
    else:
        rows = 1 + math.ceil(len(_montage_slices(sal)) / MONTAGE_COLUMNS)
        fig = Figure(
            figsize=(MONTAGE_COLUMNS * PANEL_INCHES * 0.6 + 1, rows * PANEL_INCHES * 0.8 + header),
            dpi=DPI,
            layout="constrained",
        )
        _draw_3d(fig, img, sal, affine, window)
    if lines:
        fig.suptitle("\n".join(lines), fontsize=10, linespacing=1.4)
    FigureCanvasAgg(fig)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _inputs(image: torch.Tensor, saliency: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image ``(C, *spatial)``, map ``(*spatial)`` as float numpy arrays, and the (4, 4) voxel-to-RAS affine
    (1 mm voxels along R, A, S when the image has none, or one that is not finite and invertible)."""
    if image.ndim not in (3, 4):
        raise InputError(f"image must be (C, W, H) or (C, X, Y, Z), got shape {tuple(image.shape)}")
    spatial = tuple(int(s) for s in image.shape[1:])
    sal = saliency_array(saliency, spatial, "image")
    img_t = image.detach()
    affine = np.eye(4)
    if isinstance(img_t, MetaTensor):
        given = img_t.meta.get("affine")
        if given is not None:
            a = np.asarray(torch.as_tensor(given).detach().cpu(), dtype=np.float64).reshape(-1, 4, 4)[0]
            if np.isfinite(a).all() and abs(np.linalg.det(a[:3, :3])) > 0:
                affine = a
        img_t = img_t.as_tensor()
    img = np.nan_to_num(img_t.to(device="cpu", dtype=torch.float64).numpy())
    return img, sal, affine


def _spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each voxel axis."""
    return np.linalg.norm(affine[:3, :3], axis=0)


def _display(img: np.ndarray, window: tuple[float, float] | None) -> tuple[np.ndarray, dict[str, Any]]:
    """A ``(C, A, B)`` plane as an imshow array ``(B, A)`` or ``(B, A, 3)`` and its keywords; a grey plane
    shown over ``window``, else over its own percentiles."""
    if img.shape[0] == 3:
        lo, hi = np.percentile(img, (0.5, 99.5))
        rgb = np.clip((img - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(img)
        return rgb.transpose(2, 1, 0), {}
    grey = img[0]
    lo, hi = window if window is not None else np.percentile(grey, (0.5, 99.5))
    return grey.T, {"cmap": "gray", "vmin": lo, "vmax": hi if hi > lo else lo + 1}


def _map_range(sal: np.ndarray) -> tuple[float, float]:
    lo, hi = float(sal.min()), float(sal.max())
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


def _overlay(ax: Any, plane: np.ndarray, vmin: float, vmax: float, **kw: Any) -> None:
    """The map plane ``(A, B)``, transposed: its upper values in colour and its contour at
    :data:`CONTOUR_LEVEL` of the range, so the image under it stays visible."""
    shown = np.ma.masked_less(plane.T, vmin + HIDE_BELOW * (vmax - vmin))
    ax.imshow(shown, cmap=CMAP, vmin=vmin, vmax=vmax, alpha=OVERLAY_ALPHA, interpolation="nearest", **kw)
    level = vmin + CONTOUR_LEVEL * (vmax - vmin)
    if plane.min() < level < plane.max():
        ax.contour(plane.T, levels=[level], colors=CONTOUR_COLOUR, linewidths=1.0)


def _draw_2d(
    fig: Any,
    img: np.ndarray,
    sal: np.ndarray,
    spacing: np.ndarray,
    view: str,
    window: tuple[float, float] | None = None,
) -> None:
    vmin, vmax = _map_range(sal)
    aspect = spacing[1] / spacing[0]
    shown, kw = _display(img, window)
    axes = fig.subplots(1, 3)
    axes[0].imshow(shown, aspect=aspect, interpolation="nearest", **kw)
    axes[0].set_title(view)
    mappable = axes[1].imshow(sal.T, cmap=CMAP, vmin=vmin, vmax=vmax, aspect=aspect, interpolation="nearest")
    axes[1].set_title("saliency")
    fig.colorbar(mappable, ax=axes[1], shrink=0.8)
    axes[2].imshow(shown, aspect=aspect, interpolation="nearest", **kw)
    _overlay(axes[2], sal, vmin, vmax, aspect=aspect)
    axes[2].set_title(f"{view} with the map")
    for ax in axes:
        ax.set_axis_off()


def _montage_slices(sal: np.ndarray) -> list[int]:
    """Up to MONTAGE_SLICES indices along axis 2 spread over the central 95% of the map's mass."""
    depth = sal.shape[2]
    mass = np.clip(sal, 0, None).sum(axis=(0, 1))
    if mass.sum() <= 0:
        first, last = 0, depth - 1
    else:
        cumulative = np.cumsum(mass) / mass.sum()
        tail = (1 - MASS_FRACTION) / 2
        first = int(np.searchsorted(cumulative, tail, side="right"))
        last = int(min(np.searchsorted(cumulative, 1 - tail, side="left"), depth - 1))
        first = min(first, last)
    return sorted({round(float(k)) for k in np.linspace(first, last, min(MONTAGE_SLICES, last - first + 1))})


def _draw_3d(
    fig: Any, img: np.ndarray, sal: np.ndarray, affine: np.ndarray, window: tuple[float, float] | None = None
) -> None:
    vmin, vmax = _map_range(sal)
    spacing = _spacing(affine)
    peak = np.unravel_index(int(np.argmax(sal)), sal.shape)
    slices = _montage_slices(sal)
    rows = 1 + math.ceil(len(slices) / MONTAGE_COLUMNS)
    grid = fig.add_gridspec(rows, MONTAGE_COLUMNS)
    # (fixed axis, horizontal axis, vertical axis): axis 2 planes as in the DICOM (rows down),
    # the other two with axis 2 pointing up.
    for n, (fixed, across, up) in enumerate(((2, 0, 1), (1, 0, 2), (0, 1, 2))):
        ax = fig.add_subplot(grid[0, 2 * n : 2 * n + 2])
        index = [slice(None)] * 3
        index[fixed] = peak[fixed]
        origin = "upper" if fixed == 2 else "lower"
        aspect = spacing[up] / spacing[across]
        shown, kw = _display(img[(slice(None), *index)], window)
        ax.imshow(shown, aspect=aspect, origin=origin, interpolation="nearest", **kw)
        _overlay(ax, sal[tuple(index)], vmin, vmax, aspect=aspect, origin=origin)
        where = slice_label(affine, fixed, peak[fixed], sal.shape[fixed])
        ax.set_title(f"{plane_name(affine, fixed)} through the peak\n{where}", fontsize=9)
        ax.set_axis_off()
    plane = plane_name(affine, 2)
    for n, k in enumerate(slices):
        ax = fig.add_subplot(grid[1 + n // MONTAGE_COLUMNS, n % MONTAGE_COLUMNS])
        shown, kw = _display(img[..., k], window)
        aspect = spacing[1] / spacing[0]
        ax.imshow(shown, aspect=aspect, interpolation="nearest", **kw)
        _overlay(ax, sal[..., k], vmin, vmax, aspect=aspect)
        ax.set_title(f"{plane} {slice_label(affine, 2, k, sal.shape[2])}".replace(", ", "\n"), fontsize=8)
        ax.set_axis_off()
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    opaque = ScalarMappable(norm=Normalize(vmin=vmin, vmax=vmax), cmap=CMAP)
    fig.colorbar(opaque, ax=fig.axes, shrink=0.6, label="saliency")
