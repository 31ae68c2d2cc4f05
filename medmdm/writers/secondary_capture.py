"""DICOM Secondary Capture: the map burned into the source image in colour, for PACS that show nothing else.

One RGB Secondary Capture image (highdicom's ``SCImage``, ImageType DERIVED\\SECONDARY) per slice
that holds the map's mass, in the source's study, in a new series: a 2D study gives one image, a
volume the fewest slices whose summed map reaches ``mass_fraction`` of its total (in slice order).

Each image is the source slice in grey as :mod:`medmdm.io` reads it (MONOCHROME1 already inverted,
high values bright), in the source's window (:func:`medmdm.writers.display.grey_window`: the first
file's WindowCenter and WindowWidth, or its VOI LUT's input range, else the 1st to 99th percentile of
the whole study; the same for every slice); colour sources as read, with the map over it in
``colormap``, ``alpha`` opaque, its lowest values (below :data:`medmdm.writers.preview.HIDE_BELOW` of
the map's range) left out. Each source pixel becomes a block of ``f x f`` pixels, ``f`` the smallest
whole factor that brings the long side to :data:`MIN_LONG_SIDE` pixels (1 for a source that long
already); the image's row ``f * j + a``, column ``f * i + b`` shows voxel ``(i, j)`` of the slice, and
PixelSpacing is the source's divided by ``f``. A legend panel :func:`legend_width` pixels wide is
added on the right: the colour bar with the map's range. Burned into every image: the slice's plane,
number (from 1, as the preview numbers it) and position in mm (:func:`medmdm.writers.display.slice_label`;
a 2D image's view) at the top left, which ImageComments repeats, and "RESEARCH - NOT FOR DIAGNOSIS" at
the bottom left (BurnedInAnnotation YES); the series description says it too. Each image references
its source image (and frame).

The SC IOD has no frame of reference: a source with patient geometry gives PixelSpacing and a
PatientOrientation computed from its direction cosines; one without (a projection radiograph)
gives the source's PatientOrientation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import torch

from medmdm.errors import InputError
from medmdm.io import Study
from medmdm.writers import dicom_common as common
from medmdm.writers.atomic import atomic_path
from medmdm.writers.display import caption, grey_window
from medmdm.writers.preview import HIDE_BELOW

SERIES_OFFSET = 2000  # SeriesNumber = the source's + this
BURNED_IN_NOTICE = "RESEARCH - NOT FOR DIAGNOSIS"
FILE_NAME = "sc_{:04d}.dcm"
MIN_LONG_SIDE = 512  # pixels: smaller sources are enlarged by a whole factor to reach it
FONT_SIZES = (7, 24)  # smallest and largest font size of burned-in text, in pixels
FONT_SHARE = 1 / 28  # font size as a share of the image's height, before fitting the width
LEGEND_SHARE = 1 / 8  # legend panel width as a share of the image's width, at least LEGEND_MIN
LEGEND_MIN = 64
WHITE, BLACK = (255, 255, 255), (0, 0, 0)
MASS_TOLERANCE = 1e-9  # relative: a cumulative mass this close to the goal reaches it


def mass_slices(data: np.ndarray, mass_fraction: float) -> list[int]:
    """The fewest slices (axis 2) whose summed map reaches ``mass_fraction`` of the total, in order.

    Negative values count as 0. A map without positive mass gives the slice of its maximum.

    Parameters
    ----------
    data : numpy.ndarray
        ``(X, Y, Z)`` map.
    mass_fraction : float
        In (0, 1].

    Returns
    -------
    list of int
        Increasing slice indices, at least one.
    """
    mass = np.clip(data, 0, None).sum(axis=(0, 1))
    total = float(mass.sum())
    if total <= 0:
        return [int(np.unravel_index(int(np.argmax(data)), data.shape)[2])]
    by_mass = np.argsort(-mass, kind="stable")
    reached = np.cumsum(mass[by_mass]) >= mass_fraction * total * (1 - MASS_TOLERANCE)
    return sorted(int(k) for k in by_mass[: int(np.argmax(reached)) + 1])


def enlargement(rows: int, columns: int) -> int:
    """The whole factor each source pixel is enlarged by: the smallest that makes the long side at
    least :data:`MIN_LONG_SIDE`, 1 when it is already."""
    return max(1, math.ceil(MIN_LONG_SIDE / max(rows, columns)))


def legend_width(columns: int) -> int:
    """Width in pixels of the legend panel beside an image ``columns`` pixels wide (after enlarging)."""
    return max(LEGEND_MIN, round(columns * LEGEND_SHARE))


def write_secondary_capture(
    saliency: torch.Tensor | np.ndarray,
    study: Study,
    folder: str | Path,
    *,
    method: str,
    mass_fraction: float = 0.95,
    colormap: str = "inferno",
    alpha: float = 0.45,
) -> list[Path]:
    """Write the map over the source image as RGB Secondary Capture images, one per slice kept.

    Parameters
    ----------
    saliency : torch.Tensor or numpy.ndarray
        ``(*spatial)`` or ``(1, *spatial)`` with the study's spatial shape, finite.
    study : medmdm.io.Study
        The DICOM study the map lies on: a file, a series or a multi-frame file.
    folder : str or Path
        Where to write ``sc_0001.dcm``, ``sc_0002.dcm``... (created if missing); each file is
        written atomically, an existing one replaced.
    method : str
        The explainer (``"hdm"``...), named in the series description.
    mass_fraction : float
        Share of the map's mass the slices kept must hold (3D), in (0, 1].
    colormap : str
        A matplotlib colour map name.
    alpha : float
        Opacity of the map over the image, in [0, 1].

    Returns
    -------
    list of Path
        The files written, in slice order.

    Raises
    ------
    InputError
        What :func:`~medmdm.writers.dicom_output_problem` finds (a NIfTI study...), a map of
        another shape or with non-finite values, ``mass_fraction`` or ``alpha`` out of range, an
        unknown ``colormap``.
    """
    import matplotlib

    if not 0 < mass_fraction <= 1:
        raise InputError(f"mass_fraction must be in (0, 1], got {mass_fraction}")
    if not 0 <= alpha <= 1:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    if colormap not in matplotlib.colormaps:
        raise InputError(f"unknown colormap {colormap!r}: use a matplotlib colour map name")
    cmap = matplotlib.colormaps[colormap]
    source = common.DicomSource.of(study, "dicom-sc")
    data = common.study_map(saliency, source)
    volume = data[..., None] if data.ndim == 2 else data
    image = source.on_source_slices(source.study.image.detach().as_tensor().cpu().numpy())
    image = image[..., None] if image.ndim == 3 else image  # (C, X, Y, Z) on the source's slices
    grey_range = grey_window(source.datasets, image)
    low, high = float(data.min()), float(data.max())
    factor = enlargement(volume.shape[1], volume.shape[0])
    series = common.NewSeries.derived_from(
        source.datasets[0], SERIES_OFFSET, common.series_description(method, "saliency overlay")
    )
    captures = []
    for number, k in enumerate(mass_slices(volume, mass_fraction), start=1):
        shown = (volume[..., k] - low) / (high - low) if high > low else np.zeros(volume.shape[:2])
        weight = np.where(shown >= HIDE_BELOW, alpha, 0.0)[..., None]
        blended = (1 - weight) * _display_slice(image[..., k], grey_range) + weight * cmap(shown)[..., :3]
        rgb = np.round(blended.transpose(1, 0, 2) * 255).astype(np.uint8)  # (rows, cols, 3)
        rgb = rgb.repeat(factor, axis=0).repeat(factor, axis=1)
        where = _where(source, k)
        rgb = _burn_in(_with_legend(rgb, cmap, low, high), where)
        captures.append(_capture(source, series, rgb, k, number, method, factor, where))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, capture in enumerate(captures, start=1):
        path = folder / FILE_NAME.format(number)
        with atomic_path(path) as tmp:
            capture.save_as(tmp)
        paths.append(path)
    return paths


def _where(source: common.DicomSource, k: int) -> str:
    """Source slice ``k``'s caption (:func:`medmdm.writers.display.caption`): a resampled study's source
    slice lies between its grid's slices, and is numbered among the source's."""
    positions = source.study.source_slice_positions
    index = positions[k] / float(source.study.spacing[2]) if positions else k
    return caption(source.study, index, count=source.slice_count, number=k + 1)


def _display_slice(plane: np.ndarray, grey_range: tuple[float, float]) -> np.ndarray:
    """A ``(C, W, H)`` plane of the study as ``(W, H, 3)`` RGB in [0, 1]."""
    low, high = grey_range
    shown = np.clip((plane.astype(np.float64) - low) / (high - low), 0, 1) if high > low else plane * 0.0
    if shown.shape[0] == 3:
        return np.moveaxis(shown, 0, -1)
    return np.repeat(shown[0][..., None], 3, axis=-1)


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _with_legend(rgb: np.ndarray, cmap: Any, low: float, high: float) -> np.ndarray:
    """The image with a black legend panel on its right: the colour bar, the map's range at its ends."""
    from PIL import Image, ImageDraw

    rows, cols = rgb.shape[:2]
    width = legend_width(cols)
    panel = np.zeros((rows, width, 3), dtype=np.uint8)
    size = int(np.clip(rows * FONT_SHARE, *FONT_SIZES))
    top, bottom = 3 * size, rows - 3 * size
    if bottom - top >= 2:
        ramp = cmap(np.linspace(1, 0, bottom - top))[:, :3]
        left, right = width // 2 - width // 8, width // 2 + width // 8
        panel[top:bottom, left:right] = np.round(ramp * 255).astype(np.uint8)[:, None]
    picture = Image.fromarray(panel, mode="RGB")
    draw = ImageDraw.Draw(picture)
    font = _font(max(FONT_SIZES[0], min(size, width // 5)))
    for text, y in ((f"{high:.3g}", top - 1.5 * size), (f"{low:.3g}", bottom + 0.5 * size)):
        draw.text((width / 2, y), text, font=font, fill=WHITE, anchor="ma")
    return np.concatenate([rgb, np.asarray(picture)], axis=1)


def _burn_in(rgb: np.ndarray, where: str) -> np.ndarray:
    """The image with ``where`` at its top left and the research notice at its bottom left, white
    outlined in black, each in the largest font size up to :data:`FONT_SHARE` of the height that fits."""
    from PIL import Image, ImageDraw

    rows, cols = rgb.shape[:2]
    picture = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(picture)
    for text, at_top in ((where, True), (BURNED_IN_NOTICE, False)):
        for size in range(int(np.clip(rows * FONT_SHARE, *FONT_SIZES)), FONT_SIZES[0] - 1, -1):
            font = _font(size)
            left, top, right, bottom = draw.textbbox((0, 0), text, font=font, stroke_width=1)
            margin = max(2, size // 3)
            if right - left + 2 * margin <= cols or size == FONT_SIZES[0]:
                y = margin - top if at_top else rows - margin - bottom
                draw.text((margin - left, y), text, font=font, fill=WHITE, stroke_width=1, stroke_fill=BLACK)
                break
    return np.asarray(picture)


def _capture(
    source: common.DicomSource,
    series: common.NewSeries,
    rgb: np.ndarray,
    k: int,
    number: int,
    method: str,
    factor: int,
    where: str,
) -> hd.sc.SCImage:
    """The Secondary Capture of slice ``k``, instance ``number`` of the series, its source pixels
    enlarged ``factor`` times; ``where`` (the burned-in slice label) goes into ImageComments."""
    reference = source.dataset_of_slice(k)
    between_columns, between_rows = (float(s) / factor for s in source.study.spacing[:2])
    with common.derivation_errors(source, "a Secondary Capture"):
        capture = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=reference,
            pixel_array=rgb,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series.series_uid,
            series_number=series.series_number,
            sop_instance_uid=hd.UID(),
            instance_number=number,
            manufacturer=series.manufacturer,
            manufacturer_model_name=series.model_name,
            software_versions=series.software_versions,
            device_serial_number=series.device_serial_number,
            pixel_spacing=(between_rows, between_columns) if source.has_patient_geometry else None,
            patient_orientation=("L", "P"),  # replaced below: highdicom takes one letter per axis
            series_description=series.description,
        )
    capture.PatientOrientation = source.patient_orientation() or None
    capture.BurnedInAnnotation = "YES"
    capture.ImageComments = where
    capture.SourceImageSequence = [source.source_reference(k)]
    capture.DerivationDescription = f"medmdm {method} saliency over slice {k + 1} of {source.slice_count}"
    common.copy_laterality(capture, reference)
    return capture
