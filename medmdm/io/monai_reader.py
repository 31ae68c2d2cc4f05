"""medmdm's study reader as a MONAI ``ImageReader``, for ``LoadImage``, ``LoadImaged`` and bundles.

Why a reader of our own rather than MONAI's ``PydicomReader``:

- **Slice order by position.** ``PydicomReader`` stacks a series folder by InstanceNumber, which
  real series do not always number along the slice normal, and takes the slice gap from the z of
  ImagePositionPatient. :func:`~medmdm.io.load_study` sorts the slices by their position along the
  normal (oblique series included), resamples a series with missing or irregular slices onto a
  regular grid (with a warning), and refuses one with repeated positions or a gap too wide.
- **Our geometry.** The image and the RAS affine are exactly those of ``load_study``
  (conventions in :mod:`medmdm.io.reader`), so a map computed on what ``LoadImage`` returns lies
  on the grid medmdm's writers expect.
- **Compressed syntaxes.** Pixel data is decoded by pydicom's handlers (JPEG baseline and
  lossless, JPEG-LS, JPEG 2000, RLE), no ITK needed; NIfTI goes through nibabel.

``read`` only resolves the paths; the study is read in ``get_data``. An exception raised by
``read`` makes ``LoadImage`` try its default readers one after the other, and ``PydicomReader``
silently stacks a series with a missing slice; an exception from ``get_data`` reaches the caller
as it is. So a bad input is the :class:`~medmdm.errors.InputError` of ``load_study``, naming the
file (inside ``Compose``, MONAI raises ``RuntimeError("applying transform ...")`` from it).

Three ways to use it::

    LoadImage(reader=StudyReader(), image_only=True, ensure_channel_first=True)
    LoadImaged(keys="image", reader=StudyReader(series_uid=uid), ensure_channel_first=True)
    LoadImaged(keys="image", reader="medmdm.io.StudyReader", ensure_channel_first=True)

The dotted name is resolved by ``LoadImage`` itself (``pydoc.locate``), and keyword arguments
given to ``LoadImage`` next to it (``series_uid=...``) go to the reader's constructor; the same
string works as ``"reader"`` of a ``LoadImaged`` in a bundle's configuration.

Examples
--------
>>> from monai.transforms import LoadImage
>>> from pydicom.data import get_testdata_file
>>> from medmdm.io import StudyReader
>>> load = LoadImage(reader=StudyReader(), image_only=True, ensure_channel_first=True)
>>> tuple(load(get_testdata_file("SC_rgb_rle.dcm")).shape)  # RGB, 100 columns x 100 rows
(3, 100, 100)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike
from monai.data import ImageReader
from monai.utils import ImageMetaKey, MetaKeys, SpaceKeys, ensure_tuple

from medmdm.errors import InputError
from medmdm.io.dicom import looks_like_dicom
from medmdm.io.images import IMAGE_SUFFIXES, looks_like_image
from medmdm.io.reader import NIFTI_SUFFIXES, load_study

DICOM_SUFFIXES = (".dcm",)


class StudyReader(ImageReader):
    """MONAI ``ImageReader`` over :func:`medmdm.io.load_study`.

    ``LoadImage(reader=StudyReader(), ensure_channel_first=True)`` gives the ``(C, *spatial)``
    float32 image and the affine of ``load_study(path).image``. Without ``ensure_channel_first``
    the array is shaped as MONAI's readers shape theirs: a grey image has no channel axis
    (``original_channel_dim`` is NaN), several channels come last (``original_channel_dim`` -1).
    Several paths given together are read as the channels of one image and must share a grid.

    Parameters
    ----------
    series_uid : str, optional
        The series to read from folders holding several (passed to ``load_study``).
    """

    def __init__(self, series_uid: str | None = None) -> None:
        super().__init__()
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """Whether every path is a folder, a ``.nii``/``.nii.gz``/``.dcm``/``.png``/``.jpg``/``.tif`` name,
        a DICOM file (with preamble, or beginning like a data set) or a PNG, JPEG or TIFF image.

        Parameters
        ----------
        filename : path or sequence of paths

        Returns
        -------
        bool
        """
        return all(_is_study_path(Path(p)) for p in ensure_tuple(filename))

    def read(self, data: Sequence[PathLike] | PathLike) -> tuple[Path, ...]:
        """The paths to read; the reading itself happens in :meth:`get_data` (see the module notes).

        Parameters
        ----------
        data : path or sequence of paths
            Files or folders accepted by ``load_study``; several are the channels of one image.

        Returns
        -------
        tuple of Path
        """
        return tuple(Path(p) for p in ensure_tuple(data))

    def get_data(self, img: Sequence[Path]) -> tuple[np.ndarray, dict[str, Any]]:
        """Read the studies and return the image array and its meta dictionary.

        Parameters
        ----------
        img : sequence of Path
            What :meth:`read` returned.

        Returns
        -------
        array : numpy.ndarray
            float32, ``(*spatial)`` for one grey image, else ``(*spatial, C)``.
        meta : dict
            ``affine`` and ``original_affine`` (4x4 RAS, float64), ``spatial_shape``,
            ``original_channel_dim``, ``space`` (``"RAS"``), ``spacing``, ``filename_or_obj`` (the
            first path), and the first study's ``modality``, ``series_uid``, ``study_uid`` and
            ``frame_of_reference_uid``.

        Raises
        ------
        InputError
            What ``load_study`` raises (files given together with different grids too); no path.
        """
        if not img:
            raise InputError("StudyReader: no path to read")
        first = load_study(img, self.series_uid)
        channels = first.image.numpy()  # (C, *spatial)
        if channels.shape[0] == 1:
            array, channel_dim = channels[0], float("nan")
        else:
            array, channel_dim = np.moveaxis(channels, 0, -1), -1
        affine = first.affine.numpy().astype(np.float64)
        meta = {
            MetaKeys.AFFINE: affine,
            MetaKeys.ORIGINAL_AFFINE: affine.copy(),
            MetaKeys.SPATIAL_SHAPE: np.asarray(first.size),
            MetaKeys.ORIGINAL_CHANNEL_DIM: channel_dim,
            MetaKeys.SPACE: SpaceKeys.RAS,
            "spacing": np.asarray(first.spacing),
            ImageMetaKey.FILENAME_OR_OBJ: str(first.path),
            "modality": first.modality,
            "series_uid": first.series_uid,
            "study_uid": first.study_uid,
            "frame_of_reference_uid": first.frame_of_reference_uid,
        }
        return np.ascontiguousarray(array), meta


def _is_study_path(path: Path) -> bool:
    if path.name.lower().endswith(NIFTI_SUFFIXES + DICOM_SUFFIXES + IMAGE_SUFFIXES) or path.is_dir():
        return True
    return path.is_file() and (looks_like_dicom(path) or looks_like_image(path))
