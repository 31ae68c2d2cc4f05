"""Reading studies (DICOM file, DICOM series folder, NIfTI) into MONAI MetaTensors.

``load_study(path)`` returns a :class:`Study` whose ``image`` is a channel-first float32
``MetaTensor`` carrying its RAS affine; ``list_series(folder)`` lists the DICOM series of a folder.
"""

from __future__ import annotations

from medmdm.io.dicom import SeriesInfo, list_series
from medmdm.io.monai_reader import StudyReader
from medmdm.io.reader import Study, load_study

__all__ = ["SeriesInfo", "Study", "StudyReader", "list_series", "load_study"]
