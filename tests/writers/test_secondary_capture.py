"""Secondary Captures: the slices kept, enlarged source pixels, the source's window, the burned-in
label, position and notice, the legend panel, references; read back with pydicom.

The sources are those of ``conftest.py``; dciodvfy runs on every writer in ``test_dicom_outputs.py``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medmdm.errors import InputError
from medmdm.io import load_study
from medmdm.writers.secondary_capture import (
    MIN_LONG_SIDE,
    enlargement,
    legend_width,
    mass_slices,
    write_secondary_capture,
)

NOTICE = "research only, not for diagnosis"
TEXT_ROWS = 48  # the burned-in label and notice lie within this many rows of the top and bottom


def coloured_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """Where an RGB image is not grey, ``(rows, cols)``."""
    return np.ptp(ds.pixel_array.astype(int), axis=-1) > 0


def enlarged(values: np.ndarray, factor: int) -> np.ndarray:
    """``(rows, cols)`` source pixels as the capture shows them: ``factor x factor`` blocks."""
    return values.repeat(factor, axis=0).repeat(factor, axis=1)


def image_part(ds: pydicom.Dataset, factor: int, source_columns: int) -> np.ndarray:
    """The capture without its legend panel."""
    return ds.pixel_array[:, : factor * source_columns]


def text_free(rows: int) -> slice:
    return slice(TEXT_ROWS, rows - TEXT_ROWS)


def test_mass_slices_known_answers() -> None:
    data = np.zeros((2, 2, 5))
    data[..., 1], data[..., 3], data[..., 4] = 0.6 / 4, 0.3 / 4, 0.1 / 4
    assert mass_slices(data, 0.95) == [1, 3, 4]
    assert mass_slices(data, 0.9) == [1, 3]
    assert mass_slices(data, 0.5) == [1]
    assert mass_slices(data, 1.0) == [1, 3, 4]
    data[0, 0, 0] = -5.0  # negative values add no mass
    assert mass_slices(data, 0.9) == [1, 3]
    assert mass_slices(np.full((2, 2, 3), -1.0) + np.eye(3)[2], 0.95) == [2]  # no mass: the maximum


def test_enlargement_reaches_the_long_side() -> None:
    assert enlargement(128, 128) == 4 and enlargement(16, 20) == 26 and enlargement(24, 18) == 22
    assert enlargement(512, 300) == 1 and enlargement(2048, 2500) == 1
    for rows, cols in ((7, 3), (100, 513), (511, 2)):
        factor = enlargement(rows, cols)
        assert max(rows, cols) * factor >= MIN_LONG_SIDE > max(rows, cols) * (factor - 1)


def test_secondary_capture_of_2d_image(tmp_path: Path, ct_small) -> None:
    study = ct_small.study  # 128 x 128 CT without WindowCenter: shown from its 1st to 99th percentile
    i, j = 30, 70
    data = np.zeros(study.size)
    data[i : i + 10, j : j + 5] = 1.0
    paths = write_secondary_capture(data, study, tmp_path / "sc", method="hdm")
    assert [p.name for p in paths] == ["sc_0001.dcm"]
    assert sorted(p.name for p in (tmp_path / "sc").iterdir()) == ["sc_0001.dcm"]
    ds = pydicom.dcmread(paths[0])
    assert ds.StudyInstanceUID == study.study_uid and ds.SeriesInstanceUID != study.series_uid
    assert ds.SeriesDescription == "medmdm hdm saliency overlay - research only, not for diagnosis"
    assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
    factor = 4  # 128 pixels enlarged to 512
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.pixel_array.shape == (512, 512 + legend_width(512), 3)
    assert ds.BurnedInAnnotation == "YES"
    assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == ct_small.sop_uids[0]
    assert list(ds.PatientOrientation) == ["L", "P"]  # an axial image
    assert [float(v) for v in ds.PixelSpacing] == pytest.approx([study.spacing[1] / 4, study.spacing[0] / 4])
    z = float(pydicom.dcmread(get_testdata_file("CT_small.dcm")).ImagePositionPatient[2])
    assert ds.ImageComments == f"axial, S {z:.1f} mm"  # an axial slice lies at its z
    map_area = enlarged(np.zeros((128, 128), bool), factor)
    map_area[factor * j : factor * (j + 5), factor * i : factor * (i + 10)] = True
    coloured = coloured_pixels(ds)[:, :512]
    assert coloured[map_area].all()
    outside = ~map_area
    outside[:TEXT_ROWS] = outside[-TEXT_ROWS:] = False
    assert not coloured[outside].any()
    values = study.image[0].numpy().astype(float).T
    low, high = np.percentile(values, (1, 99))
    grey = enlarged(np.clip((values - low) / (high - low), 0, 1) * 255, factor)
    red = image_part(ds, factor, 128)[..., 0].astype(float)
    np.testing.assert_allclose(red[outside], grey[outside], atol=0.51)
    for rows in (slice(0, TEXT_ROWS), slice(512 - TEXT_ROWS, 512)):  # the label and the notice
        assert (np.abs(red - grey)[rows] > 60).sum() > 200


def test_secondary_capture_uses_the_source_window(tmp_path: Path) -> None:
    path = get_testdata_file("MR_small.dcm")  # 64 x 64, WindowCenter 600, WindowWidth 1600
    study = load_study(path)
    (out,) = write_secondary_capture(np.zeros(study.size), study, tmp_path, method="hdm")
    ds = pydicom.dcmread(out)
    assert ds.BurnedInAnnotation == "YES"
    assert not coloured_pixels(ds)[:, :512].any()  # a flat map shows nothing
    grey = enlarged(np.clip((study.image[0].numpy().astype(float).T - (600 - 800)) / 1600, 0, 1) * 255, 8)
    rows = text_free(512)
    np.testing.assert_allclose(image_part(ds, 8, 64)[rows, :, 0], grey[rows], atol=0.51)


def test_secondary_capture_keeps_the_slices_holding_the_mass(tmp_path: Path, series) -> None:
    data = np.zeros(series.study.size)  # 20 columns x 16 rows x 5 slices
    data[2, 3, 1], data[5, 6, 3], data[7, 8, 4] = 0.6, 0.35, 0.05
    paths = write_secondary_capture(data, series.study, tmp_path, method="hdm", mass_fraction=0.95)
    assert [p.name for p in paths] == ["sc_0001.dcm", "sc_0002.dcm"]
    captures = [pydicom.dcmread(p) for p in paths]
    assert [c.SourceImageSequence[0].ReferencedSOPInstanceUID for c in captures] == [
        series.sop_uids[1],
        series.sop_uids[3],
    ]
    assert [int(c.InstanceNumber) for c in captures] == [1, 2]
    assert len({c.SeriesInstanceUID for c in captures}) == 1
    factor = 26  # 20 columns enlarged to 520
    assert captures[0].Rows == 16 * factor and captures[0].Columns == 20 * factor + legend_width(20 * factor)
    hot = np.argwhere(coloured_pixels(captures[0])[:, : 20 * factor])
    assert hot.min(axis=0).tolist() == [3 * factor, 2 * factor]  # row j = 3, column i = 2
    assert hot.max(axis=0).tolist() == [4 * factor - 1, 3 * factor - 1]
    # Slices 2 and 4 of 5 (numbered from 1), two slice steps apart along the slice normal.
    labels = [c.ImageComments.split(", ") for c in captures]
    assert [label[0].split(" ", 1)[1] for label in labels] == ["slice 2/5", "slice 4/5"]
    step = np.linalg.norm(series.positions[1] - series.positions[0])
    (first, second) = (float(label[1].split()[1]) for label in labels)
    assert abs(second - first) == pytest.approx(2 * step, abs=0.11)
    one = write_secondary_capture(data, series.study, tmp_path / "half", method="hdm", mass_fraction=0.5)
    assert pydicom.dcmread(one[0]).SourceImageSequence[0].ReferencedSOPInstanceUID == series.sop_uids[1]
    assert len(one) == 1


def test_legend_shows_the_colour_map_from_bottom_to_top(tmp_path: Path, ct_small) -> None:
    data = np.zeros(ct_small.study.size)
    data[0, 0] = 1.0
    (path,) = write_secondary_capture(data, ct_small.study, tmp_path, method="hdm")
    legend = pydicom.dcmread(path).pixel_array[:, 512:].astype(float)
    column = legend[:, legend.shape[1] // 2]  # the bar's middle
    bar = np.flatnonzero(np.ptp(column, axis=-1) > 0)  # coloured rows
    assert len(bar) > 300
    inferno = matplotlib.colormaps["inferno"]
    np.testing.assert_allclose(column[bar[0]], np.asarray(inferno(1.0)[:3]) * 255, atol=1.5)  # top: highest
    np.testing.assert_allclose(column[bar[-1]], np.asarray(inferno(0.0)[:3]) * 255, atol=1.5)


def test_secondary_capture_references_frames_of_a_multiframe_source(tmp_path: Path, multiframe) -> None:
    data = np.zeros(multiframe.study.size)
    data[4, 4, 0] = 1.0
    (path,) = write_secondary_capture(data, multiframe.study, tmp_path, method="hdm")
    ds = pydicom.dcmread(path)
    reference = ds.SourceImageSequence[0]
    assert reference.ReferencedSOPInstanceUID == multiframe.sop_uids[0]
    assert int(reference.ReferencedFrameNumber) == multiframe.frame_numbers[0] == len(multiframe.sop_uids)
    assert ds.ImageComments.split(", ")[0].endswith("slice 1/5")


def test_secondary_capture_of_a_radiograph(tmp_path: Path, radiograph) -> None:
    data = np.zeros(radiograph.study.size)  # 18 columns x 24 rows
    data[5, 7] = 1.0
    (path,) = write_secondary_capture(data, radiograph.study, tmp_path, method="gradcam", alpha=1.0)
    ds = pydicom.dcmread(path)
    factor = 22  # 24 rows enlarged to 528
    assert list(ds.PatientOrientation) == ["R", "F"]
    assert "PixelSpacing" not in ds  # imager spacing is not patient spacing
    assert "FrameOfReferenceUID" not in ds
    assert ds.ImageComments == "image"  # no view in the header, no place in the patient
    hot = np.argwhere(coloured_pixels(ds)[:, : 18 * factor])
    assert hot.min(axis=0).tolist() == [7 * factor, 5 * factor]
    assert hot.max(axis=0).tolist() == [8 * factor - 1, 6 * factor - 1]
    inferno_top = np.asarray(matplotlib.colormaps["inferno"](1.0)[:3]) * 255
    np.testing.assert_allclose(ds.pixel_array[7 * factor, 5 * factor], inferno_top, atol=0.51)
    values = radiograph.study.image[0].numpy().astype(float).T  # MONOCHROME1: read inverted already
    low, high = np.percentile(values, (1, 99))
    grey = enlarged(np.clip((values - low) / (high - low), 0, 1) * 255, factor)  # high stored values dark
    shown = image_part(ds, factor, 18)[..., 0].astype(float)
    rows = text_free(24 * factor)
    grey[7 * factor : 8 * factor, 5 * factor : 6 * factor] = shown[
        7 * factor : 8 * factor, 5 * factor : 6 * factor
    ]
    np.testing.assert_allclose(shown[rows], grey[rows], atol=0.51)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mass_fraction": 0.0}, "mass_fraction"),
        ({"mass_fraction": 1.2}, "mass_fraction"),
        ({"alpha": -0.1}, "alpha"),
        ({"colormap": "no-such-map"}, "colormap"),
    ],
)
def test_secondary_capture_option_errors(tmp_path: Path, ct_small, options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        write_secondary_capture(
            np.zeros(ct_small.study.size), ct_small.study, tmp_path / "sc", method="hdm", **options
        )
    assert not (tmp_path / "sc").exists()
