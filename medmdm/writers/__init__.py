"""Writing explanations: NIfTI overlays, PNG previews; every file is written atomically.

``write_nifti_overlay(saliency, reference, path)`` puts a map on its image's grid with the image's
RAS affine; ``write_nifti_image(reference, path)`` writes the image beside it;
``write_preview(image, saliency, path)`` draws a PNG (needs matplotlib, imported on use).
"""

from __future__ import annotations

from medmdm.writers.atomic import atomic_path
from medmdm.writers.nifti import write_nifti_image, write_nifti_overlay
from medmdm.writers.preview import write_preview

__all__ = ["atomic_path", "write_nifti_image", "write_nifti_overlay", "write_preview"]
