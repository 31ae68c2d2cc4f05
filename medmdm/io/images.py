"""Ordinary 2D images (PNG, JPEG, TIFF) read with Pillow, in pixel space.

Endoscopy frames, pathology patches and photographs carry no patient geometry: their pixels are read
as 1 mm apart (a DPI, where a file has one, is the printer's and is ignored), axis 0 along a row and
axis 1 down a column, as a DICOM image with the default orientation reads (the affine of
``medmdm.io.reader``'s conventions: ``diag(-1, -1, 1, 1)`` in RAS, the first pixel at the origin).
Every image read here says so in a warning (``Study.notes``, the report), its study's kind is
``"image"``, and the DICOM outputs that need a patient (Parametric Map, Segmentation, Secondary
Capture) are not written for it.

Pixel modes:

- grey (``L``, ``1``) and 16- or 32-bit grey (``I;16``, ``I``, ``F``): one channel, the stored values
  (0-65535 for a 16-bit PNG or TIFF);
- ``RGB``: three channels, 0-255;
- palette (``P``), ``CMYK``, ``YCbCr`` and other colour modes: converted to RGB by Pillow, with a
  warning;
- an alpha channel (``RGBA``, ``LA``, a palette with transparency): dropped, with a warning;
- several pages or frames (a multi-page TIFF, an animated PNG): the first is read, with a warning
  naming how many there are.

What is refused with an :class:`~medmdm.errors.InputError` naming the file: a file Pillow cannot
open or decode, one over :data:`~medmdm.io.dicom.MAX_VALUES` values (checked from the header, before
the pixels are decoded), and NaN or infinite values (a floating-point TIFF).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from medmdm.errors import InputError, one_line
from medmdm.io.dicom import MAX_VALUES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# The first bytes of PNG, JPEG, little- and big-endian TIFF (and BigTIFF) files.
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
MAGIC_BYTES = 8
PIXEL_SPACING = 1.0  # what a pixel is taken to measure, in mm
GREY_MODES = ("L", "I", "F", "I;16", "I;16L", "I;16B", "I;16N")
ALPHA_MODES = {"RGBA": "RGB", "LA": "L", "PA": "RGB", "RGBa": "RGB", "La": "L"}  # to the mode without it


def looks_like_image(path: Path) -> bool:
    """Whether a file begins as a PNG, JPEG or TIFF image does (its name is not used)."""
    with path.open("rb") as f:
        return f.read(MAGIC_BYTES).startswith(IMAGE_MAGIC)


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """A PNG, JPEG or TIFF image as a float32 ``(C, W, H)`` array, C = 1 (grey) or 3 (RGB), and its format.

    What was converted (a palette, an alpha channel dropped, pages beyond the first) is warned about.

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    array : numpy.ndarray
        float32 ``(C, W, H)``: axis 1 along a row (column index), axis 2 down a column (row index).
    kind : str
        The format as Pillow names it (``"PNG"``, ``"JPEG"``, ``"TIFF"``...).

    Raises
    ------
    InputError
        A file Pillow cannot read; an image over :data:`~medmdm.io.dicom.MAX_VALUES` values (or over
        Pillow's decompression-bomb limit); NaN or infinite values (a floating-point TIFF).
    """
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    try:
        with Image.open(path) as img:
            kind = img.format or path.suffix.lstrip(".").upper()
            values = img.width * img.height * len(img.getbands())
            if values > MAX_VALUES:
                raise InputError(
                    f"{path}: image too large ({values} values; medmdm reads at most {MAX_VALUES})"
                )
            pages = getattr(img, "n_frames", 1)
            if pages > 1:
                warnings.warn(f"{path}: a {kind} of {pages} pages or frames; read the first", stacklevel=2)
            img.seek(0)
            pixels = _pixels(img, path, kind)
    except InputError:
        raise
    except Exception as e:  # Pillow raises many types on damaged data (OSError, SyntaxError, ValueError...)
        raise InputError(f"{path}: not a readable PNG, JPEG or TIFF image ({one_line(e)})") from e
    bad = int(np.count_nonzero(~np.isfinite(pixels)))
    if bad:
        raise InputError(f"{path}: {bad} NaN or infinite pixel values")
    array = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)  # (C, rows, cols)
    return np.ascontiguousarray(array.transpose(0, 2, 1), dtype=np.float32), kind


def _pixels(img: Image.Image, path: Path, kind: str) -> np.ndarray:
    """The decoded pixels, ``(rows, cols)`` grey or ``(rows, cols, 3)`` RGB, as Pillow's numpy view."""
    mode = "PA" if img.mode == "P" and "transparency" in img.info else img.mode
    if mode in ALPHA_MODES:
        warnings.warn(
            f"{path}: {kind} with an alpha channel ({mode}); the alpha channel is dropped", stacklevel=4
        )
        return np.asarray(img.convert(ALPHA_MODES[mode]))
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode not in (*GREY_MODES, "RGB"):
        warnings.warn(f"{path}: {kind} in {mode} mode, converted to RGB", stacklevel=4)
        return np.asarray(img.convert("RGB"))
    return np.asarray(img)
