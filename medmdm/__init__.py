"""medmdm: dynamic-mask explanations (DM, MDM, HDM) for medical-image classifiers."""

from __future__ import annotations

from medmdm import explainers
from medmdm.errors import InputError, MedmdmError, ModelError, OptionError

__version__ = "0.1.0"

__all__ = ["InputError", "MedmdmError", "ModelError", "OptionError", "__version__", "explainers"]
