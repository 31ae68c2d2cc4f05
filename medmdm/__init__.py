"""medmdm: dynamic-mask explanations (DM, MDM, HDM) for medical-image models.

The subpackages (``medmdm.explainers``, ``medmdm.pipeline``...) are imported when first used, so that
``import medmdm`` (and ``medmdm --version``) does not load torch.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from medmdm.errors import InputError, MedmdmError, ModelError, OptionError

__version__ = "0.1.0"

__all__ = ["InputError", "MedmdmError", "ModelError", "OptionError", "__version__", "explainers"]


def __getattr__(name: str) -> ModuleType:
    if name == "explainers":
        return importlib.import_module("medmdm.explainers")
    raise AttributeError(f"module 'medmdm' has no attribute {name!r}")
