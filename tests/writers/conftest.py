"""DICOM sources for the DICOM writers: a series, single files, a radiograph, a multi-frame file.

The CT series builders of ``tests/io/conftest.py`` are reused; a conftest module cannot be
imported under ``--import-mode=importlib``, so it is loaded from its path.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import ComputedRadiographyImageStorage, generate_uid

from medmdm.io import Study, load_study

SERIES_SLICES = 5
RADIOGRAPH_SHAPE = (24, 18)  # rows, columns
IMAGER_PIXEL_SPACING = (0.2, 0.15)  # between rows, between columns
RADIOGRAPH_ORIENTATION = ("R", "F")


def _io_builders():
    name = "medmdm_tests_io_series_builders"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "io" / "conftest.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the module runs
        spec.loader.exec_module(module)
    return sys.modules[name]


@dataclass
class Source:
    """A DICOM study and what its files hold, to compare the writers' objects against."""

    kind: str
    study: Study
    sop_uids: list[str]  # SOPInstanceUID of each slice, in slice order
    positions: np.ndarray | None  # (slices, 3) ImagePositionPatient, None without patient geometry
    frame_numbers: list[int] = field(default_factory=list)  # file frame of each slice (multi-frame)


def _series(folder: Path) -> tuple[Source, list[Path]]:
    """An oblique CT series of 5 slices, 16 rows x 20 columns of 0.7 x 0.9 mm, files shuffled."""
    io = _io_builders()
    spec = io.write_series(folder, orientation=io.oblique_orientation(), n_slices=SERIES_SLICES)
    study = load_study(spec.folder)
    return Source("series", study, spec.sop_uids, spec.positions), spec.files


def _bundled(kind: str, name: str) -> Source:
    path = get_testdata_file(name)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    position = np.array([ds.ImagePositionPatient], dtype=float)
    return Source(kind, load_study(path), [ds.SOPInstanceUID], position)


def _radiograph(folder: Path) -> Source:
    """A MONOCHROME1 CR image: no frame of reference, position or orientation; ImagerPixelSpacing."""
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(1).integers(0, 4000, RADIOGRAPH_SHAPE).astype(np.int16)
    ds = _io_builders().ct_slice(
        pixels,
        np.zeros(3),
        np.array([1.0, 0, 0, 0, 1, 0]),
        series_uid=generate_uid(),
        study_uid=generate_uid(),
        for_uid=generate_uid(),
        instance=1,
        modality="CR",
    )
    for keyword in ("FrameOfReferenceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    ds.ImagerPixelSpacing = list(IMAGER_PIXEL_SPACING)
    ds.PatientOrientation = list(RADIOGRAPH_ORIENTATION)
    ds.PhotometricInterpretation = "MONOCHROME1"
    path = folder / "cr.dcm"
    ds.save_as(path, enforce_file_format=True)
    return Source("radiograph", load_study(path), [ds.SOPInstanceUID], None)


def _multiframe(folder: Path) -> Source:
    """The series as one Legacy Converted Enhanced CT image, frames in reverse slice order."""
    series, files = _series(folder / "slices")
    legacy = [pydicom.dcmread(f) for f in reversed(files)]
    image = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy, generate_uid(), 7, generate_uid(), 1, include_dimension_index=False
    )
    path = folder / "enhanced.dcm"
    image.save_as(path)
    n = len(files)
    return Source(
        "multiframe",
        load_study(path),
        [str(image.SOPInstanceUID)] * n,
        series.positions,
        frame_numbers=[n - k for k in range(n)],
    )


SOURCE_KINDS = ("series", "ct_small", "mr_small", "radiograph", "multiframe")


def build_source(kind: str, folder: Path) -> Source:
    """A source of the given kind, written under ``folder`` when built here."""
    if kind == "series":
        return _series(folder / "series")[0]
    if kind == "ct_small":
        return _bundled(kind, "CT_small.dcm")
    if kind == "mr_small":
        return _bundled(kind, "MR_small.dcm")
    if kind == "radiograph":
        return _radiograph(folder / "cr")
    return _multiframe(folder / "multiframe")


@pytest.fixture(params=SOURCE_KINDS)
def source(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Source:
    """Each kind of source in turn (outside ``tmp_path``, which is left to the outputs)."""
    return build_source(request.param, tmp_path_factory.mktemp("source"))


@pytest.fixture
def series(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return build_source("series", tmp_path_factory.mktemp("source"))


@pytest.fixture
def radiograph(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return build_source("radiograph", tmp_path_factory.mktemp("source"))


@pytest.fixture
def multiframe(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return build_source("multiframe", tmp_path_factory.mktemp("source"))


@pytest.fixture
def ct_small() -> Source:
    return build_source("ct_small", Path())


@pytest.fixture
def series_writer():
    """The CT series builder of ``tests/io/conftest.py`` (``write_series``)."""
    return _io_builders().write_series
