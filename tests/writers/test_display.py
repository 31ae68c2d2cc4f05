"""Plane names and positions, the grey window, a 2D study's view and the scores in words, on known answers."""

from __future__ import annotations

import doctest

import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.data import get_testdata_file

from medmdm.io import load_study
from medmdm.writers import display
from medmdm.writers.display import (
    caption,
    grey_window,
    plane_name,
    plane_position,
    score_sentences,
    study_view,
)


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def affine(columns: np.ndarray, origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3], a[:3, 3] = columns, origin
    return a


@pytest.mark.parametrize(
    ("columns", "names"),
    [
        (np.diag([-0.7, -0.7, 2.5]), ["sagittal", "coronal", "axial"]),  # an LPS axial series
        (
            np.array([[1.0, 0, 0], [0, 0, 3.0], [0, -1.2, 0]]),
            ["sagittal", "axial", "coronal"],
        ),  # coronal slices
        (
            np.array([[0, 0, 2.0], [1.0, 0, 0], [0, -1.0, 0]]),
            ["coronal", "axial", "sagittal"],
        ),  # sagittal slices
        (
            rotation(np.array([1.0, 0, 0]), np.radians(25)) @ np.diag([0.5, 0.5, 1.0]),
            ["sagittal", "coronal", "axial"],
        ),
    ],
    ids=["axial", "coronal", "sagittal", "tilted-25"],
)
def test_planes_are_named_by_the_patient_axis_closest_to_their_normal(columns: np.ndarray, names: list[str]):
    assert [plane_name(affine(columns), axis) for axis in range(3)] == names


def test_plane_position_is_the_same_everywhere_in_an_oblique_plane() -> None:
    columns = rotation(np.array([1.0, 2.0, 3.0]), 0.5) @ np.diag([0.7, 1.1, 2.5])
    a = affine(columns, (-12.3, 40.1, 7.7))
    letter, mm = plane_position(a, 2, 3)
    rng = np.random.default_rng(0)
    points = [a @ np.array([*rng.uniform(-50, 50, 2), 3, 1.0]) for _ in range(5)]
    normal = np.cross(columns[:, 0], columns[:, 1])
    normal *= np.sign(normal[np.argmax(np.abs(normal))]) / np.linalg.norm(normal)
    assert letter == "RAS"[int(np.argmax(np.abs(normal)))]
    for point in points:
        assert normal @ point[:3] == pytest.approx(mm)
    # One slice further is one slice step (its spacing along the normal) further.
    step = abs(normal @ columns[:, 2])
    assert plane_position(a, 2, 4)[1] - mm == pytest.approx(step)


def test_an_axial_slice_lies_at_its_z() -> None:
    path = get_testdata_file("CT_small.dcm")
    study = load_study(path)
    assert plane_position(study.affine, 2, 0) == (
        "S",
        pytest.approx(float(pydicom.dcmread(path).ImagePositionPatient[2])),
    )


def test_grey_window_from_the_header_the_voi_lut_or_percentiles() -> None:
    image = np.arange(1000.0).reshape(1, 10, 100)
    header = Dataset()
    header.WindowCenter, header.WindowWidth = [40, 400], [350, 1500]  # the first pair is used
    assert grey_window([header], image) == (40 - 175, 40 + 175)
    header.PhotometricInterpretation = "MONOCHROME1"  # a window of the values before inversion
    assert grey_window([header], image) == pytest.approx(tuple(np.percentile(image, (1, 99))))
    lut = Dataset()
    lut.LUTDescriptor = [256, 100, 8]
    voi = Dataset()
    voi.VOILUTSequence = [lut]
    assert grey_window([voi], image) == (100.0, 355.0)
    assert grey_window([], image) == pytest.approx((9.99, 989.01))
    colour = Dataset()
    colour.BitsStored = 12
    assert grey_window([colour], np.zeros((3, 4, 4))) == (0.0, 4095.0)


def test_study_view_and_caption() -> None:
    path = get_testdata_file("CT_small.dcm")
    ct = load_study(path)
    assert study_view(ct) == "axial"
    assert caption(ct) == f"axial, S {float(pydicom.dcmread(path).ImagePositionPatient[2]):.1f} mm"
    radiograph = load_study("sample_data/studies/cr_lesion.dcm")  # ViewPosition PA, no patient position
    assert study_view(radiograph) == caption(radiograph) == "PA"
    volume = load_study("sample_data/studies/ct_nodule")  # axial, 48 slices 5 mm apart
    first = caption(volume, 0)
    assert first.startswith("axial slice 1/48, S ")
    assert caption(volume, 2, count=50, number=7).startswith("axial slice 7/50, S ")
    mm = [float(caption(volume, k).split()[-2]) for k in (0, 10)]
    assert mm[1] - mm[0] == pytest.approx(10 * volume.spacing[2])


def test_score_sentences_known_answers() -> None:
    words = score_sentences(2.0, 1.5, -0.5, -1.0, score="probability")
    assert words == [
        "Score (probability) of the whole image: 2; of the image with everything removed: -1.",
        "Keeping only what the map marks: 1.5 (83% of the evidence kept).",
        "Removing what the map marks: -0.5 (17% of the evidence kept).",
    ]
    assert score_sentences(1.0, 1.0, 1.0, 1.0)[1] == "Keeping only what the map marks: 1."  # no evidence


def test_docstring_examples_run() -> None:
    results = doctest.testmod(display)
    assert results.attempted > 0 and results.failed == 0
