"""Exception types raised by medmdm, and how their messages quote another error, in one place."""

from __future__ import annotations


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
