"""Choosing the torch device a command computes on: one place for ``--device`` and ``--devices``."""

from __future__ import annotations

import torch

from medmdm.errors import OptionError

DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device named by ``device``.

    Parameters
    ----------
    device : str, torch.device or None
        ``"auto"`` or None: the first CUDA device when there is one, else the CPU; ``"cpu"``, ``"cuda"``,
        ``"cuda:N"``.

    Raises
    ------
    OptionError
        An unknown device, or a CUDA device on a machine without one.
    """
    if device is None or str(device).strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(str(device).strip().lower())
    except (RuntimeError, TypeError) as error:
        raise OptionError(f"unknown device {device!r}: use {DEVICE_HELP}") from error
    if resolved.type not in ("cpu", "cuda"):
        raise OptionError(f"unknown device {device!r}: use {DEVICE_HELP}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {device} asked for, but no CUDA device is available")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise OptionError(f"device {device} asked for, but there are {count} CUDA devices")
    return resolved


def device_list(devices: str) -> list[torch.device]:
    """The devices of ``--devices``: ``"auto"`` (every CUDA device, else the CPU), ``"cpu"``, or a
    comma-separated list such as ``"cuda:0,cuda:1"``; a bare ``cuda`` is ``cuda:0``.

    Raises
    ------
    OptionError
        An empty list, or an unknown or unavailable device.
    """
    text = devices.strip().lower()
    if text == "auto":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [torch.device(f"cuda:{i}") for i in range(count)] or [torch.device("cpu")]
    listed = [resolve_device(item) for item in text.split(",") if item.strip()]
    if not listed:
        raise OptionError(f"no device in --devices {devices!r}")
    return [torch.device("cuda:0") if d.type == "cuda" and d.index is None else d for d in listed]
