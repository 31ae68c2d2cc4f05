"""Exception types raised by medmdm, how their messages quote another error, and which warnings are
medmdm's own, in one place."""

from __future__ import annotations

import warnings
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


class MedmdmError(Exception):
    """Base class of every error medmdm raises on purpose."""


class InputError(MedmdmError, ValueError):
    """The input (image tensor, target, study) is not what the call accepts."""


class ModelError(MedmdmError):
    """The model cannot be explained: wrong output shape, type, or a failing forward pass."""


class OptionError(MedmdmError, ValueError):
    """An explainer option is unknown or has an invalid value."""


class BundleError(ModelError):
    """A MONAI Bundle cannot be used: missing configs or weights, a config that does not parse."""


def one_line(error: BaseException) -> str:
    """An exception as ``"Type: message"`` on one line, to quote it in the message of a medmdm error."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def failure_text(error: BaseException) -> str:
    """Why a study failed, on one line: medmdm's own message, or ``"Type: message"`` for any other error."""
    return " ".join(str(error).split()) if isinstance(error, MedmdmError) else one_line(error)


def failure_line(error: BaseException, subject: object) -> str:
    """:func:`failure_text`, led by ``subject`` (a study's path) unless the message names it already."""
    text = failure_text(error)
    return text if str(subject) in text else f"{subject}: {text}"


def own_warning(record: warnings.WarningMessage) -> bool:
    """Whether a recorded warning was raised by medmdm's code (not by a library it uses)."""
    return Path(record.filename).resolve().is_relative_to(PACKAGE)
