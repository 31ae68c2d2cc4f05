"""DICOM Secondary Capture: the map burned into the source image in colour, for PACS that show nothing else.

One RGB Secondary Capture image (highdicom's ``SCImage``, ImageType DERIVED\\SECONDARY) per slice
that holds the map's mass, in the source's study, in a new series: a 2D study gives one image, a
volume the fewest slices whose summed map reaches ``mass_fraction`` of its total (in slice order).

Each image is the source slice in grey as :mod:`medmdm.io` reads it (MONOCHROME1 already inverted,
high values bright), windowed by the first source file's WindowCenter and WindowWidth when it has
them at its top level and is not MONOCHROME1 (whose window applies to the values before the
inversion), else from the 1st to the 99th percentile of the whole study, the same for every slice;
colour sources as read (RGB, 0 to ``2**BitsStored - 1``; a palette's colours 0 to 255)
with the map over it in ``colormap``, ``alpha`` opaque, its lowest values (below
:data:`medmdm.writers.preview.HIDE_BELOW` of the map's range) left out. Pixels are the source's:
row ``j``, column ``i`` of the image is voxel ``(i, j)`` of the slice. "RESEARCH - NOT FOR
DIAGNOSIS" is burned into the bottom left corner when it fits (BurnedInAnnotation says whether
it was); the series description says it too. Each image references its source image (and frame).

The SC IOD has no frame of reference: a source with patient geometry gives PixelSpacing and a
PatientOrientation computed from its direction cosines; one without (a projection radiograph)
gives the source's PatientOrientation.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import torch
from pydicom.multival import MultiValue

from medmdm.errors import InputError
from medmdm.io import Study
from medmdm.writers import dicom_common as common
from medmdm.writers.atomic import atomic_path
from medmdm.writers.preview import HIDE_BELOW

SERIES_OFFSET = 2000  # SeriesNumber = the source's + this
BURNED_IN_NOTICE = "RESEARCH - NOT FOR DIAGNOSIS"
FILE_NAME = "sc_{:04d}.dcm"
GREY_PERCENTILES = (1.0, 99.0)
FONT_SIZES = (7, 24)  # smallest and largest font size of the burned-in notice, in pixels
FONT_SHARE = 1 / 24  # font size as a share of the image's height, before fitting the width
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
    source = common.DicomSource.of(study, "dicom-sc")
    data = common.study_map(saliency, source)
    volume = data[..., None] if data.ndim == 2 else data
    image = source.on_source_slices(source.study.image.detach().as_tensor().cpu().numpy())
    image = image[..., None] if image.ndim == 3 else image  # (C, X, Y, Z) on the source's slices
    grey_range = _grey_range(source, image)
    low, high = float(data.min()), float(data.max())
    series = common.NewSeries.derived_from(
        source.datasets[0], SERIES_OFFSET, common.series_description(method, "saliency overlay")
    )
    captures = []
    for number, k in enumerate(mass_slices(volume, mass_fraction), start=1):
        shown = (volume[..., k] - low) / (high - low) if high > low else np.zeros(volume.shape[:2])
        weight = np.where(shown >= HIDE_BELOW, alpha, 0.0)[..., None]
        colours = matplotlib.colormaps[colormap](shown)[..., :3]
        blended = (1 - weight) * _display_slice(image[..., k], grey_range) + weight * colours
        rgb = np.round(blended.transpose(1, 0, 2) * 255).astype(np.uint8)  # (rows, cols, 3)
        rgb, burned_in = _burn_in_notice(rgb)
        captures.append(_capture(source, series, rgb, k, number, method, burned_in))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for number, capture in enumerate(captures, start=1):
        path = folder / FILE_NAME.format(number)
        with atomic_path(path) as tmp:
            capture.save_as(tmp)
        paths.append(path)
    return paths


def _grey_range(source: common.DicomSource, image: np.ndarray) -> tuple[float, float]:
    """The values shown black and white: the first file's window, else the study's percentiles."""
    first = source.datasets[0]
    if image.shape[0] == 3:
        palette = first.get("PhotometricInterpretation") == "PALETTE COLOR"
        return 0.0, float(2 ** (8 if palette else int(first.get("BitsStored") or 8)) - 1)
    center, width = _first_value(first.get("WindowCenter")), _first_value(first.get("WindowWidth"))
    inverted = first.get("PhotometricInterpretation") == "MONOCHROME1"
    if center is not None and width is not None and width > 0 and not inverted:
        return center - width / 2, center + width / 2
    low, high = (float(v) for v in np.percentile(image[0], GREY_PERCENTILES))
    return low, high


def _display_slice(plane: np.ndarray, grey_range: tuple[float, float]) -> np.ndarray:
    """A ``(C, W, H)`` plane of the study as ``(W, H, 3)`` RGB in [0, 1]."""
    low, high = grey_range
    shown = np.clip((plane.astype(np.float64) - low) / (high - low), 0, 1) if high > low else plane * 0.0
    if shown.shape[0] == 3:
        return np.moveaxis(shown, 0, -1)
    return np.repeat(shown[0][..., None], 3, axis=-1)


def _first_value(value: object) -> float | None:
    """The first of a DS value's values (WindowCenter may hold several), ``None`` when absent."""
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    return None if value in (None, "") else float(value)


def _burn_in_notice(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """The image with the research notice in its bottom left corner, and whether it fitted."""
    from PIL import Image, ImageDraw, ImageFont

    rows, cols = rgb.shape[:2]
    picture = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(picture)
    for size in range(int(np.clip(rows * FONT_SHARE, *FONT_SIZES)), FONT_SIZES[0] - 1, -1):
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = draw.textbbox((0, 0), BURNED_IN_NOTICE, font=font, stroke_width=1)
        margin = max(2, size // 3)
        if right - left + 2 * margin <= cols and bottom - top + 2 * margin <= rows:
            draw.text(
                (margin - left, rows - margin - bottom),
                BURNED_IN_NOTICE,
                font=font,
                fill=(255, 255, 255),
                stroke_width=1,
                stroke_fill=(0, 0, 0),
            )
            return np.asarray(picture), True
    return rgb, False


def _capture(
    source: common.DicomSource,
    series: common.NewSeries,
    rgb: np.ndarray,
    k: int,
    number: int,
    method: str,
    burned_in: bool,
) -> hd.sc.SCImage:
    """The Secondary Capture of slice ``k``, instance ``number`` of the series."""
    reference = source.dataset_of_slice(k)
    between_columns, between_rows = source.study.spacing[:2]
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
    capture.BurnedInAnnotation = "YES" if burned_in else "NO"
    capture.SourceImageSequence = [source.source_reference(k)]
    capture.DerivationDescription = f"medmdm {method} saliency over slice {k + 1} of {source.slice_count}"
    common.copy_laterality(capture, reference)
    return capture
