"""Reading studies (DICOM file, DICOM series folder, NIfTI) into MONAI MetaTensors.

``load_study(path)`` returns a :class:`Study` whose ``image`` is a channel-first float32
``MetaTensor`` carrying its RAS affine; ``list_series(folder)`` lists the DICOM series of a folder;
``interpolate_slices(volume, at)`` resamples a volume between its slices (how an irregular series
is put on a regular grid, and how the DICOM writers put a map back on its source slices).
"""

from __future__ import annotations

from medmdm.io.monai_reader import StudyReader
from medmdm.io.reader import Study, interpolate_slices, load_study
from medmdm.io.series import SeriesInfo, list_series

__all__ = ["SeriesInfo", "Study", "StudyReader", "interpolate_slices", "list_series", "load_study"]
