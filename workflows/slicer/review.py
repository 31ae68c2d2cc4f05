"""Review a medmdm output folder in 3D Slicer: the source image with the saliency map over it.

Run it from Slicer's Python console::

    exec(open("/path/to/medmdm/workflows/slicer/review.py").read())
    review("/path/to/out")

or from a shell::

    Slicer --python-script workflows/slicer/review.py -- /path/to/out [--threshold 0.2] [--opacity 0.45]

It loads the source image (``source.nii.gz``, or the study itself when that is a NIfTI file) as the
background of the three slice views and ``saliency.nii.gz`` as the foreground, in a perceptual colour
map, with the map's values below the threshold hidden, and centres the views on the map's peak. The
files are looked up in ``report.json``'s ``outputs`` list first, then by name. DICOM sources and
medmdm's DICOM outputs are loaded with Slicer's DICOM module instead (see ``docs/slicer.md``).

Everything that does not need Slicer (finding the files, the peak voxel and its RAS position, the
command line) is a plain function, tested without Slicer in ``tests/workflows``. Besides Slicer the
script needs only numpy and the standard library: Slicer's Python usually lacks medmdm, so
``InputError`` is medmdm's where medmdm can be imported and a ``ValueError`` of the same name elsewhere.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np

try:
    from medmdm.errors import InputError
except ImportError:  # Slicer's own Python, where medmdm is not installed

    class InputError(ValueError):
        """The output folder or an option is not what the review accepts."""


REPORT_NAME = "report.json"
SOURCE_KIND = "nifti-image"
OVERLAY_KIND = "nifti-overlay"
SOURCE_NAMES = ("source.nii.gz", "source.nii")
OVERLAY_NAMES = ("saliency.nii.gz", "saliency.nii")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
COLOUR_NODE_NAMES = ("Inferno", "Viridis")  # Slicer's perceptual colour tables, by node name
FALLBACK_COLOUR_NODE_ID = "vtkMRMLColorTableNodeIron"  # built into every Slicer scene
DEFAULT_THRESHOLD = 0.2
DEFAULT_OPACITY = 0.45
MAP_MAXIMUM = 1.0  # medmdm's maps lie in [0, 1]


class ReviewFiles(NamedTuple):
    """The two files a review shows: the source image and the saliency map on its grid."""

    source: Path
    overlay: Path


class Peak(NamedTuple):
    """The map's highest voxel: its index (i, j, k), its centre in RAS mm, and its value."""

    ijk: tuple[int, int, int]
    ras: tuple[float, float, float]
    value: float


def find_review_files(folder: str | Path) -> ReviewFiles:
    """Find the source image and the saliency map of a medmdm output folder.

    ``report.json``'s ``outputs`` list is read first (kinds ``"nifti-image"`` and
    ``"nifti-overlay"``, paths relative to the folder; among several overlays, ``saliency.nii.gz``).
    Files not listed there are looked up by name (``source.nii.gz``, ``saliency.nii.gz``). With no
    source image in the folder, the study the report names (``report["input"]["path"]``) is the
    source when it is a NIfTI file.

    Parameters
    ----------
    folder : str or Path
        The output folder.

    Returns
    -------
    ReviewFiles
        Existing files.

    Raises
    ------
    InputError
        The folder does not exist, ``report.json`` cannot be read, a listed file is missing, there is
        no saliency map, or no NIfTI source (a DICOM source must be loaded with Slicer's DICOM module).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; give a medmdm output folder")
    report = _read_report(folder)
    listed = _listed_outputs(folder, report)
    overlays = listed.get(OVERLAY_KIND, [])
    overlay = _preferred(overlays, OVERLAY_NAMES) or _first_existing(folder, OVERLAY_NAMES)
    if overlay is None:
        raise InputError(f"{folder}: no saliency map (report.json lists none, and no {OVERLAY_NAMES[0]})")
    sources = listed.get(SOURCE_KIND, [])
    source = (sources[0] if sources else None) or _first_existing(folder, SOURCE_NAMES)
    if source is None:
        source = _study_source(folder, report)
    return ReviewFiles(source=source, overlay=overlay)


def peak_voxel(array_kji: np.ndarray) -> tuple[tuple[int, int, int], float]:
    """The index (i, j, k) and value of the highest voxel of a map read from Slicer.

    Parameters
    ----------
    array_kji : numpy.ndarray
        ``(K, J, I)`` as ``slicer.util.arrayFromVolume`` returns it (slice, row, column); NaN ignored.

    Returns
    -------
    tuple
        ``((i, j, k), value)``; the first such voxel in memory order when several are highest.

    Raises
    ------
    InputError
        Not 3D, empty, or without a finite value.
    """
    array_kji = np.asarray(array_kji)
    if array_kji.ndim != 3 or array_kji.size == 0:
        raise InputError(f"saliency map must be one scalar volume (K, J, I), got shape {array_kji.shape}")
    finite = np.where(np.isfinite(array_kji), array_kji, -np.inf)
    flat = int(np.argmax(finite))
    if not np.isfinite(finite.flat[flat]):
        raise InputError("saliency map has no finite value")
    k, j, i = (int(n) for n in np.unravel_index(flat, array_kji.shape))
    return (i, j, k), float(array_kji[k, j, i])


def ijk_to_ras(ijk_to_ras_matrix: np.ndarray, ijk: tuple[int, int, int]) -> np.ndarray:
    """The RAS position (mm) of voxel ``ijk``'s centre, from a volume's 4x4 IJK-to-RAS matrix.

    Examples
    --------
    >>> ijk_to_ras(np.diag([2.0, 3.0, 4.0, 1.0]), (1, 1, 1)).tolist()
    [2.0, 3.0, 4.0]
    """
    matrix = np.asarray(ijk_to_ras_matrix, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise InputError(f"IJK-to-RAS matrix must be 4x4, got shape {matrix.shape}")
    return (matrix @ np.array([*ijk, 1.0]))[:3]


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    """Read ``FOLDER [--threshold T] [--opacity A]``; a leading ``--`` (Slicer's separator) is skipped.

    Raises
    ------
    InputError
        A missing folder, an unknown option, or a value out of range.
    """
    if argv and argv[0] == "--":
        argv = argv[1:]
    parser = _ArgumentParser(
        prog="review.py", add_help=False, description="Show a medmdm output folder in 3D Slicer."
    )
    parser.add_argument("folder", type=Path, help="medmdm output folder")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="hide map values below")
    parser.add_argument("--opacity", type=float, default=DEFAULT_OPACITY, help="opacity of the map")
    arguments = parser.parse_args(argv)
    _check_display_options(arguments.threshold, arguments.opacity)
    return arguments


def review(
    folder: str | Path, threshold: float = DEFAULT_THRESHOLD, opacity: float = DEFAULT_OPACITY
) -> Peak:
    """Load an output folder into Slicer's slice views and centre them on the map's peak.

    Runs inside 3D Slicer. The source is the background and the map the foreground of every slice
    view (rotated to the volume's planes), in the first of Slicer's Inferno or Viridis colour tables
    present (Iron otherwise), its window over ``[threshold, 1]`` and values below ``threshold``
    transparent. Prints one line: the files loaded, the peak's RAS position and value.

    Parameters
    ----------
    folder : str or Path
        medmdm output folder (see :func:`find_review_files`).
    threshold : float
        Map values below it are hidden; in [0, 1).
    opacity : float
        Opacity of the map over the image; in (0, 1].

    Returns
    -------
    Peak
        Where the views were centred.

    Raises
    ------
    InputError
        See :func:`find_review_files`; a threshold or opacity out of range.
    ImportError
        Not running inside 3D Slicer.
    """
    _check_display_options(threshold, opacity)
    files = find_review_files(folder)
    try:
        import slicer
        import vtk
    except ImportError as error:
        raise ImportError("review.py runs inside 3D Slicer; see docs/slicer.md") from error

    source_node = slicer.util.loadVolume(str(files.source), {"show": False})
    overlay_node = slicer.util.loadVolume(str(files.overlay), {"show": False})

    display = overlay_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(_colour_node_id(slicer))
    display.SetAutoWindowLevel(0)
    display.SetWindowLevelMinMax(threshold, MAP_MAXIMUM)
    display.SetLowerThreshold(threshold)
    display.SetUpperThreshold(MAP_MAXIMUM)
    display.SetApplyThreshold(1)
    slicer.util.setSliceViewerLayers(
        background=source_node,
        foreground=overlay_node,
        foregroundOpacity=opacity,
        fit=True,
        rotateToVolumePlane=True,
    )

    ijk, value = peak_voxel(slicer.util.arrayFromVolume(overlay_node))
    matrix = vtk.vtkMatrix4x4()
    overlay_node.GetIJKToRASMatrix(matrix)
    x, y, z = (float(c) for c in ijk_to_ras(slicer.util.arrayFromVTKMatrix(matrix), ijk))
    slicer.modules.markups.logic().JumpSlicesToLocation(x, y, z, True)

    print(
        f"medmdm review: {files.source} under {files.overlay}; "
        f"peak {value:.4g} at RAS ({x:.2f}, {y:.2f}, {z:.2f}) mm, voxel {ijk}"
    )
    return Peak(ijk=ijk, ras=(x, y, z), value=value)


def main(argv: list[str]) -> int:
    """Command line: ``review.py [--] FOLDER [--threshold T] [--opacity A]``; returns 0."""
    arguments = parse_arguments(argv)
    review(arguments.folder, threshold=arguments.threshold, opacity=arguments.opacity)
    return 0


class _ArgumentParser(argparse.ArgumentParser):
    """Raises InputError instead of exiting, which inside Slicer would close the application."""

    def error(self, message: str) -> None:
        raise InputError(f"{self.format_usage().strip()}: {message}")


def _check_display_options(threshold: float, opacity: float) -> None:
    if not 0.0 <= threshold < MAP_MAXIMUM:
        raise InputError(f"threshold must be in [0, 1), got {threshold}")
    if not 0.0 < opacity <= 1.0:
        raise InputError(f"opacity must be in (0, 1], got {opacity}")


def _read_report(folder: Path) -> dict:
    path = folder / REPORT_NAME
    if not path.is_file():
        return {}
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: cannot be read as JSON ({error})") from error
    if not isinstance(report, dict):
        raise InputError(f"{path}: not a JSON object")
    return report


def _listed_outputs(folder: Path, report: dict) -> dict[str, list[Path]]:
    """Files of each kind in the report's ``outputs`` list, in listed order; each must exist."""
    outputs = report.get("outputs", [])
    if not isinstance(outputs, list) or not all(
        isinstance(entry, dict) and isinstance(entry.get("path"), str) for entry in outputs
    ):
        raise InputError(f"{folder / REPORT_NAME}: 'outputs' must be a list of {{'path', 'kind'}} entries")
    listed: dict[str, list[Path]] = {}
    for entry in outputs:
        if entry.get("kind") not in (SOURCE_KIND, OVERLAY_KIND):
            continue
        path = folder / entry["path"]
        if not path.is_file():
            raise InputError(f"{path}: listed in {REPORT_NAME} but missing")
        listed.setdefault(entry["kind"], []).append(path)
    return listed


def _preferred(paths: list[Path], names: tuple[str, ...]) -> Path | None:
    """The first path with one of ``names``, else the first path, else None."""
    for path in paths:
        if path.name in names:
            return path
    return paths[0] if paths else None


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_file()), None)


def _study_source(folder: Path, report: dict) -> Path:
    """The study the report names, when it is a NIfTI file (read relative to the folder, then as is)."""
    study_entry = report.get("input")
    recorded = study_entry.get("path") if isinstance(study_entry, dict) else None
    if not recorded:
        raise InputError(f"{folder}: no source image ({SOURCE_NAMES[0]}) and no input path in {REPORT_NAME}")
    candidates = [folder / recorded, Path(recorded)]
    study = next((path for path in candidates if path.exists()), None)
    if study is None:
        raise InputError(f"{recorded}: the study named in {folder / REPORT_NAME} does not exist")
    if not (study.is_file() and study.name.lower().endswith(NIFTI_SUFFIXES)):
        raise InputError(
            f"{study}: the source is DICOM and {folder} holds no {SOURCE_NAMES[0]}; this script loads NIfTI "
            "only, load DICOM with Slicer's DICOM module (docs/slicer.md)"
        )
    return study


def _colour_node_id(slicer) -> str:
    """ID of the first perceptual colour table present in the scene, else the built-in Iron table."""
    for name in COLOUR_NODE_NAMES:
        node = slicer.util.getFirstNodeByClassByName("vtkMRMLColorTableNode", name)
        if node is not None:
            return node.GetID()
    return FALLBACK_COLOUR_NODE_ID


def _run_by_slicer_as_script() -> bool:
    """True under ``Slicer --python-script``, which sets ``sys.argv[0]`` and ``__file__`` to this file.

    In the Python console (``exec(open(path).read())``) ``sys.argv[0]`` is empty, so nothing runs
    until ``review(...)`` is called.
    """
    this_file = globals().get("__file__")
    if __name__ != "__main__" or not this_file or not sys.argv or not sys.argv[0]:
        return False
    return Path(sys.argv[0]).resolve() == Path(this_file).resolve()


if _run_by_slicer_as_script():
    main(sys.argv[1:])
