"""DICOM Parametric Map: the saliency values themselves, float32, on the source's frames.

One multi-frame Parametric Map (highdicom's ``ParametricMap``) in the source's study and frame of
reference, in a new series: one frame per source slice (per frame of a multi-frame source) at the
source's position, referencing every source instance. The stored values are the map's, unscaled:
the real world value mapping is the identity over the map's range, quantity DCM 130402 "Class
activation" (CID 7180), unit "no units" (UCUM 1). ContentQualification is RESEARCH; ContentLabel and
LUTLabel are "SALIENCY"; the VOI window (LINEAR_EXACT) spans the map's range.

Colour: OHIF's Parametric Map viewer (``@ohif/extension-cornerstone-dicom-pmap``) draws a Parametric
Map as a colour overlay (its own colour map, half opaque at the bottom of the range) over the series
that its ReferencedSeriesSequence names, windowed over the map's range; this map names the source
series there. The standard gives a Parametric Map a Palette Color Lookup Table (PixelPresentation
COLOR_RANGE) only over integer pixel data, and dciodvfy reports the palette of such an object as
present where its Image Pixel Description macro does not allow it, so the values stay float32 and
exact, as dcmqi (3D Slicer's reader) and dcm2niix read them (ITK's GDCM reads no Float Pixel Data),
without a palette; :mod:`medmdm.writers.presentation_state` writes the colour mapping as a
presentation state that references the map.

Frames: one per source slice, stored in ascending order along the normal of the image orientation
(row x column), as dcmqi's ``paramap2itkimage`` stacks them (in file order, whatever their Plane
Positions); highdicom writes them the other way.

The IOD requires a frame of reference and plane positions: for a single-frame source without
them (a projection radiograph, CR/DX), the map gets a new frame of reference of its own, its frame
placed as :mod:`medmdm.io` places the image (origin 0, rows along x, columns along y, the source's
pixel spacing); the source image reference still ties the map to the radiograph, pixel for pixel.
"""

from __future__ import annotations

import copy
from pathlib import Path

import highdicom as hd
import numpy as np
import torch
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.valuerep import DS

from medmdm.io import Study
from medmdm.writers import dicom_common as common
from medmdm.writers.atomic import atomic_path

SERIES_OFFSET = 1000  # SeriesNumber = the source's + this
LABEL = "SALIENCY"  # LUTLabel (SH) and ContentLabel (CS)


def write_parametric_map(
    saliency: torch.Tensor | np.ndarray,
    study: Study,
    path: str | Path,
    *,
    method: str,
    target_label: str = "",
    series_description: str | None = None,
) -> Path:
    """Write a map on a DICOM study's grid as a float32 Parametric Map.

    Parameters
    ----------
    saliency : torch.Tensor or numpy.ndarray
        ``(*spatial)`` or ``(1, *spatial)`` with the study's spatial shape, finite. Stored as is.
    study : medmdm.io.Study
        The DICOM study the map lies on: a file, a series or an enhanced multi-frame file.
    path : str or Path
        The file to write (``.dcm``); its folder must exist. Written atomically.
    method : str
        The explainer (``"hdm"``...), named in the descriptions.
    target_label : str, optional
        The class explained, named in the content description.
    series_description : str, optional
        SeriesDescription (64 characters at most); by default
        ``"medmdm <method> saliency - research only, not for diagnosis"``.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        What :func:`~medmdm.writers.dicom_output_problem` finds (a NIfTI study, an RT Dose grid, a
        multi-frame source without plane positions...), a map of another shape or with non-finite
        values, a description over 64 characters.
    """
    path = Path(path)
    source = common.DicomSource.of(study, "dicom-pm")
    data = common.study_map(saliency, source).astype(np.float32)
    if series_description is None:
        series_description = common.series_description(method, "saliency")
    series = common.NewSeries.derived_from(source.datasets[0], SERIES_OFFSET, series_description)
    low, high = float(data.min()), float(data.max())
    content = f"medmdm {method} saliency" + (f" for {target_label}" if target_label else "")
    content = content[: common.LONG_STRING]
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=LABEL,
        lut_explanation=content,
        unit=codes.UCUM.NoUnits,
        value_range=(low, high),
        quantity_definition=codes.DCM.ClassActivation,
    )
    window = hd.VOILUTTransformation(  # lists: highdicom splits a lone explanation into characters
        window_center=[(low + high) / 2],
        window_width=[high - low if high > low else 1.0],
        window_explanation=["map range"],
        voi_lut_function=hd.VOILUTFunctionValues.LINEAR_EXACT,
    )
    geometry_sources = source.datasets if source.has_patient_geometry else [_geometry_stand_in(source)]
    with common.derivation_errors(source, "a Parametric Map"):
        pm = hd.pm.ParametricMap(
            source_images=geometry_sources,
            pixel_array=source.frames(data),
            series_instance_uid=series.series_uid,
            series_number=series.series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=series.manufacturer,
            manufacturer_model_name=series.model_name,
            software_versions=series.software_versions,
            device_serial_number=series.device_serial_number,
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[window],
            content_label=LABEL,
            content_description=content,
            content_qualification=hd.ContentQualificationValues.RESEARCH,
            series_description=series.description,
        )
    common.copy_laterality(pm, source.datasets[0])
    common.frames_in_ascending_order(pm)
    with atomic_path(path) as tmp:
        pm.save_as(tmp)
    return path


def _geometry_stand_in(source: common.DicomSource) -> Dataset:
    """The header of a single-frame source without patient geometry, placed in a new frame of reference.

    The frame gets the study's affine (as :mod:`medmdm.io` places it) in a new FrameOfReferenceUID
    that nothing else shares; the SOP instance stays the source's, so references still point at it.
    """
    stand_in = copy.deepcopy(source.datasets[0])
    lps = common.LPS_TO_RAS @ np.asarray(source.study.affine, dtype=float)[:3]
    between_columns, between_rows = (float(s) for s in source.study.spacing[:2])
    cosines = np.concatenate([lps[:, 0] / between_columns, lps[:, 1] / between_rows])
    stand_in.FrameOfReferenceUID = hd.UID()
    stand_in.ImagePositionPatient = [DS(v, auto_format=True) for v in lps[:, 3]]
    stand_in.ImageOrientationPatient = [DS(v, auto_format=True) for v in cosines]
    stand_in.PixelSpacing = [DS(between_rows, auto_format=True), DS(between_columns, auto_format=True)]
    return stand_in
