"""DICOM Pseudo-Color Softcopy Presentation State: the Parametric Map shown as a heat map.

A Parametric Map holds the map's float values in grey (MONOCHROME2). A Pseudo-Color Softcopy
Presentation State (highdicom's ``PseudoColorSoftcopyPresentationState``) tells a viewer that applies
presentation states (Weasis; not OHIF) how to show those values: through the Parametric Map's
window (the map's range, LINEAR_EXACT, in the Softcopy VOI LUT) into a Palette Color LUT of 256
16-bit entries sampled from matplotlib's perceptual *inferno* colour map (black at the bottom of the
range, yellow-white at the top), the colour map of the previews, the Secondary Captures and the
Slicer review. It lives in a new series of the source's study, references the Parametric Map's SOP
instance and series, and carries ContentLabel ``SALIENCY``.

The standard's way to show the coloured map over the source image is a Blending Softcopy
Presentation State (a grey underlying image, a pseudo-coloured superimposed image, a relative
opacity); highdicom does not build one, and this module does not write one: viewers blend the map
over the source themselves (OHIF's Parametric Map viewer does so for any Parametric Map).

Written from the Parametric Map file, after it: ``write_parametric_map`` then
``write_colour_presentation``.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from medmdm.errors import InputError
from medmdm.io import Study
from medmdm.writers import dicom_common as common
from medmdm.writers.atomic import atomic_path

SERIES_OFFSET = 4000  # SeriesNumber = the source's + this
LABEL = "SALIENCY"  # ContentLabel (CS), as the Parametric Map's
COLOUR_MAP = "inferno"
PALETTE_ENTRIES = 256
PALETTE_MAX = 65535  # 16-bit entries, which a presentation state's palette must have


def colour_palette(name: str = COLOUR_MAP) -> hd.PaletteColorLUTTransformation:
    """A 256-entry, 16-bit Palette Color LUT (first mapped value 0) sampled from a matplotlib colour map."""
    import matplotlib

    rgb = matplotlib.colormaps[name](np.linspace(0.0, 1.0, PALETTE_ENTRIES))[:, :3]
    entries = np.round(rgb * PALETTE_MAX).astype(np.uint16)
    red, green, blue = (
        hd.PaletteColorLUT(0, entries[:, c], colour) for c, colour in enumerate(("red", "green", "blue"))
    )
    return hd.PaletteColorLUTTransformation(red_lut=red, green_lut=green, blue_lut=blue)


def write_colour_presentation(
    parametric_map: str | Path,
    study: Study,
    path: str | Path,
    *,
    method: str,
    series_description: str | None = None,
) -> Path:
    """Write a Pseudo-Color Softcopy Presentation State that shows a Parametric Map as a heat map.

    Parameters
    ----------
    parametric_map : str or Path
        The Parametric Map written by :func:`~medmdm.writers.write_parametric_map` for ``study``.
    study : medmdm.io.Study
        The DICOM study the map lies on; its Laterality and SeriesNumber are the new series'.
    path : str or Path
        The file to write (``.dcm``); its folder must exist. Written atomically.
    method : str
        The explainer (``"hdm"``...), named in the descriptions.
    series_description : str, optional
        SeriesDescription (64 characters at most); by default
        ``"medmdm <method> saliency colour - research only, not for diagnosis"``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        ``parametric_map`` is not a readable Parametric Map; a description over 64 characters.
    """
    path = Path(path)
    try:
        pm = pydicom.dcmread(parametric_map)
    except (OSError, pydicom.errors.InvalidDicomError) as e:
        raise InputError(f"{parametric_map}: cannot read the Parametric Map ({e})") from e
    if pm.get("SOPClassUID") != pydicom.uid.ParametricMapStorage:
        raise InputError(f"{parametric_map}: not a Parametric Map ({common.sop_class_name(pm)})")
    if series_description is None:
        series_description = common.series_description(method, "saliency colour")
    source = study.headers[0]
    series = common.NewSeries.derived_from(source, SERIES_OFFSET, series_description)
    state = hd.pr.PseudoColorSoftcopyPresentationState(
        referenced_images=[pm],  # its window (shared Frame VOI LUT) becomes the Softcopy VOI LUT
        series_instance_uid=series.series_uid,
        series_number=series.series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer=series.manufacturer,
        manufacturer_model_name=series.model_name,
        software_versions=series.software_versions,
        device_serial_number=series.device_serial_number,
        palette_color_lut_transformation=colour_palette(),
        content_label=LABEL,
        content_description=common.long_string(
            f"medmdm {method} saliency as a heat map", "content description"
        ),
    )
    state.SeriesDescription = series.description
    # highdicom splits a lone window explanation it copies into characters: copy it whole
    window = pm.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    for item in state.SoftcopyVOILUTSequence:
        item.WindowCenterWidthExplanation = window.get("WindowCenterWidthExplanation", "")
    common.copy_laterality(state, source)
    with atomic_path(path) as tmp:
        state.save_as(tmp)
    return path
