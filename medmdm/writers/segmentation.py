"""DICOM Segmentation: the top of the map as one binary segment.

One BINARY Segmentation (highdicom's ``Segmentation``) in the source's study and frame of
reference, in a new series, with one segment: the voxels holding the top ``top_fraction`` of the
map's values ("Saliency top 5%"), algorithm type AUTOMATIC, identified as ``medmdm/<method>`` with
medmdm's version and the fraction as a parameter. Category SCT 309825002 "Spatial and Relational
Concept", type DCM 130404 "Saliency". Frames where the segment is empty are left out, as highdicom
does by default; every frame kept sits at its source frame's position and references it.

A source without a frame of reference (a projection radiograph) gives a segmentation without one,
tied to the image pixel for pixel by its source image reference, with the source's
PatientOrientation.
"""

from __future__ import annotations

import math
from pathlib import Path

import highdicom as hd
import numpy as np
import torch
from pydicom.sr.codedict import codes

from medmdm import __version__
from medmdm.errors import InputError
from medmdm.io import Study
from medmdm.writers import dicom_common as common
from medmdm.writers.atomic import atomic_path

SERIES_OFFSET = 3000  # SeriesNumber = the source's + this
CATEGORY = codes.SCT.SpatialAndRelationalConcept
PROPERTY_TYPE = codes.DCM.Saliency
ALGORITHM_FAMILY = codes.DCM.ArtificialIntelligence
CONTENT_LABEL = "SALIENCY"


def top_region(data: np.ndarray, top_fraction: float) -> np.ndarray:
    """The voxels holding the top ``top_fraction`` of a map's values.

    The region is every voxel at or above the value of the ``ceil(top_fraction * size)``-th
    largest one (at least one voxel), so values tied at that threshold are all kept, and never
    the map's minimum: a flat map has no top.

    Parameters
    ----------
    data : numpy.ndarray
        The map, any shape.
    top_fraction : float
        In (0, 1].

    Returns
    -------
    numpy.ndarray
        Boolean, ``data``'s shape.

    Raises
    ------
    InputError
        ``top_fraction`` outside (0, 1]; a map whose values are all equal.
    """
    if not 0 < top_fraction <= 1:
        raise InputError(f"top_fraction must be in (0, 1], got {top_fraction}")
    low = float(data.min())
    if float(data.max()) == low:
        raise InputError(f"saliency map is flat (every value is {low:g}): it has no top region to segment")
    count = max(1, math.ceil(top_fraction * data.size))
    threshold = np.partition(data.ravel(), data.size - count)[data.size - count]
    return (data >= threshold) & (data > low)


def write_segmentation(
    saliency: torch.Tensor | np.ndarray,
    study: Study,
    path: str | Path,
    *,
    method: str,
    top_fraction: float = 0.05,
) -> Path:
    """Write the top of a map on a DICOM study's grid as a binary Segmentation.

    Parameters
    ----------
    saliency : torch.Tensor or numpy.ndarray
        ``(*spatial)`` or ``(1, *spatial)`` with the study's spatial shape, finite.
    study : medmdm.io.Study
        The DICOM study the map lies on: a file, a series or an enhanced multi-frame file.
    path : str or Path
        The file to write (``.dcm``); its folder must exist. Written atomically.
    method : str
        The explainer (``"hdm"``...), named in the algorithm identification and descriptions.
    top_fraction : float
        Share of the voxels in the segment (see :func:`top_region`), in (0, 1].

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        What :func:`~medmdm.writers.dicom_output_problem` finds (a NIfTI study, an RT Dose grid, a
        multi-frame source without plane positions...), a map of another shape, with non-finite
        values or flat, ``top_fraction`` outside (0, 1].
    """
    path = Path(path)
    source = common.DicomSource.of(study, "dicom-seg")
    region = top_region(common.study_map(saliency, source), top_fraction)
    label = f"Saliency top {top_fraction * 100:.3g}%"
    series = common.NewSeries.derived_from(
        source.datasets[0], SERIES_OFFSET, common.series_description(method, label.lower())
    )
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"medmdm/{method}",
        family=ALGORITHM_FAMILY,
        version=__version__,
        source=common.MANUFACTURER,
        parameters={"top_fraction": f"{top_fraction:g}"},
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=CATEGORY,
        segmented_property_type=PROPERTY_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    with common.derivation_errors(source, "a Segmentation"):
        seg = hd.seg.Segmentation(
            source_images=source.datasets,
            pixel_array=source.frames(region),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[segment],
            series_instance_uid=series.series_uid,
            series_number=series.series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=series.manufacturer,
            manufacturer_model_name=series.model_name,
            software_versions=series.software_versions,
            device_serial_number=series.device_serial_number,
            content_label=CONTENT_LABEL,
            content_description=f"medmdm {method} {label.lower()}"[: common.LONG_STRING],
            series_description=series.description,
        )
    if not source.has_patient_geometry:
        seg.PatientOrientation = source.patient_orientation() or None
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return path
