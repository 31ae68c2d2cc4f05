"""PNG previews: a readable PNG for 2D grey, 2D RGB and 3D; input errors; the montage choice; planes
named and slices numbered as the Secondary Captures name and number them; room for the summary."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pydicom
import pytest
import torch
from matplotlib.image import imread
from monai.data import MetaTensor

from medmdm.errors import InputError
from medmdm.io import load_study
from medmdm.writers import write_preview
from medmdm.writers.preview import DPI, SUMMARY_INCHES, _draw_2d, _draw_3d, _inputs, _montage_slices

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)
    assert pixels.ndim == 3
    assert 200 <= pixels.shape[0] <= 3000 and 300 <= pixels.shape[1] <= 3000
    assert pixels[..., :3].std() > 0.01  # something was drawn
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def blob(spatial: tuple[int, ...]) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in spatial], indexing="ij")
    return torch.exp(-sum((g - 0.3) ** 2 for g in grids) * 8)


def test_2d_grey(tmp_path: Path) -> None:
    study = load_study(pydicom.data.get_testdata_file("CT_small.dcm"))
    backend = matplotlib.get_backend()
    out = write_preview(study.image, blob(study.size)[None], tmp_path / "ct.png", title="CT_small")
    assert matplotlib.get_backend() == backend
    check_png(out)


def test_2d_rgb(tmp_path: Path) -> None:
    check_png(write_preview(torch.rand(3, 40, 30) * 255, blob((40, 30)), tmp_path / "rgb.png"))


def test_3d(tmp_path: Path) -> None:
    affine = torch.diag(torch.tensor([0.7, 1.3, 2.5, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.rand(1, 12, 10, 8), affine=affine)
    check_png(write_preview(image, blob((12, 10, 8)), tmp_path / "vol.png", title="3D"))


def test_constant_map(tmp_path: Path) -> None:
    check_png(write_preview(torch.rand(1, 12, 10, 8), torch.zeros(12, 10, 8), tmp_path / "flat.png"))


def test_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not match"):
        write_preview(torch.rand(1, 40, 30), torch.rand(30, 40), tmp_path / "a.png")
    with pytest.raises(InputError, match=r"\.png"):
        write_preview(torch.rand(1, 40, 30), torch.rand(40, 30), tmp_path / "a.jpg")
    with pytest.raises(InputError, match=r"\(C, W, H\)"):
        write_preview(torch.rand(40, 30), torch.rand(30), tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_montage_follows_mass() -> None:
    sal = torch.zeros(4, 4, 100).numpy()
    sal[..., 40:60] = 1.0
    slices = _montage_slices(sal)
    assert len(slices) == 12
    assert min(slices) >= 40 and max(slices) < 60
    assert _montage_slices(np.zeros((4, 4, 5))) == [0, 1, 2, 3, 4]


def titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_3d_planes_are_named_and_slices_numbered_as_the_captures(tmp_path: Path, series) -> None:
    from matplotlib.figure import Figure

    from medmdm.writers.secondary_capture import write_secondary_capture

    data = np.zeros(series.study.size)  # an oblique axial series, 5 slices
    data[4, 5, 1], data[6, 7, 3] = 1.0, 0.5
    img, sal, affine = _inputs(series.study.image, torch.from_numpy(data))
    fig = Figure()
    _draw_3d(fig, img, sal, affine)
    shown = titles(fig)
    assert [t.split("\n")[0] for t in shown[:3]] == [
        f"{p} through the peak" for p in ("axial", "coronal", "sagittal")
    ]
    assert shown[0].split("\n")[1].startswith("slice 2/5, S ")  # the peak's slice, numbered from 1
    montage = {int(t.split()[2].split("/")[0]): t.replace("\n", ", ") for t in shown[3:]}
    assert sorted(montage) == [2, 3, 4]
    captures = write_secondary_capture(data, series.study, tmp_path, method="hdm")
    comments = [pydicom.dcmread(p).ImageComments for p in captures]
    assert comments == [montage[2], montage[4]]


def test_2d_panels_are_named_by_the_view() -> None:
    from matplotlib.figure import Figure

    img, sal, _ = _inputs(torch.rand(1, 20, 10), blob((20, 10)))
    fig = Figure()
    _draw_2d(fig, img, sal, np.ones(2), "PA")
    assert titles(fig) == ["PA", "saliency", "PA with the map"]


def test_summary_lines_get_room_under_the_title(tmp_path: Path) -> None:
    image, sal = torch.rand(1, 40, 30), blob((40, 30))
    plain = imread(write_preview(image, sal, tmp_path / "a.png", title="t"))
    lines = ["Target: nodule (class 1)", "Score (logit) of the whole image: 4", "Keeping only what..."]
    (tmp_path / "a.png").unlink()
    summary = imread(write_preview(image, sal, tmp_path / "a.png", title="t", summary=lines))
    assert summary.shape[0] - plain.shape[0] == round(len(lines) * SUMMARY_INCHES * DPI)
