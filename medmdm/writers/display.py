"""What the pictures of a map share: plane names, slice positions in mm, the grey window, the scores in words.

The PNG preview (:mod:`medmdm.writers.preview`), the Secondary Captures
(:mod:`medmdm.writers.secondary_capture`) and ``report.html`` (:mod:`medmdm.writers.html_report`) name
planes and slices the same way: a plane through a volume is named by the patient axis closest to its
normal (``axial``: S, ``coronal``: A, ``sagittal``: R, from the RAS affine), its position is the
coordinate of the plane along that normal in mm (``S 12.5 mm``: every point of the plane has it, for
an oblique plane too), and slices are numbered from 1 among the study's slices (``slice 3/40``);
:func:`caption` is the one label all of them write.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from pydicom import Dataset
from pydicom.multival import MultiValue

from medmdm.io import Study

PLANES = ("sagittal", "coronal", "axial")  # by the RAS axis closest to the plane's normal
AXIS_LETTERS = ("R", "A", "S")
GREY_PERCENTILES = (1.0, 99.0)  # the grey window of an image without one of its own
VIEW_KEYWORDS = ("ViewPosition", "ImageLaterality")  # a radiograph's view, in this order


def plane_normal(affine: np.ndarray | torch.Tensor, axis: int) -> np.ndarray:
    """The unit RAS normal of the planes of constant voxel index ``axis``, its largest component positive.

    Parameters
    ----------
    affine : array (4, 4)
        Voxel to RAS mm.
    axis : int
        0, 1 or 2.
    """
    matrix = np.asarray(affine, dtype=np.float64)[:3, :3]
    normal = np.linalg.inv(matrix)[axis]  # the gradient of the voxel index along ``axis``
    normal = normal / np.linalg.norm(normal)
    return normal if normal[np.argmax(np.abs(normal))] > 0 else -normal


def plane_name(affine: np.ndarray | torch.Tensor, axis: int) -> str:
    """``"axial"``, ``"coronal"`` or ``"sagittal"``: the planes of constant index ``axis`` of a volume.

    Examples
    --------
    >>> [plane_name(np.eye(4), axis) for axis in range(3)]
    ['sagittal', 'coronal', 'axial']
    """
    return PLANES[int(np.argmax(np.abs(plane_normal(affine, axis))))]


def plane_position(affine: np.ndarray | torch.Tensor, axis: int, index: float) -> tuple[str, float]:
    """Where plane ``index`` (voxel units, may be fractional) of axis ``axis`` lies: the letter of its
    normal's patient axis and its coordinate along the normal, in mm.

    Examples
    --------
    >>> plane_position(np.diag([0.5, 0.5, 2.0, 1.0]), 2, 3)
    ('S', 6.0)
    """
    a = np.asarray(affine, dtype=np.float64)
    normal = plane_normal(a, axis)
    voxel = np.zeros(3)
    voxel[axis] = index
    point = a[:3, :3] @ voxel + a[:3, 3]
    return AXIS_LETTERS[int(np.argmax(np.abs(normal)))], float(normal @ point)


def slice_label(
    affine: np.ndarray | torch.Tensor, axis: int, index: float, count: int, *, number: int | None = None
) -> str:
    """``"slice 4/40, S 12.5 mm"``: plane ``index`` (0-based, may be fractional) of ``count``, numbered
    from 1: ``number``, by default the nearest whole index plus 1.

    Examples
    --------
    >>> slice_label(np.diag([0.5, 0.5, 2.0, 1.0]), 2, 3, 10)
    'slice 4/10, S 6.0 mm'
    """
    letter, mm = plane_position(affine, axis, index)
    return f"slice {round(index) + 1 if number is None else number}/{count}, {letter} {mm:.1f} mm"


def grey_window(headers: Sequence[Dataset], image: np.ndarray) -> tuple[float, float]:
    """The grey values shown black and white: the first header's window, else a robust percentile window.

    A top-level WindowCenter and WindowWidth (the first pair, when several), else a VOI LUT's input
    range (its first mapped value to its last; shown linearly), are used unless the image is
    MONOCHROME1, whose window applies to the values before :mod:`medmdm.io` inverted them; otherwise
    the 1st and 99th percentiles of ``image`` (of the first channel). Colour images (3 channels) are
    shown from 0 to their largest stored value: ``2**BitsStored - 1`` (255 for a palette).

    Parameters
    ----------
    headers : sequence of pydicom.Dataset
        The study's headers; may be empty (NIfTI).
    image : numpy.ndarray
        ``(C, *spatial)``.
    """
    first = headers[0] if headers else Dataset()
    if image.shape[0] == 3:
        palette = first.get("PhotometricInterpretation") == "PALETTE COLOR"
        return 0.0, float(2 ** (8 if palette else int(first.get("BitsStored") or 8)) - 1)
    center, width = _first_value(first.get("WindowCenter")), _first_value(first.get("WindowWidth"))
    inverted = first.get("PhotometricInterpretation") == "MONOCHROME1"
    if center is not None and width is not None and width > 0 and not inverted:
        return center - width / 2, center + width / 2
    lut = first.get("VOILUTSequence")
    if lut and "LUTDescriptor" in lut[0] and not inverted:
        entries, first_mapped = (int(v) for v in lut[0].LUTDescriptor[:2])
        return float(first_mapped), float(first_mapped + (entries or 65536) - 1)
    low, high = (float(v) for v in np.percentile(image[0], GREY_PERCENTILES))
    return low, high


def study_view(study: Study) -> str:
    """The name of a 2D study's image: a radiograph's view as its header gives it (``"PA"``,
    ``"AP L"``), else the plane of an image placed in the patient (``"axial"``), else ``"image"``."""
    first = study.headers[0] if study.headers else Dataset()
    words = [str(first.get(keyword) or "").strip() for keyword in VIEW_KEYWORDS]
    if any(words):
        return " ".join(w for w in words if w)
    if "ImageOrientationPatient" in first and study.patient_geometry:
        return plane_name(study.affine, 2)
    return "image"


def caption(study: Study, index: float = 0, *, count: int | None = None, number: int | None = None) -> str:
    """How every picture of the study labels its plane ``index`` along axis 2 (0-based, may be fractional).

    A volume: ``"axial slice 4/40, S 12.5 mm"`` (:func:`slice_label`; ``count`` slices, by default the
    study's, and ``number`` as there). A 2D image: its view (:func:`study_view`), with its position in
    mm when its header places it in the patient (``"axial, S -75.7 mm"``).
    """
    if len(study.size) == 2:
        view = study_view(study)
        placed = bool(study.headers) and "ImagePositionPatient" in study.headers[0] and study.patient_geometry
        if not placed:
            return view
        letter, mm = plane_position(study.affine, 2, 0)
        return f"{view}, {letter} {mm:.1f} mm"
    count = study.size[2] if count is None else count
    return f"{plane_name(study.affine, 2)} {slice_label(study.affine, 2, index, count, number=number)}"


def score_sentences(
    original: float, masked: float, remaining: float, baseline: float, score: str = "logit"
) -> list[str]:
    """The scores of an explanation in words: what the whole image, the map's region alone, the image
    without it and the empty image score, and the share of the evidence each keeps.

    The evidence is ``original - baseline``; shares are given when it is not zero.

    Examples
    --------
    >>> score_sentences(4.0, 3.5, 1.0, 0.0)[1]
    'Keeping only what the map marks: 3.5 (88% of the evidence kept).'
    """
    evidence = original - baseline

    def share(value: float) -> str:
        return f" ({(value - baseline) / evidence:.0%} of the evidence kept)" if evidence else ""

    return [
        f"Score ({score}) of the whole image: {original:.3g}; of the image with everything removed: "
        f"{baseline:.3g}.",
        f"Keeping only what the map marks: {masked:.3g}{share(masked)}.",
        f"Removing what the map marks: {remaining:.3g}{share(remaining)}.",
    ]


def _first_value(value: object) -> float | None:
    """The first of a DS value's values (WindowCenter may hold several), ``None`` when absent."""
    if isinstance(value, MultiValue):
        value = value[0] if len(value) else None
    return None if value in (None, "") else float(value)
