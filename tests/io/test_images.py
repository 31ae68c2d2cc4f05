"""PNG, JPEG and TIFF images read as studies in pixel space: values, layout, geometry, refusals."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from monai.data import PILReader
from monai.transforms import LoadImage
from PIL import Image

from medmdm.errors import InputError
from medmdm.io import StudyReader, load_study

ROWS, COLS = 12, 20


@pytest.fixture
def rgb() -> np.ndarray:
    """(rows, cols, 3) uint8 with every pixel distinct in each channel."""
    values = np.arange(ROWS * COLS * 3).reshape(ROWS, COLS, 3)
    return (values % 251).astype(np.uint8)


def read(path: Path) -> tuple[object, list[str]]:
    """The study and the messages of the warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(path)
    return study, [str(w.message) for w in caught]


@pytest.mark.parametrize("name", ["frame.png", "patch.tif", "no_suffix"])
def test_rgb_image_is_three_channels_columns_first_in_pixel_space(tmp_path, rgb, name):
    path = tmp_path / name
    Image.fromarray(rgb).save(path, format="PNG" if name != "patch.tif" else "TIFF")
    study, said = read(path)
    assert study.kind == "image" and not study.patient_geometry
    assert tuple(study.image.shape) == (3, COLS, ROWS) and study.size == (COLS, ROWS)
    np.testing.assert_array_equal(study.image.numpy(), rgb.transpose(2, 1, 0))  # lossless: exact values
    np.testing.assert_array_equal(study.affine.numpy(), np.diag([-1.0, -1.0, 1.0, 1.0]))
    assert study.spacing == (1.0, 1.0) and study.orientation == "LP" and study.files == [path]
    assert len(said) == 1 and "no patient geometry" in said[0] and str(path) in said[0]


def test_the_layout_is_monais_pil_reader_layout(tmp_path, rgb):
    path = tmp_path / "frame.png"
    Image.fromarray(rgb).save(path)
    theirs = LoadImage(reader=PILReader(), image_only=True, ensure_channel_first=True)(path)
    ours = LoadImage(reader=StudyReader(), image_only=True, ensure_channel_first=True)(path)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_sixteen_bit_grey_keeps_its_values(tmp_path):
    pixels = (np.arange(ROWS * COLS).reshape(ROWS, COLS) * 271).astype(np.uint16)
    assert pixels.max() > 255
    for name in ("grey16.png", "grey16.tif"):
        Image.fromarray(pixels).save(tmp_path / name)
        study, _ = read(tmp_path / name)
        assert tuple(study.image.shape) == (1, COLS, ROWS)
        np.testing.assert_array_equal(study.image.numpy()[0], pixels.T)


def test_palette_becomes_rgb_and_alpha_is_dropped_with_a_warning(tmp_path, rgb):
    palette = Image.fromarray(rgb).quantize(16)
    palette.save(tmp_path / "palette.png")
    study, said = read(tmp_path / "palette.png")
    expected = np.asarray(palette.convert("RGB")).transpose(2, 1, 0)
    np.testing.assert_array_equal(study.image.numpy(), expected)
    assert any("converted to RGB" in s for s in said)

    alpha = np.concatenate([rgb, np.full((ROWS, COLS, 1), 7, np.uint8)], -1)
    Image.fromarray(alpha).save(tmp_path / "rgba.png")
    study, said = read(tmp_path / "rgba.png")
    np.testing.assert_array_equal(study.image.numpy(), rgb.transpose(2, 1, 0))
    assert any("alpha channel is dropped" in s for s in said)


def test_multi_page_tiff_reads_the_first_page_and_says_how_many(tmp_path, rgb):
    pages = [Image.fromarray(rgb[..., i]) for i in range(3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    study, said = read(tmp_path / "stack.tif")
    np.testing.assert_array_equal(study.image.numpy()[0], rgb[..., 0].T)
    assert any("3 pages" in s and "read the first" in s for s in said)


def test_jpeg_is_read_close_to_its_source(tmp_path, rgb):
    smooth = np.broadcast_to(np.linspace(0, 255, COLS)[None, :, None], rgb.shape).astype(np.uint8)
    Image.fromarray(smooth).save(tmp_path / "photo.jpg", quality=95)
    study, said = read(tmp_path / "photo.jpg")
    assert tuple(study.image.shape) == (3, COLS, ROWS)
    assert np.abs(study.image.numpy() - smooth.transpose(2, 1, 0)).max() < 12
    assert "a JPEG image has no patient geometry" in said[0]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "not a readable PNG, JPEG or TIFF image"),
        (b"", "empty file"),
    ],
    ids=["damaged", "empty"],
)
def test_a_damaged_image_is_refused_in_one_line(tmp_path, content, match):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    with pytest.raises(InputError, match=match) as error:
        load_study(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_nan_in_a_floating_point_tiff_is_refused(tmp_path):
    values = np.ones((ROWS, COLS), np.float32)
    values[3, 4] = np.nan
    Image.fromarray(values).save(tmp_path / "float.tif")
    with pytest.raises(InputError, match="1 NaN or infinite pixel values"):
        load_study(tmp_path / "float.tif")


def test_a_file_that_is_no_image_says_what_is_read(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not an image at all\n")
    with pytest.raises(InputError, match="neither DICOM nor NIfTI nor a PNG, JPEG or TIFF image"):
        load_study(path)
