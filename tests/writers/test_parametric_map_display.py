"""What viewers read to show a Parametric Map as a colour overlay over its source.

OHIF's Parametric Map viewer (OHIF/Viewers ``extensions/cornerstone-dicom-pmap``,
``getSopClassHandlerModule.ts`` and ``OHIFCornerstonePMAPViewport.tsx``) takes SOP class
1.2.840.10008.5.1.4.1.1.30, finds the series to draw the map over in
``ReferencedSeriesSequence[0].SeriesInstanceUID`` (and its ``ReferencedInstanceSequence``), reads
``SliceThickness`` and ``SpacingBetweenSlices`` of the shared Pixel Measures, and windows the map over
its value range. The labels and the window are the DICOM ones that any viewer shows.

The colour presentation state (Pseudo-Color Softcopy Presentation State, ``dicom-pr``) references the
Parametric Map and shows it through the map's window and an inferno palette, for viewers that apply
presentation states (Weasis); it is written only beside its Parametric Map.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pydicom
import pytest
import torch

from medmdm.errors import InputError
from medmdm.pipeline.result import ExplainedTarget
from medmdm.pipeline.stages import write
from medmdm.testing.internal.dicom_validation import dciodvfy_available, validate_dicom
from medmdm.writers import write_colour_presentation
from medmdm.writers.parametric_map import write_parametric_map

PARAMETRIC_MAP_STORAGE = "1.2.840.10008.5.1.4.1.1.30"
PSEUDO_COLOR_PRESENTATION_STATE = "1.2.840.10008.5.1.4.1.1.11.3"
needs_dciodvfy = pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy (dicom3tools) not installed")


def test_parametric_map_names_the_series_to_draw_over(tmp_path: Path, series) -> None:
    data = np.linspace(0.1, 0.9, int(np.prod(series.study.size)), dtype=np.float32).reshape(series.study.size)
    ds = pydicom.dcmread(write_parametric_map(data, series.study, tmp_path / "pm.dcm", method="hdm"))
    assert ds.SOPClassUID == PARAMETRIC_MAP_STORAGE
    (referenced,) = ds.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == series.study.series_uid
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == set(
        series.sop_uids
    )
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) > 0
    assert ds.ContentLabel == "SALIENCY" and ds.ContentQualification == "RESEARCH"
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.LUTLabel == "SALIENCY"
    window = ds.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    low, high = float(data.min()), float(data.max())
    assert float(window.WindowCenter) == pytest.approx((low + high) / 2, rel=1e-12)
    assert float(window.WindowWidth) == pytest.approx(high - low, rel=1e-12)
    assert window.WindowCenterWidthExplanation == "map range"
    assert window.VOILUTFunction == "LINEAR_EXACT"


# The colour presentation state


def parametric_map_and_state(folder: Path, source) -> tuple[pydicom.Dataset, pydicom.Dataset, np.ndarray]:
    data = ramp(source.study.size)
    pm = write_parametric_map(data, source.study, folder / "pm.dcm", method="hdm")
    state = write_colour_presentation(pm, source.study, folder / "pm_colour.dcm", method="hdm")
    assert state == folder / "pm_colour.dcm"
    return pydicom.dcmread(pm), pydicom.dcmread(state), data


def ramp(shape: tuple[int, ...]) -> np.ndarray:
    return np.linspace(-0.2, 0.9, int(np.prod(shape)), dtype=np.float32).reshape(shape)


@pytest.mark.parametrize("kind", ["series", "radiograph", "multiframe"])
def test_colour_presentation_shows_the_map_through_an_inferno_palette(
    tmp_path: Path, kind: str, request
) -> None:
    source = request.getfixturevalue(kind)
    pm, state, data = parametric_map_and_state(tmp_path, source)
    assert state.SOPClassUID == PSEUDO_COLOR_PRESENTATION_STATE and state.Modality == "PR"
    assert state.StudyInstanceUID == pm.StudyInstanceUID == source.study.study_uid
    assert state.SeriesInstanceUID not in (pm.SeriesInstanceUID, source.study.series_uid)
    assert state.ContentLabel == "SALIENCY" and "research only" in state.SeriesDescription
    (series,) = state.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == pm.SeriesInstanceUID
    (image,) = series.ReferencedImageSequence
    assert (image.ReferencedSOPClassUID, image.ReferencedSOPInstanceUID) == (
        pm.SOPClassUID,
        pm.SOPInstanceUID,
    )
    # the window: the map's range, as in the Parametric Map
    (window,) = state.SoftcopyVOILUTSequence
    low, high = float(data.min()), float(data.max())
    assert float(window.WindowCenter) == pytest.approx((low + high) / 2, rel=1e-9)
    assert float(window.WindowWidth) == pytest.approx(high - low, rel=1e-9)
    assert window.WindowCenterWidthExplanation == "map range" and window.VOILUTFunction == "LINEAR_EXACT"
    # the palette: 256 16-bit entries from value 0, matplotlib's inferno
    inferno = matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3]
    for channel, colour in enumerate(("Red", "Green", "Blue")):
        assert list(state[f"{colour}PaletteColorLookupTableDescriptor"].value) == [256, 0, 16]
        entries = np.frombuffer(state[f"{colour}PaletteColorLookupTableData"].value, dtype="<u2")
        np.testing.assert_allclose(entries / 65535, inferno[:, channel], atol=1 / 65535)


@needs_dciodvfy
@pytest.mark.parametrize("kind", ["series", "radiograph", "multiframe"])
def test_colour_presentation_passes_dciodvfy(tmp_path: Path, kind: str, request) -> None:
    parametric_map_and_state(tmp_path, request.getfixturevalue(kind))
    assert validate_dicom(tmp_path / "pm_colour.dcm") == []


def test_colour_presentation_of_another_object_is_refused(tmp_path: Path, series) -> None:
    with pytest.raises(InputError, match="not a Parametric Map"):
        write_colour_presentation(
            series.study.headers[0].filename, series.study, tmp_path / "pr.dcm", method="hdm"
        )
    with pytest.raises(InputError, match="cannot read the Parametric Map"):
        write_colour_presentation(tmp_path / "missing.dcm", series.study, tmp_path / "pr.dcm", method="hdm")
    assert list(tmp_path.iterdir()) == []


def test_write_lists_the_colour_presentation_only_with_its_parametric_map(tmp_path: Path, series) -> None:
    data = torch.as_tensor(ramp(series.study.size))
    target = ExplainedTarget(kind="class", index=1, name="nodule")

    def written(folder: Path, formats: tuple[str, ...]) -> tuple[dict[str, str], list]:
        folder.mkdir()
        outputs, skipped = write(
            folder, formats, series.study, data, method="hdm", target=target, model_name="m"
        )
        return {o.kind: o.path for o in outputs}, skipped

    outputs, skipped = written(tmp_path / "both", ("dicom-pm", "dicom-pr"))
    assert outputs == {"dicom-pm": "saliency_pm.dcm", "dicom-pr": "saliency_pm_colour.dcm"} and skipped == []
    state = pydicom.dcmread(tmp_path / "both" / outputs["dicom-pr"])
    pm = pydicom.dcmread(tmp_path / "both" / outputs["dicom-pm"])
    assert (
        state.ReferencedSeriesSequence[0].ReferencedImageSequence[0].ReferencedSOPInstanceUID
        == pm.SOPInstanceUID
    )
    outputs, skipped = written(tmp_path / "alone", ("dicom-pr",))
    assert outputs == {} and [s.kind for s in skipped] == ["dicom-pr"]
    assert "ask for dicom-pm too" in skipped[0].reason
    assert list((tmp_path / "alone").iterdir()) == []
