"""report.html: self-contained (no address outside the page), the report's parts in words, and, in headless
Chromium, the overlay drawn where the map is, moved by the opacity slider and the slice scroller."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread
from monai.data import MetaTensor

from medmdm.errors import InputError
from medmdm.io import Study
from medmdm.writers import html_report, write_html_report

CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package chromium)"
)
SPACING = (0.8, 1.6, 3.0)  # mm: columns, rows, slices
SIZE = (40, 30, 6)  # columns, rows, slices
BOX = (slice(8, 20), slice(5, 10), slice(2, 4))  # the map's box: 12 columns x 5 rows on slices 3 and 4
REPORT = {
    "target": {
        "kind": "class",
        "index": 1,
        "name": "nodule",
        "score": "logit",
        "score_original": 4.0,
        "score_masked": 3.5,
        "score_remaining": 1.0,
        "score_baseline": 0.0,
    },
    "method": {"name": "hdm", "options": {"steps": 80, "levels": 3}},
    "model": {"name": "demo-3d"},
    "warnings": ["a <b>warning</b>"],
    "outputs": [{"path": "saliency.nii.gz", "kind": "nifti-overlay"}],
}


def study(size: tuple[int, ...] = SIZE) -> Study:
    """A NIfTI-like study: a smooth grey ramp, anisotropic voxels, no DICOM headers."""
    affine = torch.diag(torch.tensor([*SPACING[: len(size)], *[1.0] * (4 - len(size))], dtype=torch.float64))
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in size], indexing="ij")
    image = MetaTensor(torch.from_numpy(sum(grids).astype(np.float32))[None], affine=affine)
    return Study(
        image=image,
        path=Path("study.nii.gz"),
        kind="nifti",
        modality="",
        series_uid="",
        study_uid="",
        frame_of_reference_uid="",
        sop_instance_uids=[],
        files=[],
        spacing=SPACING[: len(size)],
        size=size,
        orientation="RAS"[: len(size)],
        description="",
        headers=(),
        frame_numbers=(),
    )


def box_map(size: tuple[int, ...] = SIZE) -> np.ndarray:
    data = np.zeros(size, dtype=np.float32)
    data[BOX[: len(size)]] = 1.0
    return data


def embedded(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)[1])


def unpacked(text: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(text)), dtype=np.uint8)


def test_page_is_self_contained_and_says_what_was_explained(tmp_path: Path) -> None:
    path = write_html_report(REPORT, study(), box_map(), tmp_path / "report.html")
    page = path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)  # nothing loaded from elsewhere
    assert "default-src 'none'" in page  # and the browser is told so
    assert "Research only" in page
    assert (
        "<b>nodule</b>" in page and "Keeping only what the map marks: 3.5 (88% of the evidence kept)." in page
    )
    assert "Removing what the map marks: 1 (25% of the evidence kept)." in page
    assert "a &lt;b&gt;warning&lt;/b&gt;" in page  # report text is escaped
    assert "<th>steps</th><td>80</td>" in page
    data = embedded(page)
    assert (data["columns"], data["rows"], data["slices"]) == SIZE
    assert data["spacing"] == pytest.approx(SPACING[:2])
    assert data["start"] == 3  # the slice of the map's peak, from 1
    assert data["labels"][2] == "axial slice 3/6, S 6.0 mm"
    voxels = unpacked(data["map"]).reshape(SIZE[2], SIZE[1], SIZE[0])  # (slices, rows, columns)
    np.testing.assert_array_equal(voxels, box_map().transpose(2, 1, 0) * 255)


def test_large_volumes_are_subsampled_in_plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(html_report, "MAX_VOXELS", int(np.prod(SIZE)) // 4)  # every second row and column
    data = embedded(write_html_report(REPORT, study(), box_map(), tmp_path / "r.html").read_text())
    assert (data["columns"], data["rows"], data["slices"]) == (20, 15, 6)
    assert data["spacing"] == pytest.approx([2 * SPACING[0], 2 * SPACING[1]])
    voxels = unpacked(data["map"]).reshape(6, 15, 20)
    np.testing.assert_array_equal(voxels, box_map()[::2, ::2].transpose(2, 1, 0) * 255)


def test_2d_page_has_no_slice_scroller(tmp_path: Path) -> None:
    page = write_html_report(REPORT, study(SIZE[:2]), box_map(SIZE[:2]), tmp_path / "r.html").read_text()
    assert '<div hidden=""><label for="slice">' in page
    assert embedded(page)["labels"] == ["image"]


def test_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"\.html"):
        write_html_report(REPORT, study(), box_map(), tmp_path / "report.htm")
    with pytest.raises(InputError, match="does not match"):
        write_html_report(REPORT, study(), np.zeros((3, 3, 3)), tmp_path / "report.html")
    assert list(tmp_path.iterdir()) == []


def screenshot(page: Path, fragment: str, out: Path) -> np.ndarray:
    """The page as headless Chromium draws it at ``page#fragment``, RGB in [0, 1]."""
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1000,800",
        "--virtual-time-budget=5000",  # lets the page inflate its data and draw
        f"--screenshot={out}",
        f"{page.as_uri()}#{fragment}",
    ]
    subprocess.run(command, capture_output=True, timeout=60, check=True, cwd=out.parent)
    return imread(out)[..., :3]


def largest_change(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The largest connected region where two screenshots differ (the opacity's label, which also
    changes, is a few small letters)."""
    from scipy import ndimage

    regions, count = ndimage.label(np.abs(a - b).max(axis=-1) > 0.1)
    if count == 0:
        return regions > 0
    sizes = np.bincount(regions.ravel())[1:]
    return regions == 1 + int(np.argmax(sizes))


@needs_chromium
def test_chromium_draws_the_overlay_and_the_controls_move_it(tmp_path: Path) -> None:
    page = write_html_report(REPORT, study(), box_map(), tmp_path / "report.html")
    hidden = screenshot(page, "slice=3&opacity=0", tmp_path / "hidden.png")
    shown = screenshot(page, "slice=3&opacity=1", tmp_path / "shown.png")
    half = screenshot(page, "slice=3&opacity=0.5", tmp_path / "half.png")
    empty = screenshot(page, "slice=1&opacity=1", tmp_path / "empty.png")
    empty_hidden = screenshot(page, "slice=1&opacity=0", tmp_path / "empty_hidden.png")

    overlay = largest_change(shown, hidden)
    rows, columns = np.nonzero(overlay)
    assert overlay.sum() > 2000  # the overlay is drawn...
    # ...over the box alone: 12 columns of 0.8 mm by 5 rows of 1.6 mm, so 1.2 times wider than high
    height, width = np.ptp(rows) + 1, np.ptp(columns) + 1
    assert width / height == pytest.approx(12 * 0.8 / (5 * 1.6), rel=0.05)
    assert overlay.sum() == pytest.approx(height * width, rel=0.02)  # a filled rectangle
    top = np.asarray([252, 255, 164]) / 255  # inferno at 1, the box's value, fully opaque
    np.testing.assert_allclose(shown[overlay].mean(axis=0), top, atol=0.02)
    # Half opacity lies halfway between the image and the colour.
    np.testing.assert_allclose(half[overlay], (hidden[overlay] + shown[overlay]) / 2, atol=0.03)
    # On a slice without the map the opacity changes nothing where the box was; the slices differ.
    assert np.abs(empty - empty_hidden)[overlay].max() < 0.02
    assert np.abs(empty_hidden - hidden)[overlay].mean() > 0.02


def test_explain_study_writes_the_page_and_lists_it(tmp_path: Path) -> None:
    from medmdm.bundle import load_bundle
    from medmdm.pipeline import explain_study
    from medmdm.pipeline.report import review_summary
    from medmdm.testing.internal.bundles import ct_with_ball, detector_bundle

    path, _ = ct_with_ball(tmp_path / "ct.nii.gz")
    bundle = load_bundle(detector_bundle(tmp_path / "bundle"))
    result = explain_study(path, bundle, tmp_path / "out", method="saliency", formats="html,json")
    report = json.loads((result.out_dir / "report.json").read_text())
    assert {o["path"]: o["kind"] for o in report["outputs"]} == {"report.html": "html", "report.json": "json"}
    page = (result.out_dir / "report.html").read_text()
    assert "<b>lesion</b>" in page and "Method: saliency" in page
    data = embedded(page)
    peak = np.unravel_index(int(result.saliency.argmax()), tuple(result.saliency.shape))
    assert data["start"] == peak[2] + 1 and data["slices"] == 14
    # The preview's summary says the same in the same words.
    lines = review_summary(result.target, result.explanation)
    assert lines[0] == "Target: lesion (class 1)"
    masked = report["target"]["score_masked"]
    assert lines[2].startswith(f"Keeping only what the map marks: {masked:.3g} (") and lines[2] in page
