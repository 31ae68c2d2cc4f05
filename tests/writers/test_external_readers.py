"""The readers radiologists' tools use read every DICOM object medmdm writes as medmdm means it.

dcmqi (``paramap2itkimage``, ``segimage2itkimage``: how 3D Slicer's QuantitativeReporting loads
Parametric Maps and SEG), ITK (its GDCM image IO) and dcm2niix read the Parametric Map, the
Segmentation and the Secondary Captures of a ramp map on three sources (an oblique, anisotropic,
shuffled CT series, a radiograph, an enhanced multi-frame CT image). Each voxel a reader gives must lie
within 1e-3 mm of a voxel of the NIfTI overlay of the same map and hold its value to 1e-4 (the
Parametric Map) or its membership of the segment (the SEG); together they must cover the overlay. A
SEG of a radiograph has no geometry (no frame of reference): readers give it a default grid, compared
pixel for pixel. A Secondary Capture is a picture: a reader's pixels must equal pydicom's.

What a reader cannot read is asserted too, so that a change shows (docs/pacs.md lists these gaps):
ITK's GDCM does not read float Parametric Maps (Float Pixel Data), and dcmqi refuses a Segmentation
without plane orientation (the radiograph's).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from medmdm.writers import (
    write_nifti_overlay,
    write_parametric_map,
    write_secondary_capture,
    write_segmentation,
)
from medmdm.writers.segmentation import top_region

itk = pytest.importorskip("itk", reason="ITK (PyPI itk) reads the objects through GDCM")
TOOLS = ("paramap2itkimage", "segimage2itkimage", "dcm2niix")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)}"),
    pytest.mark.filterwarnings("ignore:builtin type Swig:DeprecationWarning"),  # ITK's SWIG bindings
]

KINDS = ("series", "radiograph", "multiframe")
MM = 1e-3
VALUE = 1e-4
TOP_FRACTION = 0.05  # write_segmentation's default
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class Written:
    """The objects written for one source, and the NIfTI overlay they must agree with."""

    def __init__(self, source, folder: Path) -> None:
        study = source.study
        size = int(np.prod(study.size))
        # a ramp whose values differ along every axis, so that a flipped or swapped axis shows
        data = (np.arange(size, dtype=np.float32).reshape(study.size) + 1) / size
        self.has_geometry = source.kind != "radiograph"
        self.pm = write_parametric_map(data, study, folder / "pm.dcm", method="hdm")
        self.seg = write_segmentation(data, study, folder / "seg.dcm", method="hdm")
        self.captures = write_secondary_capture(data, study, folder / "sc", method="hdm")
        overlay = nib.load(write_nifti_overlay(torch.as_tensor(data), study.image, folder / "overlay.nii.gz"))
        self.affine = overlay.affine
        self.values = np.asarray(overlay.dataobj, dtype=np.float64).reshape(overlay.shape[:3])
        self.region = top_region(self.values, TOP_FRACTION)


@pytest.fixture(params=KINDS)
def written(request: pytest.FixtureRequest, tmp_path: Path) -> Written:
    """The objects of each kind of source in turn (the sources of this folder's conftest.py)."""
    folder = tmp_path / "written"
    folder.mkdir()
    return Written(request.getfixturevalue(request.param), folder)


def volume(data: np.ndarray) -> np.ndarray:
    """A reader's array as (x, y, z): trailing axes of one dropped, missing ones added."""
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data.reshape(*data.shape, *[1] * (3 - data.ndim))


def on_overlay_grid(written: Written, affine: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A reader's image put on the overlay's grid: each voxel centre must lie within 1e-3 mm of an overlay
    voxel centre, no two on one. Returns the values placed (NaN where the reader gave none) and where."""
    data = volume(data)
    index = np.indices(data.shape).reshape(3, -1).astype(float)
    world = affine[:3, :3] @ index + affine[:3, 3:]
    nearest = np.rint(np.linalg.solve(written.affine[:3, :3], world - written.affine[:3, 3:]))
    miss = np.abs(written.affine[:3, :3] @ nearest + written.affine[:3, 3:] - world).max()
    assert miss < MM, f"a voxel lies {miss:.3g} mm from the overlay's grid"
    nearest = nearest.astype(int)
    assert (nearest >= 0).all() and (nearest < np.array(written.values.shape)[:, None]).all()
    placed = np.full(written.values.shape, np.nan)
    placed[tuple(nearest)] = data.ravel()
    covered = ~np.isnan(placed)
    assert covered.sum() == data.size
    return placed, covered


def pixel_for_pixel(written: Written, affine: np.ndarray, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An image without geometry as a reader lays it out, flipped where its axes run against the
    overlay's (dcm2niix flips rows), compared index by index."""
    data = volume(data)
    flips = [a for a in range(2) if np.sign(affine[a, a]) != np.sign(written.affine[a, a])]
    data = np.flip(data, flips).astype(float)
    assert data.shape == written.values.shape
    return data, np.ones(data.shape, dtype=bool)


def check_parametric_map(written: Written, affine: np.ndarray, data: np.ndarray) -> None:
    placed, covered = on_overlay_grid(written, affine, data)
    assert covered.all()
    np.testing.assert_allclose(placed, written.values, atol=VALUE, rtol=0)


def check_segmentation(written: Written, affine: np.ndarray, data: np.ndarray) -> None:
    """The segment is the overlay's top region; frames a SEG leaves out (empty ones) hold none of it."""
    placed, covered = (on_overlay_grid if written.has_geometry else pixel_for_pixel)(written, affine, data)
    assert written.region.any() and not written.region.all()
    np.testing.assert_array_equal(placed[covered] > 0, written.region[covered])
    assert not written.region[~covered].any()


def check_capture(path: Path, affine: np.ndarray, pixels: np.ndarray) -> None:
    """A reader's pixels of a Secondary Capture, (columns, rows, 3) along its affine's axes, equal
    pydicom's (rows, columns, 3)."""
    expected = pydicom.dcmread(path).pixel_array.transpose(1, 0, 2)
    pixels = pixels.reshape(expected.shape)
    np.testing.assert_array_equal(pixels[:, ::-1] if affine[1, 1] > 0 else pixels, expected)


def nifti(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    if data.dtype.names:  # RGB24
        data = np.stack([data[c] for c in data.dtype.names], axis=-1)
    return image.affine, data


def itk_image(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An image read by ITK (GDCM): its RAS affine and its array as (x, y, z) or (x, y, 3)."""
    image = itk.imread(str(path))
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()) * np.asarray(image.GetSpacing())
    affine[:3, 3] = np.asarray(image.GetOrigin())
    array = itk.array_from_image(image)
    axes = (
        (*range(array.ndim - 1)[::-1], array.ndim - 1) if image.GetNumberOfComponentsPerPixel() > 1 else None
    )
    return LPS_TO_RAS @ affine, array.transpose(axes)


def run(*command: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=120)


def test_dcmqi_reads_the_parametric_map(written, tmp_path):
    """paramap2itkimage stacks frames in file order from the lowest position along the row x column
    normal, whatever their Plane Positions: the map's frames must be stored in that order."""
    done = run("paramap2itkimage", "--inputDICOM", written.pm, "--outputDirectory", tmp_path, "-t", "nifti")
    assert done.returncode == 0, done.stdout + done.stderr
    check_parametric_map(written, *nifti(tmp_path / "pmap.nii.gz"))


def test_dcmqi_reads_the_segmentation(written, tmp_path):
    done = run("segimage2itkimage", "--inputDICOM", written.seg, "--outputDirectory", tmp_path, "-t", "nifti")
    if not written.has_geometry:  # dcmqi needs the plane orientation a SEG without geometry lacks
        assert done.returncode != 0 and "Plane Orientation (Patient) is missing" in done.stderr
        return
    assert done.returncode == 0, done.stdout + done.stderr
    check_segmentation(written, *nifti(tmp_path / "1.nii.gz"))


def test_itk_reads_the_segmentation_and_the_captures(written):
    check_segmentation(written, *itk_image(written.seg))
    for capture in written.captures:
        check_capture(capture, *itk_image(capture))
    assert not itk.GDCMImageIO.New().CanReadFile(str(written.pm))  # GDCM reads no Float Pixel Data


def test_dcm2niix_reads_every_object(written, tmp_path):
    """dcm2niix converts the PM and the SEG one file each, and the Secondary Captures of a volume (one per
    slice, no geometry) as one stack in InstanceNumber order."""
    objects = {"pm": [written.pm], "seg": [written.seg], "sc": written.captures}
    for name, files in objects.items():
        folder = tmp_path / name
        folder.mkdir()
        for path in files:
            shutil.copy(path, folder / path.name)
        done = run("dcm2niix", "-z", "n", "-f", name, "-o", tmp_path, folder)
        assert done.returncode == 0, done.stdout + done.stderr
        affine, data = nifti(tmp_path / f"{name}.nii")
        if name == "pm":
            check_parametric_map(written, affine, data)
        elif name == "seg":
            check_segmentation(written, affine, data)
        else:
            in_order = sorted(
                files, key=lambda p: int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber)
            )
            stack = data.reshape(*data.shape[:2], len(files), 3)
            for k, path in enumerate(in_order):
                check_capture(path, affine, stack[:, :, k])
