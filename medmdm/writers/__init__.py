"""Writing explanations; every file is written atomically.

``write_nifti_overlay(saliency, reference, path)`` puts a map on its image's grid with the image's
RAS affine; ``write_nifti_image(reference, path)`` writes the image beside it;
``write_preview(image, saliency, path)`` draws a PNG; for a DICOM study,
``write_parametric_map``, ``write_secondary_capture`` and ``write_segmentation`` write a Parametric Map,
colour Secondary Captures and a binary SEG in the study's Study and Frame of Reference, in new series,
and ``write_colour_presentation`` a presentation state that shows the Parametric Map as a heat map
(``dicom_output_problem(study, kind)`` says beforehand whether a study can carry each, and why not);
``write_report(report, path)`` writes the JSON report and ``write_html_report(report, study, saliency, path)``
the self-contained review page.
"""

from __future__ import annotations

from medmdm.writers.atomic import atomic_path
from medmdm.writers.dicom_common import dicom_output_problem
from medmdm.writers.html_report import write_html_report
from medmdm.writers.nifti import write_nifti_image, write_nifti_overlay
from medmdm.writers.parametric_map import write_parametric_map
from medmdm.writers.presentation_state import write_colour_presentation
from medmdm.writers.preview import write_preview
from medmdm.writers.report import write_report
from medmdm.writers.secondary_capture import write_secondary_capture
from medmdm.writers.segmentation import write_segmentation

__all__ = [
    "atomic_path",
    "dicom_output_problem",
    "write_colour_presentation",
    "write_html_report",
    "write_nifti_image",
    "write_nifti_overlay",
    "write_parametric_map",
    "write_preview",
    "write_report",
    "write_secondary_capture",
    "write_segmentation",
]
